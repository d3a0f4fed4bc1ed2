package transcode

import (
	"errors"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// TestRenditionsFollowSource: renditions end, cleanly (their streams end
// at once, no slate), when their source ends, when the ladder is stopped
// and when the profile is removed; a source that comes back gets new
// renditions on its own new timeline.
func TestRenditionsFollowSource(t *testing.T) {
	needFFmpeg(t)
	const gop = time.Second
	prof := Profile{Name: "one", GOP: Duration(gop), WatermarkSource: true, SourceKbps: 500, Watermark: &Watermark{Text: "x"},
		Renditions: []Rendition{{Name: "low", Width: 320, Height: 180, VideoKbps: 300, Preset: "ultrafast"}}}
	clip := readClip(t, clipPath(t, "640x360", 25, 4))
	for _, tc := range []struct {
		name string
		end  func(p *Pool, stopSource func())
		// comeBack: the source returns (with another clock) after the end.
		comeBack bool
	}{
		{name: "source ends", end: func(_ *Pool, stop func()) { stop() }, comeBack: true},
		{name: "ladder stopped", end: func(p *Pool, _ func()) { p.Stop("live", "f") }},
		{name: "profile removed", end: func(p *Pool, _ func()) {
			if err := p.SetProfiles(nil); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub()
			p, _ := newTestPool(t, Config{Profiles: []Profile{prof}}, h)
			stop := publishLoop(t, h, "live", "f", clip)
			if err := p.Start("live", "f", "one"); err != nil {
				t.Fatal(err)
			}
			low := collect(t, h, "live/f_low", 5*time.Second)
			low.waitFrames(t, 25, 10*time.Second)
			keys := []string{"live/f_low", "live/f_" + RenditionSource}
			var streams []*testStream
			for _, k := range keys {
				s := h.stream(k)
				if s == nil {
					t.Fatalf("%s not live", k)
				}
				streams = append(streams, s)
			}

			tc.end(p, stop)
			ended := time.Now()
			deadline := ended.Add(5 * time.Second)
			for (h.live(keys[0]) || h.live(keys[1])) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			for i, k := range keys {
				if h.live(k) {
					t.Fatalf("%s still live 5 s after the end", k)
				}
				if !streams[i].unpublished() {
					t.Errorf("%s closed without Unpublish: the origin would show the slate", k)
				}
			}
			t.Logf("renditions ended %v after the end", time.Since(ended).Round(time.Millisecond))
			low.stop()
			if err := low.readErr(); !errors.Is(err, ErrSourceEnded) {
				t.Errorf("rendition reader ended with %v, want the end of the stream", err)
			}
			if !tc.comeBack {
				return
			}

			// The encoder comes back with its clock at 100 s; the sink
			// calls Start as a publisher joins.
			const base = 100 * time.Second
			publishLoopFrom(t, h, "live", "f", clip, base)
			if err := p.Start("live", "f", "one"); err != nil {
				t.Fatal(err)
			}
			again := collect(t, h, "live/f_low", 10*time.Second)
			again.waitFrames(t, 10, 10*time.Second)
			again.mu.Lock()
			var first *av.Packet
			for _, pk := range again.pkts {
				if pk.Kind == av.KindVideo && !pk.Header {
					first = pk
					break
				}
			}
			again.mu.Unlock()
			if d := first.PTS() - base; d < -gop || d > gop {
				t.Errorf("first rendition PTS after the source came back %v, want within one GOP (%v) of the source's %v",
					first.PTS(), gop, base)
			}
		})
	}
}
