package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// The encryption tests publish the clip to a stream with encryption on and
// a play key, and play it with independent decoders: FFmpeg (HLS
// SAMPLE-AES), livectl decrypt + FFmpeg (HTTP-FLV), hls.js and mpegts.js
// in Chromium (encryption_play.cjs).

const encPlayKey = "enc-play-key"

// encStreamYAML declares live/enc (encrypted, signed play) and live/open.
const encStreamYAML = `streams:
  - {name: enc, publish_token: pub, play_key: ` + encPlayKey + `, encryption: true}
`

// signed returns u with an auth_key for path, valid for 10 minutes.
func signed(u, path string) string {
	return u + "?auth_key=" + authkey.Sign(path, encPlayKey, time.Now().Add(10*time.Minute), "r", "0")
}

// startEncrypted starts a server and pushes the looping clip to live/enc.
func startEncrypted(t *testing.T) *server {
	t.Helper()
	s := startServer(t, encStreamYAML)
	push(t, s.rtmpURL("enc", "token=pub"), true)
	waitLive(t, signed(s.flvURL("enc"), "/live/enc.flv"), 15*time.Second)
	return s
}

// decoded runs ffmpeg decoding input (extra input options first) and
// returns the md5 of every decoded frame of stream sel, and what ffmpeg
// logged at level error.
func decoded(t *testing.T, timeout time.Duration, sel string, input ...string) (hashes []string, errs string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, input...)
	args = append(args, "-map", "0:"+sel, "-f", "framemd5", "-")
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && ctx.Err() == nil {
		t.Fatalf("ffmpeg %v: %v: %s", input, err, stderr.String())
	}
	for _, f := range parseFramemd5(t, out) {
		hashes = append(hashes, f.hash)
	}
	return hashes, strings.TrimSpace(stderr.String())
}

// clipHashes returns the decoded frame hashes of the clip as a set.
func clipHashes(t *testing.T, sel string) map[string]bool {
	t.Helper()
	hs, errs := decoded(t, time.Minute, sel, "-i", env.clip)
	if errs != "" {
		t.Fatalf("clip decode: %s", errs)
	}
	m := map[string]bool{}
	for _, h := range hs {
		m[h] = true
	}
	return m
}

// share returns how many of got are frames of the clip.
func share(got []string, clip map[string]bool) (n int) {
	for _, h := range got {
		if clip[h] {
			n++
		}
	}
	return n
}

