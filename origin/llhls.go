package origin

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/livefuse/livefuse/av"
)

// llhls is livefuse's own low-latency HLS packager (fMP4 parts, blocking
// playlist reload, preload hints), made to be trusted by players and to
// agree across units:
//
//   - Everything is derived from the stream's timeline (the encoder's: the
//     switcher keeps the first feed's timestamps), never from when a unit
//     started: a segment is named s<T>.m4s and a part p<T>.m4s after the
//     decode time T (ms) of its first frame, and a segment's media sequence
//     number is its start time divided by the segment duration, rounded.
//     Two units fed the same encoder, or a unit restarted mid-stream, name
//     their files alike and (from the first segment both have whole) write
//     the same bytes.
//   - Segments start at keyframes: a keyframe starts one when its rounded
//     time/segment-duration index is past the current segment's. The
//     segment duration is the encoder's GOP (learned from the first two
//     keyframes) times the whole number of GOPs nearest
//     hls_segment_duration, so that index grows by one per segment.
//   - Parts hold whole frames: k frames, k the number of frames nearest
//     llhlsPartDuration at the learned frame rate, so every part but a
//     segment's last lasts the same and PART-TARGET never changes.
//   - Audio and video are muxed in the same fragments (one media playlist).
//     AAC frames are placed on their 1024-sample grid, so parts join with
//     neither gap nor overlap.
//   - A player moved from one unit to the other (an edge's failover) finds
//     the same names; a part a little ahead of this unit's hint is waited
//     for, not refused.
//
// Limits: a switch (to the backup feed or the slate, and back) rebases the
// unit's timeline (switcher), so names then follow that unit's output
// timeline and may differ from the other unit's until the stream starts
// again. The media sequence number stays the same on a unit restarted
// mid-stream while the GOP is a whole number of 10 ms (for a 29.97 fps
// 1001 ms GOP it may be one off after about 8 minutes; names are not).
//
// Packets are written by one goroutine (writePacket); playlists and files
// are served concurrently (ServeHTTP).
type llhls struct {
	cfg llhlsConfig
	log *slog.Logger

	mu         sync.Mutex
	segs       []*llSeg // finished, oldest first; at most cfg.Keep
	cur        *llSeg   // being built; nil before the first keyframe
	hint       string   // name of the next part (EXT-X-PRELOAD-HINT)
	discSeq    uint64   // EXT-X-DISCONTINUITY-SEQUENCE of segs[0]
	partTarget time.Duration
	targetS    int
	inits      map[string][]byte // init segments by name, of cur and segs
	ctype      string            // Content-Type of segments and parts
	ended      bool
	changed    chan struct{} // closed and renewed at every new part and at the end

	// Writer state, owned by the writePacket goroutine.
	avc, asc  []byte
	sps, pps  []byte
	audioConf mpeg4audio.AudioSpecificConfig
	audioOK   bool
	decided   bool // the tracks are known (video, or audio only)
	video     bool
	audioN    int
	init      []byte
	initName  string
	newInit   bool // the next segment starts with a new init (and a discontinuity)

	learnKey    time.Duration // first keyframe seen while learning
	learnFrames int
	learning    bool
	segDur      time.Duration // learned segment duration
	frameDur    time.Duration // learned frame (or AAC frame) duration
	partDur     time.Duration // whole frames near llhlsPartDuration

	curIdx    int64 // rounded start/segDur of cur
	partStart time.Duration
	pendV     *av.Packet // last video frame, waiting for its duration
	vSamples  []*fmp4.Sample
	vBase     int64
	indep     bool
	aQueue    []*av.Packet
	errs      tshlsLimiter
	buf       seekablebuffer.Buffer
	noteJumps int
}

// llFileRe matches the files of the low-latency HLS output (llhls).
var llFileRe = regexp.MustCompile(`^(index\.m3u8|init[0-9a-f]{8}\.mp4|[sp][0-9]{1,20}\.m4s)$`)

// llhlsConfig configures an llhls packager.
type llhlsConfig struct {
	// SegmentDuration is the wanted segment duration; segments are a whole
	// number of the encoder's GOPs near it.
	SegmentDuration time.Duration
	// SegmentCount is the number of segments in the playlist.
	SegmentCount int
	// Keep is the number of finished segments kept (at least
	// SegmentCount; default SegmentCount+3).
	Keep int
	// PartDuration is the wanted part duration (default llhlsPartDuration).
	PartDuration time.Duration
	// PlaylistWait bounds how long a playlist request waits for the first
	// segment (default 10 s).
	PlaylistWait time.Duration
	Logger       *slog.Logger
}

