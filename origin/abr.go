package origin

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/livefuse/livefuse/av"
)

// ABR HLS. When the stream's policy lists renditions (StreamPolicy.Variants)
// and the HLS variant is mpegts, /{app}/{name}/index.m3u8 is a multivariant playlist:
//
//	/{app}/{name}/index.m3u8                  multivariant: source first, then every rendition
//	/{app}/{name}/v/source/index.m3u8         media playlist of the source (its seg<N>.ts beside it)
//	/{app}/{name}/v/{variant}/index.m3u8      media playlist of a rendition stream
//
// Each variant is an ordinary stream of the hub with its own tshls
// packager; the multivariant playlist is built per request from what those
// packagers and streams hold (measured bandwidth, SPS size and frame rate,
// codecs from the sequence headers). Every file is authorized against
// /{app}/{name}/index.m3u8, and the playlist's query (the play token) is
// carried into the variant URIs, whose media playlists carry it on to
// their segments.

// SourceVariant is the variant name of the source in ABR URLs. With a
// play alias (a watermarked source) it plays the alias.
const SourceVariant = "source"

// Variant is one rendition of a stream offered in its ABR playlist.
type Variant struct {
	// Name is the variant's URL element: /{app}/{name}/v/{Name}/index.m3u8.
	// It must be a valid stream name element and not SourceVariant.
	Name string
	// Stream is the name, in the same app, of the stream that carries it.
	Stream string
	// Width and Height are the nominal picture size, used when the
	// stream's SPS does not tell.
	Width, Height int
	// FrameRate caps the frame rate announced (0: the stream's).
	FrameRate float64
}

// abrGrace is how long a multivariant request waits, once the source has
// segments, for renditions that are not ready yet (a ladder that just
// started), so that a player's first playlist lists the whole ladder.
const abrGrace = 4 * time.Second

// abrPoll is how often a waiting multivariant request looks again.
const abrPoll = 100 * time.Millisecond

// variantFile splits "v/{variant}/{file}".
func variantFile(file string) (variant, f string, ok bool) {
	rest, ok := strings.CutPrefix(file, "v/")
	if !ok {
		return "", "", false
	}
	variant, f, ok = strings.Cut(rest, "/")
	if !ok || av.CheckRendition(variant) != nil || !tsFileRe.MatchString(f) {
		return "", "", false
	}
	return variant, f, true
}

// waitLive waits up to d for app/name to go live, for a player whose
// stream is live but plays through an alias (a rendition) that a worker
// is still starting.
func (h *Hub) waitLive(ctx context.Context, app, name string, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(abrPoll)
	defer tick.Stop()
	for {
		if _, err := h.stream(app, name); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-tick.C:
		}
	}
}

// serveFLVAlias serves HTTP-FLV of the stream players of rt get.
func (h *Hub) serveFLVAlias(w http.ResponseWriter, r *http.Request, rt route) {
	if src := h.playName(rt.app, rt.name); src != rt.name {
		if _, err := h.stream(rt.app, rt.name); err == nil {
			h.waitLive(r.Context(), rt.app, src, 5*time.Second)
		}
		rt.name = src
	}
	h.serveFLV(w, r, rt)
}

// serveABR serves an HLS request of app/name: the multivariant playlist
// and variant files when the stream has renditions, the (aliased) stream's
// own HLS otherwise.
func (h *Hub) serveABR(w http.ResponseWriter, r *http.Request, rt route) {
	src := h.playName(rt.app, rt.name)
	if rt.variant == "" {
		if rt.file == "index.m3u8" {
			if vs := h.variants(rt.app, rt.name); len(vs) > 0 {
				h.serveMultivariant(w, r, rt, src, vs)
				return
			}
		}
		if src != rt.name {
			if _, err := h.stream(rt.app, rt.name); err == nil {
				h.waitLive(r.Context(), rt.app, src, 5*time.Second)
			}
		}
		rt.name = src
		h.serveHLS(w, r, rt)
		return
	}
	stream := ""
	if rt.variant == SourceVariant {
		stream = src
	} else {
		for _, v := range h.variants(rt.app, rt.name) {
			if v.Name == rt.variant {
				stream = v.Stream
				break
			}
		}
	}
	if stream == "" {
		http.Error(w, "no such variant", http.StatusNotFound)
		return
	}
	if h.refuseHLS(w, rt.app, stream) {
		return
	}
	o := h.tsOut(rt.app, stream)
	if o == nil {
		http.Error(w, "stream not live", http.StatusNotFound)
		return
	}
	h.serveTS(w, r, o)
}

// abrEntry is what the multivariant playlist says about one variant.
type abrEntry struct {
	name          string
	codecs        []string
	width, height int
	fps           float64
	peak, avg     int // bits per second over the packager's segments
}

// probeVariant describes stream (of app) as a variant; ok is false while
// it is not live (live false) or has no segment or no known codec yet.
func (h *Hub) probeVariant(app, stream string, v Variant) (ae abrEntry, ok, live bool) {
	h.mu.Lock()
	e := h.streams[streamKey(app, stream)]
	h.mu.Unlock()
	if e == nil || e.ts == nil {
		return abrEntry{}, false, false
	}
	ae, ok = h.describe(e, v)
	return ae, ok, true
}

