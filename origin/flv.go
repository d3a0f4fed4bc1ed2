package origin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/livefuse/livefuse/av"
)

// flvMetricBytes is how many bytes a player sends before it adds them to
// the bytes-out counter (and once more when it ends): a shared counter
// per write costs more than the write's bookkeeping.
const flvMetricBytes = 1 << 20

// flvBatchPackets is the room a player's batch starts with: a frame and
// its audio, several at a long flv_coalesce. A GOP burst's is let go.
const flvBatchPackets = 16

// serveFLV streams app/name as HTTP-FLV: the FLV header, onMetaData (the
// publisher's or one built here), the sequence headers, the cached GOP,
// then live packets.
//
// On HTTP/1.x the handler takes the connection over (the response has no
// length and ends with the connection, "Connection: close") and writes
// everything a reader has queued with one writev: tag headers from a small
// per-player buffer, payloads straight from the shared packets, so no
// player copies the stream. Elsewhere (HTTP/2, a ResponseWriter that cannot
// be hijacked) the batch is encoded into one buffer and written through
// the ResponseWriter with chunked encoding.
func (h *Hub) serveFLV(w http.ResponseWriter, r *http.Request, rt route) {
	s, c, err := h.playStream(rt.app, rt.name)
	if err != nil {
		if !notLive(w, err) {
			http.Error(w, err.Error(), http.StatusNotImplemented)
		}
		return
	}
	log := h.log.With("stream", streamKey(rt.app, rt.name), "remote", r.RemoteAddr)
	if c != nil {
		c.serveFLV(w, r, h.cfg, h.m, log)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "video/x-flv")
	hdr.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rd := s.subscribe(false, roleFLV)
	if h.cfg.FLVCoalesce > 0 {
		// Audio waits for the next video frame (at most flv_coalesce):
		// one wake-up and one write per frame, video never delayed.
		rd.holdAudio(h.cfg.FLVCoalesce)
	}
	writeFLV(w, r, s, rd, h.cfg.MaxLag, h.m, log)
}

// errNoCrypt is the refusal of a player of an encrypted stream whose
// encrypted output cannot run (no key source).
var errNoCrypt = errors.New("stream is encrypted and its encrypted output is not running on this node")

// playStream returns what FLV and RTMP players of app/name read: the
// stream, and its encrypted output when it runs (nil: play the stream
// clear). A stream to be encrypted whose encrypted output does not run is
// refused (errNoCrypt), never played clear.
func (h *Hub) playStream(app, name string) (*Stream, *cryptFLV, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.streams[streamKey(app, name)]
	if e == nil {
		return nil, nil, fmt.Errorf("stream %s: %w", streamKey(app, name), ErrNotFound)
	}
	if e.crypt != nil && !e.crypt.ended() {
		return e.stream, e.crypt, nil
	}
	if h.encryptedLocked(app, name) {
		return nil, nil, fmt.Errorf("play %s: %w", streamKey(app, name), errNoCrypt)
	}
	return e.stream, nil, nil
}

// Play returns the reader of an RTMP player of app/name: the stream its
// policy's play alias names (a watermarked source), in its encrypted form
// when it has one, counted as an RTMP player, coalesced as HTTP-FLV players
// are (Config.FLVCoalesce). The error wraps ErrNotFound
// when the stream is not live.
func (h *Hub) Play(app, name string) (*Reader, error) {
	if reason := h.refused(app, name); reason != "" {
		return nil, fmt.Errorf("play %s: %w: %s", streamKey(app, name), ErrNotServed, reason)
	}
	name = h.playName(app, name)
	s, c, err := h.playStream(app, name)
	if err != nil {
		return nil, err
	}
	var rd *Reader
	if c != nil {
		rd = c.subscribe(roleRTMP)
	} else {
		rd = s.subscribe(false, roleRTMP)
	}
	if h.cfg.FLVCoalesce > 0 {
		// As for HTTP-FLV players: one wake-up and one write per batch.
		rd.holdAudio(h.cfg.FLVCoalesce)
	}
	return rd, nil
}

