package origin

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
)

// Player protocols, the keys of Status.ReadersByProtocol.
const (
	ProtoFLV  = "flv"
	ProtoRTMP = "rtmp"
	ProtoHLS  = "hls"
)

// Feed names.
const (
	FeedMain   = "main"
	FeedBackup = "backup"
)

// Status describes one live stream.
type Status struct {
	App  string `json:"app"`
	Name string `json:"name"`
	// Feed is the feed whose publisher is shown (main when it is live).
	Feed     string `json:"feed"`
	Protocol string `json:"protocol"`
	Remote   string `json:"remote"`

	VideoCodec string `json:"video_codec,omitempty"`
	Width      int    `json:"width,omitempty"`
	Height     int    `json:"height,omitempty"`
	AudioCodec string `json:"audio_codec,omitempty"`
	SampleRate int    `json:"sample_rate,omitempty"`
	Channels   int    `json:"channels,omitempty"`
	// FPS and Bitrate (bits per second, audio and video payload) are
	// measured over the last 5 s.
	FPS     float64 `json:"fps"`
	Bitrate int64   `json:"bitrate"`

	// Readers counts the players of every protocol and variant:
	// HTTP-FLV and RTMP connections (clear or encrypted), and HLS clients
	// (distinct address and User-Agent that fetched a playlist or segment
	// within the last three target durations, at least 6 s).
	// ReadersByProtocol splits it by
	// "flv", "rtmp" and "hls" (absent: 0).
	Readers           int            `json:"readers"`
	ReadersByProtocol map[string]int `json:"readers_by_protocol,omitempty"`
	// InternalReaders counts the readers that are not players: HLS
	// packagers, the encrypting reader, recorder, transcode workers, relays.
	InternalReaders int       `json:"internal_readers"`
	DroppedReaders  int64     `json:"dropped_readers"`
	Started         time.Time `json:"started"`

	// Switch is the state of the stream's main/backup switcher.
	Switch SwitchStatus `json:"switch"`
}

// Hub is the set of live streams of one origin unit, keyed "app/name". A
// stream exists while at least one feed publishes to it.
type Hub struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	slates *slateCache

	mu       sync.Mutex
	closed   bool
	streams  map[string]*entry
	policies map[string]StreamPolicy // by stream, live or not (policy.go)
	parents  map[string]string       // stream key of an alias or rendition → its parent's name
	wg       sync.WaitGroup          // HLS packagers and switch tickers
}

// entry is one live stream of the hub.
type entry struct {
	app, name string
	log       *slog.Logger
	stream    *Stream
	keys      *sessionKeys // nil without encryption (Config.Encryption.NewKey)
	crypt     *cryptFLV    // the encrypted FLV output, once started (h.mu)
	viewers   *hlsViewers
	feeds     map[string]*Feed
	started   time.Time
	hls       *hlsOutput // gohlslib (fmp4, low-latency); nil otherwise
	ts        *tsOutput  // tshls (mpegts); nil otherwise
	sw        *switcher
	stop      chan struct{} // closed when the stream ends
}

// NewHub returns an empty hub. Its metrics are registered on reg (nil: not
// registered); log may be nil.
func NewHub(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if cfg.spoolTS() {
		if err := os.MkdirAll(cfg.HLSDir, 0o700); err != nil {
			return nil, fmt.Errorf("origin: hls_dir: %w", err)
		}
		if err := sweepTSSpools(cfg.HLSDir); err != nil {
			log.Warn("hls: segments of an earlier run left in hls_dir", "dir", cfg.HLSDir, "err", err)
		}
	}
	h := &Hub{cfg: cfg, log: log, m: m, streams: make(map[string]*entry),
		policies: make(map[string]StreamPolicy), parents: make(map[string]string),
		slates: newSlateCache(cfg.Slate, log)}
	if reg != nil {
		if err := reg.Register(newFeedCollector(h)); err != nil {
			return nil, fmt.Errorf("origin metrics: %w", err)
		}
		if err := reg.Register(newReadersCollector(h)); err != nil {
			return nil, fmt.Errorf("origin metrics: %w", err)
		}
	}
	return h, nil
}

func streamKey(app, name string) string { return app + "/" + name }

// Publish claims feed ("main" or "backup"; "" means main) of app/name for
// a publisher described by src. It returns an error wrapping ErrBusy when
// the feed already has a live publisher.
func (h *Hub) Publish(app, name, feed string, src av.Source) (*Feed, error) {
	if feed == "" {
		feed = FeedMain
	}
	key := streamKey(app, name)
	if feed != FeedMain && feed != FeedBackup {
		return nil, fmt.Errorf("publish %s: unknown feed %q", key, feed)
	}
	if !validName(app) || !validName(name) {
		return nil, fmt.Errorf("publish %s: invalid app or stream name", key)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("publish %s: %w", key, ErrClosed)
	}
	e := h.streams[key]
	if e != nil && e.feeds[feed] != nil {
		return nil, fmt.Errorf("publish %s feed %s: %w", key, feed, ErrBusy)
	}
	if e == nil {
		e = h.startLocked(app, name)
	}
	f := &Feed{hub: h, e: e, name: feed, idx: feedIndex(feed), src: src, done: make(chan struct{})}
	e.feeds[feed] = f
	e.sw.attach(f.idx, f)
	h.log.Info("publisher joined", "stream", key, "feed", feed, "protocol", src.Protocol, "remote", src.Remote)
	return f, nil
}