func (h *Hub) describe(e *entry, v Variant) (abrEntry, bool) {
	peak, avg, n := e.ts.pk.abrRates(h.cfg.HLSSegmentDuration / 2)
	if n == 0 {
		return abrEntry{}, false
	}
	ae := abrEntry{name: v.Name, width: v.Width, height: v.Height, peak: peak, avg: avg}
	vh, ah := e.stream.abrHeaders()
	if vh != nil {
		c, err := av.ParseAVCConfig(vh.Data)
		if vh.Codec != av.CodecH264 || err != nil {
			return abrEntry{}, false // tshls packages H.264 only
		}
		ae.codecs = append(ae.codecs, c.CodecString())
		if w, hh := c.Resolution(); w > 0 && hh > 0 {
			ae.width, ae.height = w, hh
		}
		ae.fps = c.FPS()
		if ae.fps <= 0 || ae.fps > 240 {
			ae.fps = snapFPS(e.stream.Status().FPS)
		}
		if v.FrameRate > 0 && (ae.fps <= 0 || ae.fps > v.FrameRate) {
			ae.fps = v.FrameRate
		}
	}
	if ah != nil && ah.Codec == av.CodecAAC {
		if c, err := av.ParseAudioConfig(ah.Data); err == nil {
			ae.codecs = append(ae.codecs, fmt.Sprintf("mp4a.40.%d", c.ObjectType))
		}
	}
	if len(ae.codecs) == 0 {
		return abrEntry{}, false
	}
	return ae, true
}

// snapFPS rounds a measured frame rate to a whole number when it is
// within 3% of one (a 5 s window measures 24.8 for 25), else to 1/1000.
func snapFPS(f float64) float64 {
	if f <= 0 {
		return 0
	}
	if r := math.Round(f); r > 0 && math.Abs(f-r) <= 0.03*r {
		return r
	}
	return math.Round(f*1000) / 1000
}

// serveMultivariant answers /{app}/{name}/index.m3u8 of a stream with
// renditions. It waits (bounded) for the source's first segment, and
// briefly (abrGrace) for live renditions that have none yet; renditions
// that are not live are left out.
func (h *Hub) serveMultivariant(w http.ResponseWriter, r *http.Request, rt route, src string, vs []Variant) {
	start := time.Now()
	deadline := start.Add(10*time.Second + 3*h.cfg.HLSSegmentDuration)
	var srcReady time.Time
	tick := time.NewTicker(abrPoll)
	defer tick.Stop()
	for {
		if _, err := h.stream(rt.app, rt.name); err != nil {
			notLive(w, err)
			return
		}
		now := time.Now()
		srcEntry, ok, _ := h.probeVariant(rt.app, src, Variant{Name: SourceVariant})
		if ok {
			if srcReady.IsZero() {
				srcReady = now
			}
			entries := []abrEntry{srcEntry}
			pending := false
			for _, v := range vs {
				ae, ok, live := h.probeVariant(rt.app, v.Stream, v)
				if ok {
					entries = append(entries, ae)
				}
				pending = pending || (live && !ok)
			}
			if !pending || now.Sub(srcReady) >= abrGrace || now.After(deadline) {
				h.writeMultivariant(w, r, entries)
				return
			}
		} else if now.After(deadline) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "stream has no HLS segments yet", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

func (h *Hub) writeMultivariant(w http.ResponseWriter, r *http.Request, entries []abrEntry) {
	q := ""
	if r.URL.RawQuery != "" {
		q = "?" + r.URL.RawQuery
	}
	m := playlist.Multivariant{Version: 3, IndependentSegments: true}
	for _, e := range entries {
		v := &playlist.MultivariantVariant{
			Bandwidth: max(e.peak, 1),
			Codecs:    e.codecs,
			URI:       "v/" + e.name + "/index.m3u8" + q,
		}
		if e.avg > 0 {
			avg := e.avg
			v.AverageBandwidth = &avg
		}
		if e.width > 0 && e.height > 0 {
			v.Resolution = strconv.Itoa(e.width) + "x" + strconv.Itoa(e.height)
		}
		if e.fps > 0 {
			fps := e.fps
			v.FrameRate = &fps
		}
		m.Variants = append(m.Variants, v)
	}
	body, err := m.Marshal()
	if err != nil {
		http.Error(w, "multivariant playlist: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/vnd.apple.mpegurl")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		n, _ := w.Write(body)
		h.m.hlsBytes.Add(float64(n))
	}
}

// abrHeaders returns the current video and audio sequence headers (nil
// when the stream has none).
func (s *Stream) abrHeaders() (video, audio *av.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.avcHdr, s.aacHdr
}

// abrRates returns the peak and average bit rate of the finished segments
// in the playlist window, leaving out segments shorter than minDur (the
// last one before an end or a switch), and how many segments counted.
func (h *tshls) abrRates(minDur time.Duration) (peak, avg, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	segs := h.segs
	if k := len(segs) - h.cfg.SegmentCount; k > 0 {
		segs = segs[k:]
	}
	var bytes int
	var dur time.Duration
	for _, s := range segs {
		if s.dur <= 0 || s.dur < minDur {
			continue
		}
		bps := int(float64(s.size*8) / s.dur.Seconds())
		peak = max(peak, bps)
		bytes += s.size
		dur += s.dur
		n++
	}
	if n == 0 && len(segs) > 0 { // only short segments: count them all
		for _, s := range segs {
			if s.dur > 0 {
				peak = max(peak, int(float64(s.size*8)/s.dur.Seconds()))
				bytes += s.size
				dur += s.dur
				n++
			}
		}
	}
	if dur > 0 {
		avg = int(float64(bytes*8) / dur.Seconds())
	}
	return peak, avg, n
}
