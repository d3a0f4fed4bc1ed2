package transcode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
)

func newTestPool(t testing.TB, cfg Config, h *testHub) (*Pool, *prometheus.Registry) {
	t.Helper()
	needFFmpeg(t)
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := NewPool(cfg, h, h, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, reg
}

// testWriter sends slog output to t.Log (only shown on failure or -v).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// metricValue reads one series from reg (labels as name=value pairs).
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s %v not found", name, labels)
	return 0
}

func waitStatus(t testing.TB, p *Pool, app, name string, within time.Duration, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(within)
	var st Status
	var live bool
	for time.Now().Before(deadline) {
		if st, live = p.Status(app, name); ok(st) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("status of %s/%s after %v: %+v (in pool: %v)", app, name, within, st, live)
	return st
}

type probed struct {
	Width, Height int
	Codec         string
}

func ffprobeVideo(t testing.TB, path string) probed {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", path, err, out)
	}
	var p probed
	f := strings.Split(strings.TrimSpace(string(out)), ",")
	if len(f) < 3 {
		t.Fatalf("ffprobe %s: %q", path, out)
	}
	p.Codec = f[0]
	fmt.Sscan(f[1], &p.Width)
	fmt.Sscan(f[2], &p.Height)
	return p
}

// TestLadder runs a 720p/480p/360p ladder from a 720p source and checks
// each rendition's size, bitrate and keyframe alignment, the status and
// the metrics.
func TestLadder(t *testing.T) {
	needFFmpeg(t)
	h := newTestHub()
	prof := Profile{Name: "abr", GOP: Duration(time.Second), Renditions: []Rendition{
		{Name: "720p", Width: 1280, Height: 720, VideoKbps: 1500, Preset: "ultrafast"},
		{Name: "480p", Width: 854, Height: 480, VideoKbps: 800, Preset: "ultrafast", MaxFPS: 15},
		{Name: "360p", Width: 640, Height: 360, VideoKbps: 400, Preset: "ultrafast"},
	}}
	p, reg := newTestPool(t, Config{Workers: 2, Profiles: []Profile{prof}}, h)
	publishLoop(t, h, "live", "cam", readClip(t, clipPath(t, "1280x720", 25, 4)))
	if err := p.Start("live", "cam", "abr"); err != nil {
		t.Fatal(err)
	}
	cols := map[string]*collector{}
	for _, r := range prof.Renditions {
		cols[r.Name] = collect(t, h, "live/cam_"+r.Name, 5*time.Second)
	}
	for _, c := range cols {
		c.waitFrames(t, 1, 10*time.Second)
	}
	time.Sleep(5 * time.Second)
	st, _ := p.Status("live", "cam")
	for _, c := range cols {
		c.stop()
	}
	if st.State != StateRunning || st.PID == 0 || len(st.Renditions) != 3 {
		t.Fatalf("status %+v", st)
	}
	if st.FPS <= 0 || st.Speed <= 0 || st.CPUSeconds <= 0 || st.RSS <= 0 {
		t.Errorf("worker figures missing from status: fps %v speed %v cpu %v rss %v", st.FPS, st.Speed, st.CPUSeconds, st.RSS)
	}
	t.Logf("status: fps %.1f speed %.2f cpu %.2f cores (%.1f s) rss %d MiB", st.FPS, st.Speed, st.CPU, st.CPUSeconds, st.RSS>>20)

	var keySets [][]time.Duration
	for _, r := range prof.Renditions {
		c := cols[r.Name]
		path := filepath.Join(t.TempDir(), r.Name+".flv")
		c.writeFLV(t, path)
		pr := ffprobeVideo(t, path)
		if pr.Codec != "h264" || pr.Width != r.Width || pr.Height != r.Height {
			t.Errorf("%s: ffprobe %+v, want h264 %dx%d", r.Name, pr, r.Width, r.Height)
		}
		kbps := c.videoKbps()
		t.Logf("%s: %dx%d, %.0f kbit/s video (target %d), %d frames, %d keyframes", r.Name, pr.Width, pr.Height, kbps, r.VideoKbps, c.frames(), c.keys)
		if kbps < 0.6*float64(r.VideoKbps) || kbps > 1.35*float64(r.VideoKbps) {
			t.Errorf("%s: %.0f kbit/s, want within 60%%..135%% of %d", r.Name, kbps, r.VideoKbps)
		}
		var keys []time.Duration
		for _, pk := range c.pkts {
			if pk.Kind == av.KindVideo && pk.Key && !pk.Header {
				keys = append(keys, pk.PTS())
			}
		}
		keySets = append(keySets, keys)
	}
	// Aligned GOPs: every rendition has a keyframe every GOP at the same
	// instant: exactly for renditions at the source frame rate, within one
	// output frame for a rendition whose frame rate is capped (its frames
	// sit on another grid). Readers may have joined at different
	// keyframes, so compare from the latest first keyframe on.
	var from time.Duration
	for _, ks := range keySets {
		if len(ks) < 4 {
			t.Fatalf("too few keyframes: %v", keySets)
		}
		from = max(from, ks[0])
	}
	ref := keySets[0]
	for i, ks := range keySets {
		tol := time.Duration(0)
		if f := prof.Renditions[i].MaxFPS; f > 0 {
			tol = time.Duration(float64(time.Second) / f)
		}
		for _, k := range ks {
			if k < from-tol || k > ref[len(ref)-1]+tol {
				continue
			}
			j, _ := slices.BinarySearch(ref, k)
			d := time.Duration(1 << 62)
			for _, c := range []int{j - 1, j} {
				if c >= 0 && c < len(ref) {
					d = min(d, (k - ref[c]).Abs())
				}
			}
			if d > tol {
				t.Errorf("%s: keyframe at %v is %v from the nearest keyframe of %s %v (tolerance %v)",
					prof.Renditions[i].Name, k, d, prof.Renditions[0].Name, ref, tol)
			}
		}
		// One keyframe per GOP, no more.
		span := ks[len(ks)-1] - ks[0]
		if want := int(span/time.Duration(prof.GOP)) + 1; len(ks) != want {
			t.Errorf("%s: %d keyframes over %v, want %d (GOP %v)", prof.Renditions[i].Name, len(ks), span, want, time.Duration(prof.GOP))
		}
	}
	if got := metricValue(t, reg, "livefuse_transcode_admissions_total", "result", "started"); got != 1 {
		t.Errorf("admissions started %v", got)
	}
	if got := metricValue(t, reg, "livefuse_transcode_first_keyframe_seconds", "kind", "start"); got != 1 {
		t.Errorf("first keyframe samples %v", got)
	}
	if got := metricValue(t, reg, "livefuse_transcode_worker_rss_bytes", "stream", "live/cam"); got <= 0 {
		t.Errorf("rss metric %v", got)
	}
}

