package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/livefuse/livefuse/av"
)

// hlsAudioOnlyAfter is how many audio frames the packager waits for a video
// track before it starts an audio-only muxer.
const hlsAudioOnlyAfter = 10

// hlsOutput packages one stream as HLS: the fmp4 variant with a gohlslib
// Muxer, the lowlatency variant with llhls (livefuse's own, whose names
// and parts follow the encoder's timeline). It is a reader of the Stream
// from publish on, so the first playlist request already finds segments.
// The gohlslib muxer is created once the sequence headers are known (at
// the first keyframe) and made anew when they change.
type hlsOutput struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	stream  *Stream
	reader  *Reader
	variant gohlslib.MuxerVariant
	ll      *llhls        // the lowlatency packager; nil for fmp4
	done    chan struct{} // closed when the stream ended and the muxer is closed

	mu      sync.Mutex
	mux     *gohlslib.Muxer
	ready   bool          // mux likely has the segments a playlist needs
	readyCh chan struct{} // closed when ready is set or mux is replaced

	// Packager state, owned by run's goroutine.
	avc, asc   []byte // current sequence headers (raw)
	sps, pps   []byte
	audioConf  mpeg4audio.AudioSpecificConfig
	audioOK    bool
	videoTrack *gohlslib.Track
	audioTrack *gohlslib.Track
	audioWait  int
	au         [][]byte
	aus        [1][]byte
	seg        segmentClock
	errs       errorLimiter
	panics     int // recovered muxer panics
}

func newHLSOutput(cfg Config, log *slog.Logger, m *metrics, s *Stream) *hlsOutput {
	o := &hlsOutput{
		cfg:     cfg,
		log:     log,
		m:       m,
		stream:  s,
		reader:  s.subscribe(true, roleInternal),
		done:    make(chan struct{}),
		readyCh: make(chan struct{}),
	}
	switch cfg.HLSVariant {
	case HLSFMP4:
		o.variant = gohlslib.MuxerVariantFMP4
	case HLSLowLatency:
		o.variant = gohlslib.MuxerVariantLowLatency
		o.ll = newLLHLS(llhlsConfig{SegmentDuration: cfg.HLSSegmentDuration,
			SegmentCount: cfg.HLSSegmentCount, Logger: log})
	default:
		o.variant = gohlslib.MuxerVariantMPEGTS
	}
	return o
}

// run feeds the muxer until the stream ends, then closes it (which flushes
// the last segment).
func (o *hlsOutput) run() {
	defer close(o.done)
	if o.ll != nil {
		defer o.ll.close()
	} else {
		defer o.stopMuxer()
	}
	defer o.reader.Close()
	pkts := make([]*av.Packet, 0, 64)
	for {
		var err error
		pkts, err = o.reader.ReadPackets(context.Background(), pkts[:0])
		for _, p := range pkts {
			if o.ll != nil {
				o.writeLL(p)
			} else {
				o.write(p)
			}
		}
		clear(pkts)
		if err != nil {
			if errors.Is(err, ErrDropped) {
				o.log.Error("hls packager fell behind the stream and stopped")
			}
			return
		}
	}
}

// write hands one packet to the muxer. Bad media must cost only this
// stream's HLS output, never the process: a panic in the muxer stops the
// muxer, which is made anew at the next keyframe.
func (o *hlsOutput) write(p *av.Packet) {
	defer func() {
		if r := recover(); r != nil {
			o.panics++
			o.log.Error("hls muxer failed on bad media; restarting it", "panic", fmt.Sprint(r))
			o.stopMuxer()
		}
	}()
	switch {
	case p.Kind == av.KindVideo && p.Header:
		o.setAVC(p.Data)
	case p.Kind == av.KindAudio && p.Header:
		o.setASC(p.Data)
	case p.Kind == av.KindVideo:
		o.writeVideo(p)
	case p.Kind == av.KindAudio:
		o.writeAudio(p)
	}
}

// writeLL hands one packet to the low-latency packager; a panic on bad
// media costs the packet, never the process.
func (o *hlsOutput) writeLL(p *av.Packet) {
	defer func() {
		if r := recover(); r != nil {
			o.panics++
			o.log.Error("ll-hls packager failed on bad media; packet dropped", "panic", fmt.Sprint(r))
		}
	}()
	o.ll.writePacket(p)
}

func (o *hlsOutput) setAVC(b []byte) {
	if bytes.Equal(b, o.avc) {
		return
	}
	o.stopMuxer()
	o.avc, o.sps, o.pps = bytes.Clone(b), nil, nil
	sps, pps, err := avcParamSets(b, true)
	if err != nil {
		o.log.Warn("hls: unusable AVC sequence header", "err", err)
		return
	}
	o.sps, o.pps = sps, pps
}

func (o *hlsOutput) setASC(b []byte) {
	if bytes.Equal(b, o.asc) {
		return
	}
	o.stopMuxer()
	o.asc, o.audioOK = bytes.Clone(b), false
	if err := o.audioConf.Unmarshal(b); err != nil || o.audioConf.SampleRate <= 0 {
		o.log.Warn("hls: unusable AudioSpecificConfig", "err", err)
		return
	}
	o.audioOK = true
}

