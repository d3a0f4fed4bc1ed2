package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

const tcLadderYAML = `transcode:
  workers: 2
  profiles:
    - name: abr
      gop: 1s
      renditions:
        - {name: 720p, width: 1280, height: 720, video_kbps: 1500, preset: ultrafast}
        - {name: 480p, width: 854, height: 480, video_kbps: 800, preset: ultrafast}
        - {name: 360p, width: 640, height: 360, video_kbps: 400, preset: ultrafast}
    - name: low
      renditions:
        - {name: low, width: 320, height: 180, video_kbps: 300, preset: ultrafast}
streams:
  - {app: live, name: tc, publish_token: "tctok", profile: abr}
  - {app: live, name: k, publish_token: "ktok", profile: low}
`

func ffprobeVideoURL(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("timeout", "20", "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", url, err, out)
	}
	// HLS may list the stream once per program: the first line tells.
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// TestTranscodeLadder pushes a 720p stream whose profile is a
// 720p/480p/360p ladder: each rendition is served as HTTP-FLV and HLS at
// its size and close to its bitrate, and the stream status lists them.
func TestTranscodeLadder(t *testing.T) {
	parallel(t)
	s := startServer(t, tcLadderYAML)
	tcPush(t, tcClip(t, "1280x720", 4), s.rtmpURL("tc", "token=tctok"))
	waitLive(t, s.flvURL("tc"), 10*time.Second)
	renditions := []struct {
		name string
		size string
		kbps float64
	}{{"720p", "1280,720", 1500}, {"480p", "854,480", 800}, {"360p", "640,360", 400}}
	players := map[string]*flvPlayer{}
	for _, r := range renditions {
		waitLive(t, s.flvURL("tc_"+r.name), 10*time.Second)
		players[r.name] = playFLV(t, s.flvURL("tc_"+r.name), true)
	}
	for _, r := range renditions {
		if got := ffprobeVideoURL(t, s.flvURL("tc_"+r.name)); got != "h264,"+r.size {
			t.Errorf("%s over HTTP-FLV: ffprobe %q, want h264,%s", r.name, got, r.size)
		}
	}
	for _, r := range renditions {
		players[r.name].waitFrames(t, 100, 15*time.Second)
	}
	for _, r := range renditions {
		p := players[r.name]
		p.stop()
		kbps := p.videoKbps()
		t.Logf("%s: %.0f kbit/s (target %.0f) over %d frames", r.name, kbps, r.kbps, p.frames())
		if kbps < 0.6*r.kbps || kbps > 1.35*r.kbps {
			t.Errorf("%s: %.0f kbit/s, want within 60%%..135%% of %.0f", r.name, kbps, r.kbps)
		}
	}
	for _, r := range renditions {
		waitMediaSequence(t, s.hlsURL("tc_"+r.name), -1, 15*time.Second)
		if got := ffprobeVideoURL(t, s.hlsURL("tc_"+r.name)); got != "h264,"+r.size {
			t.Errorf("%s over HLS: ffprobe %q, want h264,%s", r.name, got, r.size)
		}
	}
	st := s.tcStatus(t, "tc")
	if st == nil || st.State != "running" || st.Profile != "abr" || len(st.Renditions) != 3 || st.Renditions[0] != "live/tc_720p" {
		t.Fatalf("transcode status %+v", st)
	}
	if st.FPS <= 0 || st.RSSBytes <= 0 {
		t.Errorf("worker figures missing: %+v", st)
	}
	metrics := httpGetAPI(t, s, "/metrics")
	for _, m := range []string{"livefuse_transcode_workers_busy 1", `livefuse_transcode_worker_rss_bytes{stream="live/tc"}`,
		`livefuse_transcode_admissions_total{result="started"} 1`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

func httpGetAPI(t *testing.T, s *server, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", s.apiPort, path), nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestTranscodeKill kills the worker's ffmpeg with SIGKILL: the rendition's
// HTTP-FLV player stays connected and gets frames again within 5 s.
func TestTranscodeKill(t *testing.T) {
	parallel(t)
	s := startServer(t, tcLadderYAML)
	tcPush(t, tcClip(t, "640x360", 4), s.rtmpURL("k", "token=ktok"))
	waitLive(t, s.flvURL("k_low"), 15*time.Second)
	p := playFLV(t, s.flvURL("k_low"), false)
	p.waitFrames(t, 50, 10*time.Second)
	var pids []int
	tcPoll(t, 5*time.Second, "one ffmpeg child", func() bool { pids = s.ffmpegChildren(); return len(pids) == 1 })
	killed := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n := p.frames()
	tcPoll(t, 5*time.Second, "frames after SIGKILL", func() bool {
		return s.ffmpegChildren() != nil && len(s.ffmpegChildren()) == 1 && s.ffmpegChildren()[0] != pids[0] && p.frames() > n+5
	})
	t.Logf("frames again %v after SIGKILL (largest gap %v)", time.Since(killed).Round(time.Millisecond), p.maxGap(killed.Add(-time.Second)).Round(time.Millisecond))
	p.mu.Lock()
	err := p.err
	p.mu.Unlock()
	if err != nil {
		t.Fatalf("player dropped across the restart: %v", err)
	}
	if st := s.tcStatus(t, "k"); st == nil || st.Restarts != 1 || !strings.HasPrefix(st.LastExit, "exit") {
		t.Fatalf("status after kill: %+v", st)
	}
}

// TestTranscodePoolFull: one worker, two streams with a ladder: the second
// is served without renditions and its status says why; when the first
// ends, the second gets its ladder.
func TestTranscodePoolFull(t *testing.T) {
	parallel(t)
	s := startServer(t, `transcode:
  workers: 1
  profiles:
    - name: low
      renditions:
        - {name: low, width: 320, height: 180, video_kbps: 300, preset: ultrafast}
streams:
  - {app: live, name: a, publish_token: "atok", profile: low}
  - {app: live, name: b, publish_token: "btok", profile: low}
`)
	clip := tcClip(t, "640x360", 4)
	stopA := tcPush(t, clip, s.rtmpURL("a", "token=atok"))
	waitLive(t, s.flvURL("a_low"), 15*time.Second)
	tcPush(t, clip, s.rtmpURL("b", "token=btok"))
	waitLive(t, s.flvURL("b"), 10*time.Second)
	var st = s.tcStatus(t, "b")
	tcPoll(t, 5*time.Second, "b queued", func() bool { st = s.tcStatus(t, "b"); return st != nil && st.State == "queued" })
	if !strings.Contains(st.Reason, "pool full") || len(st.Renditions) != 0 {
		t.Fatalf("second stream status %+v", st)
	}
	t.Logf("second stream: %s: %s", st.State, st.Reason)
	if resp, err := http.Get(s.flvURL("b_low")); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("second stream has a rendition while the pool is full")
		}
	}
	if m := httpGetAPI(t, s, "/metrics"); !strings.Contains(m, `livefuse_transcode_no_ladder_total{reason="pool_full"} 1`) {
		t.Errorf("no-ladder metric missing")
	}
	stopA()
	waitLive(t, s.flvURL("b_low"), 15*time.Second)
	playFLV(t, s.flvURL("b_low"), false).waitFrames(t, 10, 10*time.Second)
	if st := s.tcStatus(t, "b"); st == nil || st.State != "running" {
		t.Fatalf("second stream after the first ended: %+v", st)
	}
}

// TestTranscodeProfilesAPI: bad profiles are refused with a clear message
// and change nothing; a good one is stored, and a live stream given it by
// PATCH gets its ladder.
func TestTranscodeProfilesAPI(t *testing.T) {
	parallel(t)
	s := startServer(t, tcLadderYAML)
	list := func() string {
		b := httpGetAPI(t, s, "/api/v1/profiles")
		var v struct {
			Profiles []json.RawMessage `json:"profiles"`
		}
		if err := json.Unmarshal([]byte(b), &v); err != nil {
			t.Fatalf("profiles %s: %v", b, err)
		}
		return b
	}
	before := list()
	logo := filepath.Join(t.TempDir(), "logo.png")
	cases := []struct {
		name string
		body string
		code int
		want string
	}{
		{"unknown rendition field", `{"name":"x","renditions":[{"name":"a","width":640,"height":360,"video_kbps":500,"bitrat":1}]}`, 400, `unknown field "bitrat"`},
		{"odd width", `{"name":"x","renditions":[{"name":"a","width":641,"height":360,"video_kbps":500}]}`, 400, "width 641 is odd"},
		{"missing watermark file", `{"name":"x","watermark":{"image":"` + logo + `"},"renditions":[{"name":"a","width":640,"height":360,"video_kbps":500}]}`, 400, "no such file"},
		{"existing name", `{"name":"low","renditions":[{"name":"a","width":640,"height":360,"video_kbps":500}]}`, 409, "exists"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e struct{ Error string }
			code, err := s.api("POST", "/profiles", json.RawMessage(tc.body), &e)
			if err != nil || code != tc.code || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("POST: %d %q (%v), want %d with %q", code, e.Error, err, tc.code, tc.want)
			}
			if after := list(); after != before {
				t.Fatalf("profiles changed by a refused request:\n%s\n%s", before, after)
			}
		})
	}
	if err := os.WriteFile(logo, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ffmpegCmd(t, "-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", "-y", logo).Wait()
	good := `{"name":"wm","watermark":{"image":"` + logo + `","position":"top-left","margin":8},"renditions":[{"name":"small","width":320,"height":180,"video_kbps":300,"preset":"ultrafast"}]}`
	if code, err := s.api("POST", "/profiles", json.RawMessage(good), nil); err != nil || code != 201 {
		t.Fatalf("POST good profile: %d %v", code, err)
	}
	if code, _ := s.api("PUT", "/profiles/other", json.RawMessage(good), nil); code != 400 {
		t.Fatalf("PUT with a name that does not match: %d", code)
	}
	if code, _ := s.api("DELETE", "/profiles/low", nil, nil); code != 409 {
		t.Fatalf("DELETE of a profile in use: %d", code)
	}
	// A live stream without ladder gets one when its profile is set.
	if code, err := s.api("POST", "/streams", map[string]any{"app": "live", "name": "p", "publish_token": "ptok"}, nil); err != nil || code != 201 {
		t.Fatalf("create stream: %d %v", code, err)
	}
	tcPush(t, tcClip(t, "640x360", 4), s.rtmpURL("p", "token=ptok"))
	waitLive(t, s.flvURL("p"), 10*time.Second)
	if st := s.tcStatus(t, "p"); st != nil {
		t.Fatalf("stream without profile has transcode status %+v", st)
	}
	if code, err := s.api("PATCH", "/streams/live/p", map[string]any{"profile": "wm"}, nil); err != nil || code != 200 {
		t.Fatalf("PATCH profile: %d %v", code, err)
	}
	waitLive(t, s.flvURL("p_small"), 15*time.Second)
	playFLV(t, s.flvURL("p_small"), false).waitFrames(t, 10, 10*time.Second)
}

