package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The low-latency HLS tests: one encoder (ffmpeg, stamping every frame
// with its wall clock) sends MPEG-TS over UDP to two relays, each
// publishing the same encoder timeline (-copyts) to its own unit; an nginx
// edge (deploy/nginx) is in front of both. Checked: hls.js in Chromium
// plays directly and through the edge, with blocking playlist reloads,
// no error, and glass-to-glass latency (median, p95) within 2 s; FFmpeg,
// GStreamer's playbin3 (and VLC when installed) play it; both units name
// their segments and parts alike and write the same bytes, also after
// unit a restarts mid-stream.
//
// LLHLS_SECONDS sets the latency measuring time (default 12 s; make
// drill-llhls runs 60 s).

const llYAML = `origin: {hls_variant: lowlatency}
streams:
  - {name: ll, publish_token: pub}
`

// llEncoder starts the stamping encoder: 320x180 30 fps H.264 (1 s GOP,
// no B-frames, zerolatency) and AAC as MPEG-TS on its stdout, which the
// returned fan-out copies to every relay (pipes, not UDP: nothing is lost
// on a busy machine; a relay more than about 4 MB behind loses data).
func llEncoder(t *testing.T) *llFanout {
	t.Helper()
	// 24 bits of the wall clock (ms mod 2^24) as blocks, read back by llhls_play.cjs.
	stamp := "nullsrc=s=320x180:r=30,settb=AVTB,setpts=RTCTIME," +
		"geq=lum='if(lt(Y\\,40)\\,255*mod(floor(mod(floor(T*1000)\\,16777216)/pow(2\\,floor(X/20)+16*floor(Y/20)))\\,2)\\,16+X/4)':cb=128:cr=128," +
		"setpts=N/(30*TB)"
	cmd := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", stamp, "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-map", "0:v", "-map", "1:a",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
		"-pix_fmt", "yuv420p", "-b:v", "400k", "-c:a", "aac", "-b:a", "64k",
		"-muxdelay", "0", "-flush_packets", "1", "-f", "mpegts", "pipe:1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &llFanout{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			buf := make([]byte, 188*64)
			n, err := out.Read(buf)
			if n > 0 {
				f.mu.Lock()
				for _, c := range f.sinks {
					select {
					case c <- buf[:n]:
					default: // that relay is far behind
					}
				}
				f.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		<-f.done
		if t.Failed() {
			t.Logf("encoder: %s", tail(stderr.String(), 1000))
		}
	})
	return f
}

// llFanout copies the encoder's output to its sinks.
type llFanout struct {
	mu    sync.Mutex
	sinks []chan []byte
	done  chan struct{}
}

func (f *llFanout) sink() chan []byte {
	c := make(chan []byte, 384)
	f.mu.Lock()
	f.sinks = append(f.sinks, c)
	f.mu.Unlock()
	return c
}

func (f *llFanout) drop(c chan []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.sinks {
		if x == c {
			f.sinks = append(f.sinks[:i], f.sinks[i+1:]...)
			return
		}
	}
}

