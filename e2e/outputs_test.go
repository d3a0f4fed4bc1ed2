package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

// The outputs tests go over what a user can configure for a stream's
// outputs: origin.hls_variant (mpegts, fmp4, lowlatency) × encryption
// (off, on from the config file, toggled live through the API) × with and
// without a ladder profile. Every combination plays in FFmpeg and in
// hls.js (Chromium), or is refused with its reason; viewers of every
// protocol are counted. One server per variant.

// outputsYAML configures a server of HLS variant v: live/plain (clear),
// live/lad (a one-rendition ladder), and for mpegts live/enc (encrypted
// from the config file). Every stream has a play key.
func outputsYAML(v string) string {
	y := `origin: {hls_variant: ` + v + `}
transcode:
  profiles:
    - name: one
      gop: 1s
      renditions:
        - {name: 180p, width: 320, height: 180, video_kbps: 200, preset: ultrafast}
streams:
  - {name: plain, publish_token: pub, play_key: ` + encPlayKey + `}
  - {name: lad, publish_token: pub, play_key: ` + encPlayKey + `, profile: one}
`
	if v == "mpegts" {
		y += `  - {name: enc, publish_token: pub, play_key: ` + encPlayKey + `, encryption: true}
`
	}
	return y
}

// hlsPlay is the signed HLS URL of stream name.
func hlsPlay(s *server, name string) string {
	return signed(s.hlsURL(name), "/live/"+name+"/index.m3u8")
}

// ffmpegHLS decodes 3 s of the HLS of name and fails the test unless
// FFmpeg gets at least 40 video frames.
func ffmpegHLS(t *testing.T, s *server, name string) {
	t.Helper()
	got, errs := decoded(t, 40*time.Second, "v", "-t", "3", "-i", hlsPlay(s, name))
	t.Logf("ffmpeg HLS %s: %d frames; errors %q", name, len(got), errs)
	if len(got) < 40 {
		t.Fatalf("ffmpeg HLS %s: %d frames decoded: %s", name, len(got), errs)
	}
}

// hlsjs plays the HLS of name in hls.js (Chromium) for 3 s of media time.
func hlsjs(t *testing.T, s *server, web, name string) {
	t.Helper()
	rep := browserPlay(t, web, playerURL(s, hlsPlay(s, name)), 3)
	if !rep.OK || len(rep.Errors) > 0 {
		t.Fatalf("hls.js %s: advanced %.1f s, errors %v, events %v", name, rep.Advanced, rep.Errors, rep.Events)
	}
}

// mediaPlaylist fetches the playlist at u, or for a multivariant playlist
// its first variant's.
func mediaPlaylist(t *testing.T, u string) string {
	t.Helper()
	body := encGet(t, u, http.StatusOK)
	if strings.Contains(body, "#EXT-X-STREAM-INF") {
		for _, l := range strings.Split(body, "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				return encGet(t, strings.TrimSuffix(u[:strings.LastIndex(u, "/")+1]+l, "\r"), http.StatusOK)
			}
		}
	}
	return body
}

// playlistWholly waits up to 20 s until every segment of the media
// playlist of name (a multivariant playlist's first variant) is under a
// key of method ("NONE": no key, or METHOD=NONE).
func playlistWholly(t *testing.T, s *server, name, method string) {
	t.Helper()
	u := hlsPlay(s, name)
	var body string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		body = mediaPlaylist(t, u)
		methods := segmentKeyMethods(body)
		ok := len(methods) > 0
		for _, m := range methods {
			ok = ok && m == method
		}
		if ok {
			return
		}
	}
	t.Fatalf("playlist of %s not wholly %s within 20 s:\n%s", name, method, body)
}