// TestTranscodeRenditionPlayKey: a rendition of a stream with a play key
// plays only with a URL signed with that key.
func TestTranscodeRenditionPlayKey(t *testing.T) {
	parallel(t)
	s := startServer(t, tcLadderYAML+`  - {app: live, name: sec, publish_token: "stok", play_key: "pk", profile: low}
`)
	tcPush(t, tcClip(t, "640x360", 4), s.rtmpURL("sec", "token=stok"))
	signed := s.flvURL("sec_low") + "?auth_key=" + authkey.Sign("/live/sec_low.flv", "pk", time.Now().Add(time.Minute), "0", "0")
	waitLive(t, signed, 15*time.Second)
	resp, err := http.Get(s.flvURL("sec_low"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatal("rendition of a stream with a play key plays without auth_key")
	}
	t.Logf("unsigned rendition URL: %d", resp.StatusCode)
}

// TestTranscodeOff: without ffmpeg the node serves streams without their
// ladder, and the status says why.
func TestTranscodeOff(t *testing.T) {
	parallel(t)
	s := startServer(t, `transcode:
  ffmpeg: /nonexistent/ffmpeg
  profiles:
    - name: low
      renditions:
        - {name: low, width: 320, height: 180, video_kbps: 300}
streams:
  - {app: live, name: off, publish_token: "otok", profile: low}
`)
	tcPush(t, tcClip(t, "640x360", 4), s.rtmpURL("off", "token=otok"))
	waitLive(t, s.flvURL("off"), 10*time.Second)
	st := s.tcStatus(t, "off")
	if st == nil || st.State != "rejected" || !strings.Contains(st.Reason, "transcoding off") {
		t.Fatalf("status %+v", st)
	}
	t.Logf("status: %s", st.Reason)
}