// flvSource is what writeFLV reads: a Reader of the stream or of its
// encrypted output.
type flvSource interface {
	ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error)
	Close()
}

// writeFLV sends rd's packets to one HTTP-FLV player until either ends;
// s is the stream rd reads (for the tracks and generated metadata). It
// closes rd. m may be nil.
//
// A connection taken over (HTTP/1.x) is served by a goroutine of its own
// and writeFLV returns at once: net/http's per-connection buffers and the
// handler's deep stack are let go, about 20 KiB a player. Otherwise
// (HTTP/2) the handler's goroutine serves it until the request ends.
func writeFLV(w http.ResponseWriter, r *http.Request, s *Stream, rd flvSource, maxLag time.Duration, m *metrics, log *slog.Logger) {
	// The player's end (the connection watcher, or the request's end when
	// not taken over) cancels ctx.
	ctx, cancel := context.WithCancel(context.Background())
	resume := parseResume(r.URL.Query()) // flv_resume.go
	if resume != nil {
		w.Header().Set("X-Livefuse-Resume", "1") // the origin understood the resume
		w.Header().Set("Access-Control-Expose-Headers", "X-Livefuse-Resume")
	}
	out, err := newFLVOut(w, r, cancel, maxLag)
	if err != nil {
		cancel()
		rd.Close()
		log.Debug("http-flv player gone", "err", err)
		return
	}
	fp := &flvPlay{s: s, rd: rd, out: out, resume: resume, m: m, log: log, cancel: cancel,
		pkts: make([]*av.Packet, 0, flvBatchPackets)}
	// The player's end (or the request's) closes the reader, so the wait
	// for packets is a plain channel receive rather than a select.
	fp.stopWatch = context.AfterFunc(ctx, rd.Close)
	if out.conn != nil {
		if r, ok := rd.(*Reader); ok && out.direct {
			fp.rdr = r // may be served by the stream's writers (flv_group.go)
			r.step = fp.step
		}
		go fp.run()
		return
	}
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	fp.run()
}

// flvPlay is one HTTP-FLV player's writing side. It is served by a
// goroutine of its own (run) or, once it has caught up, by one of its
// stream's group writers (step); never by both.
type flvPlay struct {
	s         *Stream
	rd        flvSource
	rdr       *Reader // rd, when a group writer may serve it; nil: never
	out       *flvOut
	resume    *flvResume
	m         *metrics
	log       *slog.Logger
	cancel    context.CancelFunc
	stopWatch func() bool

	pkts     []*av.Packet
	started  bool
	sentMeta bool
	unsent   int // bytes not yet added to the counter
}

// count adds n written bytes to the counter, in steps of flvMetricBytes.
func (fp *flvPlay) count(n int) {
	if fp.unsent += n; fp.unsent >= flvMetricBytes {
		fp.flushCount()
	}
}

func (fp *flvPlay) flushCount() {
	if fp.m != nil && fp.unsent > 0 {
		fp.m.flvBytes.Add(float64(fp.unsent))
	}
	fp.unsent = 0
}

// end closes the reader and the response.
func (fp *flvPlay) end() {
	fp.flushCount()
	fp.stopWatch()
	fp.out.close()
	fp.rd.Close()
	fp.cancel()
}

// logEnd says why the player ended.
func (fp *flvPlay) logEnd(rerr error) {
	switch {
	case errors.Is(rerr, ErrDropped):
		fp.log.Info("http-flv player dropped: too slow")
	case errors.Is(rerr, ErrEnded):
		fp.log.Debug("http-flv stream ended")
	default:
		fp.log.Debug("http-flv player gone", "err", rerr)
	}
}

