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
	p := &flvPlay{s: s, rd: rd, out: out, resume: resume, m: m, log: log}
	if out.conn != nil {
		go p.run(ctx, cancel)
		return
	}
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	p.run(ctx, cancel)
}

// flvPlay is one HTTP-FLV player's writing side.
type flvPlay struct {
	s      *Stream
	rd     flvSource
	out    *flvOut
	resume *flvResume
	m      *metrics
	log    *slog.Logger
}

// run writes until the player, the reader or the stream ends, then closes
// the reader and the response.
func (fp *flvPlay) run(ctx context.Context, cancel context.CancelFunc) {
	s, rd, out, resume, m, log := fp.s, fp.rd, fp.out, fp.resume, fp.m, fp.log
	defer rd.Close()
	defer cancel()
	defer out.close()
	var (
		pkts     = make([]*av.Packet, 0, flvBatchPackets)
		started  bool
		sentMeta bool
		unsent   int // bytes not yet added to the counter
	)
	count := func(n int) {
		if m != nil {
			m.flvBytes.Add(float64(n))
		}
	}
	defer func() { count(unsent) }()
	// The player's end (or the request's) closes the reader, so the wait
	// for packets is a plain channel receive rather than a select.
	stop := context.AfterFunc(ctx, rd.Close)
	defer stop()
	write := func() bool {
		n, werr := out.flush()
		out.reset()
		if unsent += n; unsent >= flvMetricBytes {
			count(unsent)
			unsent = 0
		}
		if werr != nil {
			log.Debug("http-flv player gone", "err", werr)
			return false
		}
		return true
	}
	for {
		var rerr error
		pkts, rerr = rd.ReadPackets(context.Background(), pkts[:0])
		for i, p := range pkts {
			if out.full() && !write() { // a GOP burst goes in parts: no large buffer per player
				return
			}
			pkts[i] = nil
			if resume != nil {
				if p = resume.filter(p); p == nil {
					continue
				}
			}
			if !started {
				started = true
				hasVideo, hasAudio, _ := s.tracks()
				if !hasVideo && !hasAudio {
					hasVideo, hasAudio = true, true
				}
				out.appendRaw(av.FLVHeader(hasVideo, hasAudio))
			}
			if p.Kind == av.KindData && isOnMetaData(p.Data) {
				sentMeta = true
			} else if !sentMeta && p.Kind != av.KindData {
				sentMeta = true
				out.appendTag(s.metaPacket(p.DTS))
			}
			out.appendTag(p)
		}
		if cap(pkts) > 4*flvBatchPackets {
			pkts = make([]*av.Packet, 0, flvBatchPackets) // let a burst's go
		}
		if !write() {
			return
		}
		if rerr != nil {
			switch {
			case errors.Is(rerr, ErrDropped):
				log.Info("http-flv player dropped: too slow")
			case errors.Is(rerr, ErrEnded):
				log.Debug("http-flv stream ended")
			default:
				log.Debug("http-flv player gone", "err", rerr)
			}
			return
		}
	}
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