// llRelay publishes the encoder's MPEG-TS to s, keeping the encoder's
// timestamps (as a relay of the same encoder would); like a real relay it
// starts again when ffmpeg exits (at most 30 times), until stop.
func llRelay(t *testing.T, f *llFanout, s *server) *llRelayer {
	r := &llRelayer{stopCh: make(chan struct{}), done: make(chan struct{})}
	in := f.sink()
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-fflags", "nobuffer", "-analyzeduration", "3000000",
		"-f", "mpegts", "-i", "pipe:0", "-c", "copy", "-copyts", "-f", "flv", s.rtmpURL("ll", "token=pub")}
	go func() {
		defer close(r.done)
		defer f.drop(in)
		for i := 0; i < 30; i++ {
			cmd := exec.Command("ffmpeg", args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				return
			}
			r.mu.Lock()
			stopped := r.stopped
			if !stopped && cmd.Start() == nil {
				r.cmd = cmd
			}
			r.mu.Unlock()
			if stopped || r.cmd != cmd {
				return
			}
			exited := make(chan struct{})
			go func() {
				defer stdin.Close()
				for {
					select {
					case b := <-in:
						if _, err := stdin.Write(b); err != nil {
							return
						}
					case <-exited:
						return
					}
				}
			}()
			cmd.Wait()
			close(exited)
			r.mu.Lock()
			r.cmd, r.runs, r.lastErr = nil, r.runs+1, tail(stderr.String(), 500)
			r.mu.Unlock()
			select {
			case <-r.stopCh:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(r.stop)
	return r
}

type llRelayer struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	runs    int
	lastErr string
	stopCh  chan struct{}
	done    chan struct{}
}

// stop ends the relay (kills its ffmpeg) and waits for it.
func (r *llRelayer) stop() {
	r.mu.Lock()
	if !r.stopped {
		r.stopped = true
		close(r.stopCh)
	}
	if r.cmd != nil {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
	r.mu.Unlock()
	<-r.done
}

type llReport struct {
	OK        bool     `json:"ok"`
	Frames    int      `json:"frames"`
	P50       float64  `json:"p50"`
	P95       float64  `json:"p95"`
	Max       float64  `json:"max"`
	MaxGap    float64  `json:"maxGap"`
	Warnings  []string `json:"warnings"`
	Errors    []string `json:"errors"`
	Blocking  int      `json:"blocking"`
	Playlists int      `json:"playlists"`
	Parts     int      `json:"parts"`
	Status4xx []string `json:"status4xx"`
	HLSLat    float64  `json:"hlsLatency"`
	Target    float64  `json:"targetLatency"`
}

// llPlay runs llhls_play.cjs on the playlist at base+"/live/ll/index.m3u8".
func llPlay(t *testing.T, web, base string, seconds int) llReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "llhls_play.cjs", web, base+"/healthz", base+"/live/ll/index.m3u8", strconv.Itoa(seconds))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	line := bytes.TrimSpace(out)
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	var rep llReport
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("llhls_play: %v\nstdout %s\nstderr %s", err, out, stderr.String())
	}
	return rep
}

var llNameRe = regexp.MustCompile(`(?m)(?:^|URI=")([sp][0-9]+\.m4s)`)