// rgbAt decodes the frame at second at of path and returns the RGB pixel at x,y.
func rgbAt(t testing.TB, path string, at float64, w, hgt, x, y int) [3]byte {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", fmt.Sprint(at), "-i", path,
		"-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-").Output()
	if err != nil {
		t.Fatalf("decode frame of %s: %v", path, err)
	}
	if len(out) != w*hgt*3 {
		t.Fatalf("frame of %s: %d bytes, want %dx%dx3", path, len(out), w, hgt)
	}
	i := (y*w + x) * 3
	return [3]byte{out[i], out[i+1], out[i+2]}
}

func near(c, want [3]byte, tol int) bool {
	for i := range c {
		if d := int(c[i]) - int(want[i]); d > tol || d < -tol {
			return false
		}
	}
	return true
}

// TestWatermark overlays an opaque magenta square at the top left and
// checks the colour in the rendition, not elsewhere, and not in the source.
func TestWatermark(t *testing.T) {
	needFFmpeg(t)
	dir := t.TempDir()
	logo := filepath.Join(dir, "logo.png")
	ffmpegRun(t, "-f", "lavfi", "-i", "color=c=0xFF00FF:s=48x48", "-frames:v", "1", logo)
	h := newTestHub()
	prof := Profile{Name: "wm", Watermark: &Watermark{Image: logo, Position: "top-left", Margin: 16},
		Renditions:      []Rendition{{Name: "sd", Width: 320, Height: 180, VideoKbps: 800, Preset: "ultrafast"}},
		WatermarkSource: true, SourceKbps: 1500}
	p, _ := newTestPool(t, Config{Profiles: []Profile{prof}}, h)
	src := clipPath(t, "640x360", 25, 4)
	publishLoop(t, h, "live", "wm", readClip(t, src))
	if err := p.Start("live", "wm", "wm"); err != nil {
		t.Fatal(err)
	}
	c := collect(t, h, "live/wm_sd", 5*time.Second)
	cs := collect(t, h, "live/wm_source", 5*time.Second)
	c.waitFrames(t, 50, 15*time.Second)
	cs.waitFrames(t, 50, 15*time.Second)
	c.stop()
	cs.stop()
	out := filepath.Join(dir, "sd.flv")
	c.writeFLV(t, out)
	outSrc := filepath.Join(dir, "source.flv")
	cs.writeFLV(t, outSrc)
	if pr := ffprobeVideo(t, outSrc); pr.Width != 640 || pr.Height != 360 {
		t.Errorf("watermarked source rendition %+v, want the source size 640x360", pr)
	}

	// The watermark is drawn at source size (48x48 at 16,16), then scaled
	// with the picture: 24x24 at 8,8 in the 320x180 rendition.
	magenta := [3]byte{255, 0, 255}
	cases := []struct {
		name    string
		file    string
		w, h    int
		x, y    int
		magenta bool
	}{
		{"rendition inside watermark", out, 320, 180, 8 + 12, 8 + 12, true},
		{"rendition inside watermark corner", out, 320, 180, 8 + 3, 8 + 3, true},
		{"rendition outside watermark", out, 320, 180, 8 + 30, 8 + 12, false},
		{"rendition centre", out, 320, 180, 160, 90, false},
		{"watermarked source inside watermark", outSrc, 640, 360, 16 + 24, 16 + 24, true},
		{"watermarked source outside watermark", outSrc, 640, 360, 16 + 60, 16 + 24, false},
		{"source at watermark", src, 640, 360, 16 + 24, 16 + 24, false},
	}
	for _, tc := range cases {
		got := rgbAt(t, tc.file, 1, tc.w, tc.h, tc.x, tc.y)
		if near(got, magenta, 40) != tc.magenta {
			t.Errorf("%s (%d,%d): colour %v, want magenta %v", tc.name, tc.x, tc.y, got, tc.magenta)
		}
	}
}

