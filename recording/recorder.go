// Package recording records live streams to object storage: it reads a
// stream like any player, cuts MPEG-TS segments at keyframes, spools each
// finished segment on local disk, and uploads it to a sink (a local
// directory or S3 through minio-go) with retries, deleting the spooled copy
// only once the store confirmed size and checksum. Every recording session
// gets an HLS playlist (EVENT while live, VOD with ENDLIST at the end) and a
// JSON manifest next to its segments, laid out as APP/NAME/SESSION/….
//
// Recording never holds up the media path: the recorder is an ordinary
// reader of the stream (the stream drops it to the next keyframe when it is
// slow), uploads run apart from the readers, and a full spool stops the
// oldest live session's recording rather than anything else.
//
// A session ends when the stream has been gone for session_gap. While the
// origin shows its slate (publisher lost, not yet back), the stream is not
// gone: the recording carries the slate, as players saw it.
package recording

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Source gives the recorder a stream to read; the origin implements it
// (wired in cmd/livefuse).
type Source interface {
	// Subscribe returns a reader of app/name, or an error when it is not live.
	Subscribe(app, name string) (PacketReader, error)
}

// PacketReader is one reader of a stream: it starts with the sequence
// headers and the cached GOP, then live packets.
type PacketReader interface {
	// ReadPackets waits until packets are queued and appends them to dst; it
	// returns an error once the reader was dropped or the stream ended.
	ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error)
	Close()
}

// Event types passed to Deps.Events.
const (
	EventSessionStarted   = "recording.session_started"
	EventSessionEnded     = "recording.session_ended"
	EventSegmentSpooled   = "recording.segment_spooled"
	EventSegmentUploaded  = "recording.segment_uploaded"
	EventSessionComplete  = "recording.session_complete"
	EventRecordingStopped = "recording.stopped"
	EventSinkError        = "recording.sink_error"
	EventSinkOK           = "recording.sink_ok"
)