// TestEncryptionHLSFFmpeg: the HLS playlist of an encrypted stream is
// SAMPLE-AES with the key service's URI; the key needs the play token
// (403 without, 16 bytes with); FFmpeg decrypts the playlist with the key
// and its decoded frames are the clip's frames; RTMP play is encrypted.
func TestEncryptionHLSFFmpeg(t *testing.T) {
	parallel(t)
	s := startEncrypted(t)
	pl := signed(s.hlsURL("enc"), "/live/enc/index.m3u8")
	body := encGet(t, pl, http.StatusOK)
	m := regexp.MustCompile(`#EXT-X-KEY:METHOD=SAMPLE-AES,URI="(/keys/live/enc/[0-9a-f]+)\?auth_key=[^"]+",IV=0x[0-9a-f]{32},KEYFORMAT="identity"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no SAMPLE-AES key in the playlist:\n%s", body)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", s.http)
	encGet(t, base+m[1], http.StatusForbidden)
	encGet(t, base+m[1]+"?auth_key=1-2-3-4", http.StatusForbidden)
	if key := encGet(t, signed(base+m[1], "/live/enc/index.m3u8"), http.StatusOK); len(key) != 16 {
		t.Fatalf("key of %d bytes", len(key))
	}
	// The key is stored sealed: the master key was generated into data_dir.
	if fi, err := os.Stat(filepath.Join(s.dir, "data", "master.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v", err)
	}
	if strings.Contains(s.logs(), strings.TrimSpace(mustRead(t, filepath.Join(s.dir, "data", "master.key")))) {
		t.Fatal("the master key is in the log")
	}
	clip := clipHashes(t, "v")
	got, errs := decoded(t, 40*time.Second, "v", "-t", "6", "-i", pl)
	n := share(got, clip)
	t.Logf("ffmpeg decrypted %d frames, %d of them frames of the clip; errors: %q", len(got), n, errs)
	// FFmpeg 5.1 decrypts a frame with the key of the segment it is
	// reading when the frame leaves its parser: the last frame read may
	// come out wrong (origin/tshls_test.go). Everything else must match.
	if len(got) < 100 || n < len(got)-3 {
		t.Fatalf("%d of %d decoded frames are the clip's", n, len(got))
	}
	// Audio decrypts too: the AAC frames FFmpeg takes out of the
	// SAMPLE-AES segments (ADTS headers stripped) are the clip's frames,
	// byte for byte. (Decoded audio cannot be compared across start
	// points: the AAC decoder's noise substitution depends on where
	// decoding started.)
	apk := map[string]bool{}
	for _, h := range packetHashes(t, "a", "-i", env.clip) {
		apk[h] = true
	}
	agot := packetHashes(t, "a", "-t", "4", "-i", pl, "-bsf:a", "aac_adtstoasc")
	if an := share(agot, apk); len(agot) < 100 || an != len(agot) {
		t.Fatalf("audio: %d of %d AAC frames are the clip's", an, len(agot))
	}
	// RTMP players get the encrypted stream too: none of their video
	// packets is a clear packet of the clip.
	vpk := map[string]bool{}
	for _, h := range packetHashes(t, "v", "-i", env.clip) {
		vpk[h] = true
	}
	rtmp := s.rtmpURL("enc", "auth_key="+authkey.Sign("/live/enc", encPlayKey, time.Now().Add(time.Minute), "r", "0"))
	vgot := packetHashes(t, "v", "-t", "3", "-i", rtmp)
	if n := share(vgot, vpk); len(vgot) < 30 || n > 0 {
		t.Fatalf("RTMP play: %d of %d video packets are clear", n, len(vgot))
	}
}

// packetHashes returns the md5 of every packet of stream sel (copied, not
// decoded); options after the input apply to the output.
func packetHashes(t *testing.T, sel string, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	full := append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, args...)
	full = append(full, "-map", "0:"+sel, "-c", "copy", "-f", "framemd5", "-")
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ffmpeg", full...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && ctx.Err() == nil {
		t.Fatalf("ffmpeg %v: %v: %s", args, err, stderr.String())
	}
	var hs []string
	for _, f := range parseFramemd5(t, out) {
		hs = append(hs, f.hash)
	}
	return hs
}

func encGet(t *testing.T, u string, want int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", u, resp.StatusCode, want, b)
	}
	return string(b)
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// livectlBin builds livectl once per run into the e2e temp dir.
func livectlBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(env.dir, "livectl")
	livectlOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, "../cmd/livectl")
		if out, err := cmd.CombinedOutput(); err != nil {
			livectlErr = fmt.Errorf("build livectl: %w: %s", err, out)
		}
	})
	if livectlErr != nil {
		t.Fatal(livectlErr)
	}
	return bin
}

var (
	livectlOnce sync.Once
	livectlErr  error
)

// TestEncryptionOnOff toggles encryption three times (off, on, off)
// through the control API during a live push: the publisher stays
// connected (one publish, the stream never restarts), the HTTP-FLV player
// (livectl decrypt piped into FFmpeg) stays connected and decodes only the
// clip's frames with no error, the FLV carries the onEncryption state
// changes, and the HLS playlist turns METHOD=NONE and back while an FFmpeg
// HLS player stays connected.
func TestEncryptionOnOff(t *testing.T) {
	s := startEncrypted(t)
	flv := signed(s.flvURL("enc"), "/live/enc.flv")
	pl := signed(s.hlsURL("enc"), "/live/enc/index.m3u8")
	var before struct {
		Live *struct {
			StartedAt time.Time `json:"started_at"`
		} `json:"live"`
	}
	if code, err := s.api("GET", "/streams/live/enc", nil, &before); code != 200 || err != nil || before.Live == nil {
		t.Fatalf("stream status: %d %v", code, err)
	}

	// Player 1: livectl decrypt | ffmpeg (decoding every frame).
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dec := exec.CommandContext(ctx, livectlBin(t), "decrypt", flv)
	dec.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var decErr bytes.Buffer
	dec.Stderr = &decErr
	pipe, err := dec.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// A tee of the clear FLV: FFmpeg decodes it, and the test reads the
	// onEncryption-free stream for its own checks.
	ff := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "flv", "-i", "-", "-map", "0:v", "-f", "framemd5", "-")
	ff.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var ffOut, ffErr bytes.Buffer
	ff.Stdout, ff.Stderr = &ffOut, &ffErr
	ffIn, err := ff.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ff.Start(); err != nil {
		t.Fatal(err)
	}
	// What FFmpeg is given is also kept (artefacts on failure), with the
	// raw encrypted FLV of player 3.
	clearFile := filepath.Join(t.TempDir(), "onoff-decrypted.flv")
	rawFile := filepath.Join(t.TempDir(), "onoff-raw-encrypted.flv")
	keepOnFailure(t, clearFile, rawFile)
	cf, err := os.Create(clearFile)
	if err != nil {
		t.Fatal(err)
	}
	var clearBytes int64
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer cf.Close()
		n, _ := io.Copy(io.MultiWriter(ffIn, cf), pipe)
		clearBytes = n
		ffIn.Close()
	}()
	// Player 2: FFmpeg on HLS.
	hls := ffmpegCmd(t, "-i", pl, "-map", "0", "-f", "null", "-")

	// Player 3: the raw encrypted FLV, to see the signals.
	raw := signalsTee(t, ctx, flv, rawFile)

	states := map[string]bool{}
	watch := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			body := encGet(t, pl, http.StatusOK)
			if strings.Contains(body, "METHOD=NONE") {
				states["hls-none"] = true
			}
			if strings.Contains(body, "METHOD=SAMPLE-AES") {
				states["hls-aes"] = true
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	watch(3 * time.Second)
	for i, on := range []bool{false, true, false} {
		if code, err := s.api("PATCH", "/streams/live/enc", map[string]any{"encryption": on}, nil); code != 200 || err != nil {
			t.Fatalf("toggle %d: %d %v", i, code, err)
		}
		watch(3 * time.Second)
	}
	for name, cmd := range map[string]*exec.Cmd{"livectl decrypt": dec, "ffmpeg hls": hls} {
		if cmd.ProcessState != nil {
			t.Fatalf("%s exited during the toggles: %v", name, cmd.ProcessState)
		}
	}
	// Stop the FLV player (livectl first; ffmpeg then ends at EOF). The
	// copy reads livectl's output to its end before Wait, which closes the
	// pipe: Wait first cut the copy at its last 32 KiB read, in the middle
	// of a tag, and FFmpeg then decoded a truncated last packet ("Invalid
	// NAL unit size (2810 > 2028)": issue 16's intermittent defect).
	syscall.Kill(-dec.Process.Pid, syscall.SIGTERM)
	<-copied
	dec.Wait()
	ff.Wait()
	sigs := raw()

	var after struct {
		Live *struct {
			StartedAt time.Time `json:"started_at"`
		} `json:"live"`
	}
	if code, err := s.api("GET", "/streams/live/enc", nil, &after); code != 200 || err != nil || after.Live == nil {
		t.Fatalf("stream status after: %d %v", code, err)
	}
	if !after.Live.StartedAt.Equal(before.Live.StartedAt) {
		t.Fatalf("the stream restarted: started %v, then %v", before.Live.StartedAt, after.Live.StartedAt)
	}
	if n := strings.Count(s.logs(), "publisher joined"); n != 1 {
		t.Fatalf("%d publishes, want 1 (the publisher was interrupted)", n)
	}
	clip := clipHashes(t, "v")
	var got []string
	for _, f := range parseFramemd5(t, ffOut.Bytes()) {
		got = append(got, f.hash)
	}
	n := share(got, clip)
	if errs := strings.TrimSpace(ffErr.String()); errs != "" {
		t.Fatalf("ffmpeg decoding the decrypted FLV logged errors (%d of %d frames the clip's):\n%s\nlivectl: %s\ndecrypted FLV given to ffmpeg: %s\nraw FLV of player 3: %s",
			n, len(got), errs, decErr.String(), flvShape(clearFile), flvShape(rawFile))
	}
	t.Logf("decrypted FLV given to ffmpeg: %s; raw FLV of player 3: %s", flvShape(clearFile), flvShape(rawFile))
	t.Logf("HTTP-FLV player: %d bytes of clear FLV, %d frames decoded, %d of them the clip's; signals %v; hls %v", clearBytes, len(got), n, sigs, states)
	if len(got) < 200 || n != len(got) {
		t.Fatalf("%d of %d decoded frames are the clip's", n, len(got))
	}
	if sigs["keyframes without a signal"] > 0 {
		t.Fatalf("keyframes without an onEncryption tag before them in the raw FLV: %v (raw FLV: %s)", sigs, flvShape(rawFile))
	}
	if sigs["on→off"] < 2 || sigs["off→on"] < 1 {
		t.Fatalf("onEncryption changes in the FLV: %v", sigs)
	}
	if !states["hls-none"] || !states["hls-aes"] {
		t.Fatalf("HLS playlist states seen: %v", states)
	}
}

// signals reads the encrypted FLV of u in the background and counts the
// encryption state changes its onEncryption tags announce; the returned
// func stops it and gives the counts.
func signals(t *testing.T, ctx context.Context, u string) func() map[string]int {
	t.Helper()
	return signalsTee(t, ctx, u, "")
}

// signalsTee is signals that also writes the raw FLV to rawFile ("": not).
func signalsTee(t *testing.T, ctx context.Context, u, rawFile string) func() map[string]int {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the reading goroutine, or below on failure
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", u, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: status %d", u, resp.StatusCode)
	}
	counts := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		var body io.Reader = resp.Body
		if rawFile != "" {
			f, err := os.Create(rawFile)
			if err != nil {
				return
			}
			defer f.Close()
			body = io.TeeReader(resp.Body, f)
		}
		r, err := av.NewFLVReader(bufio.NewReader(body))
		if err != nil {
			return
		}
		state := ""
		sigBefore := false // the tag before this one was an onEncryption tag
		for {
			p, err := r.ReadPacket()
			if err != nil {
				return
			}
			if p.Kind != av.KindData || !encryption.IsSignal(p.Data) {
				if p.Kind == av.KindVideo && p.Key && !p.Header && !sigBefore {
					// FLV.md §2.1: one before every keyframe (and so
					// before the first media of a stream encrypted from
					// its start).
					mu.Lock()
					counts["keyframes without a signal"]++
					mu.Unlock()
				}
				if !p.Header && p.Kind != av.KindData {
					sigBefore = false
				}
				continue
			}
			sigBefore = true
			sg, err := encryption.ParseSignal(p.Data)
			if err != nil {
				continue
			}
			cur := map[bool]string{true: "on", false: "off"}[sg.Encrypted]
			mu.Lock()
			if state != "" && state != cur {
				counts[state+"→"+cur]++
			}
			counts["tags"]++
			mu.Unlock()
			state = cur
		}
	}()
	return func() map[string]int {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return counts
	}
}

// browserPlay runs encryption_play.cjs on the reference player for src
// and returns its report.
type playReport struct {
	OK           bool     `json:"ok"`
	Advanced     float64  `json:"advanced"`
	CurrentTime  float64  `json:"currentTime"`
	Errors       []string `json:"errors"`
	Events       []string `json:"events"`
	KeyResponses []struct {
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"keyResponses"`
	Stats map[string]float64 `json:"stats"`
	MSE   map[string]bool    `json:"mse"`
}

// needBrowser fails (make test installs them) when Chromium or the npm
// packages are missing.
func needBrowser(t *testing.T) string {
	t.Helper()
	web, _ := filepath.Abs("../web")
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node not on PATH: run `make test`, which installs it")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatal("/usr/bin/chromium missing: run `make test`, which installs it")
	}
	for _, m := range []string{"hls.js", "mpegts.js", "playwright-core"} {
		if _, err := os.Stat(filepath.Join(web, "node_modules", m, "package.json")); err != nil {
			t.Fatalf("web/node_modules/%s missing: run `make test` (npm ci in web/)", m)
		}
	}
	t.Setenv("LIVEFUSE_WEB_MODULES", filepath.Join(web, "node_modules"))
	return web
}