// TestKillRestart kills ffmpeg with SIGKILL: the worker restarts it and the
// rendition's reader, still connected, gets frames again within 5 s, with
// timestamps that go on.
func TestKillRestart(t *testing.T) {
	needFFmpeg(t)
	h := newTestHub()
	prof := Profile{Name: "one", GOP: Duration(time.Second), Renditions: []Rendition{
		{Name: "low", Width: 320, Height: 180, VideoKbps: 300, Preset: "ultrafast"},
		{Name: "tiny", Width: 160, Height: 90, VideoKbps: 100, Preset: "ultrafast"},
	}}
	p, reg := newTestPool(t, Config{Profiles: []Profile{prof}}, h)
	publishLoop(t, h, "live", "k", readClip(t, clipPath(t, "640x360", 25, 4)))
	if err := p.Start("live", "k", "one"); err != nil {
		t.Fatal(err)
	}
	c := collect(t, h, "live/k_low", 5*time.Second)
	ct := collect(t, h, "live/k_tiny", 5*time.Second)
	c.waitFrames(t, 25, 10*time.Second)
	st := waitStatus(t, p, "live", "k", 2*time.Second, func(s Status) bool { return s.PID != 0 })
	killedAt := time.Now()
	killPID(t, st.PID, syscall.SIGKILL)
	at, ok := c.firstFrameAfter(killedAt.Add(300*time.Millisecond), 5*time.Second)
	if !ok {
		t.Fatalf("no frame within 5 s of SIGKILL (reader error %v)", c.readErr())
	}
	t.Logf("first frame %v after SIGKILL", at.Sub(killedAt).Round(time.Millisecond))
	c.waitFrames(t, c.frames()+25, 5*time.Second)
	if err := c.readErr(); err != nil {
		t.Fatalf("rendition reader dropped across the restart: %v", err)
	}
	st2, _ := p.Status("live", "k")
	if st2.Restarts != 1 || st2.PID == st.PID || st2.PID == 0 || !strings.Contains(st2.LastExit, "exit") {
		t.Fatalf("status after kill %+v (pid before %d)", st2, st.PID)
	}
	if got := metricValue(t, reg, "livefuse_transcode_restarts_total", "reason", "exit"); got != 1 {
		t.Errorf("restarts metric %v", got)
	}
	// The renditions stay aligned across the restart: the same keyframe
	// times in both, over the span both readers saw.
	ct.waitFrames(t, ct.frames()+25, 5*time.Second)
	keys := func(c *collector) []time.Duration {
		c.mu.Lock()
		defer c.mu.Unlock()
		var ks []time.Duration
		for _, pk := range c.pkts {
			if pk.Kind == av.KindVideo && pk.Key && !pk.Header {
				ks = append(ks, pk.PTS())
			}
		}
		return ks
	}
	kl, kt := keys(c), keys(ct)
	lo, hi := max(kl[0], kt[0]), min(kl[len(kl)-1], kt[len(kt)-1])
	inSpan := func(ks []time.Duration) []time.Duration {
		var out []time.Duration
		for _, k := range ks {
			if k >= lo && k <= hi {
				out = append(out, k)
			}
		}
		return out
	}
	if a, b := inSpan(kl), inSpan(kt); !slices.Equal(a, b) || len(a) < 3 {
		t.Errorf("keyframes across the restart: low %v, tiny %v", a, b)
	}
	// Time goes on across the restart.
	c.mu.Lock()
	var last time.Duration
	for _, pk := range c.pkts {
		if pk.Kind == av.KindVideo && !pk.Header {
			if pk.DTS < last {
				t.Errorf("video DTS went back from %v to %v", last, pk.DTS)
				break
			}
			last = pk.DTS
		}
	}
	c.mu.Unlock()
}