// Event is a recording lifecycle event (for the bus, and for tests).
type Event struct {
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	App     string    `json:"app,omitempty"`
	Name    string    `json:"name,omitempty"`
	Session string    `json:"session,omitempty"`
	Seq     int       `json:"seq,omitempty"`
	Size    int64     `json:"size,omitempty"`
	SHA256  string    `json:"sha256,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// Deps are what a Recorder needs from the node.
type Deps struct {
	Source Source
	Log    *slog.Logger
	// Events, if set, receives lifecycle events; it must not block.
	Events func(Event)
	// Sink replaces the one built from the config (tests).
	Sink Sink
}

// pollInterval is how often a recorded stream that is not live is looked for.
const pollInterval = 250 * time.Millisecond

// closeFlush bounds how long Close waits for queued uploads; what is left
// stays in the spool for the next start.
const closeFlush = 3 * time.Second

// Recorder records the streams it is told to record.
type Recorder struct {
	cfg    Config
	src    Source
	log    *slog.Logger
	events func(Event)
	sink   Sink
	secret []byte
	up     *uploader

	spoolUsed atomic.Int64
	count     counters

	mu       sync.Mutex
	started  bool
	running  bool // Start is through: Set starts streams at once
	closed   bool
	ctx      context.Context
	cancel   context.CancelFunc
	streams  map[string]*streamRec
	pending  map[string]bool     // Set before Start
	sessions map[string]*session // by spool dir, live and pending
	sinkErr  string
	sinkErrT time.Time
	wg       sync.WaitGroup // stream workers
	bg       sync.WaitGroup // retention
}

// New checks cfg and builds the sink; it does not contact the store.
func New(cfg Config, deps Deps) (*Recorder, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if deps.Source == nil {
		return nil, errors.New("recording: no source")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sink := deps.Sink
	if sink == nil {
		switch cfg.Sink {
		case SinkS3:
			sink, err = NewS3Sink(cfg.S3)
		default:
			sink, err = NewLocalSink(cfg.Local.Dir)
		}
		if err != nil {
			return nil, fmt.Errorf("recording: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o755); err != nil {
		return nil, fmt.Errorf("recording: spool: %w", err)
	}
	secret := []byte(cfg.URLSecret)
	if len(secret) == 0 {
		secret = make([]byte, 32)
		rand.Read(secret)
	}
	r := &Recorder{
		cfg: cfg, src: deps.Source, log: log.With("component", "recording"), events: deps.Events,
		sink: sink, secret: secret,
		streams: map[string]*streamRec{}, pending: map[string]bool{}, sessions: map[string]*session{},
	}
	r.up = newUploader(r)
	return r, nil
}

// Sink returns the sink in use.
func (r *Recorder) Sink() Sink { return r.sink }

// Start checks the sink (a failure is logged and shown in the status; the
// recorder keeps spooling and retrying), replays the spool left by an
// earlier run, and starts the uploads and the retention sweep.
func (r *Recorder) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("recording: started twice")
	}
	r.started = true
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.mu.Unlock()

	if err := r.sink.Check(ctx); err != nil {
		r.setSinkErr(err)
		r.log.Error("recording sink is not usable; segments stay in the spool and are retried", "sink", r.sink.String(), "err", err)
	} else {
		r.log.Info("recording sink ready", "sink", r.sink.String())
	}
	n, err := r.replaySpool()
	if err != nil {
		r.log.Error("recording spool replay", "err", err)
	} else if n > 0 {
		r.log.Info("recording spool replayed", "sessions", n, "spool_bytes", r.spoolUsed.Load())
	}
	r.up.start(r.ctx)
	r.mu.Lock()
	r.running = true
	for k := range r.pending {
		app, name := splitKey(k)
		r.setLocked(app, name, true)
	}
	r.pending = nil
	r.mu.Unlock()
	if r.cfg.RetentionDays > 0 {
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			r.retentionLoop(r.ctx)
		}()
	}
	return nil
}

// Set turns recording of app/name on or off. While on, the recorder waits
// for the stream to be live and records it.
func (r *Recorder) Set(app, name string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setLocked(app, name, on)
}

func (r *Recorder) setLocked(app, name string, on bool) {
	key := app + "/" + name
	if !r.running && !r.closed {
		// Start runs the streams asked for before it.
		if on {
			r.pending[key] = true
		} else {
			delete(r.pending, key)
		}
		return
	}
	st := r.streams[key]
	switch {
	case on && st == nil && !r.closed:
		ctx, cancel := context.WithCancel(r.ctx)
		st = &streamRec{r: r, app: app, name: name, cancel: cancel}
		r.streams[key] = st
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			st.run(ctx)
		}()
		r.log.Info("recording on", "stream", key)
	case !on && st != nil:
		delete(r.streams, key)
		st.cancel()
		r.log.Info("recording off", "stream", key)
	}
}

// Sync makes the set of recorded streams exactly keys ("app/name").
func (r *Recorder) Sync(keys []string) {
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	r.mu.Lock()
	var off []string
	for k := range r.streams {
		if !want[k] {
			off = append(off, k)
		}
	}
	r.mu.Unlock()
	for _, k := range off {
		app, name := splitKey(k)
		r.Set(app, name, false)
	}
	for k := range want {
		app, name := splitKey(k)
		r.Set(app, name, true)
	}
}

func splitKey(k string) (string, string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "live", k
}

// Close stops every recording (open segments are closed and sessions
// ended), waits up to a few seconds for queued uploads, and stops. What is
// not uploaded stays in the spool for the next start.
func (r *Recorder) Close() {
	r.mu.Lock()
	if r.closed || !r.started {
		r.closed = true
		r.mu.Unlock()
		return
	}
	r.closed = true
	for k, st := range r.streams {
		st.cancel()
		delete(r.streams, k)
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.up.drain(closeFlush)
	r.cancel()
	r.up.wait()
	r.bg.Wait()
}

// StreamStatus is the recording state of one stream.
type StreamStatus struct {
	// Enabled is true while recording is switched on for the stream.
	Enabled bool `json:"enabled"`
	// State is "waiting" (not live), "recording" or "stopped".
	State string `json:"state,omitempty"`
	// Session is the current session id.
	Session  string `json:"session,omitempty"`
	Segments int    `json:"segments,omitempty"`
	// Pending counts segments spooled but not confirmed by the sink.
	Pending int `json:"pending,omitempty"`
	// Error is why recording stopped, or the sink's last error.
	Error string `json:"error,omitempty"`
	Sink  string `json:"sink"`
}

// Status reports app/name.
func (r *Recorder) Status(app, name string) StreamStatus {
	r.mu.Lock()
	st := r.streams[app+"/"+name]
	sinkErr := r.sinkErr
	r.mu.Unlock()
	out := StreamStatus{Sink: r.sink.String(), Error: sinkErr}
	if st == nil {
		return out
	}
	out.Enabled = true
	st.mu.Lock()
	out.State = st.state
	if st.stopReason != "" {
		out.Error = st.stopReason
	}
	s := st.sess
	st.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		out.Session = s.m.Session
		out.Segments = len(s.m.Segments)
		out.Pending = len(s.m.Segments) - s.uploadedCount
		s.mu.Unlock()
	}
	return out
}

// SinkStatus is the state of the store.
type SinkStatus struct {
	Sink       string    `json:"sink"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	ErrorAt    time.Time `json:"error_at,omitzero"`
	SpoolBytes int64     `json:"spool_bytes"`
	Queued     int       `json:"queued"`
}

// SinkStatus reports the store and the spool.
func (r *Recorder) SinkStatus() SinkStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return SinkStatus{Sink: r.sink.String(), OK: r.sinkErr == "", Error: r.sinkErr, ErrorAt: r.sinkErrT,
		SpoolBytes: r.spoolUsed.Load(), Queued: r.up.queued()}
}

