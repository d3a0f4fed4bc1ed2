package origin

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// overflowWindow is the period over which Config.MaxOverflows is counted.
const overflowWindow = time.Minute

// Stream is one live stream: one writer, many readers. Write never blocks
// and costs no allocation per reader: each Reader has a bounded ring of
// packets. A reader whose ring is full is moved to skip: it gets nothing
// until the next video keyframe (the next audio frame for a stream without
// video), and one that is still behind after Config.MaxLag, or that
// overflows more than Config.MaxOverflows times a minute, is dropped.
//
// The stream keeps the last onMetaData, AVC and AAC sequence headers and
// the packets since the last keyframe (the GOP cache), so a new reader gets
// metadata, sequence headers and a keyframe at once.
type Stream struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics // nil when standalone
	created time.Time

	mu      sync.Mutex
	closed  bool
	readers []*Reader

	meta, avcHdr, aacHdr *av.Packet
	hdrGen               uint64 // changes when meta or a sequence header changes
	hasVideo, hasAudio   bool

	// videoGap is the time between video frames (a moving average of DTS
	// steps), for readers that hold frames (holdAudio).
	videoGap, lastVideoDTS time.Duration

	gop      []*av.Packet // packets since the last keyframe, while gopOn
	gopBytes int
	gopOn    bool

	internal int         // attached readers that are not players (packagers, recorder, transcoder, relays)
	players  [nRoles]int // attached players by protocol (index: role)
	dropped  int64

	// sig is the onEncryption signal in effect (nil: none), sigPend the
	// one that takes effect at the next media packet (encrypted outputs,
	// crypt.go). A reader gets the signal in effect before its first media
	// packet and again whenever it changed, in stream order: nothing
	// encrypted goes out before "encrypted" and nothing clear after it,
	// whenever the reader joined and whatever it held or skipped.
	sig, sigPend *av.Packet
	signals      bool // the stream carries signals (an encrypted output)

	groups    []*flvGroup // the HTTP-FLV group writers, one per core, made when first needed
	nextGroup int
	info      mediaInfo
	rate      rateWindow
}

// NewStream returns an empty stream. Zero fields of cfg take their
// defaults; log may be nil.
func NewStream(cfg Config, log *slog.Logger) *Stream {
	cfg, _ = cfg.withDefaults() // only the HLS fields can be invalid; Stream does not use them
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Stream{cfg: cfg, log: log, created: time.Now()}
}

// Write hands p to every reader. It never blocks on a reader. p must not be
// changed afterwards. Writes after Close are ignored.
func (s *Stream) Write(p *av.Packet) {
	if p == nil {
		return
	}
	now := time.Since(s.created)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if p.Kind == av.KindData && encryption.IsSignal(p.Data) {
		if s.signals {
			s.sigPend = p // in effect from the next media packet, which it precedes
		}
		// Elsewhere a publisher's onEncryption tag would mislead
		// players: it is dropped.
		s.mu.Unlock()
		return
	}
	if s.sigPend != nil && p.Kind != av.KindData && !p.Header {
		s.sig, s.sigPend = s.sigPend, nil
	}
	s.track(p, now)
	for i := 0; i < len(s.readers); {
		if s.deliver(s.readers[i], p, now) {
			i++
		}
	}
	s.mu.Unlock()
	if s.m != nil {
		s.m.packetsIn.Inc()
	}
}

// track updates the sequence headers, the GOP cache and the rates with p.
func (s *Stream) track(p *av.Packet, now time.Duration) {
	switch p.Kind {
	case av.KindData:
		if isOnMetaData(p.Data) {
			s.meta = p
			s.hdrGen++
		}
	case av.KindVideo:
		s.hasVideo = true
		if p.Header {
			s.avcHdr = p
			s.hdrGen++
			s.info.setVideo(p)
			return
		}
		s.rate.add(now, len(p.Data), 1)
		if g := p.DTS - s.lastVideoDTS; g > 0 && g <= time.Second {
			if s.videoGap == 0 {
				s.videoGap = g
			} else {
				s.videoGap += (g - s.videoGap) / 8
			}
		}
		s.lastVideoDTS = p.DTS
		if p.Key {
			s.resetGOP()
			s.gopOn = true
		}
		s.cache(p)
	case av.KindAudio:
		s.hasAudio = true
		if p.Header {
			s.aacHdr = p
			s.hdrGen++
			s.info.setAudio(p)
			return
		}
		s.rate.add(now, len(p.Data), 0)
		s.cache(p)
	}
}

