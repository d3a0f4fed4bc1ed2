package origin

import (
	"errors"
	"net/http"
	"time"

	"github.com/livefuse/livefuse/av"
)

// flvBufSize is the initial size of a player's write buffer.
const flvBufSize = 64 << 10

// serveFLV streams app/name as HTTP-FLV: the FLV header, onMetaData (the
// publisher's or one built here), the sequence headers, the cached GOP,
// then live packets. Everything a reader has queued is encoded into one
// reused buffer and written with one Write.
func (h *Hub) serveFLV(w http.ResponseWriter, r *http.Request, rt route) {
	s, err := h.stream(rt.app, rt.name)
	if err != nil {
		notLive(w, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "video/x-flv")
	hdr.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rd := s.Subscribe()
	defer rd.Close()

	log := h.log.With("stream", streamKey(rt.app, rt.name), "remote", r.RemoteAddr)
	rc := http.NewResponseController(w)
	// Per-batch write deadlines end a stalled player; clear the last one so
	// it cannot outlive this response on a kept-alive connection.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	var (
		ctx      = r.Context()
		buf      = make([]byte, 0, flvBufSize)
		pkts     = make([]*av.Packet, 0, 256)
		started  bool
		sentMeta bool
		timer    *time.Timer
		maxLag   = h.cfg.MaxLag
		coalesce = h.cfg.FLVCoalesce
	)
	if coalesce > 0 {
		timer = time.NewTimer(coalesce)
		timer.Stop()
		defer timer.Stop()
	}
	for {
		var rerr error
		pkts, rerr = rd.ReadPackets(ctx, pkts[:0])
		if rerr == nil && timer != nil {
			timer.Reset(coalesce)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
			pkts = rd.poll(pkts)
		}
		buf = buf[:0]
		for _, p := range pkts {
			if !started {
				started = true
				hasVideo, hasAudio, _ := s.tracks()
				if !hasVideo && !hasAudio {
					hasVideo, hasAudio = true, true
				}
				buf = append(buf, av.FLVHeader(hasVideo, hasAudio)...)
			}
			if p.Kind == av.KindData && isOnMetaData(p.Data) {
				sentMeta = true
			} else if !sentMeta && p.Kind != av.KindData {
				sentMeta = true
				buf = av.AppendTag(buf, s.metaPacket(p.DTS))
			}
			buf = av.AppendTag(buf, p)
		}
		clear(pkts)
		if len(buf) > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(maxLag))
			n, werr := w.Write(buf)
			h.m.flvBytes.Add(float64(n))
			if werr == nil {
				werr = rc.Flush()
			}
			if werr != nil {
				log.Debug("http-flv player gone", "err", werr)
				return
			}
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
		if cap(buf) > 4*flvBufSize && len(buf) < flvBufSize {
			buf = make([]byte, 0, flvBufSize) // let a burst's buffer go
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