// llhlsPartDuration is the default wanted part duration: parts hold the
// whole number of frames nearest it (6 at 30 fps, 5 at 25 fps).
const llhlsPartDuration = 200 * time.Millisecond

// llhlsMaxBlock bounds how long a blocking playlist request is held.
const llhlsMaxBlock = 3500 * time.Millisecond

// llhlsMinTarget is the least EXT-X-TARGETDURATION (seconds).
const llhlsMinTarget = 2

// llhlsTimeOffset is added to every timestamp, so that times stay positive
// when composition offsets or rebasing make them start slightly negative.
const llhlsTimeOffset = 10 * time.Second

// llhlsMaxLearn bounds the wait for the second keyframe: a stream whose
// GOP is longer is cut with SegmentDuration and the frame rate seen.
const llhlsMaxLearn = 12 * time.Second

// llhlsMaxAudioQueue bounds the audio frames waiting for the video frame
// that closes their part (about 10 s at 48 kHz).
const llhlsMaxAudioQueue = 500

type llSeg struct {
	msn      uint64
	name     string
	initName string
	disc     bool
	start    time.Duration // decode time of its first frame (with llhlsTimeOffset)
	dur      time.Duration
	parts    []*llPart
	data     []byte // the whole segment once finished
	done     bool
}

type llPart struct {
	name  string
	data  []byte
	dur   time.Duration
	indep bool
}