// startLocked creates the live entry of app/name: its Stream, switcher,
// switch ticker and HLS packager. h.mu is held.
func (h *Hub) startLocked(app, name string) *entry {
	key := streamKey(app, name)
	log := h.log.With("stream", key)
	s := NewStream(h.cfg, log)
	s.m = h.m
	e := &entry{app: app, name: name, log: log, stream: s, feeds: make(map[string]*Feed, 2), started: time.Now(),
		stop: make(chan struct{}), viewers: newHLSViewers(h.cfg)}
	e.sw = newSwitcher(h.cfg, log, s, h.slates, h.m, h.policies[key].Feed)
	encrypted := h.encryptedLocked(app, name)
	if h.cfg.Encryption.NewKey != nil {
		e.keys = &sessionKeys{stream: key, newKey: h.cfg.Encryption.NewKey}
		if encrypted || h.cfg.Encryption.AllStreams {
			h.startCryptLocked(e, encrypted)
		}
	}
	switch h.cfg.HLSVariant {
	case HLSOff:
	case HLSMPEGTS:
		e.ts = newTSOutput(h.cfg, log, key, s, e.keys, encrypted)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			e.ts.run()
		}()
	default:
		e.hls = newHLSOutput(h.cfg, log, h.m, s)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			e.hls.run()
		}()
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.tick(e)
	}()
	h.streams[key] = e
	h.m.streams.Inc()
	log.Info("stream live", "encrypted", encrypted)
	return e
}

// tick drives e's switcher: feed health, planned switches, the slate.
func (h *Hub) tick(e *entry) {
	t := time.NewTimer(healthTick)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		end, reason := e.sw.tick()
		// The slate is paced finely; health checks need less (a lost
		// publisher is seen at once, without the tick).
		if e.sw.slating() {
			t.Reset(switchTick)
		} else {
			t.Reset(healthTick)
		}
		if end {
			h.mu.Lock()
			h.log.Info("stream ended", "stream", streamKey(e.app, e.name), "reason", reason)
			h.endLocked(e)
			h.mu.Unlock()
			return
		}
	}
}

// leave removes f. The stream ends when f was its last feed and left
// cleanly (or the slate is off); otherwise the switcher shows the other
// feed or the slate until a feed returns.
func (h *Hub) leave(f *Feed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := f.e
	if e.feeds[f.name] != f {
		return // kicked already
	}
	delete(e.feeds, f.name)
	clean := f.clean.Load()
	h.log.Info("publisher left", "stream", streamKey(e.app, e.name), "feed", f.name, "remote", f.src.Remote, "clean", clean)
	if e.sw.detach(f.idx, f, clean) {
		h.endLocked(e)
	}
}

// endLocked removes e and ends its stream: readers get what they have
// queued, then ErrEnded; the HLS packager flushes and closes its muxer.
func (h *Hub) endLocked(e *entry) {
	key := streamKey(e.app, e.name)
	if h.streams[key] != e {
		return
	}
	delete(h.streams, key)
	h.m.streams.Dec()
	close(e.stop)
	e.sw.close()
	for name, f := range e.feeds {
		f.kick()
		delete(e.feeds, name)
	}
	e.stream.Close()
	h.log.Info("stream ended", "stream", key)
}

// Subscribe returns a reader of app/name, or an error wrapping ErrNotFound
// when the stream is not live.
func (h *Hub) Subscribe(app, name string) (*Reader, error) {
	s, err := h.stream(app, name)
	if err != nil {
		return nil, err
	}
	return s.Subscribe(), nil
}

func (h *Hub) stream(app, name string) (*Stream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.streams[streamKey(app, name)]
	if e == nil {
		return nil, fmt.Errorf("stream %s: %w", streamKey(app, name), ErrNotFound)
	}
	return e.stream, nil
}

// tsOut returns the MPEG-TS HLS output of app/name, nil when it has none.
func (h *Hub) tsOut(app, name string) *tsOutput {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.streams[streamKey(app, name)]; e != nil {
		return e.ts
	}
	return nil
}

func (h *Hub) hls(app, name string) (*hlsOutput, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.streams[streamKey(app, name)]
	if e == nil || e.hls == nil {
		return nil, fmt.Errorf("stream %s: %w", streamKey(app, name), ErrNotFound)
	}
	return e.hls, nil
}

// Kick drops every publisher of app/name (their Done channels close) and
// ends the stream.
func (h *Hub) Kick(app, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.streams[streamKey(app, name)]
	if e == nil {
		return fmt.Errorf("kick %s: %w", streamKey(app, name), ErrNotFound)
	}
	h.log.Info("stream kicked", "stream", streamKey(app, name))
	h.endLocked(e)
	return nil
}