// TestStall stops ffmpeg with SIGSTOP: with no progress for stall_timeout
// it is killed and restarted.
func TestStall(t *testing.T) {
	needFFmpeg(t)
	h := newTestHub()
	prof := Profile{Name: "one", Renditions: []Rendition{{Name: "low", Width: 320, Height: 180, VideoKbps: 300, Preset: "ultrafast"}}}
	p, reg := newTestPool(t, Config{StallTimeout: 1500 * time.Millisecond, Profiles: []Profile{prof}}, h)
	publishLoop(t, h, "live", "s", readClip(t, clipPath(t, "640x360", 25, 4)))
	if err := p.Start("live", "s", "one"); err != nil {
		t.Fatal(err)
	}
	c := collect(t, h, "live/s_low", 5*time.Second)
	c.waitFrames(t, 10, 10*time.Second)
	st := waitStatus(t, p, "live", "s", 2*time.Second, func(s Status) bool { return s.PID != 0 })
	stoppedAt := time.Now()
	killPID(t, st.PID, syscall.SIGSTOP)
	st2 := waitStatus(t, p, "live", "s", 6*time.Second, func(s Status) bool { return s.Restarts == 1 })
	if !strings.HasPrefix(st2.LastExit, "stall") {
		t.Fatalf("last exit %q, want a stall", st2.LastExit)
	}
	if _, ok := c.firstFrameAfter(time.Now(), 6*time.Second); !ok {
		t.Fatal("no frames after the stall restart")
	}
	t.Logf("stall restart: frames again %v after SIGSTOP", time.Since(stoppedAt).Round(time.Millisecond))
	if got := metricValue(t, reg, "livefuse_transcode_restarts_total", "reason", "stall"); got != 1 {
		t.Errorf("stall restarts metric %v", got)
	}
}

