package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// tshls is livefuse's own HLS MPEG-TS packager. Unlike gohlslib it can
// mark discontinuities (a switch to a feed with other codec parameters)
// and encrypt with SAMPLE-AES, switching encryption on and off and
// rotating keys at segment boundaries, with #EXT-X-KEY in the playlist.
//
// Packets are written by one goroutine (writePacket); the playlist and the
// segments are served concurrently (ServeHTTP). Segments are cut at the
// first keyframe after the target duration (for audio-only streams, at the
// first audio frame after it) and named seg<N>.ts after their media
// sequence number, so two units fed the same stream name them alike.
type tshls struct {
	cfg tshlsConfig
	log *slog.Logger

	mu       sync.Mutex
	segs     []*tshlsSegment // finished, oldest first; at most cfg.Keep
	discSeq  uint64          // EXT-X-DISCONTINUITY-SEQUENCE of segs[0]
	nextSeq  uint64          // media sequence of the segment being built
	targetS  int             // EXT-X-TARGETDURATION, never lowered
	ended    bool
	changed  chan struct{} // closed and renewed when a segment is finished or the packager ends
	pendDisc bool
	pendOn   bool

	// Writer state, owned by the writePacket goroutine.
	ts       tsWriter
	cur      *tshlsSegment
	curDTS   time.Duration // DTS of cur's first packet
	lastLen  int           // bytes of the last segment finished
	lastDTS  time.Duration
	avc      []byte // AVC sequence header as received
	sps, pps []byte
	asc      []byte
	audio    *av.AudioConfig
	video    bool // the packager carries a video track
	started  bool
	audioN   int // audio frames seen before a decision on the tracks
	key      *encryption.Key
	keySegs  int // segments made with key
	keyFail  bool
	pmtVer   byte
	pmtEnc   bool // the last PMT written announced SAMPLE-AES
	annexB   []byte
	errs     tshlsLimiter
	dropped  int

	spool *tsSpool // nil: finished segments stay in memory
}

// tshlsConfig configures a tshls packager.
type tshlsConfig struct {
	// Stream is "app/name", for logs and key paths.
	Stream string
	// SegmentDuration is the target (minimum) segment duration.
	SegmentDuration time.Duration
	// SegmentCount is the number of segments in the playlist.
	SegmentCount int
	// Keep is the number of segments kept for players still fetching
	// older ones; at least SegmentCount (default SegmentCount+3).
	Keep int
	// Encrypted is the initial state of SAMPLE-AES encryption.
	Encrypted bool
	// NewKey makes (and stores, so the key service can deliver it) a new
	// content key. Nil means encryption is unavailable.
	NewKey func(ctx context.Context) (*encryption.Key, error)
	// RotateSegments is the number of segments per key; 0 keeps one key
	// for the whole session (also across off and on).
	RotateSegments int
	// KeyURI is the URI of a key in the playlist; the playlist request's
	// query (the play token) is appended. Nil means encryption.KeyPath.
	KeyURI func(k *encryption.Key) string
	// PlaylistWait bounds how long a playlist request waits for the first
	// segment (default 10 s).
	PlaylistWait time.Duration
	Logger       *slog.Logger
	// Now is the wall clock for PROGRAM-DATE-TIME (default time.Now).
	Now func() time.Time
	// Dir, when set, is where finished segments go (in a directory of
	// the packager's own, named DirPrefix and a random suffix); only the
	// segment being built stays in memory. The packager's close removes
	// them. "" keeps every segment in memory.
	Dir       string
	DirPrefix string
}

// tshlsSegment is one finished (or building) segment.
type tshlsSegment struct {
	seq   uint64
	data  []byte // nil once spooled to file
	file  string // set (and data let go) by the spool, under tshls.mu
	size  int
	dur   time.Duration
	start time.Time // PROGRAM-DATE-TIME
	disc  bool      // preceded by #EXT-X-DISCONTINUITY
	key   *encryption.Key
	uri   string // key URI when key != nil
}

// tshlsAudioOnlyAfter is how many audio frames the packager waits for a
// video sequence header before it packages audio only.
const tshlsAudioOnlyAfter = 10

// tshlsTimeOffset is added to every timestamp so that PTS stays positive
// when composition offsets or rebasing make DTS start slightly negative.
const tshlsTimeOffset = time.Second