func newLLHLS(cfg llhlsConfig) *llhls {
	if cfg.SegmentDuration <= 0 {
		cfg.SegmentDuration = time.Second
	}
	if cfg.SegmentCount <= 0 {
		cfg.SegmentCount = 7
	}
	if cfg.Keep < cfg.SegmentCount {
		cfg.Keep = cfg.SegmentCount + 3
	}
	if cfg.PartDuration <= 0 {
		cfg.PartDuration = llhlsPartDuration
	}
	if cfg.PlaylistWait <= 0 {
		cfg.PlaylistWait = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &llhls{cfg: cfg, log: log, changed: make(chan struct{}), inits: make(map[string][]byte)}
}

// writePacket packages p. Malformed packets are dropped (and logged, rate
// limited); they never stop the packager.
func (l *llhls) writePacket(p *av.Packet) {
	if p == nil {
		return
	}
	video, audio := p.Kind == av.KindVideo, p.Kind == av.KindAudio
	switch {
	case p.Header && video:
		l.setAVC(p.Data)
	case p.Header && audio:
		l.setASC(p.Data)
	case p.Header:
	case video && p.Codec == av.CodecH264:
		l.writeVideo(p)
	case audio && p.Codec == av.CodecAAC:
		l.writeAudio(p)
	}
}

func (l *llhls) setAVC(b []byte) {
	if bytes.Equal(b, l.avc) {
		return
	}
	sps, pps, err := avcParamSets(b, true)
	if err != nil {
		l.errs.log(l.log, "ll-hls: unusable AVC sequence header", err)
		return
	}
	l.avc = bytes.Clone(b)
	l.sps, l.pps = bytes.Clone(sps), bytes.Clone(pps)
	l.codecsChanged()
}

func (l *llhls) setASC(b []byte) {
	if bytes.Equal(b, l.asc) {
		return
	}
	var conf mpeg4audio.AudioSpecificConfig
	if err := conf.Unmarshal(b); err != nil || conf.SampleRate <= 0 {
		l.errs.log(l.log, "ll-hls: unusable AudioSpecificConfig", err)
		return
	}
	l.asc, l.audioConf, l.audioOK = bytes.Clone(b), conf, true
	l.codecsChanged()
}

// codecsChanged ends the segment being built (new codec parameters start
// a new segment, with a new init, at the next keyframe).
func (l *llhls) codecsChanged() {
	if l.init == nil {
		return
	}
	l.finish()
	l.init, l.initName = nil, ""
}

// makeInit builds the init segment of the known tracks.
func (l *llhls) makeInit() bool {
	var in fmp4.Init
	if l.video {
		in.Tracks = append(in.Tracks, &fmp4.InitTrack{ID: 1, TimeScale: 90000,
			Codec: &codecs.H264{SPS: l.sps, PPS: l.pps}})
	}
	if l.audioOK {
		in.Tracks = append(in.Tracks, &fmp4.InitTrack{ID: 2, TimeScale: uint32(l.audioConf.SampleRate),
			Codec: &codecs.MPEG4Audio{Config: l.audioConf}})
	}
	if len(in.Tracks) == 0 {
		return false
	}
	var w seekablebuffer.Buffer
	if err := in.Marshal(&w); err != nil {
		l.errs.log(l.log, "ll-hls: init segment", err)
		return false
	}
	l.init = bytes.Clone(w.Bytes())
	l.initName = fmt.Sprintf("init%08x.mp4", crc32.ChecksumIEEE(l.init))
	l.newInit = true
	l.mu.Lock()
	l.inits[l.initName] = l.init
	if l.video {
		l.ctype = "video/mp4"
	} else {
		l.ctype = "audio/mp4"
	}
	l.mu.Unlock()
	return true
}

func (l *llhls) writeVideo(p *av.Packet) {
	if l.sps == nil {
		return
	}
	if _, err := av.SplitAVCC(p.Data); err != nil || len(p.Data) == 0 {
		l.errs.log(l.log, "ll-hls: bad video packet", err)
		return
	}
	l.decided, l.video = true, true
	if l.segDur == 0 {
		l.learn(p)
		if l.segDur == 0 {
			return
		}
	}
	if l.init == nil {
		if !p.Key || !l.makeInit() {
			return
		}
	}
	t := p.DTS + llhlsTimeOffset
	if t < 0 {
		return
	}
	if l.pendV == nil {
		// First frame of a segment after a start or a codec change.
		l.openSegment(t, l.index(t))
		l.pendV = p
		return
	}
	prev := l.pendV.DTS + llhlsTimeOffset
	dur := toClock(t, 90000) - toClock(prev, 90000)
	if dur <= 0 {
		l.errs.log(l.log, "ll-hls: video time went back; frame dropped", fmt.Errorf("dts %v after %v", p.DTS, l.pendV.DTS))
		return
	}
	l.addVideo(l.pendV, dur)
	l.pendV = p
	switch idx := l.index(t); {
	case p.Key && idx > l.curIdx:
		l.closePart(t)
		l.closeSegment()
		l.openSegment(t, idx)
	case t-l.partStart >= l.partDur-l.frameDur/2:
		l.closePart(t)
	}
}

// learn waits for two keyframes and derives the frame, part and segment
// durations from the GOP between them.
func (l *llhls) learn(p *av.Packet) {
	if !l.learning {
		if p.Key {
			l.learning, l.learnKey, l.learnFrames = true, p.DTS, 1
		}
		return
	}
	g := p.DTS - l.learnKey
	switch {
	case g < 0:
		l.learning = false
		return
	case !p.Key && g < llhlsMaxLearn:
		l.learnFrames++
		return
	case g == 0:
		return
	}
	l.frameDur = g / time.Duration(l.learnFrames)
	gop := g
	if !p.Key {
		gop = 0 // no second keyframe: segments of about SegmentDuration
	}
	l.setDurations(gop)
	l.learning = false
}

// setDurations fixes the part and segment durations from the frame
// duration and the GOP (0 when unknown).
func (l *llhls) setDurations(gop time.Duration) {
	k := max(1, int((l.cfg.PartDuration+l.frameDur/2)/l.frameDur))
	l.partDur = time.Duration(k) * l.frameDur
	l.segDur = l.cfg.SegmentDuration
	if gop > 0 {
		// Snap to 10 ms so that both units (and a restarted one) agree
		// despite millisecond rounding of the timestamps.
		gop = max(10*time.Millisecond, (gop+5*time.Millisecond)/(10*time.Millisecond)*(10*time.Millisecond))
		n := max(1, int((l.cfg.SegmentDuration+gop/2)/gop))
		l.segDur = time.Duration(n) * gop
	}
	// PART-TARGET covers a part of k frames whose millisecond timestamps
	// are rounded either way; every such part is over 85% of it.
	pt := (l.partDur + time.Millisecond - 1).Truncate(time.Millisecond) + 2*time.Millisecond
	l.mu.Lock()
	l.partTarget = pt
	// At least 2 s: hls.js gives a blocking reload max(3 part targets,
	// 0.8 target durations) before it calls it a timeout; 1.6 s rides out
	// a publisher or a machine that is late by a few parts.
	l.targetS = max(llhlsMinTarget, int((l.segDur+time.Second-1)/time.Second))
	l.mu.Unlock()
	l.log.Debug("ll-hls durations", "frame", l.frameDur, "part", l.partDur, "part_target", pt, "segment", l.segDur)
}

// index is t's segment index on the timeline.
func (l *llhls) index(t time.Duration) int64 {
	return int64((t + l.segDur/2) / l.segDur)
}

func (l *llhls) writeAudio(p *av.Packet) {
	if !l.audioOK || len(p.Data) == 0 {
		return
	}
	if !l.decided {
		if l.sps != nil {
			return
		}
		if l.audioN++; l.audioN < tshlsAudioOnlyAfter {
			return
		}
		l.decided, l.video = true, false
	}
	t := p.DTS + llhlsTimeOffset
	if t < 0 {
		return
	}
	if l.video {
		if l.cur == nil || l.pendV == nil {
			return
		}
		if t < l.cur.start && len(l.cur.parts) == 0 && len(l.vSamples) == 0 {
			return // before the first video frame of the stream
		}
		if len(l.aQueue) >= llhlsMaxAudioQueue {
			l.errs.log(l.log, "ll-hls: audio without video; dropped", nil)
			return
		}
		l.aQueue = append(l.aQueue, p)
		return
	}
	// Audio only: audio leads.
	if l.segDur == 0 {
		l.frameDur = mpeg4audio.SamplesPerAccessUnit * time.Second / time.Duration(l.audioConf.SampleRate)
		l.setDurations(0)
	}
	if l.init == nil && !l.makeInit() {
		return
	}
	switch idx := l.index(t); {
	case l.cur == nil:
		l.openSegment(t, idx)
	case idx > l.curIdx:
		l.closePart(t)
		l.closeSegment()
		l.openSegment(t, idx)
	case t-l.partStart >= l.partDur-l.frameDur/2:
		l.closePart(t)
	}
	l.aQueue = append(l.aQueue, p)
}

func (l *llhls) addVideo(p *av.Packet, dur int64) {
	if len(l.vSamples) == 0 {
		l.vBase = toClock(p.DTS+llhlsTimeOffset, 90000)
		l.indep = p.Key
	}
	cts := toClock(p.PTS()+llhlsTimeOffset, 90000) - toClock(p.DTS+llhlsTimeOffset, 90000)
	l.vSamples = append(l.vSamples, &fmp4.Sample{
		Duration:        uint32(dur),
		PTSOffset:       int32(cts),
		IsNonSyncSample: !p.Key,
		Payload:         p.Data,
	})
}

// openSegment starts a segment (and its first part) at t.
func (l *llhls) openSegment(t time.Duration, idx int64) {
	msn := uint64(max(0, idx))
	l.mu.Lock()
	if l.cur != nil {
		msn = l.cur.msn + 1
	} else if n := len(l.segs); n > 0 {
		msn = l.segs[n-1].msn + 1
	}
	if int64(msn) != idx {
		l.noteJumps++
		if l.noteJumps <= 3 {
			l.log.Debug("ll-hls segment index off the timeline (GOP changed or media gap)", "msn", msn, "index", idx)
		}
	}
	l.cur = &llSeg{msn: msn, name: "s" + strconv.FormatInt(t.Milliseconds(), 10) + ".m4s",
		initName: l.initName, disc: l.newInit && len(l.segs) > 0, start: t}
	l.hint = llPartName(t)
	l.mu.Unlock()
	l.newInit = false
	l.curIdx = idx
	l.partStart = t
}

func llPartName(t time.Duration) string {
	return "p" + strconv.FormatInt(t.Milliseconds(), 10) + ".m4s"
}

// closePart ends the part being built at end (the time of the next frame)
// and publishes it.
func (l *llhls) closePart(end time.Duration) {
	if l.cur == nil {
		return
	}
	part := fmp4.Part{SequenceNumber: uint32(l.partStart.Milliseconds())}
	if len(l.vSamples) > 0 {
		part.Tracks = append(part.Tracks, &fmp4.PartTrack{ID: 1, BaseTime: uint64(l.vBase), Samples: l.vSamples})
	}
	indep := l.indep || !l.video
	if at := l.audioTrack(end); at != nil {
		part.Tracks = append(part.Tracks, at)
	}
	l.vSamples = nil
	var pt *llPart
	if len(part.Tracks) > 0 {
		l.buf.Reset()
		if err := part.Marshal(&l.buf); err != nil {
			l.errs.log(l.log, "ll-hls: writing a part", err)
		} else {
			pt = &llPart{name: llPartName(l.partStart), data: bytes.Clone(l.buf.Bytes()), dur: end - l.partStart, indep: indep}
		}
	}
	l.mu.Lock()
	if pt != nil {
		l.cur.parts = append(l.cur.parts, pt)
	}
	l.hint = llPartName(end)
	l.notifyLocked()
	l.mu.Unlock()
	l.partStart = end
}

// audioTrack takes the queued AAC frames before end (all of them for an
// audio-only stream) as the part's audio track, on the 1024-sample grid.
func (l *llhls) audioTrack(end time.Duration) *fmp4.PartTrack {
	n := 0
	for n < len(l.aQueue) && (!l.video || l.aQueue[n].DTS+llhlsTimeOffset < end) {
		n++
	}
	if n == 0 {
		return nil
	}
	sr := l.audioConf.SampleRate
	const spf = mpeg4audio.SamplesPerAccessUnit
	grid := func(p *av.Packet) int64 {
		c := toClock(p.DTS+llhlsTimeOffset, sr)
		return (c + spf/2) / spf * spf
	}
	tr := &fmp4.PartTrack{ID: 2, BaseTime: uint64(grid(l.aQueue[0]))}
	for i := 0; i < n; i++ {
		d := int64(spf)
		if i+1 < n {
			if g := grid(l.aQueue[i+1]) - grid(l.aQueue[i]); g > 0 && g <= 10*spf {
				d = g
			}
		}
		tr.Samples = append(tr.Samples, &fmp4.Sample{Duration: uint32(d), Payload: l.aQueue[i].Data})
	}
	clear(l.aQueue[:n])
	l.aQueue = append(l.aQueue[:0], l.aQueue[n:]...)
	return tr
}

// closeSegment finishes the segment being built (its parts are closed).
func (l *llhls) closeSegment() {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.cur
	if s == nil {
		return
	}
	l.cur = nil
	if len(s.parts) == 0 {
		return
	}
	n := 0
	for _, p := range s.parts {
		n += len(p.data)
		s.dur += p.dur
	}
	s.data = make([]byte, 0, n)
	for _, p := range s.parts {
		off := len(s.data)
		s.data = append(s.data, p.data...)
		p.data = s.data[off:len(s.data):len(s.data)]
	}
	s.done = true
	if d := int((s.dur + time.Second/2) / time.Second); d > l.targetS {
		l.log.Warn("ll-hls segment longer than the target duration (the encoder's GOP changed?)", "duration", s.dur, "target_s", l.targetS)
		l.targetS = d
	}
	l.segs = append(l.segs, s)
	if len(l.segs) > l.cfg.Keep {
		if l.segs[1].disc {
			l.discSeq++
		}
		gone := l.segs[0].initName
		l.segs[0] = nil
		l.segs = l.segs[1:]
		if gone != l.segs[0].initName && gone != l.initName {
			delete(l.inits, gone)
		}
	}
	l.notifyLocked()
}

// finish closes the part and segment being built (at a codec change or the
// end of the stream); the last frame is given the learned frame duration.
func (l *llhls) finish() {
	if l.pendV != nil {
		end := l.pendV.DTS + llhlsTimeOffset + l.frameDur
		l.addVideo(l.pendV, max(1, toClock(l.frameDur, 90000)))
		l.pendV = nil
		l.closePart(end)
	} else if !l.video && l.cur != nil {
		end := l.partStart
		if n := len(l.aQueue); n > 0 {
			end = l.aQueue[n-1].DTS + llhlsTimeOffset + l.frameDur
		}
		l.closePart(end)
	}
	l.closeSegment()
	clear(l.aQueue)
	l.aQueue = l.aQueue[:0]
	l.vSamples = nil
	l.mu.Lock()
	l.hint = ""
	l.mu.Unlock()
}

func (l *llhls) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// close finishes the last segment and wakes every waiting request.
func (l *llhls) close() {
	l.finish()
	l.mu.Lock()
	l.ended = true
	l.notifyLocked()
	l.mu.Unlock()
}

// ServeHTTP answers the playlist (blocking reload with _HLS_msn and
// _HLS_part), the init segment, segments and parts (a request for the
// hinted next part waits for it).
func (l *llhls) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := path.Base(r.URL.Path)
	switch {
	case name == "index.m3u8":
		l.servePlaylist(w, r)
	case strings.HasPrefix(name, "init") && strings.HasSuffix(name, ".mp4"):
		l.mu.Lock()
		data := l.inits[name]
		l.mu.Unlock()
		l.serveMedia(w, r, data)
	case llNameOK(name, "s"):
		l.serveMedia(w, r, l.segment(name))
	case llNameOK(name, "p"):
		l.serveMedia(w, r, l.part(r, name))
	default:
		http.NotFound(w, r)
	}
}