// TestPoolFull: with one worker, a second stream is served without ladder
// (queued, or refused with no queue) and its status says why; a queued
// stream gets its ladder when the first stream ends.
func TestPoolFull(t *testing.T) {
	needFFmpeg(t)
	prof := Profile{Name: "one", Renditions: []Rendition{{Name: "low", Width: 320, Height: 180, VideoKbps: 300, Preset: "ultrafast"}}}
	clip := readClip(t, clipPath(t, "640x360", 25, 4))
	cases := []struct {
		name   string
		queue  int
		state  string
		metric string
	}{
		{"queued", 0, StateQueued, "pool_full"},
		{"rejected", -1, StateRejected, "queue_full"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub()
			p, reg := newTestPool(t, Config{Workers: 1, Queue: tc.queue, Profiles: []Profile{prof}}, h)
			stopA := publishLoop(t, h, "live", "a", clip)
			publishLoop(t, h, "live", "b", clip)
			if err := p.Start("live", "a", "one"); err != nil {
				t.Fatal(err)
			}
			if err := p.Start("live", "b", "one"); err != nil {
				t.Fatal(err)
			}
			ca := collect(t, h, "live/a_low", 5*time.Second)
			ca.waitFrames(t, 5, 10*time.Second)
			st, _ := p.Status("live", "b")
			if st.State != tc.state || !strings.Contains(st.Reason, "pool full") || len(st.Renditions) != 0 {
				t.Fatalf("second stream status %+v, want %s with a reason", st, tc.state)
			}
			t.Logf("second stream: %s: %s", st.State, st.Reason)
			if h.live("live/b_low") {
				t.Fatal("second stream has a rendition")
			}
			if got := metricValue(t, reg, "livefuse_transcode_no_ladder_total", "reason", tc.metric); got != 1 {
				t.Errorf("no-ladder metric %v", got)
			}
			if got := metricValue(t, reg, "livefuse_transcode_workers_busy"); got != 1 {
				t.Errorf("busy workers %v", got)
			}

			stopA()
			// The first stream's worker stops and its rendition ends.
			waitStatus(t, p, "live", "a", 5*time.Second, func(s Status) bool { return s.State == "" })
			deadline := time.Now().Add(5 * time.Second)
			for ca.readErr() == nil && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if ca.readErr() == nil {
				t.Fatal("first stream's rendition did not end with its stream")
			}
			if tc.state == StateRejected {
				if st, _ := p.Status("live", "b"); st.State != StateRejected {
					t.Fatalf("refused stream changed state: %+v", st)
				}
				return
			}
			waitStatus(t, p, "live", "b", 5*time.Second, func(s Status) bool { return s.State == StateRunning })
			cb := collect(t, h, "live/b_low", 5*time.Second)
			cb.waitFrames(t, 5, 10*time.Second)
		})
	}
}

// TestProfilesRefused: a bad set of profiles changes nothing; an unknown
// profile cannot be started.
func TestProfilesRefused(t *testing.T) {
	h := newTestHub()
	good := Profile{Name: "good", Renditions: []Rendition{{Name: "low", Width: 320, Height: 180, VideoKbps: 300}}}
	p, _ := newTestPool(t, Config{Profiles: []Profile{good}}, h)
	bad := good
	bad.Name = "bad"
	bad.Renditions = []Rendition{{Name: "low", Width: 321, Height: 180, VideoKbps: 300}}
	newGood := good
	newGood.Name = "other"
	if err := p.SetProfiles([]Profile{newGood, bad}); err == nil || !errors.Is(err, ErrInvalidProfile) {
		t.Fatalf("bad set accepted: %v", err)
	}
	if ps := p.Profiles(); len(ps) != 1 || ps[0].Name != "good" {
		t.Fatalf("profiles half-applied: %+v", ps)
	}
	if err := p.Start("live", "x", "nope"); !errors.Is(err, ErrUnknownProfile) {
		t.Fatalf("start with unknown profile: %v", err)
	}
	if _, err := NewPool(Config{Profiles: []Profile{bad}}, h, h, nil, nil); err == nil {
		t.Fatal("NewPool took a bad profile")
	}
	if _, err := NewPool(Config{FFmpeg: "/nonexistent/ffmpeg"}, h, h, nil, nil); err == nil {
		t.Fatal("NewPool took a missing ffmpeg")
	}
}