func (o *hlsOutput) writeVideo(p *av.Packet) {
	if o.sps == nil {
		return
	}
	if o.mux == nil {
		if !p.Key || !o.startMuxer() {
			return
		}
	}
	if o.videoTrack == nil {
		return // audio-only muxer
	}
	nalus, err := av.SplitAVCC(p.Data)
	if err != nil {
		o.errs.log(o.log, "hls: bad video packet", err)
		return
	}
	o.au = o.au[:0]
	i := 0
	if len(nalus) > 0 && len(nalus[0]) > 0 && h264.NALUType(nalus[0][0]&0x1f) == h264.NALUTypeAccessUnitDelimiter {
		o.au = append(o.au, nalus[0])
		i = 1
	}
	if p.Key && !hasSPS(nalus) {
		o.au = append(o.au, o.sps, o.pps)
	}
	for _, n := range nalus[i:] {
		if len(n) > 0 {
			o.au = append(o.au, n)
		}
	}
	if len(o.au) == 0 {
		return
	}
	err = o.mux.WriteH264(o.videoTrack, time.Now(), toClock(p.PTS(), 90000), o.au)
	clear(o.au)
	if err != nil {
		o.errs.log(o.log, "hls: writing video", err)
		return
	}
	if p.Key {
		o.tick(p.DTS, true)
	}
}

func (o *hlsOutput) writeAudio(p *av.Packet) {
	if !o.audioOK || len(p.Data) == 0 {
		return
	}
	if o.mux == nil {
		// Audio-only: start once a while has passed without video.
		if o.sps != nil {
			return
		}
		if hasVideo, _, _ := o.stream.tracks(); hasVideo {
			return
		}
		if o.audioWait++; o.audioWait < hlsAudioOnlyAfter || !o.startMuxer() {
			return
		}
	}
	if o.audioTrack == nil {
		return
	}
	o.aus[0] = p.Data
	err := o.mux.WriteMPEG4Audio(o.audioTrack, time.Now(), toClock(p.PTS(), o.audioConf.SampleRate), o.aus[:])
	o.aus[0] = nil
	if err != nil {
		o.errs.log(o.log, "hls: writing audio", err)
		return
	}
	if o.videoTrack == nil {
		o.tick(p.DTS, false)
	}
}

// startMuxer makes a muxer for the known tracks.
func (o *hlsOutput) startMuxer() bool {
	var tracks []*gohlslib.Track
	o.videoTrack, o.audioTrack = nil, nil
	if o.sps != nil {
		o.videoTrack = &gohlslib.Track{Codec: &codecs.H264{SPS: o.sps, PPS: o.pps}, ClockRate: 90000}
		tracks = append(tracks, o.videoTrack)
	}
	if o.audioOK {
		o.audioTrack = &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: o.audioConf}, ClockRate: o.audioConf.SampleRate}
		tracks = append(tracks, o.audioTrack)
	}
	if len(tracks) == 0 {
		return false
	}
	mux := &gohlslib.Muxer{
		Tracks:             tracks,
		Variant:            o.variant,
		SegmentCount:       o.cfg.HLSSegmentCount,
		SegmentMinDuration: o.cfg.HLSSegmentDuration,
		OnEncodeError: func(err error) {
			o.errs.log(o.log, "hls muxer", err)
		},
	}
	if err := mux.Start(); err != nil {
		o.log.Error("hls: starting muxer", "err", err)
		o.videoTrack, o.audioTrack = nil, nil
		return false
	}
	o.seg = segmentClock{}
	o.mu.Lock()
	o.mux = mux
	o.mu.Unlock()
	o.log.Debug("hls muxer started", "video", o.videoTrack != nil, "audio", o.audioTrack != nil)
	return true
}

// stopMuxer closes the muxer (flushing its last segment) and wakes
// playlist requests that wait for it.
func (o *hlsOutput) stopMuxer() {
	o.mu.Lock()
	mux := o.mux
	o.mux, o.ready = nil, false
	close(o.readyCh)
	o.readyCh = make(chan struct{})
	o.mu.Unlock()
	o.audioWait = 0
	if mux != nil {
		mux.Close()
	}
}

// tick follows the muxer's segmentation (a new segment at the first
// keyframe, or for audio-only streams after 100 frames, past the minimum
// duration), so playlist requests can wait until the muxer has a segment
// instead of blocking inside it.
func (o *hlsOutput) tick(dts time.Duration, key bool) {
	c := &o.seg
	c.frames++
	switch {
	case !c.started:
		c.started, c.start, c.frames = true, dts, 0
		return
	case dts-c.start < o.cfg.HLSSegmentDuration:
		return
	case !key && c.frames < 100:
		return
	}
	c.start, c.frames = dts, 0
	c.segments++
	need := 1
	if o.variant == gohlslib.MuxerVariantFMP4 {
		need = 2 // the fMP4 variant publishes its playlist after two segments
	}
	if c.segments == need {
		o.mu.Lock()
		o.ready = true
		close(o.readyCh)
		o.readyCh = make(chan struct{})
		o.mu.Unlock()
	}
}