// llNameOK reports whether name is prefix<digits>.m4s.
func llNameOK(name, prefix string) bool {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".m4s") {
		return false
	}
	d := name[len(prefix) : len(name)-4]
	if d == "" || len(d) > 20 {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (l *llhls) serveMedia(w http.ResponseWriter, r *http.Request, data []byte) {
	if data == nil {
		http.NotFound(w, r)
		return
	}
	l.mu.Lock()
	ctype := l.ctype
	l.mu.Unlock()
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("Cache-Control", "max-age=3600")
	hd.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

func (l *llhls) segment(name string) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if s.name == name {
			return s.data
		}
	}
	return nil
}

// part returns the part called name. A part not written yet, from the
// hinted next part up to llhlsAheadWait later on the timeline, is waited
// for (until it is written, the packager passes its time without it, the
// stream ends, or 3 part targets and a second pass): a player moved here
// from a unit a little ahead (an edge's failover) asks for parts this
// unit is about to write, under the same names.
func (l *llhls) part(r *http.Request, name string) []byte {
	want, err := strconv.ParseInt(name[1:len(name)-4], 10, 64)
	if err != nil {
		return nil
	}
	var timer *time.Timer
	for {
		l.mu.Lock()
		data, hint, ended, ch, pt := l.findPartLocked(name), l.hint, l.ended, l.changed, l.partTarget
		l.mu.Unlock()
		if data != nil || ended || hint == "" {
			return data
		}
		next, _ := strconv.ParseInt(hint[1:len(hint)-4], 10, 64)
		if want < next || want > next+llhlsAheadWait.Milliseconds() {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(3*pt + time.Second)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return nil
		case <-timer.C:
			return nil
		}
	}
}