func (s *Stream) cache(p *av.Packet) {
	if !s.gopOn {
		return
	}
	if len(s.gop)+1 > s.cfg.GOPCachePackets || s.gopBytes+len(p.Data) > s.cfg.GOPCacheBytes {
		// Too long a GOP: stop caching until the next keyframe; new
		// readers wait for that keyframe instead.
		s.resetGOP()
		s.gopOn = false
		return
	}
	s.gop = append(s.gop, p)
	s.gopBytes += len(p.Data)
}

func (s *Stream) resetGOP() {
	clear(s.gop)
	s.gop = s.gop[:0]
	s.gopBytes = 0
}

// resumable reports whether a skipping reader may start again at p.
func (s *Stream) resumable(p *av.Packet) bool {
	if p.Header {
		return false
	}
	switch p.Kind {
	case av.KindVideo:
		return p.Key
	case av.KindAudio:
		return !s.hasVideo
	}
	return false
}

// deliver queues p for r. It reports false when r was dropped (and so
// removed from s.readers). Called with s.mu held.
func (s *Stream) deliver(r *Reader, p *av.Packet, now time.Duration) bool {
	if r.skipping {
		if !s.resumable(p) {
			if !r.internal && now-r.behindSince > s.cfg.MaxLag && r.queued() > r.limit/2 {
				s.drop(r, "behind for longer than max_lag")
				return false
			}
			return true
		}
		if r.queued() > r.limit/2 {
			// Still behind at the keyframe: that counts as one more overflow.
			if !r.overflow(now, s.cfg.MaxOverflows) {
				return !s.giveUp(r, "too many queue overflows")
			}
			return true
		}
		r.skipping = false
		r.needKey = false
		if r.hdrGen != s.hdrGen {
			s.pushHeaders(r)
		}
	}
	if r.needKey && p.Kind == av.KindVideo && !p.Header {
		if !p.Key {
			return true
		}
		r.needKey = false
	}
	if r.sig != s.sig && p.Kind != av.KindData && !p.Header {
		// The state changes here (or the reader resumes or starts here):
		// the signal goes first, and wakes the reader with what it held.
		if !r.push(s.sig, false) {
			if !r.overflow(now, s.cfg.MaxOverflows) && s.giveUp(r, "too many queue overflows") {
				return false
			}
			r.skipping = true
			r.behindSince = now
			return true
		}
		r.sig = s.sig
	}
	hold := r.holds(p, now, s.hasVideo, s.videoGap)
	if !r.push(p, hold) {
		if !r.overflow(now, s.cfg.MaxOverflows) && s.giveUp(r, "too many queue overflows") {
			return false
		}
		r.skipping = true
		r.behindSince = now
		return true
	}
	if hold && !r.holding {
		r.holding, r.holdSince = true, now
	}
	if p.Header || p.Kind == av.KindData {
		r.hdrGen = s.hdrGen
	}
	return true
}

// pushHeaders queues the current metadata and sequence headers for r.
func (s *Stream) pushHeaders(r *Reader) {
	for _, h := range [...]*av.Packet{s.meta, s.avcHdr, s.aacHdr} {
		if h != nil {
			r.push(h, false)
		}
	}
	r.hdrGen = s.hdrGen
}

// giveUp drops r, unless it is internal (the HLS packager), which keeps
// skipping to keyframes instead: HLS must outlive a slow moment. It reports
// whether r was dropped. Called with s.mu held.
func (s *Stream) giveUp(r *Reader, reason string) bool {
	if r.internal {
		r.overflows = 0
		s.log.Warn("hls packager behind the stream: skipping to the next keyframe", "reason", reason)
		return false
	}
	s.drop(r, reason)
	return true
}