// TestCommandRunsInFFmpeg checks that ffmpeg accepts every kind of filter
// graph the builder makes (image, text with time, watermarked source),
// on a short clip from a file.
func TestCommandRunsInFFmpeg(t *testing.T) {
	needFFmpeg(t)
	dir := t.TempDir()
	logo := filepath.Join(dir, "logo.png")
	ffmpegRun(t, "-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", logo)
	clip := clipPath(t, "320x180", 25, 1)
	cases := []Profile{
		{Name: "image", Watermark: &Watermark{Image: logo, Opacity: 0.5, Position: "center"},
			Renditions: []Rendition{{Name: "a", Width: 160, Height: 90, VideoKbps: 100, Preset: "ultrafast"}}},
		{Name: "text", Watermark: &Watermark{Text: "LIVE", Time: true, Image: logo},
			Renditions: []Rendition{{Name: "a", Width: 160, Height: 90, VideoKbps: 100, Preset: "ultrafast", MaxFPS: 10},
				{Name: "b", Width: 96, Height: 54, VideoKbps: 50, Preset: "ultrafast"}},
			WatermarkSource: true, SourceKbps: 200},
	}
	for _, prof := range cases {
		t.Run(prof.Name, func(t *testing.T) {
			if err := prof.Validate(); err != nil {
				t.Fatal(err)
			}
			c := BuildCommand(&prof)
			args := slices.Clone(c.Args)
			var outs []string
			for i, a := range args {
				switch {
				case a == "pipe:0":
					args[i] = clip
				case a == "pipe:"+itoa(c.ProgressFD):
					args[i] = filepath.Join(dir, "progress.txt")
				case strings.HasPrefix(a, "pipe:"):
					args[i] = filepath.Join(dir, prof.Name+"-"+a[5:]+".flv")
					outs = append(outs, args[i])
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, "ffmpeg", append([]string{"-y"}, args...)...)
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("ffmpeg %s: %v: %s", strings.Join(args, " "), err, stderr.String())
			}
			if len(outs) != len(c.Outputs) {
				t.Fatalf("outputs %v", outs)
			}
			for _, o := range outs {
				if fi, err := os.Stat(o); err != nil || fi.Size() < 1000 {
					t.Fatalf("output %s: %v", o, err)
				}
			}
		})
	}
}

// TestProfileChange: changing a running stream's profile restarts its
// ffmpeg with the new ladder (kept renditions keep their readers);
// removing the profile stops the ladder.
func TestProfileChange(t *testing.T) {
	needFFmpeg(t)
	h := newTestHub()
	one := Profile{Name: "one", Renditions: []Rendition{{Name: "low", Width: 320, Height: 180, VideoKbps: 300, Preset: "ultrafast"}}}
	p, reg := newTestPool(t, Config{Profiles: []Profile{one}}, h)
	publishLoop(t, h, "live", "c", readClip(t, clipPath(t, "640x360", 25, 4)))
	if err := p.Start("live", "c", "one"); err != nil {
		t.Fatal(err)
	}
	low := collect(t, h, "live/c_low", 5*time.Second)
	low.waitFrames(t, 10, 10*time.Second)

	two := one
	two.Renditions = []Rendition{one.Renditions[0], {Name: "tiny", Width: 160, Height: 90, VideoKbps: 100, Preset: "ultrafast"}}
	if err := p.SetProfiles([]Profile{two}); err != nil {
		t.Fatal(err)
	}
	tiny := collect(t, h, "live/c_tiny", 10*time.Second)
	tiny.waitFrames(t, 10, 10*time.Second)
	n := low.frames()
	low.waitFrames(t, n+10, 5*time.Second)
	if err := low.readErr(); err != nil {
		t.Fatalf("kept rendition lost its reader on reload: %v", err)
	}
	if st, _ := p.Status("live", "c"); len(st.Renditions) != 2 || st.Restarts != 0 {
		t.Fatalf("status after reload %+v (a reload is no failure)", st)
	}
	if got := metricValue(t, reg, "livefuse_transcode_restarts_total", "reason", "exit"); got != 0 {
		t.Errorf("reload counted as a restart: %v", got)
	}

	if err := p.SetProfiles(nil); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, "live", "c", 5*time.Second, func(s Status) bool { return s.State == "" })
	deadline := time.Now().Add(5 * time.Second)
	for (low.readErr() == nil || h.live("live/c_low")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if low.readErr() == nil || h.live("live/c_low") || h.live("live/c_tiny") {
		t.Fatal("renditions still live after their profile was removed")
	}
}