// llhlsAheadWait is how far past the hinted next part a part request is
// waited for rather than answered 404.
const llhlsAheadWait = time.Second

func (l *llhls) findPartLocked(name string) []byte {
	if l.cur != nil {
		for _, p := range l.cur.parts {
			if p.name == name {
				return p.data
			}
		}
	}
	for i := len(l.segs) - 1; i >= 0; i-- {
		for _, p := range l.segs[i].parts {
			if p.name == name {
				return p.data
			}
		}
	}
	return nil
}

// blockingParams parses _HLS_msn and _HLS_part; ok is false for a bad
// request.
func blockingParams(r *http.Request) (msn, part int64, hasMSN, hasPart, ok bool) {
	q := r.URL.Query()
	if v := q.Get("_HLS_msn"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return 0, 0, false, false, false
		}
		msn, hasMSN = int64(n), true
	}
	if v := q.Get("_HLS_part"); v != "" {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil || !hasMSN {
			return 0, 0, false, false, false
		}
		part, hasPart = int64(n), true
	}
	return msn, part, hasMSN, hasPart, true
}

func (l *llhls) servePlaylist(w http.ResponseWriter, r *http.Request) {
	msn, part, hasMSN, hasPart, ok := blockingParams(r)
	if !ok {
		http.Error(w, "bad _HLS_msn or _HLS_part", http.StatusBadRequest)
		return
	}
	wait := l.cfg.PlaylistWait
	if hasMSN {
		l.mu.Lock()
		ts := l.targetS
		l.mu.Unlock()
		// Three target durations (the spec's bound), and within the 4 s an
		// edge gives a playlist request (deploy/nginx).
		wait = min(3*time.Duration(max(1, ts))*time.Second, llhlsMaxBlock)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		l.mu.Lock()
		ready, ended, ch := len(l.segs) > 0, l.ended, l.changed
		bad := false
		if ready && hasMSN {
			last := int64(l.segs[len(l.segs)-1].msn)
			if l.cur != nil {
				last = int64(l.cur.msn)
			}
			bad = msn > last+2
			ready = l.hasLocked(msn, part, hasPart)
		}
		var body []byte
		if ready && !bad {
			body = l.playlistLocked(llQuery(r.URL.RawQuery))
		}
		l.mu.Unlock()
		switch {
		case bad:
			http.Error(w, "_HLS_msn too far ahead", http.StatusBadRequest)
			return
		case body != nil:
			hd := w.Header()
			hd.Set("Content-Type", "application/vnd.apple.mpegurl")
			if hasMSN {
				// A blocking answer holds what was asked for whenever it
				// is given: an edge may share it among players.
				hd.Set("Cache-Control", "max-age=1")
			} else {
				hd.Set("Cache-Control", "no-cache")
			}
			hd.Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				_, _ = w.Write(body)
			}
			return
		case ended:
			http.NotFound(w, r)
			return
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		case <-timer.C:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "stream has no such HLS segment or part yet", http.StatusServiceUnavailable)
			return
		}
	}
}