// segmentKeyMethods returns the key method in force for each segment of a
// media playlist, in order ("NONE" without a key).
func segmentKeyMethods(body string) []string {
	var methods []string
	cur := "NONE"
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "#EXT-X-KEY:"):
			cur = "NONE"
			if i := strings.Index(l, "METHOD="); i >= 0 {
				cur, _, _ = strings.Cut(l[i+len("METHOD="):], ",")
			}
		case l != "" && !strings.HasPrefix(l, "#"):
			methods = append(methods, cur)
		}
	}
	return methods
}

// playlistHas waits up to 10 s for the media playlist of name (a
// multivariant playlist's first variant) to contain want.
func playlistHas(t *testing.T, s *server, name, want string) {
	t.Helper()
	u := hlsPlay(s, name)
	var body string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		body = mediaPlaylist(t, u)
		if strings.Contains(body, want) {
			return
		}
	}
	t.Fatalf("playlist of %s without %q:\n%s", name, want, body)
}

// TestOutputsEncryptionRefusedConfig: a config file with an encrypted
// stream and an HLS variant that has no encrypted form is refused at load,
// with the reason, before anything starts.
func TestOutputsEncryptionRefusedConfig(t *testing.T) {
	for _, v := range []string{"fmp4", "lowlatency"} {
		t.Run(v, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "livefuse.yaml")
			y := fmt.Sprintf("data_dir: %s\norigin: {hls_variant: %s}\nstreams:\n  - {name: e, publish_token: p, play_key: k, encryption: true}\n",
				filepath.Join(dir, "data"), v)
			if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, env.bin, "serve", "--config", cfg).CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("serve with an encrypted stream and hls_variant %s: %v\n%s", v, err, out)
			}
			if !bytes.Contains(out, []byte("hls_variant")) || !bytes.Contains(out, []byte("streams[0]")) {
				t.Fatalf("refusal without its reason:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
				t.Errorf("data dir made: something started before the config was refused")
			}
		})
	}
}

// TestOutputsMatrix plays every combination of HLS variant × encryption ×
// ladder in FFmpeg and hls.js, or checks its refusal; on mpegts it counts
// 2 HTTP-FLV + 1 RTMP + 1 HLS players as 4 readers in the API, livectl
// and the metrics.
func TestOutputsMatrix(t *testing.T) {
	web := needBrowser(t)
	for _, v := range []string{"mpegts", "fmp4", "lowlatency"} {
		t.Run(v, func(t *testing.T) {
			s := startServer(t, outputsYAML(v))
			s.hlsVariant = v
			names := []string{"plain", "lad"}
			if v == "mpegts" {
				names = append(names, "enc")
			}
			for _, n := range names {
				push(t, s.rtmpURL(n, "token=pub"), true)
			}
			for _, n := range names {
				waitLive(t, signed(s.flvURL(n), "/live/"+n+".flv"), 15*time.Second)
			}
			if v == "mpegts" {
				countReaders(t, s)
			}

			// Encryption off, without and with a ladder.
			ffmpegHLS(t, s, "plain")
			hlsjs(t, s, web, "plain")
			if v == "mpegts" {
				playlistHas(t, s, "lad", "#EXTINF") // the multivariant lists the source first
				body := encGet(t, hlsPlay(s, "lad"), http.StatusOK)
				if !strings.Contains(body, "v/180p/index.m3u8") {
					t.Errorf("multivariant playlist of lad without its rendition:\n%s", body)
				}
			}
			ffmpegHLS(t, s, "lad")
			hlsjs(t, s, web, "lad")
			ffmpegHLS(t, s, "lad_180p") // the rendition plays under its own name too

			if v != "mpegts" {
				// Encryption cannot be turned on: the API says why. (A
				// new stream is created clear: POST takes no encryption.)
				var e map[string]any
				code, err := s.api("PATCH", "/streams/live/plain", map[string]any{"encryption": true}, &e)
				if err != nil || code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(e), "hls_variant") {
					t.Fatalf("PATCH encryption on with hls_variant %s: %d %v %v", v, code, e, err)
				}
				// Still clear and playing.
				ffmpegHLS(t, s, "plain")
				return
			}

			// Encrypted from the config file.
			playlistHas(t, s, "enc", "METHOD=SAMPLE-AES")
			ffmpegHLS(t, s, "enc")
			hlsjs(t, s, web, "enc")

			// Toggled live, without and with a ladder.
			for _, n := range []string{"plain", "lad"} {
				if code, err := s.api("PATCH", "/streams/live/"+n, map[string]any{"encryption": true}, nil); code != 200 || err != nil {
					t.Fatalf("PATCH %s encryption on: %d %v", n, code, err)
				}
			}
			for _, n := range []string{"plain", "lad"} {
				playlistHas(t, s, n, "METHOD=SAMPLE-AES")
			}
			// hls.js plays across the switch; FFmpeg 5.1 may crash
			// (SIGSEGV) on a live playlist whose window holds both clear and
			// SAMPLE-AES segments, so it is given a window that is wholly one
			// or the other (a known FFmpeg defect, see the issue note).
			hlsjs(t, s, web, "lad")
			playlistWholly(t, s, "plain", "SAMPLE-AES")
			playlistWholly(t, s, "lad", "SAMPLE-AES")
			ffmpegHLS(t, s, "plain")
			hlsjs(t, s, web, "plain")
			ffmpegHLS(t, s, "lad")
			hlsjs(t, s, web, "lad")
			if code, err := s.api("PATCH", "/streams/live/plain", map[string]any{"encryption": false}, nil); code != 200 || err != nil {
				t.Fatalf("PATCH encryption off: %d %v", code, err)
			}
			playlistHas(t, s, "plain", "METHOD=NONE")
			playlistWholly(t, s, "plain", "NONE")
			ffmpegHLS(t, s, "plain")
		})
	}
}

