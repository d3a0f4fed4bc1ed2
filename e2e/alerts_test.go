package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

const (
	alertsViewerToken = "e2e-viewer-token-0123456789"
	alertsHookSecret  = "e2e-webhook-secret-0123456789"
)

// startAlertsServer is startServer with a viewer token in lms.tokens (the
// harness writes the lms section itself).
func startAlertsServer(t *testing.T, extra string) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), token: apiToken}
	s.rtmp, s.rtsp, s.http, s.apiPort = freePort(t), freePort(t), freePort(t), freePort(t)
	udp := freeUDPPair(t)
	cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
rtmp: {addr: "127.0.0.1:%d"}
rtsp: {addr: "127.0.0.1:%d", udp_rtp_addr: "127.0.0.1:%d", udp_rtcp_addr: "127.0.0.1:%d"}
http: {addr: "127.0.0.1:%d", public_host: "127.0.0.1"}
lms:
  api_addr: "127.0.0.1:%d"
  api_token: %q
  tokens: [{name: watcher, token: %q, role: viewer}]
`, filepath.Join(s.dir, "data"), s.rtmp, s.rtsp, udp, udp+1, s.http, s.apiPort, apiToken, alertsViewerToken)
	cfg += extra
	s.cfgPath = filepath.Join(s.dir, "livefuse.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// pushEncoder runs ffmpeg encoding a test pattern at fps with a keyframe
// every 2 s, two B-frames and AAC audio, in real time.
func pushEncoder(t *testing.T, url string, fps int) *os.Process {
	cmd := ffmpegCmd(t, "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate="+strconv.Itoa(fps),
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", strconv.Itoa(2*fps), "-keyint_min", strconv.Itoa(2*fps),
		"-sc_threshold", "0", "-b:v", "600k", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", url)
	return cmd.Process
}

// hookReceiver is the webhook: it keeps the alerts whose signature
// verifies and counts the ones that do not.
type hookReceiver struct {
	mu     sync.Mutex
	alerts []api.Alert
	bad    int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	m := hmac.New(sha256.New, []byte(alertsHookSecret))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	h.mu.Lock()
	defer h.mu.Unlock()
	var al api.Alert
	if !hmac.Equal([]byte(r.Header.Get("X-Livefuse-Signature")), []byte(want)) || json.Unmarshal(body, &al) != nil {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.alerts = append(h.alerts, al)
}

func (h *hookReceiver) got(rule, state string) *api.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.alerts {
		if h.alerts[i].Rule == rule && h.alerts[i].State == state {
			al := h.alerts[i]
			return &al
		}
	}
	return nil
}

// TestAlertsIngestFPS: an encoder restarted at 5 fps fires "fps under 10
// for 2 s", back at 25 fps resolves it; the webhook gets both, signed; the
// API lists it firing then resolved; the health figures match what was
// encoded; a viewer cannot change the rules.
func TestAlertsIngestFPS(t *testing.T) {
	parallel(t)
	hook := &hookReceiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	s := startAlertsServer(t, fmt.Sprintf(`streams:
  - {name: health, publish_token: tok-health}
alerts:
  interval: 250ms
  rules:
    - {name: fps-low, kind: ingest_fps_below, threshold: 10, for_s: 2, severity: critical}
  webhooks:
    - {url: %q, secret: %q}
