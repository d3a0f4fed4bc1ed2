package origin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// EncryptedConfig configures the encrypted outputs of one stream.
type EncryptedConfig struct {
	// Enabled is the state at the start; SetEnabled changes it live.
	Enabled bool
	// NewKey makes a content key and stores it where the key service
	// finds it. It is called once for the session key (shared by FLV and
	// HLS) and again every RotateSegments HLS segments. Required.
	NewKey func(ctx context.Context) (*encryption.Key, error)
	// RotateSegments rotates the HLS key every so many segments; 0 keeps
	// the session key.
	RotateSegments int
	// FromStart says the stream was to be encrypted from its start: HLS
	// segments the hub's packager made before the outputs started are
	// clear and are taken out of the playlist. Leave it false when
	// encryption is turned on during the session (those segments were
	// meant to be clear, and players may be fetching them).
	FromStart bool
}

// Encrypted is the encrypted side of one live stream: HTTP-FLV in the FLV
// scheme (encryption.Encryptor, onEncryption tags) and HLS in MPEG-TS with
// SAMPLE-AES (the tshls packager). One internal reader of the stream feeds
// both, so the cost of encryption does not grow with the players: FLV
// players are readers of a second Stream that carries the encrypted
// packets. Encryption can be turned on and off at any time; both outputs
// apply the change at the next keyframe, without a player noticing
// anything but the onEncryption tag or the #EXT-X-KEY line.
//
// Players stay on these outputs whether encryption is on or off, so that
// a change reaches every one of them.
type Encrypted struct {
	m       *metrics // the hub's: bytes out count as HTTP-FLV
	stream  string
	log     *slog.Logger
	cfg     Config
	src     *Reader
	enc     *encryption.Encryptor
	flv     *Stream
	hls     *tshls
	ownHLS  bool // hls is this Encrypted's own (the hub has no MPEG-TS output)
	newKey  func(ctx context.Context) (*encryption.Key, error)
	done    chan struct{}
	enabled atomic.Bool

	mu      sync.Mutex
	session *encryption.Key

	// sigs holds the last onEncryption packets with the media packet
	// each one precedes (oldest first), an immutable snapshot replaced on
	// every signal. The signals do not travel in e.flv, whose readers
	// start at the cached GOP and skip to keyframes: a signal sent before
	// a keyframe would be lost to them. serveFLV puts them back in.
	sigs atomic.Pointer[[]sigEntry]
	// pending is the signal waiting for the media packet it precedes
	// (owned by run's goroutine).
	pending *av.Packet
	// everOn is set once encryption was on in this session (run's goroutine).
	everOn bool
}

// sigEntry is an onEncryption packet and the media packet after it.
type sigEntry struct{ next, sig *av.Packet }

// maxSignals is how many onEncryption packets Encrypted remembers: more
// than a reader queue spans.
const maxSignals = 32