// countReaders connects 2 HTTP-FLV, 1 RTMP and 1 HLS player to
// live/plain and waits for the API to count 4 readers (flv 2, rtmp 1,
// hls 1); livectl and the metrics show them too. Under the default
// encryption.outputs (all) the HTTP-FLV and RTMP players read the
// encrypted output: they count all the same.
func countReaders(t *testing.T, s *server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for range 2 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, signed(s.flvURL("plain"), "/live/plain.flv"), nil)
		resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the reading goroutine below, or here on failure
		if err != nil || resp.StatusCode != 200 {
			if err == nil {
				resp.Body.Close()
			}
			t.Fatalf("HTTP-FLV player: %v %v", err, resp)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body)
		}()
	}
	rtmp := s.rtmpURL("plain", "auth_key="+authkey.Sign("/live/plain", encPlayKey, time.Now().Add(time.Minute), "r", "0"))
	for _, in := range []string{rtmp, hlsPlay(s, "plain")} {
		cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", in, "-c", "copy", "-f", "null", "-")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd.Wait()
		}()
	}
	type live struct {
		Readers           int            `json:"readers"`
		ReadersByProtocol map[string]int `json:"readers_by_protocol"`
		InternalReaders   int            `json:"internal_readers"`
	}
	var st struct {
		Live *live `json:"live"`
	}
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		st.Live = nil
		code, err := s.api("GET", "/streams/live/plain", nil, &st)
		if code == 200 && err == nil && st.Live != nil && st.Live.Readers == 4 &&
			st.Live.ReadersByProtocol["flv"] == 2 && st.Live.ReadersByProtocol["rtmp"] == 1 && st.Live.ReadersByProtocol["hls"] == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("readers of live/plain: %+v (%d %v), want 4: flv 2, rtmp 1, hls 1", st.Live, code, err)
		}
	}
	if st.Live.InternalReaders < 2 {
		t.Errorf("internal readers %d: want at least the HLS packager and the encrypting reader", st.Live.InternalReaders)
	}
	out, err := exec.Command(livectlBin(t), "--api", fmt.Sprintf("http://127.0.0.1:%d", s.apiPort), "--token", s.token, "streams", "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "4 (flv 2, rtmp 1, hls 1; +") {
		t.Errorf("livectl streams list: %v\n%s", err, out)
	}
	m := httpGetAPI(t, s, "/metrics")
	for proto, want := range map[string]float64{"flv": 2, "rtmp": 1, "hls": 1} {
		if got := metricValue(m, `livefuse_origin_readers{protocol="`+proto+`"}`); got < want {
			t.Errorf("livefuse_origin_readers{protocol=%q} %v, want at least %v", proto, got, want)
		}
	}
	if metricValue(m, "livefuse_origin_internal_readers") < 2 {
		t.Errorf("livefuse_origin_internal_readers: %v", metricValue(m, "livefuse_origin_internal_readers"))
	}
}