func (r *Recorder) setSinkErr(err error) {
	r.mu.Lock()
	was := r.sinkErr
	if err == nil {
		r.sinkErr = ""
	} else {
		r.sinkErr, r.sinkErrT = err.Error(), time.Now()
	}
	r.mu.Unlock()
	switch {
	case err != nil && was == "":
		r.emit(Event{Type: EventSinkError, Error: err.Error()})
	case err == nil && was != "":
		r.log.Info("recording sink is back", "sink", r.sink.String())
		r.emit(Event{Type: EventSinkOK})
	}
}

func (r *Recorder) emit(e Event) {
	if r.events == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r.events(e)
}

// spoolAdded accounts n new spooled bytes and, over the limit, stops the
// oldest live session's recording.
func (r *Recorder) spoolAdded(n int64) {
	used := r.spoolUsed.Add(n)
	if used <= r.cfg.SpoolMaxBytes {
		return
	}
	r.mu.Lock()
	var oldest *streamRec
	var oldestStart time.Time
	for _, st := range r.streams {
		st.mu.Lock()
		s, stopping := st.sess, st.stopReason != ""
		st.mu.Unlock()
		if s == nil || stopping || st.stopReq.Load() != nil {
			continue
		}
		if oldest == nil || s.m.Start.Before(oldestStart) {
			oldest, oldestStart = st, s.m.Start
		}
	}
	r.mu.Unlock()
	if oldest == nil {
		return
	}
	reason := fmt.Sprintf("spool full (%d of %d bytes): recording stopped", used, r.cfg.SpoolMaxBytes)
	oldest.stopReq.CompareAndSwap(nil, &reason)
	r.log.Error("ALERT recording stopped: spool full", "stream", oldest.app+"/"+oldest.name,
		"spool_bytes", used, "spool_max_bytes", r.cfg.SpoolMaxBytes, "sink", r.sink.String())
}

// replaySpool loads the sessions an earlier run left in the spool, ends
// the ones that were live, and queues what is not uploaded.
func (r *Recorder) replaySpool() (int, error) {
	paths, err := filepath.Glob(filepath.Join(r.cfg.SpoolDir, "*", "*", "*", manifestName))
	if err != nil {
		return 0, err
	}
	sort.Strings(paths)
	n := 0
	for _, p := range paths {
		dir := filepath.Dir(p)
		b, err := os.ReadFile(p)
		var m *Manifest
		if err == nil {
			m, err = parseManifest(b)
		}
		if err != nil {
			r.log.Error("recording spool: unreadable session left as is", "dir", dir, "err", err)
			continue
		}
		s := &session{r: r, dir: dir, m: *m}
		kept := s.m.Segments[:0]
		for i, seg := range s.m.Segments {
			if !seg.Uploaded {
				if i == len(s.m.Segments)-1 {
					// Saved in the manifest, not yet renamed.
					if fi, err := os.Stat(filepath.Join(dir, openSegment)); err == nil && fi.Size() == seg.Size {
						os.Rename(filepath.Join(dir, openSegment), filepath.Join(dir, seg.File))
					}
				}
				fi, err := os.Stat(filepath.Join(dir, seg.File))
				if err != nil || fi.Size() != seg.Size {
					r.log.Error("recording spool: segment lost", "stream", m.App+"/"+m.Name, "session", m.Session, "seq", seg.Seq, "err", err)
					continue
				}
				r.spoolUsed.Add(seg.Size)
			} else {
				s.uploadedCount++
			}
			kept = append(kept, seg)
		}
		s.m.Segments = kept
		os.Remove(filepath.Join(dir, openSegment))
		if !s.m.Ended {
			// The segment being written when the node died: keep its
			// complete frames.
			if ok, err := s.salvageOpen(); err != nil {
				r.log.Error("recording spool: open segment lost", "stream", m.App+"/"+m.Name, "session", m.Session, "err", err)
			} else if ok {
				seg := s.m.Segments[len(s.m.Segments)-1]
				r.spoolUsed.Add(seg.Size)
				r.log.Info("recording spool: open segment salvaged", "stream", m.App+"/"+m.Name, "session", m.Session,
					"seq", seg.Seq, "bytes", seg.Size, "duration_s", seg.Duration)
			}
		}
		os.Remove(filepath.Join(dir, openSegment+".part"))
		if !s.m.Ended {
			s.m.Ended, s.m.EndedAt = true, time.Now().UTC()
			if s.m.Stopped == "" {
				s.m.Stopped = "node restarted"
			}
		}
		if err := s.persist(); err != nil {
			r.log.Error("recording spool: save manifest", "dir", dir, "err", err)
		}
		r.mu.Lock()
		r.sessions[dir] = s
		r.mu.Unlock()
		for _, seg := range s.m.Segments {
			if !seg.Uploaded {
				r.up.add(job{s: s, seq: seg.Seq})
			}
		}
		r.up.add(job{s: s})
		n++
	}
	return n, nil
}