// Status returns the status of app/name and whether it is live.
func (h *Hub) Status(app, name string) (Status, bool) {
	h.mu.Lock()
	e := h.streams[streamKey(app, name)]
	var st Status
	if e != nil {
		st = e.statusLocked()
	}
	h.mu.Unlock()
	if e == nil {
		return Status{}, false
	}
	h.fillStream(e, &st)
	return st, true
}

// List returns the status of every live stream, sorted by app/name.
func (h *Hub) List() []Status {
	h.mu.Lock()
	es := make([]*entry, 0, len(h.streams))
	sts := make([]Status, 0, len(h.streams))
	for _, e := range h.streams {
		es = append(es, e)
		sts = append(sts, e.statusLocked())
	}
	h.mu.Unlock()
	for i, e := range es {
		h.fillStream(e, &sts[i])
	}
	sort.Slice(sts, func(i, j int) bool {
		if sts[i].App != sts[j].App {
			return sts[i].App < sts[j].App
		}
		return sts[i].Name < sts[j].Name
	})
	return sts
}

// statusLocked gives the hub's part of the status (h.mu held).
func (e *entry) statusLocked() Status {
	st := Status{App: e.app, Name: e.name, Started: e.started}
	f := e.feeds[FeedMain]
	if f == nil {
		f = e.feeds[FeedBackup]
	}
	if f != nil {
		st.Feed, st.Protocol, st.Remote = f.name, f.src.Protocol, f.src.Remote
	}
	return st
}

// sawHLS counts r's client as an HLS player of app/name, when live.
func (h *Hub) sawHLS(app, name string, r *http.Request) {
	h.mu.Lock()
	e := h.streams[streamKey(app, name)]
	h.mu.Unlock()
	if e != nil {
		e.viewers.saw(r, time.Now())
	}
}

// fillStream adds the stream's media and reader figures to st: the
// players of the stream, of its encrypted output and of its HLS.
func (h *Hub) fillStream(e *entry, st *Status) {
	ss := e.stream.Status()
	h.mu.Lock()
	c := e.crypt
	h.mu.Unlock()
	if c != nil {
		c.out.mu.Lock()
		c.out.addPlayers(&ss)
		ss.DroppedReaders += c.out.dropped
		c.out.mu.Unlock()
	}
	if n := e.viewers.count(time.Now()); n > 0 {
		if ss.ReadersByProtocol == nil {
			ss.ReadersByProtocol = make(map[string]int, 1)
		}
		ss.ReadersByProtocol[ProtoHLS] += n
		ss.Readers += n
	}
	ss.App, ss.Name, ss.Feed, ss.Protocol, ss.Remote, ss.Started = st.App, st.Name, st.Feed, st.Protocol, st.Remote, st.Started
	ss.Switch = e.sw.status()
	if a := ss.Switch.Active; a == FeedMain || a == FeedBackup {
		ss.Feed = a
		for _, f := range ss.Switch.Feeds {
			if f.Feed == a {
				ss.Protocol, ss.Remote = f.Protocol, f.Remote
			}
		}
	}
	*st = ss
}

// Close ends every stream cleanly (players get the end, HLS muxers are
// flushed) and refuses new publishers.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	for _, e := range h.streams {
		h.endLocked(e)
	}
	h.mu.Unlock()
	h.wg.Wait()
	h.slates.close()
}

// Feed is one publisher's claim on a stream feed. It implements the
// ingest.FeedWriter contract.
type Feed struct {
	hub    *Hub
	e      *entry
	name   string
	idx    int
	src    av.Source
	done   chan struct{}
	closed atomic.Bool
	clean  atomic.Bool
	once   sync.Once
}

// WritePacket hands p to the stream; it never blocks. p must not be changed
// afterwards. Packets after Close or a kick are ignored.
func (f *Feed) WritePacket(p *av.Packet) {
	if f.closed.Load() {
		return
	}
	f.e.sw.packet(f.idx, f, p)
}

// Unpublish tells the origin that the encoder ended the feed on purpose
// (RTMP deleteStream, RTSP TEARDOWN): when it is the last feed, the stream
// ends instead of showing the slate. Close must still be called.
func (f *Feed) Unpublish() { f.clean.Store(true) }

// Done is closed when the origin drops the publisher (kick, hub closed).
func (f *Feed) Done() <-chan struct{} { return f.done }

// Close tells the origin the publisher is gone. It is idempotent.
func (f *Feed) Close() {
	if f.closed.Swap(true) {
		return
	}
	f.hub.leave(f)
}

// Name is "main" or "backup".
func (f *Feed) Name() string { return f.name }

// Source describes the publisher.
func (f *Feed) Source() av.Source { return f.src }

func (f *Feed) kick() {
	f.closed.Store(true)
	f.once.Do(func() { close(f.done) })
}

// validName reports whether s can be an app or stream name (av.ValidName).
func validName(s string) bool { return av.ValidName(s) }