// TestOutputsToggleDecrypt toggles encryption on, off and on again with
// HTTP-FLV players (livectl decrypt) that joined before the first toggle,
// while encrypted, and after it was turned off: each gives back the clear
// stream bit for bit, audio included (every AAC and video packet is a
// packet of the clip).
func TestOutputsToggleDecrypt(t *testing.T) {
	s := startServer(t, `streams:
  - {name: tog, publish_token: pub, play_key: `+encPlayKey+`}
`)
	push(t, s.rtmpURL("tog", "token=pub"), true)
	flv := signed(s.flvURL("tog"), "/live/tog.flv")
	waitLive(t, flv, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type player struct {
		name string
		cmd  *exec.Cmd
		file string
		errb bytes.Buffer
	}
	var players []*player
	join := func(name string) {
		p := &player{name: name, file: filepath.Join(t.TempDir(), name+".flv")}
		keepOnFailure(t, p.file)
		f, err := os.Create(p.file)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		p.cmd = exec.CommandContext(ctx, livectlBin(t), "decrypt", flv)
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		p.cmd.Stdout, p.cmd.Stderr = f, &p.errb
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		players = append(players, p)
	}
	toggle := func(on bool) {
		if code, err := s.api("PATCH", "/streams/live/tog", map[string]any{"encryption": on}, nil); code != 200 || err != nil {
			t.Fatalf("PATCH encryption %v: %d %v", on, code, err)
		}
	}
	// The raw encrypted FLV from the start, kept with the players' clear
	// FLVs when the test fails.
	rawFile := filepath.Join(t.TempDir(), "raw-encrypted.flv")
	keepOnFailure(t, rawFile)
	raw := signalsTee(t, ctx, flv, rawFile)
	join("before")
	time.Sleep(2 * time.Second)
	toggle(true)
	time.Sleep(3 * time.Second)
	join("during")
	time.Sleep(3 * time.Second)
	toggle(false)
	time.Sleep(3 * time.Second)
	join("after")
	time.Sleep(2 * time.Second)
	toggle(true)
	time.Sleep(3 * time.Second)
	for _, p := range players {
		if p.cmd.ProcessState != nil {
			t.Fatalf("%s: livectl decrypt ended early: %v: %s", p.name, p.cmd.ProcessState, p.errb.String())
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		p.cmd.Wait()
	}
	raw()
	for _, sel := range []string{"a", "v"} {
		clip := map[string]bool{}
		for _, h := range packetHashes(t, sel, "-i", env.clip) {
			clip[h] = true
		}
		for _, p := range players {
			// livectl writes whole tags, also when it is stopped: every
			// packet counts, the last one included.
			got := packetHashes(t, sel, "-i", p.file)
			n := share(got, clip)
			t.Logf("%s %s: %d packets, %d of them the clip's", p.name, sel, len(got), n)
			if len(got) < 50 || n != len(got) {
				t.Errorf("%s: %d of %d %s packets are the clip's, bit for bit; its clear FLV: %s", p.name, n, len(got), sel, flvShape(p.file))
			}
		}
	}
}