// segmentClock counts the segments the muxer has closed.
type segmentClock struct {
	started  bool
	start    time.Duration
	frames   int
	segments int
}

// waitReady waits until the muxer has a playlist to give, up to timeout.
func (o *hlsOutput) waitReady(ctx context.Context, timeout time.Duration) (*gohlslib.Muxer, error) {
	var timer <-chan time.Time
	for {
		o.mu.Lock()
		mux, ready, ch := o.mux, o.ready, o.readyCh
		o.mu.Unlock()
		if mux != nil && ready {
			return mux, nil
		}
		if timer == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ch:
		case <-o.done:
			return nil, ErrEnded
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer:
			return nil, errNoSegments
		}
	}
}

var errNoSegments = errors.New("no HLS segments yet")

// refuseHLS answers 501 (and reports true) when app/name is to be
// encrypted and this hub cannot encrypt its HLS: only the mpegts variant
// does (SAMPLE-AES), and only with a key source. Such a stream is never
// served clear.
func (h *Hub) refuseHLS(w http.ResponseWriter, app, name string) bool {
	if !h.encrypted(app, name) {
		return false
	}
	var reason string
	switch {
	case h.cfg.HLSVariant != HLSMPEGTS:
		reason = "stream is encrypted and hls_variant " + h.cfg.HLSVariant + " cannot be: HLS encryption needs hls_variant mpegts (play HTTP-FLV)"
	case h.cfg.Encryption.NewKey == nil:
		reason = "stream is encrypted and this node has no key source"
	default:
		return false
	}
	http.Error(w, reason, http.StatusNotImplemented)
	return true
}

// serveHLS answers a playlist, segment, part or init file of app/name.
func (h *Hub) serveHLS(w http.ResponseWriter, r *http.Request, rt route) {
	if h.refuseHLS(w, rt.app, rt.name) {
		return
	}
	if t := h.tsOut(rt.app, rt.name); t != nil {
		if !tsFileRe.MatchString(rt.file) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h.serveTS(w, r, t)
		return
	}
	o, err := h.hls(rt.app, rt.name)
	if err != nil {
		notLive(w, err)
		return
	}
	if o.ll != nil {
		tw := &trackingWriter{ResponseWriter: w}
		o.ll.ServeHTTP(tw, r)
		h.m.hlsBytes.Add(float64(tw.n))
		return
	}
	var mux *gohlslib.Muxer
	if strings.HasSuffix(rt.file, ".m3u8") {
		timeout := 10*time.Second + 3*h.cfg.HLSSegmentDuration
		mux, err = o.waitReady(r.Context(), timeout)
		switch {
		case errors.Is(err, errNoSegments):
			w.Header().Set("Retry-After", "1")
			http.Error(w, "stream has no HLS segments yet", http.StatusServiceUnavailable)
			return
		case err != nil:
			if !notLive(w, err) {
				http.Error(w, "stream not live", http.StatusNotFound)
			}
			return
		}
	} else {
		o.mu.Lock()
		mux = o.mux
		o.mu.Unlock()
		if mux == nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
	}
	tw := &trackingWriter{ResponseWriter: w}
	mux.Handle(tw, r)
	if !tw.wrote {
		// gohlslib answers an empty 200 for names it does not have.
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	h.m.hlsBytes.Add(float64(tw.n))
}

// trackingWriter records whether a handler answered and how much it sent.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
	n     int64
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	n, err := t.ResponseWriter.Write(b)
	t.n += int64(n)
	return n, err
}

// ReadFrom passes a file on to the response writer's own ReadFrom, so a
// segment on disk goes out with sendfile through the wrapper.
func (t *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	t.wrote = true
	var n int64
	var err error
	if rf, ok := t.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{t.ResponseWriter}, r)
	}
	t.n += n
	return n, err
}

func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// toClock converts d to units of a clockRate Hz clock without overflow.
func toClock(d time.Duration, clockRate int) int64 {
	secs, rem := int64(d/time.Second), int64(d%time.Second)
	return secs*int64(clockRate) + rem*int64(clockRate)/int64(time.Second)
}

func hasSPS(nalus [][]byte) bool {
	for _, n := range nalus {
		if len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
			return true
		}
	}
	return false
}

// errorLimiter logs an error at most once per 10 s, with the number of
// errors left out in between.
type errorLimiter struct {
	mu     sync.Mutex
	last   time.Time
	missed int
}

func (l *errorLimiter) log(log *slog.Logger, msg string, err error) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < 10*time.Second {
		l.missed++
		l.mu.Unlock()
		return
	}
	missed := l.missed
	l.last, l.missed = now, 0
	l.mu.Unlock()
	log.Warn(msg, "err", err, "suppressed", missed)
}