// add appends p's tag to the batch, after the FLV header and onMetaData
// when they are due.
func (fp *flvPlay) add(p *av.Packet) {
	if fp.resume != nil {
		if p = fp.resume.filter(p); p == nil {
			return
		}
	}
	out := fp.out
	if !fp.started {
		fp.started = true
		hasVideo, hasAudio, _ := fp.s.tracks()
		if !hasVideo && !hasAudio {
			hasVideo, hasAudio = true, true
		}
		out.appendRaw(av.FLVHeader(hasVideo, hasAudio))
	}
	if p.Kind == av.KindData && isOnMetaData(p.Data) {
		fp.sentMeta = true
	} else if !fp.sentMeta && p.Kind != av.KindData {
		fp.sentMeta = true
		out.appendTag(fp.s.metaPacket(p.DTS))
	}
	out.appendTag(p)
}

// keepPkts lets a burst's packet slice go.
func (fp *flvPlay) keepPkts(pkts []*av.Packet) {
	clear(pkts)
	if cap(pkts) > 4*flvBatchPackets {
		pkts = make([]*av.Packet, 0, flvBatchPackets)
	}
	fp.pkts = pkts[:0]
}

// write writes the batch, waiting while the socket is full.
func (fp *flvPlay) write() bool {
	n, werr := fp.out.flush()
	fp.out.reset()
	fp.count(n)
	if werr != nil {
		fp.log.Debug("http-flv player gone", "err", werr)
		return false
	}
	return true
}

// run serves the player from its own goroutine until it ends, or until it
// has caught up and a group writer takes it over.
func (fp *flvPlay) run() {
	for {
		pkts, rerr := fp.rd.ReadPackets(context.Background(), fp.pkts[:0])
		for i, p := range pkts {
			if fp.out.full() && !fp.write() { // a GOP burst goes in parts: no large buffer per player
				fp.end()
				return
			}
			pkts[i] = nil
			fp.add(p)
		}
		fp.keepPkts(pkts)
		if !fp.write() {
			fp.end()
			return
		}
		if rerr != nil {
			fp.logEnd(rerr)
			fp.end()
			return
		}
		if fp.rdr != nil && fp.rdr.queued() == 0 && fp.s.joinFLVGroup(fp.rdr) {
			return // caught up: a group writer serves it from here
		}
	}
}

// step is the group writer's turn with the player: what is queued is
// written without waiting. A player whose socket fills leaves the group
// for a goroutine of its own, which finishes the write.
func (fp *flvPlay) step() {
	pkts, rerr := fp.rdr.Poll(fp.pkts[:0])
	for i, p := range pkts {
		pkts[i] = nil
		fp.add(p)
	}
	fp.keepPkts(pkts)
	n, done, werr := fp.out.tryFlush()
	fp.count(n)
	if done {
		fp.out.reset() // else the rest is pending, for finishRun
	}
	switch {
	case werr != nil:
		fp.s.leaveFLVGroup(fp.rdr)
		fp.log.Debug("http-flv player gone", "err", werr)
		fp.end()
	case !done:
		fp.s.leaveFLVGroup(fp.rdr)
		go fp.finishRun()
	case rerr != nil:
		fp.s.leaveFLVGroup(fp.rdr)
		fp.logEnd(rerr)
		fp.end()
	default:
		fp.rdr.StepDone() // one more turn, for the end
	}
}

// finishRun finishes the write step left pending, then serves the player
// from this goroutine.
func (fp *flvPlay) finishRun() {
	n, err := fp.out.finish()
	fp.out.reset()
	fp.count(n)
	if err != nil {
		fp.log.Debug("http-flv player gone", "err", err)
		fp.end()
		return
	}
	fp.run()
}

// metaPacket builds an onMetaData packet from what the stream knows, for
// players of a source that sent none.
func (s *Stream) metaPacket(dts time.Duration) *av.Packet {
	now := time.Since(s.created)
	s.mu.Lock()
	info := s.info
	fps, bps := s.rate.rates(now)
	s.mu.Unlock()
	md := av.MetaData(info.width, info.height, fps, int(bps/1000), info.sampleRate, info.channels)
	return &av.Packet{Kind: av.KindData, DTS: dts, Data: av.EncodeScript("onMetaData", md)}
}