// StartEncrypted starts the encrypted outputs of the live stream app/name.
// They run until the stream ends (Done).
func (h *Hub) StartEncrypted(app, name string, cfg EncryptedConfig) (*Encrypted, error) {
	if cfg.NewKey == nil {
		return nil, errors.New("encrypted outputs: no key source")
	}
	s, err := h.stream(app, name)
	if err != nil {
		return nil, err
	}
	key := streamKey(app, name)
	log := h.log.With("stream", key)
	e := &Encrypted{
		m:      h.m,
		stream: key,
		log:    log,
		cfg:    h.cfg,
		flv:    NewStream(h.cfg, log),
		newKey: cfg.NewKey,
		done:   make(chan struct{}),
	}
	e.enabled.Store(cfg.Enabled)
	if cfg.Enabled {
		if _, err := e.sessionKey(); err != nil {
			return nil, err
		}
	}
	e.enc, err = encryption.NewEncryptor(encryption.EncryptorConfig{
		Stream: key, Key: e.session, Enabled: cfg.Enabled && e.session != nil, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	// The hub's MPEG-TS HLS packager does SAMPLE-AES itself once it has
	// a key source; without one (another HLS variant) Encrypted runs its
	// own.
	if ts := h.tsOut(app, name); ts != nil {
		e.hls = ts.pk
		e.hls.setKeySource(e.hlsKey, cfg.RotateSegments)
		switch {
		case cfg.Enabled && cfg.FromStart:
			e.hls.hideClearSegments()
		default:
			e.hls.setEncrypted(cfg.Enabled)
		}
	} else {
		e.ownHLS = true
		e.hls = newTSHLS(tshlsConfig{
			Stream:          key,
			SegmentDuration: h.cfg.HLSSegmentDuration,
			SegmentCount:    h.cfg.HLSSegmentCount,
			Encrypted:       cfg.Enabled,
			RotateSegments:  cfg.RotateSegments,
			NewKey:          e.hlsKey,
			Logger:          log,
		})
	}
	e.src = s.subscribe(true)
	go e.run()
	return e, nil
}

// sessionKey returns the key of this session, making it at first use.
func (e *Encrypted) sessionKey() (*encryption.Key, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.session != nil {
		return e.session, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := e.newKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("session key of %s: %w", e.stream, err)
	}
	e.session = k
	return k, nil
}

// hlsKey gives the packager the session key first, then new keys (rotation).
func (e *Encrypted) hlsKey(ctx context.Context) (*encryption.Key, error) {
	e.mu.Lock()
	k := e.session
	e.mu.Unlock()
	if k != nil && e.hls.key == nil { // called from the packager's goroutine
		return k, nil // the first encrypted segment: the session key
	}
	return e.newKey(ctx)
}

// SetEnabled turns encryption on or off from the next keyframe on, for
// HTTP-FLV and HLS alike.
func (e *Encrypted) SetEnabled(on bool) error {
	if on {
		k, err := e.sessionKey()
		if err != nil {
			return err
		}
		e.enc.SetKey(k)
	}
	e.enabled.Store(on)
	e.enc.SetEnabled(on)
	e.hls.setEncrypted(on)
	e.log.Info("encryption change requested", "encrypted", on)
	return nil
}

// Enabled reports the state last asked for.
func (e *Encrypted) Enabled() bool { return e.enabled.Load() }

// MarkDiscontinuity marks an HLS discontinuity at the next keyframe (a
// feed switch with other codec parameters).
func (e *Encrypted) MarkDiscontinuity() { e.hls.markDiscontinuity() }

// Done is closed when the stream has ended and the outputs are closed.
func (e *Encrypted) Done() <-chan struct{} { return e.done }

// Close stops the outputs (players get the end of the stream).
func (e *Encrypted) Close() { e.src.Close() }

func (e *Encrypted) run() {
	defer close(e.done)
	defer e.flv.Close()
	if e.ownHLS {
		defer e.hls.close()
	}
	defer e.src.Close()
	pkts := make([]*av.Packet, 0, 64)
	out := make([]*av.Packet, 0, 4)
	for {
		var err error
		pkts, err = e.src.ReadPackets(context.Background(), pkts[:0])
		for _, p := range pkts {
			e.write(p, &out)
		}
		clear(pkts)
		if err != nil {
			if errors.Is(err, ErrDropped) {
				e.log.Error("encrypted outputs fell behind the stream and stopped")
			}
			return
		}
	}
}

// write feeds p to both outputs. Bad media costs only the packet.
func (e *Encrypted) write(p *av.Packet, out *[]*av.Packet) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("encrypted outputs: packet skipped on bad media", "panic", fmt.Sprint(r))
		}
	}()
	if e.ownHLS {
		e.hls.writePacket(p)
	}
	var err error
	*out, err = e.enc.Encrypt((*out)[:0], p)
	if err != nil {
		e.hls.errs.log(e.log, "flv encryption", err)
	}
	for _, q := range *out {
		if q.Kind == av.KindData && encryption.IsSignal(q.Data) {
			// Until encryption is first turned on, a stream that plays
			// through here stays byte for byte the clear one: no "off"
			// signals. From then on every change is signalled.
			if !e.everOn {
				if sg, err := encryption.ParseSignal(q.Data); err != nil || !sg.Encrypted {
					continue
				}
				e.everOn = true
			}
			e.pending = q
			continue
		}
		if e.pending != nil && q.Kind != av.KindData && !q.Header {
			e.addSignal(sigEntry{next: q, sig: e.pending})
			e.pending = nil
		}
		e.flv.Write(q)
	}
	clear(*out)
}