// drop disconnects r. Called with s.mu held.
func (s *Stream) drop(r *Reader, reason string) {
	r.state.CompareAndSwap(stateActive, stateDropped)
	r.signal()
	s.detach(r)
	s.dropped++
	if s.m != nil {
		s.m.dropped.Inc()
	}
	s.log.Warn("reader dropped", "reason", reason, "queued", r.queued())
}

// detach removes r from s.readers. Called with s.mu held.
func (s *Stream) detach(r *Reader) {
	i := r.idx
	if i < 0 {
		return
	}
	last := len(s.readers) - 1
	s.readers[i] = s.readers[last]
	s.readers[i].idx = i
	s.readers[last] = nil
	s.readers = s.readers[:last]
	r.idx = -1
	if r.role == roleInternal {
		s.internal--
	} else {
		s.players[r.role]--
	}
}

// Reader roles: what a reader is counted as.
const (
	roleInternal = iota // not a player: packager, recorder, transcoder, relay
	roleFLV             // HTTP-FLV player
	roleRTMP            // RTMP player
	nRoles
)

// roleNames are the protocol names of the player roles (Status.ReadersByProtocol).
var roleNames = [nRoles]string{roleFLV: ProtoFLV, roleRTMP: ProtoRTMP}

// Subscribe returns a new reader that is not a player (a recorder, a
// transcode worker, a relay): it is counted in Status.InternalReaders. Its
// queue starts with the metadata, the sequence headers and the cached GOP,
// so its first video frame is a keyframe. After Close, the reader's
// ReadPackets returns ErrEnded.
func (s *Stream) Subscribe() *Reader { return s.subscribe(false, roleInternal) }

// subscribe adds a reader counted as role. A packager (the HLS outputs,
// the encrypting reader) is never dropped: it skips to the next keyframe
// instead.
func (s *Stream) subscribe(packager bool, role int) *Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	burst := len(s.gop)
	for _, h := range [...]*av.Packet{s.meta, s.avcHdr, s.aacHdr} {
		if h != nil {
			burst++
		}
	}
	limit := s.cfg.ReaderQueue + burst
	if s.signals {
		limit++ // the signal in effect
	}
	// The ring starts large enough for the burst and a little more and
	// grows (up to limit) only for a reader that falls behind.
	size := ringMin
	for size < burst+ringMin/2 {
		size <<= 1
	}
	r := &Reader{
		s:        s,
		ring:     make([]*av.Packet, size),
		mask:     uint64(size - 1),
		limit:    uint64(limit),
		wake:     make(chan struct{}, 1),
		idx:      -1,
		internal: packager,
		role:     role,
		shrunk:   true, // not while the burst is queued
	}
	if s.closed {
		r.state.Store(stateEnded)
		return r
	}
	s.pushHeaders(r)
	if len(s.gop) > 0 && s.sig != nil {
		r.push(s.sig, false) // the cached GOP is in the state it announces
		r.sig = s.sig
	}
	for _, p := range s.gop {
		r.push(p, false)
	}
	r.shrunk = false // from now on, once the burst is taken (push)
	// Without a cached GOP the first video frame must wait for a keyframe.
	r.needKey = !s.gopOn
	r.idx = len(s.readers)
	s.readers = append(s.readers, r)
	if role == roleInternal {
		s.internal++
	} else {
		s.players[role]++
	}
	return r
}

// Close ends the stream: every reader gets what it has queued, then
// ErrEnded. Close is idempotent.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for len(s.readers) > 0 {
		r := s.readers[len(s.readers)-1]
		r.state.CompareAndSwap(stateActive, stateEnded)
		r.signal()
		s.detach(r)
	}
	s.resetGOP()
	s.gop = nil
}

// tracks reports whether the stream has carried video and audio so far.
func (s *Stream) tracks() (video, audio bool, info mediaInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hasVideo || s.avcHdr != nil, s.hasAudio || s.aacHdr != nil, s.info
}