func newTSHLS(cfg tshlsConfig) *tshls {
	if cfg.SegmentDuration <= 0 {
		cfg.SegmentDuration = time.Second
	}
	if cfg.SegmentCount <= 0 {
		cfg.SegmentCount = 7
	}
	if cfg.Keep < cfg.SegmentCount {
		cfg.Keep = cfg.SegmentCount + 3
	}
	if cfg.PlaylistWait <= 0 {
		cfg.PlaylistWait = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeyURI == nil {
		cfg.KeyURI = func(k *encryption.Key) string { return encryption.KeyPath(cfg.Stream, k.ID) }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &tshls{
		cfg:     cfg,
		log:     log,
		changed: make(chan struct{}),
		pendOn:  cfg.Encrypted,
		targetS: max(1, int((cfg.SegmentDuration+time.Second-1)/time.Second)),
	}
	if cfg.Dir != "" {
		h.spool = newTSSpool(h, cfg.Dir, cfg.DirPrefix)
	}
	return h
}

// markDiscontinuity makes the next segment start at the next keyframe
// with #EXT-X-DISCONTINUITY before it: call it when the stream goes on
// from another source (a feed switch with new codec parameters or a
// timestamp jump). A change of sequence header marks one by itself.
func (h *tshls) markDiscontinuity() {
	h.mu.Lock()
	h.pendDisc = true
	h.mu.Unlock()
}

// setEncrypted turns SAMPLE-AES on or off from the next keyframe on, where
// a new segment starts.
func (h *tshls) setEncrypted(on bool) {
	h.mu.Lock()
	h.pendOn = on
	h.mu.Unlock()
}

// writePacket packages p. Malformed packets are dropped (and logged, rate
// limited); they never stop the packager.
func (h *tshls) writePacket(p *av.Packet) {
	if p == nil {
		return
	}
	switch {
	case p.Kind == av.KindVideo && p.Header:
		h.setAVC(p.Data)
	case p.Kind == av.KindAudio && p.Header:
		h.setASC(p.Data)
	case p.Kind == av.KindVideo && p.Codec == av.CodecH264:
		h.writeVideo(p)
	case p.Kind == av.KindAudio && p.Codec == av.CodecAAC:
		h.writeAudio(p)
	}
}

func (h *tshls) setAVC(b []byte) {
	if bytes.Equal(b, h.avc) {
		return
	}
	sps, pps, err := avcParamSets(b, false)
	if err != nil {
		h.errs.log(h.log, "hls: unusable AVC sequence header", err)
		return
	}
	if h.avc != nil {
		h.markDiscontinuity()
	}
	h.avc = bytes.Clone(b)
	h.sps, h.pps = bytes.Clone(sps), bytes.Clone(pps)
}

// avcParamSets returns the first SPS and PPS of an AVC sequence header
// (the packagers' one reading of it); with parseSPS the SPS must also
// parse, as the fMP4 packagers put it in their init segment.
func avcParamSets(b []byte, parseSPS bool) (sps, pps []byte, err error) {
	c, err := av.ParseAVCConfig(b)
	if err != nil {
		return nil, nil, err
	}
	if len(c.SPS) == 0 || len(c.PPS) == 0 {
		return nil, nil, errors.New("no SPS or no PPS")
	}
	if parseSPS {
		var s h264.SPS
		if err := s.Unmarshal(c.SPS[0]); err != nil {
			return nil, nil, fmt.Errorf("SPS: %w", err)
		}
	}
	return c.SPS[0], c.PPS[0], nil
}

func (h *tshls) setASC(b []byte) {
	if bytes.Equal(b, h.asc) {
		return
	}
	c, err := av.ParseAudioConfig(b)
	if err != nil {
		h.errs.log(h.log, "hls: unusable AudioSpecificConfig", err)
		return
	}
	if len(av.AppendADTS(nil, c, make([]byte, 1))) == 0 {
		h.errs.log(h.log, "hls: AAC config ADTS cannot carry", errors.New("unsupported AAC config"))
		return
	}
	if h.asc != nil {
		h.markDiscontinuity()
	}
	h.asc, h.audio = bytes.Clone(b), c
}

func (h *tshls) writeVideo(p *av.Packet) {
	if h.sps == nil {
		return
	}
	if !h.started {
		if !p.Key {
			return
		}
		h.started, h.video = true, true
	}
	if !h.video {
		return // audio-only packager; a late video track is ignored
	}
	if p.Key {
		h.boundary(p.DTS)
	}
	if h.cur == nil {
		return
	}
	nalus, err := av.SplitAVCC(p.Data)
	if err != nil {
		h.errs.log(h.log, "hls: bad video packet", err)
		h.dropped++
		return
	}
	au := h.annexB[:0]
	au = append(au, 0, 0, 0, 1, 9, 0xf0) // access unit delimiter
	if p.Key && !tshlsHasSPS(nalus) {
		au = append(au, 0, 0, 0, 1)
		au = append(au, h.sps...)
		au = append(au, 0, 0, 0, 1)
		au = append(au, h.pps...)
	}
	for _, n := range nalus {
		if len(n) == 0 || n[0]&0x1f == 9 {
			continue
		}
		au = append(au, 0, 0, 0, 1)
		if h.cur.key != nil {
			au, err = encryption.EncryptNALU(au, n, h.cur.key)
			if err != nil { // EncryptNALU fails only without a key
				h.errs.log(h.log, "hls: encrypt video", err)
				return
			}
		} else {
			au = append(au, n...)
		}
	}
	h.annexB = au
	dts := tshlsClock(p.DTS + tshlsTimeOffset)
	pts := tshlsClock(p.PTS() + tshlsTimeOffset)
	h.ts.writePES(tsPIDVideo, tsStreamVideo, pts, dts, dts-tshlsClock(100*time.Millisecond), p.Key, au)
	h.lastDTS = p.DTS
}

func (h *tshls) writeAudio(p *av.Packet) {
	if h.audio == nil || len(p.Data) == 0 {
		return
	}
	if !h.started {
		if h.sps != nil {
			return // wait for the first keyframe
		}
		if h.audioN++; h.audioN < tshlsAudioOnlyAfter {
			return
		}
		h.started = true
	}
	if !h.video {
		h.boundary(p.DTS)
	}
	if h.cur == nil {
		return
	}
	if len(p.Data) > 8191-7 {
		h.errs.log(h.log, "hls: AAC frame too large for ADTS", fmt.Errorf("%d bytes", len(p.Data)))
		h.dropped++
		return
	}
	frame := av.AppendADTS(h.annexB[:0], h.audio, p.Data)
	if h.cur.key != nil {
		payload := frame[7:]
		if _, err := encryption.EncryptAAC(payload[:0], payload, h.cur.key); err != nil {
			h.errs.log(h.log, "hls: encrypt audio", err)
			return
		}
	}
	h.annexB = frame
	pts := tshlsClock(p.PTS() + tshlsTimeOffset)
	pcr := int64(-1)
	if !h.video {
		pcr = pts
	}
	h.ts.writePES(tsPIDAudio, tsStreamAudio, pts, -1, pcr, !h.video, frame)
	h.lastDTS = p.DTS
}

// boundary is called at every point a segment may start (keyframes; audio
// frames of audio-only streams). It finishes the segment and starts the
// next one when the target duration is reached or a change is pending.
func (h *tshls) boundary(dts time.Duration) {
	h.mu.Lock()
	disc, on := h.pendDisc, h.pendOn
	h.mu.Unlock()
	if h.cur != nil {
		curOn := h.cur.key != nil
		if dts-h.curDTS < h.cfg.SegmentDuration && !disc && curOn == on {
			return
		}
		h.finish(dts)
	}
	h.start(dts, disc, on)
}

// start begins a segment: it picks its key and writes PAT and PMT.
func (h *tshls) start(dts time.Duration, disc, on bool) {
	seg := &tshlsSegment{start: h.cfg.Now(), disc: disc}
	if on {
		seg.key = h.segmentKey()
		if seg.key != nil {
			seg.uri = h.cfg.KeyURI(seg.key)
		}
	}
	h.mu.Lock()
	seg.seq = h.nextSeq
	if disc {
		h.pendDisc = false
	}
	h.cur = seg
	h.mu.Unlock()
	h.curDTS = dts
	// Room for a segment like the last one, so it is not regrown (and
	// copied) several times while it is built.
	h.ts.buf = make([]byte, 0, max(256<<10, h.lastLen+h.lastLen/8))
	enc := seg.key != nil
	if enc != h.pmtEnc {
		h.pmtVer = (h.pmtVer + 1) & 0x1f
		h.pmtEnc = enc
	}
	if err := h.writeTables(enc); err != nil {
		// Only a PMT too large for one packet can fail; with one video
		// and one AAC stream it cannot.
		h.errs.log(h.log, "hls: PMT", err)
	}
}

// segmentKey returns the key of a new encrypted segment, making a new one
// at the start and every RotateSegments segments. Without a key the
// segment goes out clear (and that is logged).
func (h *tshls) segmentKey() *encryption.Key {
	h.mu.Lock()
	newKey, rotate := h.cfg.NewKey, h.cfg.RotateSegments
	h.mu.Unlock()
	if newKey == nil {
		if !h.keyFail {
			h.log.Warn("hls: encryption asked but no key source; segments stay clear")
			h.keyFail = true
		}
		return nil
	}
	if h.key == nil || (rotate > 0 && h.keySegs >= rotate) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		k, err := newKey(ctx)
		cancel()
		if err != nil || k == nil {
			if !h.keyFail {
				h.log.Error("hls: new content key failed; segments stay clear", "err", err)
			}
			h.keyFail = true
			return nil
		}
		h.keyFail = false
		if h.key != nil {
			h.log.Info("hls: content key rotated", "key_id", k.ID)
		}
		h.key, h.keySegs = k, 0
	}
	h.keySegs++
	return h.key
}

func (h *tshls) writeTables(enc bool) error {
	var streams []encryption.PMTStream
	pcrPID := uint16(tsPIDAudio)
	if h.video {
		pcrPID = tsPIDVideo
		if enc {
			streams = append(streams, encryption.H264SampleAESStream(tsPIDVideo))
		} else {
			streams = append(streams, encryption.PMTStream{Type: encryption.StreamTypeH264, PID: tsPIDVideo})
		}
	}
	if h.audio != nil {
		if enc {
			s, err := encryption.AACSampleAESStream(tsPIDAudio, h.asc)
			if err != nil {
				return err
			}
			streams = append(streams, s)
		} else {
			streams = append(streams, encryption.PMTStream{Type: encryption.StreamTypeAAC, PID: tsPIDAudio})
		}
	}
	return h.ts.writeTables(h.pmtVer, pcrPID, streams)
}

// finish closes the segment being built at end (the DTS of the next
// segment's first packet) and publishes it.
func (h *tshls) finish(end time.Duration) {
	seg := h.cur
	seg.data = h.ts.buf
	seg.size = len(seg.data)
	h.lastLen = seg.size
	seg.dur = max(end-h.curDTS, time.Millisecond)
	h.ts.buf = nil
	h.mu.Lock()
	h.cur = nil
	h.nextSeq = seg.seq + 1
	h.segs = append(h.segs, seg)
	for len(h.segs) > h.cfg.Keep {
		if h.segs[1].disc {
			h.discSeq++
		}
		h.segs[0] = nil
		h.segs = h.segs[1:]
	}
	if s := int((seg.dur + time.Second/2) / time.Second); s > h.targetS {
		h.targetS = s // RFC 8216: rounded duration ≤ target
	}
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	if h.spool != nil {
		h.spool.offer()
	}
}

// keeps reports whether segment seq is still kept. h.mu is held.
func (h *tshls) keeps(seq uint64) bool {
	return len(h.segs) > 0 && seq >= h.segs[0].seq && seq <= h.segs[len(h.segs)-1].seq
}

// close finishes the last segment and ends the playlist (#EXT-X-ENDLIST).
func (h *tshls) close() {
	if h.cur != nil {
		h.finish(h.lastDTS + 40*time.Millisecond)
	}
	h.mu.Lock()
	if !h.ended {
		h.ended = true
		close(h.changed)
		h.changed = make(chan struct{})
	}
	h.mu.Unlock()
	if h.spool != nil {
		h.spool.close()
		h.spool = nil
	}
}

// ServeHTTP serves index.m3u8 and seg<N>.ts, chosen by the last element of
// the request path, so the packager can be mounted under any prefix.
// Unknown names get 404. A playlist request before the first segment
// waits for it up to PlaylistWait, then gets 503.
func (h *tshls) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := path.Base(r.URL.Path)
	switch {
	case name == "index.m3u8":
		h.servePlaylist(w, r)
	case strings.HasPrefix(name, "seg") && strings.HasSuffix(name, ".ts"):
		seq, err := strconv.ParseUint(name[3:len(name)-3], 10, 64)
		if err != nil || name[3] == '+' {
			http.NotFound(w, r)
			return
		}
		data, file, size, ok := h.segment(seq)
		switch {
		case !ok:
			http.NotFound(w, r)
		case file != "":
			serveSegmentFile(w, r, file, size, h.log)
		default:
			setSegmentHeaders(w, size)
			if r.Method != http.MethodHead {
				_, _ = w.Write(data)
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// segment returns segment seq: its bytes when in memory, else its file.
func (h *tshls) segment(seq uint64) (data []byte, file string, size int, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.keeps(seq) {
		return nil, "", 0, false
	}
	s := h.segs[seq-h.segs[0].seq]
	return s.data, s.file, s.size, true
}

func (h *tshls) servePlaylist(w http.ResponseWriter, r *http.Request) {
	timer := time.NewTimer(h.cfg.PlaylistWait)
	defer timer.Stop()
	for {
		h.mu.Lock()
		n, ended, ch := len(h.segs), h.ended, h.changed
		h.mu.Unlock()
		if n > 0 {
			break
		}
		if ended {
			http.NotFound(w, r)
			return
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		case <-timer.C:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "stream has no HLS segments yet", http.StatusServiceUnavailable)
			return
		}
	}
	body := h.playlist(r.URL.RawQuery)
	hd := w.Header()
	hd.Set("Content-Type", "application/vnd.apple.mpegurl")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// playlist renders the media playlist of the last SegmentCount segments.
// query (the play token) is appended to segment and key URIs, since
// players do not pass the playlist's query on by themselves.
func (h *tshls) playlist(query string) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	segs := h.segs
	discSeq := h.discSeq
	if n := len(segs) - h.cfg.SegmentCount; n > 0 {
		for _, s := range segs[1 : n+1] {
			if s.disc {
				discSeq++
			}
		}
		segs = segs[n:]
	}
	q := ""
	if query != "" {
		q = "?" + query
	}
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:5\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n", h.targetS)
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n", segs[0].seq)
	if discSeq > 0 {
		fmt.Fprintf(&b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", discSeq)
	}
	var prev *encryption.Key
	for i, s := range segs {
		if s.disc && i > 0 {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		if s.key != prev && (s.key != nil || i > 0) {
			if s.key == nil {
				b.WriteString("#EXT-X-KEY:METHOD=NONE\n")
			} else {
				sep := "?"
				if strings.Contains(s.uri, "?") {
					sep = "&"
				}
				uri := s.uri
				if query != "" {
					uri += sep + query
				}
				fmt.Fprintf(&b, "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=%q,IV=%s,KEYFORMAT=\"identity\",KEYFORMATVERSIONS=\"1\"\n", uri, s.key.IVHex())
			}
			prev = s.key
		}
		fmt.Fprintf(&b, "#EXT-X-PROGRAM-DATE-TIME:%s\n", s.start.UTC().Format("2006-01-02T15:04:05.000Z"))
		fmt.Fprintf(&b, "#EXTINF:%.3f,\nseg%d.ts%s\n", s.dur.Seconds(), s.seq, q)
	}
	if h.ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return b.Bytes()
}

// tshlsClock converts d to 90 kHz units.
func tshlsClock(d time.Duration) int64 {
	secs, rem := int64(d/time.Second), int64(d%time.Second)
	return secs*90000 + rem*90000/int64(time.Second)
}

func tshlsHasSPS(nalus [][]byte) bool {
	for _, n := range nalus {
		if len(n) > 0 && n[0]&0x1f == 7 {
			return true
		}
	}
	return false
}

// tshlsLimiter logs an error at most once per 10 s, with the number of
// errors left out in between.
type tshlsLimiter struct {
	last   time.Time
	missed int
}

func (l *tshlsLimiter) log(log *slog.Logger, msg string, err error) {
	now := time.Now()
	if now.Sub(l.last) < 10*time.Second {
		l.missed++
		return
	}
	missed := l.missed
	l.last, l.missed = now, 0
	log.Warn(msg, "err", err, "suppressed", missed)
}