// hasLocked reports whether the playlist holds segment msn whole (no
// part asked) or its part.
func (l *llhls) hasLocked(msn, part int64, hasPart bool) bool {
	for {
		if !hasPart {
			return len(l.segs) > 0 && int64(l.segs[len(l.segs)-1].msn) >= msn
		}
		if l.cur != nil && int64(l.cur.msn) == msn {
			return int64(len(l.cur.parts)) > part
		}
		if l.cur != nil && int64(l.cur.msn) < msn {
			return false
		}
		if l.cur == nil && (len(l.segs) == 0 || int64(l.segs[len(l.segs)-1].msn) < msn) {
			return false
		}
		// Segment msn is finished: a part index past its last is part 0
		// of the next segment.
		var s *llSeg
		for _, x := range l.segs {
			if int64(x.msn) == msn {
				s = x
			}
		}
		if s == nil || part < int64(len(s.parts)) {
			return true
		}
		msn, part = msn+1, 0
	}
}

// llQuery is the playlist request's query without the _HLS_ directives,
// passed on to the URIs it lists (the play token).
func llQuery(raw string) string {
	if raw == "" {
		return ""
	}
	var b strings.Builder
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" || strings.HasPrefix(kv, "_HLS_") {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv)
	}
	if b.Len() == 0 {
		return ""
	}
	return "?" + b.String()
}

