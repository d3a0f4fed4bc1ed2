package origin

import (
	"cmp"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
)

// encoder describes a synthetic publisher for the health tests.
type encoder struct {
	fps      int
	gop      int  // frames per keyframe
	bframes  bool // IBP-style reordering: every other frame presented early
	audio    bool // 50 audio frames a second of 200 bytes
	frameLen int  // video payload bytes
}

// packets returns what the encoder sends over d starting at arrival t0
// (arrival = DTS + t0), in arrival order.
func (e encoder) packets(t0, d time.Duration) []timedPacket {
	var out []timedPacket
	step := time.Second / time.Duration(e.fps)
	for i := 0; time.Duration(i)*step < d; i++ {
		dts := time.Duration(i) * step
		p := &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%e.gop == 0, DTS: dts, Data: make([]byte, e.frameLen)}
		if e.bframes {
			// Decode order I P B P B...: P frames carry a composition
			// offset of two frames, B frames one less than their decode
			// slot, so a B is presented before the P decoded before it.
			if i%2 == 1 {
				p.CTS = 2 * step
			} else if i > 0 {
				p.CTS = 0
			}
		}
		out = append(out, timedPacket{t0 + dts, p})
	}
	if e.audio {
		for i := 0; time.Duration(i)*20*time.Millisecond < d; i++ {
			dts := time.Duration(i) * 20 * time.Millisecond
			out = append(out, timedPacket{t0 + dts, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: dts, Data: make([]byte, 200)}})
		}
	}
	// Arrival order (stable: video before audio at the same instant).
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].at < out[j-1].at; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

type timedPacket struct {
	at time.Duration
	p  *av.Packet
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol*math.Max(math.Abs(want), 1) }

func TestFeedHealthFigures(t *testing.T) {
	const window = 5 * time.Second
	cases := []struct {
		name     string
		segments []encoder // sent one after the other, each for dur (default 10 s)
		dur      time.Duration
		now      time.Duration
		fps      float64
		kbps     float64 // total
		akbps    float64
		keyMS    float64
		bframes  bool
		audio    bool
	}{
		{"25 fps gop 2s with audio", []encoder{{fps: 25, gop: 50, audio: true, frameLen: 5000}}, 0, 10 * time.Second,
			25, 25*5000*8/1000.0 + 50*200*8/1000.0, 80, 2000, false, true},
		{"5 fps no audio", []encoder{{fps: 5, gop: 10, frameLen: 1000}}, 0, 10 * time.Second,
			5, 40, 0, 2000, false, false},
		{"b-frames", []encoder{{fps: 30, gop: 60, bframes: true, frameLen: 1000}}, 0, 10 * time.Second,
			30, 240, 0, 2000, true, false},
		{"gop longer than the window keeps the last interval", []encoder{{fps: 25, gop: 300, frameLen: 1000}}, 20 * time.Second, 20 * time.Second,
			25, 200, 0, 12000, false, false},
		{"young feed", []encoder{{fps: 25, gop: 25, audio: true, frameLen: 1000}}, 0, 2 * time.Second,
			25, 200 + 80, 80, 1000, false, true},
		{"drop from 25 to 5 fps: the window forgets", []encoder{{fps: 25, gop: 50, audio: true, frameLen: 1000}, {fps: 5, gop: 10, frameLen: 1000}}, 0, 20 * time.Second,
			5, 40, 0, 2000, false, false},
		{"went quiet", []encoder{{fps: 25, gop: 50, audio: true, frameLen: 1000}}, 0, 30 * time.Second,
			0, 0, 0, 0, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h feedHealth
			h.reset(window)
			base := time.Hour // a monotonic reading far from zero
			span := cmp.Or(tc.dur, 10*time.Second)
			if tc.now < span {
				span = tc.now
			}
			for i, e := range tc.segments {
				for _, tp := range e.packets(base+time.Duration(i)*span, span) {
					h.add(tp.at, tp.p)
				}
			}
			f := h.figures(base + tc.now)
			if !near(f.fps, tc.fps, 0.05) || !near(float64(f.bitrate)/1000, tc.kbps, 0.05) || !near(float64(f.audioBitrate)/1000, tc.akbps, 0.05) {
				t.Errorf("fps %.2f kbps %.1f audio kbps %.1f, want %.2f, %.1f, %.1f", f.fps, float64(f.bitrate)/1000,
					float64(f.audioBitrate)/1000, tc.fps, tc.kbps, tc.akbps)
			}
			if ms := float64(f.keyframeInterval.Milliseconds()); !near(ms, tc.keyMS, 0.01) && !(tc.fps == 0 && ms >= 0) {
				t.Errorf("keyframe interval %.0f ms, want %.0f", ms, tc.keyMS)
			}
			if f.bframes != tc.bframes || f.audio != tc.audio {
				t.Errorf("bframes %v audio %v, want %v %v", f.bframes, f.audio, tc.bframes, tc.audio)
			}
		})
	}
}

// TestFeedHealthInStatus pushes a feed through the hub and reads its
// figures back from the status and from /metrics, where the series go
// away with the stream.
func TestFeedHealthInStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Slate = SlateOff
	cfg.HLSVariant = HLSOff
	h, err := NewHub(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f, err := h.Publish("live", "cam", FeedMain, av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	sf := newSynthFeed(1, 0)
	for _, p := range sf.headers() {
		f.WritePacket(p)
	}
	// A few frames as they come: arrival is the real clock here, so only
	// presence and the keyframe interval (stream time) are asserted.
	for range 120 {
		for _, p := range sf.next() {
			f.WritePacket(p)
		}
	}
	st, ok := h.Status("live", "cam")
	if !ok {
		t.Fatal("stream not live")
	}
	fs := st.Switch.Feeds[0]
	if fs.Feed != FeedMain || fs.KeyframeIntervalMillis != 2000 || !fs.Audio || fs.BFrames || fs.WindowMillis != 5000 || fs.FPS <= 0 {
		t.Fatalf("main feed %+v: want keyframe interval 2000 ms, audio, no B-frames, window 5000, fps > 0", fs)
	}
	if got := gatherFeed(t, reg, "livefuse_origin_feed_keyframe_interval_seconds"); len(got) != 1 || got[`feed="main",stream="live/cam"`] != 2 {
		t.Fatalf("keyframe interval series %v, want main of live/cam at 2 s only (backup never published)", got)
	}
	f.Unpublish()
	f.Close()
	for i := 0; i < 100; i++ {
		if _, ok := h.Status("live", "cam"); !ok {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := gatherFeed(t, reg, "livefuse_origin_feed_fps"); len(got) != 0 {
		t.Fatalf("fps series %v after the stream ended, want none", got)
	}
}

// gatherFeed returns the gauge samples of metric name by their labels.
func gatherFeed(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			out[strings.Join(ls, ",")] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestHealthWindowConfig(t *testing.T) {
	for _, tc := range []struct {
		w  time.Duration
		ok bool
	}{{0, true}, {time.Second, true}, {100 * time.Millisecond, false}, {time.Hour, false}} {
		c := DefaultConfig()
		c.HealthWindow = tc.w
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("health_window %s: err %v, want ok=%v", tc.w, err, tc.ok)
		}
	}
}

// BenchmarkFeedHealthAdd is the per-packet cost of the ingest health.
func BenchmarkFeedHealthAdd(b *testing.B) {
	var h feedHealth
	h.reset(5 * time.Second)
	p := &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Data: make([]byte, 1000)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.DTS = time.Duration(i) * 40 * time.Millisecond
		p.Key = i%50 == 0
		h.add(p.DTS, p)
	}
}