// TestKeyframesFromSource: with keyframes: source, every rendition has its
// keyframes where the source has them (here every 1.48 s, a GOP no fixed
// setting would give).
func TestKeyframesFromSource(t *testing.T) {
	needFFmpeg(t)
	clip := filepath.Join(t.TempDir(), "g37.flv")
	ffmpegRun(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine", "-t", "12", // no loop in the window
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "37", "-sc_threshold", "0", "-c:a", "aac", "-f", "flv", clip)
	h := newTestHub()
	prof := Profile{Name: "src", Keyframes: KeyframesSource, Renditions: []Rendition{
		{Name: "a", Width: 320, Height: 180, VideoKbps: 300, Preset: "ultrafast"},
		{Name: "b", Width: 160, Height: 90, VideoKbps: 100, Preset: "ultrafast"},
	}}
	p, _ := newTestPool(t, Config{Profiles: []Profile{prof}}, h)
	publishLoop(t, h, "live", "ks", readClip(t, clip))
	if err := p.Start("live", "ks", "src"); err != nil {
		t.Fatal(err)
	}
	ca := collect(t, h, "live/ks_a", 5*time.Second)
	cb := collect(t, h, "live/ks_b", 5*time.Second)
	ca.waitFrames(t, 125, 15*time.Second)
	cb.waitFrames(t, 125, 15*time.Second)
	ca.stop()
	cb.stop()
	for name, c := range map[string]*collector{"a": ca, "b": cb} {
		var keys []time.Duration
		for _, pk := range c.pkts {
			if pk.Kind == av.KindVideo && pk.Key && !pk.Header {
				keys = append(keys, pk.PTS())
			}
		}
		if len(keys) < 3 {
			t.Fatalf("%s: keyframes %v", name, keys)
		}
		for i := 1; i < len(keys); i++ {
			if d := keys[i] - keys[i-1]; d != 1480*time.Millisecond {
				t.Errorf("%s: keyframes %v apart (%v), want the source's 1.48 s", name, d, keys)
			}
		}
	}
}

// TestTextWatermarkTime draws a text with the time on a still blue picture:
// the text region changes from one second to the next, the rest does not.
func TestTextWatermarkTime(t *testing.T) {
	needFFmpeg(t)
	dir := t.TempDir()
	clip := filepath.Join(dir, "blue.flv")
	ffmpegRun(t, "-f", "lavfi", "-i", "color=c=blue:s=320x180:rate=25", "-f", "lavfi", "-i", "sine", "-t", "4",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", clip)
	h := newTestHub()
	prof := Profile{Name: "clock", Watermark: &Watermark{Text: "LIVE", Time: true, FontSize: 20, Position: "top-left", Margin: 4},
		Renditions: []Rendition{{Name: "r", Width: 320, Height: 180, VideoKbps: 400, Preset: "ultrafast"}}}
	p, _ := newTestPool(t, Config{Profiles: []Profile{prof}}, h)
	publishLoop(t, h, "live", "clock", readClip(t, clip))
	if err := p.Start("live", "clock", "clock"); err != nil {
		t.Fatal(err)
	}
	c := collect(t, h, "live/clock_r", 5*time.Second)
	c.waitFrames(t, 90, 10*time.Second)
	c.stop()
	out := filepath.Join(dir, "r.flv")
	c.writeFLV(t, out)
	frame := func(at float64) []byte {
		b, err := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", fmt.Sprint(at), "-i", out,
			"-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-").Output()
		if err != nil || len(b) != 320*180 {
			t.Fatalf("decode frame at %v: %v (%d bytes)", at, err, len(b))
		}
		return b
	}
	// The first second or so comes from the cached GOP in a burst; frames
	// after it are drawn in real time, so 2.5 s of media later the wall
	// clock has moved on by more than a second.
	f1, f2 := frame(0.2), frame(2.7)
	diff := func(x0, y0, x1, y1 int) int {
		n := 0
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				if d := int(f1[y*320+x]) - int(f2[y*320+x]); d > 40 || d < -40 {
					n++
				}
			}
		}
		return n
	}
	if n := diff(0, 0, 320, 30); n == 0 {
		t.Error("text line unchanged over more than a second: no time drawn")
	}
	if n := diff(0, 60, 320, 180); n != 0 {
		t.Errorf("%d pixels changed below the text", n)
	}
	var bright int
	for _, v := range f1[:320*30] {
		if v > 200 {
			bright++
		}
	}
	if bright < 50 {
		t.Errorf("only %d white pixels in the text line", bright)
	}
}