// llPartsShown is how many finished segments list their parts.
const llPartsShown = 2

func (l *llhls) playlistLocked(q string) []byte {
	segs := l.segs
	if len(segs) > l.cfg.SegmentCount {
		segs = segs[len(segs)-l.cfg.SegmentCount:]
	}
	disc := l.discSeq
	for _, s := range l.segs[:len(l.segs)-len(segs)] {
		if s.disc {
			disc++
		}
	}
	var b strings.Builder
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 5, 64) }
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:%d\n", l.targetS)
	fmt.Fprintf(&b, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=%s\n", secs(3*l.partTarget))
	fmt.Fprintf(&b, "#EXT-X-PART-INF:PART-TARGET=%s\n", secs(l.partTarget))
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n", segs[0].msn)
	if disc > 0 {
		fmt.Fprintf(&b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", disc)
	}
	mapName := ""
	writeSeg := func(s *llSeg, i int) {
		if s.initName != mapName {
			if mapName != "" && s.disc {
				b.WriteString("#EXT-X-DISCONTINUITY\n")
			}
			mapName = s.initName
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"%s%s\"\n", s.initName, q)
		}
		if i >= 0 && len(segs)-i > llPartsShown && s.done {
			return
		}
		for _, p := range s.parts {
			fmt.Fprintf(&b, "#EXT-X-PART:DURATION=%s,URI=\"%s%s\"", secs(p.dur), p.name, q)
			if p.indep {
				b.WriteString(",INDEPENDENT=YES")
			}
			b.WriteByte('\n')
		}
	}
	for i, s := range segs {
		writeSeg(s, i)
		fmt.Fprintf(&b, "#EXTINF:%s,\n%s%s\n", secs(s.dur), s.name, q)
	}
	if l.cur != nil {
		writeSeg(l.cur, -1)
	}
	if l.hint != "" {
		fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"%s%s\"\n", l.hint, q)
	}
	return []byte(b.String())
}