func browserPlay(t *testing.T, web, playerURL string, seconds int, extra ...string) playReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"encryption_play.cjs", web, playerURL, fmt.Sprint(seconds)}, extra...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	var rep playReport
	line := bytes.TrimSpace(out)
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("player driver: %v\nstdout %s\nstderr %s", err, out, stderr.String())
	}
	return rep
}

func playerURL(s *server, src string) string {
	return fmt.Sprintf("http://127.0.0.1:%d/player/?src=%s", s.http, url.QueryEscape(src))
}

// TestEncryptionBrowser plays the encrypted stream in headless Chromium:
// hls.js (pinned) plays the SAMPLE-AES HLS for 10 s of media time with no
// error event; with the key requests stripped of their token the key
// service answers 403 and hls.js fails; mpegts.js plays the encrypted
// HTTP-FLV through the page's WebCrypto decrypting loader.
func TestEncryptionBrowser(t *testing.T) {
	web := needBrowser(t)
	s := startEncrypted(t)
	hlsSrc := signed(s.hlsURL("enc"), "/live/enc/index.m3u8")
	flvSrc := signed(s.flvURL("enc"), "/live/enc.flv")

	t.Run("hls.js", func(t *testing.T) {
		rep := browserPlay(t, web, playerURL(s, hlsSrc), 10)
		t.Logf("hls.js: %+v", rep)
		if !rep.OK || len(rep.Errors) > 0 || rep.Advanced < 10 {
			t.Fatalf("hls.js did not play 10 s: advanced %.1f s, errors %v, events %v", rep.Advanced, rep.Errors, rep.Events)
		}
		if len(rep.KeyResponses) == 0 || rep.KeyResponses[0].Status != 200 {
			t.Fatalf("key responses %+v", rep.KeyResponses)
		}
	})
	t.Run("hls.js-no-key-token", func(t *testing.T) {
		rep := browserPlay(t, web, playerURL(s, hlsSrc), 5, "--strip-key-token")
		t.Logf("hls.js without a key token: %+v", rep)
		if rep.OK || rep.Advanced >= 5 {
			t.Fatalf("played %.1f s without a key", rep.Advanced)
		}
		refused := false
		for _, k := range rep.KeyResponses {
			refused = refused || k.Status == http.StatusForbidden
		}
		if !refused || !strings.Contains(strings.Join(rep.Errors, " "), "keyLoadError") {
			t.Fatalf("want a 403 key response and a fatal keyLoadError: keys %+v errors %v", rep.KeyResponses, rep.Errors)
		}
	})
	t.Run("mpegts.js", func(t *testing.T) {
		rep := browserPlay(t, web, playerURL(s, flvSrc), 10)
		t.Logf("mpegts.js: %+v", rep)
		if !rep.OK || len(rep.Errors) > 0 || rep.Advanced < 10 {
			t.Fatalf("mpegts.js did not play 10 s: advanced %.1f s, errors %v, events %v", rep.Advanced, rep.Errors, rep.Events)
		}
		if rep.Stats["decrypted"] < 100 || rep.Stats["signals"] < 3 {
			t.Fatalf("decrypting loader stats %v", rep.Stats)
		}
		if len(rep.KeyResponses) == 0 || rep.KeyResponses[0].Status != 200 {
			t.Fatalf("key responses %+v", rep.KeyResponses)
		}
	})
}