func (e *Encrypted) addSignal(ent sigEntry) {
	var next []sigEntry
	if cur := e.sigs.Load(); cur != nil {
		next = append(next, (*cur)[max(0, len(*cur)-maxSignals+1):]...)
	}
	next = append(next, ent)
	e.sigs.Store(&next)
}

// signalFor returns the onEncryption packet that goes right before p, or
// nil. With join set (a player's first media packet) it returns the
// signal in effect at p: the last one at or before p's DTS.
func (e *Encrypted) signalFor(p *av.Packet, join bool) *av.Packet {
	cur := e.sigs.Load()
	if cur == nil {
		return nil
	}
	s := *cur
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].next == p {
			return s[i].sig
		}
	}
	if !join {
		return nil
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].sig.DTS <= p.DTS {
			return s[i].sig
		}
	}
	return s[0].sig
}

// ServesHLS reports whether HLS must be served by ServeHTTP: true when
// the hub has no MPEG-TS HLS output of its own for the stream (its HLS
// variant is fMP4 or off). Otherwise the hub's own HLS output (whose
// packager this Encrypted drives) serves the encrypted HLS.
func (e *Encrypted) ServesHLS() bool { return e.ownHLS }

// ServeHTTP serves the encrypted outputs: {name}.flv as HTTP-FLV, and
// index.m3u8 and seg<N>.ts as HLS when ServesHLS. Authorization is the
// caller's.
func (e *Encrypted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, ".flv") {
		e.serveFLV(w, r)
		return
	}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	e.hls.ServeHTTP(w, r)
}

// EncryptedReader is one player's reader of the encrypted stream (for
// HTTP-FLV and RTMP play): the encrypted packets, with the onEncryption
// packet in effect put back before the first media packet and before
// every sync point (keyframes; audio frames of audio-only streams), so a
// player joining or skipping ahead always knows the state. It implements
// ingest.PacketReader.
type EncryptedReader struct {
	e        *Encrypted
	r        *Reader
	buf      []*av.Packet
	last     *av.Packet
	started  bool
	hasVideo bool
}

// Subscribe returns a player's reader of the encrypted stream.
func (e *Encrypted) Subscribe() *EncryptedReader {
	return &EncryptedReader{e: e, r: e.flv.Subscribe(), buf: make([]*av.Packet, 0, 256)}
}

// ReadPackets waits for packets and appends them to dst, signals
// included; its errors are those of Reader.ReadPackets.
func (er *EncryptedReader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	var err error
	er.buf, err = er.r.ReadPackets(ctx, er.buf[:0])
	for _, p := range er.buf {
		if !er.started {
			er.started = true
			er.hasVideo, _, _ = er.e.flv.tracks()
		}
		if p.Kind != av.KindData && !p.Header && (er.last == nil || p.Key || p.Kind == av.KindAudio && !er.hasVideo) {
			if sig := er.e.signalFor(p, er.last == nil); sig != nil && sig != er.last {
				er.last = sig
				dst = append(dst, sig)
			}
		}
		dst = append(dst, p)
	}
	clear(er.buf)
	return dst, err
}

// Close detaches the reader.
func (er *EncryptedReader) Close() { er.r.Close() }

// serveFLV streams the encrypted packets as HTTP-FLV (EncryptedReader).
func (e *Encrypted) serveFLV(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Origin", "*")
	hdr.Set("Content-Type", "video/x-flv")
	hdr.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rd := e.Subscribe()
	if e.cfg.FLVCoalesce > 0 {
		rd.r.holdAudio(e.cfg.FLVCoalesce) // as for clear players
	}
	writeFLV(w, r, e.flv, rd, e.cfg.MaxLag, e.m, e.log.With("remote", r.RemoteAddr))
}