// Status returns the stream's media and reader figures. The Hub adds the
// stream's name, publisher and start time.
func (s *Stream) Status() Status {
	now := time.Since(s.created)
	s.mu.Lock()
	defer s.mu.Unlock()
	fps, bps := s.rate.rates(now)
	st := Status{
		VideoCodec:      s.info.videoCodec,
		Width:           s.info.width,
		Height:          s.info.height,
		AudioCodec:      s.info.audioCodec,
		SampleRate:      s.info.sampleRate,
		Channels:        s.info.channels,
		FPS:             fps,
		Bitrate:         bps,
		InternalReaders: s.internal,
		DroppedReaders:  s.dropped,
	}
	s.addPlayers(&st)
	return st
}

// addPlayers adds the stream's attached players to st (s.mu held).
func (s *Stream) addPlayers(st *Status) {
	for role, n := range s.players {
		if role == roleInternal || n == 0 {
			continue
		}
		if st.ReadersByProtocol == nil {
			st.ReadersByProtocol = make(map[string]int, 3)
		}
		st.ReadersByProtocol[roleNames[role]] += n
		st.Readers += n
	}
}

// Reader states.
const (
	stateActive int32 = iota
	stateEnded        // the stream ended: drain the queue, then ErrEnded
	stateDropped
	stateClosed
)

// ringMin is the smallest ring of a reader, in packets: about a second of
// a 30 fps stream with its audio, far more than a reader that keeps up
// has queued.
const ringMin = 64

// Reader is one consumer of a Stream. ReadPackets must be called from one
// goroutine at a time; Close may be called from any goroutine.
//
// The queue is a single-producer single-consumer ring: the writer (under
// the stream's lock) fills slots and advances tail, the reader empties
// them and advances head. The ring starts small and the writer grows it,
// up to limit, when a reader falls behind; ringMu keeps the reader out of
// the ring while it is replaced (uncontended otherwise).
type Reader struct {
	s      *Stream
	ringMu sync.Mutex
	ring   []*av.Packet
	mask   uint64
	limit  uint64 // queued packets at which the reader overflows
	wake   chan struct{}
	state  atomic.Int32

	head atomic.Uint64 // next slot to read; written by the reader only
	_    [56]byte      // keep head and tail on separate cache lines
	tail atomic.Uint64 // next slot to fill; written by the writer only
	_    [56]byte

	// A caught-up HTTP-FLV or RTMP player is served by a group writer of
	// the stream (flv_group.go): grp is its group (nil: the reader's own
	// goroutine waits on wake), listed whether it is on the group's list,
	// step the group writer's turn with it.
	grp    atomic.Pointer[flvGroup]
	listed atomic.Bool
	step   func()

	// Writer side, guarded by s.mu.
	internal     bool       // a packager: skips instead of being dropped
	role         int        // what the reader counts as (roleInternal, roleFLV, ...)
	sig          *av.Packet // the last onEncryption signal queued
	idx          int        // position in s.readers, -1 when detached
	needKey      bool
	skipping     bool
	behindSince  time.Duration
	overflows    int
	overflowFrom time.Duration
	shrunk       bool // the ring was given back once (shrink)
	hdrGen       uint64
	// sigEnd is one past the last packet the reader was woken for: it
	// needs a wake-up for a new packet once it has taken that one.
	sigEnd uint64
	// holdMax > 0: audio packets (of a stream with video), and video
	// frames when holdMax allows, do not wake the reader; they go with the
	// next packet that does (holdAudio).
	holdMax   time.Duration
	holding   bool // packets are queued without a wake-up, since holdSince
	holdSince time.Duration
}

// holdAudio makes packets wait, without waking the reader, so that a
// player writes several at once (Config.FLVCoalesce): audio waits for the
// next video frame (or header, or metadata) or for at most max, so that a
// player writes each video frame and the audio before it at once (about a
// third of the wake-ups and writes of a 25 fps stream with 48 kHz AAC).
// When max is at least two frame intervals, video frames wait too, as long
// as the next frame is due before the oldest packet waiting is max old: a
// batch then holds several frames and no packet of a regular stream waits
// longer than max. Below that only audio waits: video is not delayed.
// Audio-only streams are not held.
func (r *Reader) holdAudio(max time.Duration) {
	r.s.mu.Lock()
	r.holdMax = max
	r.s.mu.Unlock()
}