`, hs.URL+"/hook", alertsHookSecret))
	url := s.rtmpURL("health", "token=tok-health")

	feed := func() (api.FeedStatus, bool) {
		var info api.StreamInfo
		if err := s.apiOK("GET", "/streams/live/health", nil, &info); err != nil || info.Live == nil || info.Live.Switch == nil {
			return api.FeedStatus{}, false
		}
		for _, f := range info.Live.Switch.Feeds {
			if f.Feed == "main" {
				return f, f.State == "live"
			}
		}
		return api.FeedStatus{}, false
	}
	alerts := func(state string) []api.Alert {
		var l api.AlertList
		if err := s.apiOK("GET", "/alerts?state="+state, nil, &l); err != nil {
			t.Fatal(err)
		}
		return l.Alerts
	}
	waitFor := func(what string, within time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s\n%s", what, within, s.tail(30))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// 25 fps: the figures in the API match the encoder; nothing fires.
	enc := pushEncoder(t, url, 25)
	var f api.FeedStatus
	waitFor("main at about 25 fps over a full window", 20*time.Second, func() bool {
		var live bool
		f, live = feed()
		return live && f.FPS > 23 && f.FPS < 27 && f.LastPacketAgeMillis < 1000 && f.KeyframeIntervalMillis > 0
	})
	t.Logf("health at 25 fps: fps %.2f bitrate %.0f kbps (audio %.0f) keyframe interval %.0f ms bframes %v audio %v %dx%d window %d ms",
		f.FPS, f.BitrateKbps, f.AudioBitrateKbps, f.KeyframeIntervalMillis, f.BFrames, f.Audio, f.Width, f.Height, f.WindowMillis)
	if f.KeyframeIntervalMillis < 1900 || f.KeyframeIntervalMillis > 2100 || !f.BFrames || !f.Audio ||
		f.Width != 640 || f.Height != 360 || f.WindowMillis != 5000 || f.AudioBitrateKbps < 40 || f.BitrateKbps < f.AudioBitrateKbps {
		t.Fatalf("health %+v: want keyframe interval about 2000 ms (GOP 50 at 25 fps), B-frames, audio, 640x360, window 5000 ms", f)
	}
	if n := len(alerts("firing")); n != 0 {
		t.Fatalf("%d alerts firing at 25 fps", n)
	}
	// The units' reports (through the store) carry the same figures.
	waitFor("unit a's report with the health figures", 10*time.Second, func() bool {
		var info api.StreamInfo
		if s.apiOK("GET", "/streams/live/health", nil, &info) != nil {
			return false
		}
		for _, u := range info.Units {
			for _, uf := range u.Feeds {
				if u.Unit == "a" && uf.Feed == "main" && uf.KeyframeIntervalMillis == 2000 && uf.BFrames && uf.Audio && uf.WindowMillis == 5000 {
					return true
				}
			}
		}
		return false
	})
	// The /metrics gauges carry the same figures.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.apiPort))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`livefuse_origin_feed_keyframe_interval_seconds{feed="main",stream="live/health"} 2`)) ||
		!bytes.Contains(metrics, []byte(`livefuse_origin_feed_bframes{feed="main",stream="live/health"} 1`)) {
		t.Fatalf("metrics lack the feed's gauges:\n%s", grepLines(string(metrics), "livefuse_origin_feed_"))
	}

	// A viewer may read the rules, not change them.
	asViewer := func(method, path, body string) int {
		req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d/api/v1%s", s.apiPort, path), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alertsViewerToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := asViewer("GET", "/alerts/rules", ""); code != http.StatusOK {
		t.Fatalf("viewer GET rules: %d", code)
	}
	if code := asViewer("PUT", "/alerts/rules", `{"rules":[]}`); code != http.StatusForbidden {
		t.Fatalf("viewer PUT rules: %d, want 403", code)
	}
	// The admin may; the rules answer shows them (fps-low kept, one added).
	put := api.AlertRules{Rules: []api.AlertRule{
		{Name: "fps-low", Kind: api.AlertIngestFPS, Threshold: 10, ForSeconds: 2, Severity: "critical"},
		{Name: "gop-long", Kind: api.AlertKeyframeInterval, Threshold: 8000, ForSeconds: 5}}}
	var got api.AlertRules
	if err := s.apiOK("PUT", "/alerts/rules", put, &got); err != nil || len(got.Rules) != 2 || got.Rules[1].Name != "gop-long" {
		t.Fatalf("admin PUT rules: %v %+v", err, got)
	}

	// The encoder restarts at 5 fps: the rule fires.
	syscall.Kill(-enc.Pid, syscall.SIGKILL)
	slowAt := time.Now()
	enc = pushEncoder(t, url, 5)
	waitFor("fps-low firing at 5 fps", 30*time.Second, func() bool {
		f, live := feed()
		fs := alerts("firing")
		return live && f.FPS < 6 && len(fs) == 1 && fs[0].Value > 3 && fs[0].Value < 7
	})
	firing := alerts("firing")[0]
	t.Logf("fired %.1f s after the restart at 5 fps: %s", time.Since(slowAt).Seconds(), firing.Summary)
	if firing.Rule != "fps-low" || firing.Kind != api.AlertIngestFPS || firing.Severity != "critical" || firing.Threshold != 10 ||
		firing.Labels.Stream != "live/health" || firing.Labels.Feed != "main" || firing.Labels.Unit == "" {
		t.Fatalf("firing alert %+v", firing)
	}

	// Back at 25 fps: resolved, not before the 25 fps encoder runs.
	syscall.Kill(-enc.Pid, syscall.SIGKILL)
	fastAt := time.Now()
	pushEncoder(t, url, 25)
	var resolved api.Alert
	waitFor("fps-low resolved at 25 fps", 30*time.Second, func() bool {
		for _, al := range alerts("resolved") {
			if al.ID == firing.ID {
				resolved = al
			}
		}
		return resolved.ID != "" && len(alerts("firing")) == 0
	})
	if resolved.ID != firing.ID || resolved.ResolvedAt == nil || resolved.ResolvedAt.Before(fastAt.Add(-time.Second)) {
		t.Fatalf("resolved %+v, want the firing alert resolved after the 25 fps encoder started at %s", resolved, fastAt.UTC())
	}
	t.Logf("resolved %.1f s after the restart at 25 fps", resolved.ResolvedAt.Sub(fastAt).Seconds())

	// The webhook got both, signed with the secret.
	waitFor("webhook firing and resolved", 10*time.Second, func() bool {
		return hook.got("fps-low", "firing") != nil && hook.got("fps-low", "resolved") != nil
	})
	hook.mu.Lock()
	bad := hook.bad
	hook.mu.Unlock()
	if bad != 0 || hook.got("fps-low", "firing").ID != firing.ID {
		t.Fatalf("webhook: %d bodies failed the signature check; firing %+v", bad, hook.got("fps-low", "firing"))
	}
	if strings.Contains(s.logs(), alertsHookSecret) {
		t.Fatal("the webhook secret is in the log")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