// llNames returns the segment and part names of a playlist.
func llNames(body string) []string {
	var out []string
	for _, m := range llNameRe.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func llSeconds() int {
	if n, err := strconv.Atoi(os.Getenv("LLHLS_SECONDS")); err == nil && n > 0 {
		return n
	}
	return 12
}

func TestLLHLS(t *testing.T) {
	web := needBrowser(t)
	a := startServer(t, llYAML)
	b := startServer(t, llYAML)
	enc := llEncoder(t)
	relayA := llRelay(t, enc, a)
	relayB := llRelay(t, enc, b)
	edge := startEdge(t, freePort(t), a, b)
	base := func(s *server) string { return fmt.Sprintf("http://127.0.0.1:%d", s.http) }
	edgeBase := fmt.Sprintf("http://127.0.0.1:%d", edge.port)
	for _, s := range []*server{a, b} {
		waitLive(t, s.flvURL("ll"), 20*time.Second)
	}
	secs := llSeconds()

	for _, c := range []struct{ name, base string }{{"direct", base(a)}, {"edge", edgeBase}} {
		t.Run("hls.js-"+c.name, func(t *testing.T) {
			rep := llPlay(t, web, c.base, secs)
			t.Logf("hls.js %s: glass-to-glass median %.0f ms, p95 %.0f ms, max %.0f ms over %d frames (%d s), longest gap between frames %.0f ms; hls.js latency %.2f s, target %.2f s; %d playlist requests (%d blocking), %d part requests; errors %v; 4xx %v",
				c.name, rep.P50, rep.P95, rep.Max, rep.Frames, secs, rep.MaxGap, rep.HLSLat, rep.Target, rep.Playlists, rep.Blocking, rep.Parts, rep.Errors, rep.Status4xx)
			if !rep.OK || rep.Frames < secs*15 {
				t.Fatalf("hls.js %s: %d frames measured in %d s", c.name, rep.Frames, secs)
			}
			if len(rep.Errors) > 0 || len(rep.Status4xx) > 0 || len(rep.Warnings) > 0 {
				t.Fatalf("hls.js %s: errors %v, 4xx %v, warnings %q", c.name, rep.Errors, rep.Status4xx, rep.Warnings)
			}
			if rep.Blocking == 0 || rep.Parts == 0 {
				t.Fatalf("hls.js %s did not use blocking reload and parts: %d blocking, %d parts", c.name, rep.Blocking, rep.Parts)
			}
			if rep.P50 > 2000 || rep.P95 > 2500 {
				t.Fatalf("hls.js %s: glass-to-glass median %.0f ms, p95 %.0f ms; want median within 2 s", c.name, rep.P50, rep.P95)
			}
		})
	}

	t.Run("ffmpeg", func(t *testing.T) {
		got, errs := decoded(t, 40*time.Second, "v", "-t", "3", "-i", base(b)+"/live/ll/index.m3u8")
		if len(got) < 40 {
			t.Fatalf("ffmpeg: %d frames decoded: %s", len(got), errs)
		}
	})
	t.Run("playbin3", func(t *testing.T) {
		llGStreamer(t, edgeBase+"/live/ll/index.m3u8")
	})
	t.Run("vlc", func(t *testing.T) {
		llVLC(t, base(b)+"/live/ll/index.m3u8")
	})

	parent := t // the relay made again below lives as long as the test
	t.Run("units-agree", func(t *testing.T) {
		llSame(t, base(a), base(b), 3)
		// Unit a restarts: its relay reconnects mid-stream.
		relayA.stop()
		a.stop()
		a.start()
		relayA = llRelay(parent, enc, a)
		waitLive(t, a.flvURL("ll"), 20*time.Second)
		llSame(t, base(a), base(b), 3)
	})

	// hls.js plays through the edge while unit a dies (SIGKILL): the
	// edge retries on unit b, whose names and media sequence numbers are
	// a's, and playback goes on.
	t.Run("edge-failover", func(t *testing.T) {
		done := make(chan llReport, 1)
		go func() { done <- llPlay(t, web, edgeBase, secs) }()
		time.Sleep(time.Duration(secs/2+6) * time.Second) // hls.js started and measuring
		a.kill()
		rep := <-done
		t.Logf("hls.js through the edge, unit a killed mid-run: median %.0f ms, p95 %.0f ms, max %.0f ms over %d frames; longest gap between frames %.0f ms; errors %v; 4xx %v; hls.js warnings %q",
			rep.P50, rep.P95, rep.Max, rep.Frames, rep.MaxGap, rep.Errors, rep.Status4xx, rep.Warnings)
		if rep.Frames < secs*15 {
			t.Fatalf("hls.js stopped at the failover: %d frames in %d s", rep.Frames, secs)
		}
		for _, e := range rep.Errors {
			if strings.HasPrefix(e, "fatal") {
				t.Fatalf("hls.js failed at the failover: %v", rep.Errors)
			}
		}
		if rep.MaxGap > 3000 {
			t.Fatalf("hls.js froze %.0f ms at the failover", rep.MaxGap)
		}
	})
	for i, r := range []*llRelayer{relayA, relayB} {
		r.mu.Lock()
		if r.runs > 0 {
			t.Logf("relay to unit %c ended %d times; last: %s", 'a'+i, r.runs, r.lastErr)
		}
		r.mu.Unlock()
	}
	for i, s := range []*server{a, b} {
		for _, l := range strings.Split(s.logs(), "\n") {
			if strings.Contains(l, "msg=switch") || strings.Contains(l, "publisher left") {
				t.Logf("unit %c: %s", 'a'+i, l)
			}
			if strings.Contains(l, "ll-hls") && (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) {
				t.Errorf("packager warning: %s", l)
			}
		}
	}
}

// llSame waits (up to 20 s) until the playlists of both units share at
// least n whole segments past the first one unit a has, and checks that
// their names and the bytes of those segments and of their parts are
// equal.
func llSame(t *testing.T, a, b string, n int) {
	t.Helper()
	var last, partTarget string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		pa, err1 := httpGet(a + "/live/ll/index.m3u8")
		pb, err2 := httpGet(b + "/live/ll/index.m3u8")
		if err1 != nil || err2 != nil {
			last = fmt.Sprint(err1, err2)
			continue
		}
		for _, pl := range []string{pa, pb} {
			pt := llPartTargetRe.FindString(pl)
			if pt == "" || (partTarget != "" && pt != partTarget) {
				t.Fatalf("PART-TARGET %q after %q:\n%s", pt, partTarget, pl)
			}
			partTarget = pt
		}
		na, nb := llNames(pa), llNames(pb)
		msnA, msnB := llMSNs(pa), llMSNs(pb)
		inB := map[string]bool{}
		for _, x := range nb {
			inB[x] = true
		}
		var common []string
		segs := 0
		firstA := ""
		for _, x := range na {
			if x[0] == 's' && firstA == "" {
				firstA = x
				continue // a's first segment may have begun mid-GOP for b
			}
			if firstA != "" && inB[x] {
				common = append(common, x)
				if x[0] == 's' {
					segs++
					if msnA[x] != msnB[x] {
						t.Fatalf("segment %s has media sequence number %d on one unit, %d on the other", x, msnA[x], msnB[x])
					}
				}
			}
		}
		if segs < n {
			last = fmt.Sprintf("%d common segments:\n%s\n---\n%s", segs, pa, pb)
			continue
		}
		for _, x := range common {
			ba, err1 := httpGet(a + "/live/ll/" + x)
			bb, err2 := httpGet(b + "/live/ll/" + x)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: %v %v", x, err1, err2)
			}
			if ba != bb || len(ba) == 0 {
				t.Fatalf("%s differs between the units: %d and %d bytes", x, len(ba), len(bb))
			}
		}
		t.Logf("units agree on %d segments and their parts (%d files, same names, media sequence numbers and bytes), e.g. %s; %s", segs, len(common), common[0], partTarget)
		return
	}
	t.Fatalf("the units' playlists do not share %d segments: %s", n, last)
}