// holds reports whether p is queued without waking the reader (holdAudio);
// gap is the stream's time between video frames. Called with s.mu held.
func (r *Reader) holds(p *av.Packet, now time.Duration, hasVideo bool, gap time.Duration) bool {
	if r.holdMax <= 0 || p.Header || !hasVideo {
		return false
	}
	var age time.Duration // of the oldest packet waiting
	if r.holding {
		age = now - r.holdSince
	}
	switch p.Kind {
	case av.KindAudio:
		return age < r.holdMax
	case av.KindVideo:
		return gap > 0 && 2*gap <= r.holdMax && age+gap <= r.holdMax
	}
	return false
}

// queued is the number of packets waiting for the reader.
func (r *Reader) queued() uint64 { return r.tail.Load() - r.head.Load() }

// push queues p, waking the reader unless hold; false when the queue is
// full. Called with s.mu held.
func (r *Reader) push(p *av.Packet, hold bool) bool {
	t := r.tail.Load()
	n := t - r.head.Load()
	if n >= r.limit {
		return false
	}
	if n >= uint64(len(r.ring)) {
		r.grow()
	} else if n == 0 && !r.shrunk && len(r.ring) > ringMin {
		r.shrink()
	}
	r.ring[t&r.mask] = p
	r.tail.Store(t + 1)
	if hold {
		return true
	}
	r.holding = false
	// Store tail before loading head: either the reader sees the new tail
	// (it has not yet taken the packet of the last wake-up, and takes
	// everything queued when it does), or we see that it took that packet
	// and wake it. Without held packets this is "the queue was empty".
	if r.head.Load() >= r.sigEnd {
		r.signal()
	}
	r.sigEnd = t + 1
	return true
}

// grow doubles the ring (to at least limit at most), keeping what is
// queued. Called by the writer, with s.mu held.
func (r *Reader) grow() {
	r.ringMu.Lock()
	defer r.ringMu.Unlock()
	h, t := r.head.Load(), r.tail.Load()
	size := 2 * len(r.ring)
	ring := make([]*av.Packet, size)
	mask := uint64(size - 1)
	for i := h; i != t; i++ {
		ring[i&mask] = r.ring[i&r.mask]
	}
	r.ring, r.mask = ring, mask
}

// shrink gives back the ring of a reader that has caught up (after its
// join burst, or after falling behind), once per reader so that one that
// keeps falling behind does not reallocate each time: 1000 players would
// otherwise each keep a ring sized for the cached GOP. Called by the
// writer, with s.mu held, when nothing is queued.
func (r *Reader) shrink() {
	r.ringMu.Lock()
	defer r.ringMu.Unlock()
	r.ring, r.mask = make([]*av.Packet, ringMin), ringMin-1
	r.shrunk = true
}

// overflow counts one overflow at now and reports whether the reader may
// stay.
func (r *Reader) overflow(now time.Duration, max int) bool {
	if r.overflows == 0 || now-r.overflowFrom > overflowWindow {
		r.overflows = 0
		r.overflowFrom = now
	}
	r.overflows++
	return r.overflows <= max
}