// keepOnFailure copies files to $LIVEFUSE_ARTEFACTS (else e2e/artefacts,
// gitignored) when t has failed, and logs where.
func keepOnFailure(t *testing.T, files ...string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := os.Getenv("LIVEFUSE_ARTEFACTS")
		if dir == "" {
			dir = "artefacts"
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Logf("artefacts: %v", err)
			return
		}
		prefix := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "-" + time.Now().UTC().Format("150405") + "-"
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Logf("artefact %s: %v", f, err)
				continue
			}
			dst, _ := filepath.Abs(filepath.Join(dir, prefix+filepath.Base(f)))
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Logf("artefact %s: %v", dst, err)
				continue
			}
			t.Logf("artefact kept: %s (%d bytes)", dst, len(b))
		}
	})
}

// flvShape walks the FLV file at path and says how many tags it has,
// whether it ends in the middle of a tag, and which AVC NALU tags have a
// NAL unit length running past the tag (what FFmpeg calls "Invalid NAL
// unit size"): where a corrupt packet comes from.
func flvShape(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		return fmt.Sprintf("%d bytes, no FLV header", len(b))
	}
	pos := int(b[5])<<24 | int(b[6])<<16 | int(b[7])<<8 | int(b[8]) + 4
	var tags int
	var bad []string
	for pos < len(b) {
		if len(b)-pos < 11 {
			return fmt.Sprintf("%d bytes, %d whole tags, then %d bytes of a cut tag header; bad AVC tags %v", len(b), tags, len(b)-pos, bad)
		}
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		if len(b)-pos < 11+size+4 {
			return fmt.Sprintf("%d bytes, %d whole tags, then a tag of type %d cut after %d of its %d bytes; bad AVC tags %v",
				len(b), tags, b[pos]&0x1f, len(b)-pos, 11+size+4, bad)
		}
		body := b[pos+11 : pos+11+size]
		if b[pos]&0x1f == 9 && size > 5 && body[0]&0x0f == 7 && body[1] == 1 {
			au := body[5:]
			for i := 0; i < len(au); {
				if len(au)-i < 4 {
					bad = append(bad, fmt.Sprintf("tag %d at byte %d: %d bytes left for a length", tags, pos, len(au)-i))
					break
				}
				l := int(au[i])<<24 | int(au[i+1])<<16 | int(au[i+2])<<8 | int(au[i+3])
				if l > len(au)-i-4 {
					bad = append(bad, fmt.Sprintf("tag %d at byte %d: NAL length %d > %d", tags, pos, l, len(au)-i-4))
					break
				}
				i += 4 + l
			}
		}
		pos += 11 + size + 4
		tags++
	}
	return fmt.Sprintf("%d bytes, %d whole tags, ends on a tag boundary; bad AVC tags %v", len(b), tags, bad)
}