var (
	llPartTargetRe = regexp.MustCompile(`#EXT-X-PART-INF:PART-TARGET=[0-9.]+`)
	llMediaSeqRe   = regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:([0-9]+)`)
	llSegLineRe    = regexp.MustCompile(`(?m)^(s[0-9]+\.m4s)`)
)

// llMSNs maps the segments of a playlist to their media sequence numbers.
func llMSNs(pl string) map[string]int {
	m := llMediaSeqRe.FindStringSubmatch(pl)
	if m == nil {
		return nil
	}
	seq, _ := strconv.Atoi(m[1])
	out := map[string]int{}
	for i, s := range llSegLineRe.FindAllStringSubmatch(pl, -1) {
		out[s[1]] = seq + i
	}
	return out
}

// llGStreamer plays u with playbin3 for 6 s (fake sinks) and fails on an
// error or when it never reaches PLAYING.
func llGStreamer(t *testing.T, u string) {
	t.Helper()
	if _, err := exec.LookPath("gst-launch-1.0"); err != nil {
		t.Fatal("gst-launch-1.0 missing: make test-deps installs GStreamer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "gst-launch-1.0", "-m", "playbin3", "uri="+u, "video-sink=fakesink sync=true", "audio-sink=fakesink sync=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, _ := cmd.CombinedOutput()
	s := string(out)
	if strings.Contains(s, "ERROR:") || !strings.Contains(s, "to PLAYING") {
		t.Fatalf("playbin3 did not play %s:\n%s", u, tail(s, 3000))
	}
	t.Logf("playbin3 played for 8 s")
}

// llVLC records 6 s of u with VLC (when installed) and checks the recording
// holds video frames.
func llVLC(t *testing.T, u string) {
	t.Helper()
	if _, err := exec.LookPath("cvlc"); err != nil {
		t.Skip("VLC not installed (make test-deps installs vlc-bin)")
	}
	// Not t.TempDir: its parent is 0700, and VLC runs as nobody under root.
	dir, err := os.MkdirTemp("", "livefuse-vlc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dst := filepath.Join(dir, "vlc.ts")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cvlc", "-I", "dummy", "--no-video-title-show", "--run-time", "6", "--play-and-exit",
		u, "--sout", "#std{access=file,mux=ts,dst="+dst+"}")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		// VLC refuses to run as root: run it as nobody, in a directory it may write.
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
		cmd.Env = append(os.Environ(), "HOME="+dir)
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, _ := cmd.CombinedOutput()
	if _, err := os.Stat(dst); err != nil {
		t.Fatalf("VLC wrote nothing from %s: %v\n%s", u, err, tail(string(out), 2000))
	}
	got, errs := decoded(t, 30*time.Second, "v", "-i", dst)
	if len(got) < 60 {
		t.Fatalf("VLC recorded %d video frames of %s: %s\n%s", len(got), u, errs, tail(string(out), 2000))
	}
	t.Logf("VLC: %d video frames recorded in 6 s", len(got))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