func (r *Reader) signal() {
	if g := r.grp.Load(); g != nil {
		if r.listed.CompareAndSwap(false, true) {
			g.enqueue(r)
		}
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take appends every queued packet to dst.
func (r *Reader) take(dst []*av.Packet) ([]*av.Packet, bool) {
	h := r.head.Load()
	t := r.tail.Load()
	if h == t {
		return dst, false
	}
	r.ringMu.Lock()
	defer r.ringMu.Unlock()
	for i := h; i != t; i++ {
		slot := &r.ring[i&r.mask]
		dst = append(dst, *slot)
		*slot = nil
	}
	r.head.Store(t)
	return dst, true
}

// ReadPackets waits until packets are queued and appends all of them to
// dst. It returns ErrEnded once a stream that ended has nothing more
// queued, ErrDropped when the reader fell too far behind, ErrReaderClosed
// after Close, or ctx's error.
func (r *Reader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	for {
		n := len(dst)
		var err error
		if dst, err = r.Poll(dst); err != nil || len(dst) > n {
			return dst, err
		}
		done := ctx.Done()
		if done == nil {
			<-r.wake // cheaper than a select, for readers that end by Close
			continue
		}
		select {
		case <-r.wake:
		case <-done:
			return dst, ctx.Err()
		}
	}
}

// Poll appends what is queued without waiting; its error is the one
// ReadPackets would return instead of waiting (nil while active).
func (r *Reader) Poll(dst []*av.Packet) ([]*av.Packet, error) {
	st := r.state.Load()
	switch st {
	case stateDropped:
		return dst, ErrDropped
	case stateClosed:
		return dst, ErrReaderClosed
	}
	dst, ok := r.take(dst)
	if !ok && st == stateEnded {
		return dst, ErrEnded
	}
	return dst, nil
}

// poll appends what is queued without waiting.
func (r *Reader) poll(dst []*av.Packet) []*av.Packet {
	if r.state.Load() == stateActive || r.state.Load() == stateEnded {
		dst, _ = r.take(dst)
	}
	return dst
}

// Close detaches the reader from its stream. It is idempotent.
func (r *Reader) Close() {
	for {
		st := r.state.Load()
		if st == stateClosed || r.state.CompareAndSwap(st, stateClosed) {
			break
		}
	}
	r.signal()
	r.s.mu.Lock()
	r.s.detach(r)
	r.s.mu.Unlock()
}

// isOnMetaData reports whether an AMF0 script body is onMetaData (possibly
// behind @setDataFrame): av.IsMetaDataBody.
func isOnMetaData(b []byte) bool { return av.IsMetaDataBody(b) }

// mediaInfo is what the sequence headers tell about the stream.
type mediaInfo struct {
	videoCodec    string
	width, height int
	audioCodec    string
	sampleRate    int
	channels      int
}

func (m *mediaInfo) setVideo(p *av.Packet) {
	m.videoCodec = p.Codec.String()
	m.width, m.height = 0, 0
	if p.Codec != av.CodecH264 {
		return
	}
	if c, err := av.ParseAVCConfig(p.Data); err == nil {
		m.width, m.height = c.Resolution()
	}
}

func (m *mediaInfo) setAudio(p *av.Packet) {
	m.audioCodec = p.Codec.String()
	m.sampleRate, m.channels = 0, 0
	if p.Codec != av.CodecAAC {
		return
	}
	if c, err := av.ParseAudioConfig(p.Data); err == nil {
		m.sampleRate, m.channels = c.SampleRate, c.ChannelCount
	}
}

// rateWindow counts bytes and video frames per second over the last five
// seconds, with fixed buckets: no allocation per packet.
type rateWindow struct {
	sec     [5]int64 // second number + 1 of each bucket (0: empty)
	bytes   [5]int64
	frames  [5]int64
	first   time.Duration
	started bool
}

func (w *rateWindow) add(now time.Duration, n, frames int) {
	if !w.started {
		w.started, w.first = true, now
	}
	s := int64(now / time.Second)
	i := s % 5
	if w.sec[i] != s+1 {
		w.sec[i], w.bytes[i], w.frames[i] = s+1, 0, 0
	}
	w.bytes[i] += int64(n)
	w.frames[i] += int64(frames)
}

// rates returns frames per second and bits per second over the window.
func (w *rateWindow) rates(now time.Duration) (fps float64, bps int64) {
	if !w.started {
		return 0, 0
	}
	cur := int64(now / time.Second)
	var b, f int64
	for i := range w.sec {
		if s := w.sec[i] - 1; w.sec[i] != 0 && s > cur-5 && s <= cur {
			b += w.bytes[i]
			f += w.frames[i]
		}
	}
	span := now - time.Duration(cur-4)*time.Second
	if d := now - w.first; d < span {
		span = d
	}
	if span < 100*time.Millisecond {
		span = 100 * time.Millisecond
	}
	sec := span.Seconds()
	return float64(f) / sec, int64(float64(b*8) / sec)
}
