package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// env is shared by every test of the package: the binary and the test media
// are built once per run.
var env struct {
	dir    string // temp dir for the run
	bin    string // livefuse binary
	clip   string // 10 s H.264 (2 s GOP, B-frames) + AAC, FLV
	clipHD string // same at 1280x720 (unused until needed)
	err    error
}

func TestMain(m *testing.M) {
	code := func() int {
		if _, err := exec.LookPath("ffmpeg"); err != nil {
			fmt.Println("e2e: ffmpeg not on PATH: run `make test`, which installs it")
			return 1
		}
		dir, err := os.MkdirTemp("", "livefuse-e2e-")
		if err != nil {
			fmt.Println("e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		env.dir = dir
		env.bin = filepath.Join(dir, "livefuse")
		args := []string{"build", "-o", env.bin}
		if os.Getenv("LIVEFUSE_E2E_RACE") != "" {
			// The server under the race detector: a race it reports
			// fails the test (server.stop).
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, "../cmd/livefuse")...)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Println("e2e: build livefuse:", err)
			return 1
		}
		env.clip = filepath.Join(dir, "clip.flv")
		if err := makeClip(env.clip, "640x360", 10); err != nil {
			fmt.Println("e2e: make clip:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// makeClip writes an H.264 (2 s GOP, 2 B-frames) + AAC stereo clip.
func makeClip(out, size string, seconds int) error {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "2",
		"-c:a", "aac", "-b:a", "96k", "-ac", "2",
		"-f", "flv", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, b)
	}
	return nil
}

// Ports for the servers under test come from below the kernel's ephemeral
// range (32768-60999 here): a port picked with :0 and handed to a server
// later could meanwhile be taken by any socket bound to :0 (an embedded
// etcd, a client's outgoing connection). Every port is handed out once per
// run.
const (
	testPortMin = 20000
	testPortMax = 32000
)

var testPorts struct {
	mu   sync.Mutex
	next int
	used map[int]bool
}

// freePort returns a TCP port on 127.0.0.1 that is free now and was not
// handed out before in this run.
func freePort(t *testing.T) int {
	t.Helper()
	return pickPort(t, 1, func(p int) bool {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		l.Close()
		return true
	})
}

// pickPort returns the first port (of n consecutive ones, the first even
// when n is 2) not handed out yet for which free is true.
func pickPort(t *testing.T, n int, free func(int) bool) int {
	t.Helper()
	testPorts.mu.Lock()
	defer testPorts.mu.Unlock()
	if testPorts.used == nil {
		testPorts.used = map[int]bool{}
		testPorts.next = testPortMin + os.Getpid()%1000*10 // spread parallel test binaries
	}
	for tries := 0; tries < testPortMax-testPortMin; tries++ {
		p := testPorts.next
		if n == 2 && p%2 != 0 {
			p++
		}
		testPorts.next = p + n
		if testPorts.next+n >= testPortMax {
			testPorts.next = testPortMin
		}
		if testPorts.used[p] || (n == 2 && testPorts.used[p+1]) || !free(p) {
			continue
		}
		for k := 0; k < n; k++ {
			testPorts.used[p+k] = true
		}
		return p
	}
	t.Fatal("no free test port")
	return 0
}

// server is one running livefuse process.
type server struct {
	t                         *testing.T
	dir, cfgPath              string
	rtmp, rtsp, http, apiPort int
	token                     string
	cmd                       *exec.Cmd
	logMu                     sync.Mutex
	log                       bytes.Buffer
	exited                    chan struct{}
	// readyGet, when set, fetches /readyz (an HTTPS API needs its client;
	// it may rewrite the URL's scheme).
	readyGet func(url string) (*http.Response, error)
	// sub is the livefuse command (default serve; witness).
	sub string
	// host is the address the server listens on (default 127.0.0.1);
	// netns the network namespace it runs in (default none).
	host, netns string
	// hlsVariant is the origin.hls_variant a test configured ("" default).
	hlsVariant string
}

// hostAddr is the address clients reach s on.
func (s *server) hostAddr() string {
	if s.host != "" {
		return s.host
	}
	return "127.0.0.1"
}

const apiToken = "e2e-api-token"

// startServer starts livefuse with a config on fresh ports. extra is YAML
// appended to the generated config (streams, origin settings, …).
func startServer(t *testing.T, extra string) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), token: apiToken}
	s.rtmp, s.rtsp, s.http, s.apiPort = freePort(t), freePort(t), freePort(t), freePort(t)
	udp := freeUDPPair(t)
	cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
rtmp: {addr: "127.0.0.1:%d"}
rtsp: {addr: "127.0.0.1:%d", udp_rtp_addr: "127.0.0.1:%d", udp_rtcp_addr: "127.0.0.1:%d"}
http: {addr: "127.0.0.1:%d", public_host: "127.0.0.1"}
lms: {api_addr: "127.0.0.1:%d", api_token: %q}
`, filepath.Join(s.dir, "data"), s.rtmp, s.rtsp, udp, udp+1, s.http, s.apiPort, apiToken)
	cfg += extra
	s.cfgPath = filepath.Join(s.dir, "livefuse.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// freeUDPPair returns an even UDP port whose successor is free too.
func freeUDPPair(t *testing.T) int {
	t.Helper()
	return pickPort(t, 2, func(p int) bool {
		for k := 0; k < 2; k++ {
			c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+k))
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
}

func (s *server) start() {
	s.launch()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// launch starts the process (the command in s.sub, default serve) and
// returns at once; waitReady waits for it.
func (s *server) launch() {
	t := s.t
	sub := s.sub
	if sub == "" {
		sub = "serve"
	}
	s.cmd = exec.Command(env.bin, sub, "--config", s.cfgPath)
	if s.netns != "" {
		s.cmd = exec.Command("ip", "netns", "exec", s.netns, env.bin, sub, "--config", s.cfgPath)
	}
	s.cmd.Stdout = &lockedWriter{mu: &s.logMu, w: &s.log}
	s.cmd.Stderr = s.cmd.Stdout
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
}

// waitReady polls /readyz until it answers 200, the process exits or
// within passes. It may run on any goroutine.
func (s *server) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("livefuse exited at start:\n%s", s.logs())
		default:
		}
		ready := fmt.Sprintf("http://%s:%d/readyz", s.hostAddr(), s.apiPort)
		get := http.Get
		if s.readyGet != nil {
			get = s.readyGet
		}
		resp, err := get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("livefuse not ready in %s:\n%s", within, s.logs())
}

// stop sends SIGTERM twice, as an operator who wants the node down now
// (the first starts a drain, the second stops it at once: the drain has
// its own tests), and waits (SIGKILL after 10 s).
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(100 * time.Millisecond):
		s.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("livefuse did not stop within 10 s of SIGTERM")
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	if strings.Contains(s.logs(), "WARNING: DATA RACE") {
		s.t.Errorf("the race detector found a data race in livefuse")
	}
	if s.t.Failed() {
		s.t.Logf("livefuse log:\n%s", s.tail(200))
	}
}

func (s *server) logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

func (s *server) tail(n int) string {
	lines := strings.Split(s.logs(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (s *server) rtmpURL(name, query string) string {
	u := fmt.Sprintf("rtmp://%s:%d/live/%s", s.hostAddr(), s.rtmp, name)
	if query != "" {
		u += "?" + query
	}
	return u
}

func (s *server) rtspURL(name, query string) string {
	u := fmt.Sprintf("rtsp://%s:%d/live/%s", s.hostAddr(), s.rtsp, name)
	if query != "" {
		u += "?" + query
	}
	return u
}

func (s *server) flvURL(name string) string {
	return fmt.Sprintf("http://%s:%d/live/%s.flv", s.hostAddr(), s.http, name)
}

func (s *server) hlsURL(name string) string {
	return fmt.Sprintf("http://%s:%d/live/%s/index.m3u8", s.hostAddr(), s.http, name)
}

// api calls the control API and decodes the JSON answer into out (if not nil).
func (s *server) api(method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, fmt.Sprintf("http://%s:%d/api/v1%s", s.hostAddr(), s.apiPort, path), rd)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", b, err)
		}
	}
	return resp.StatusCode, nil
}

// apiOK is api for a call that must answer 200: the error says which
// call failed and how.
func (s *server) apiOK(method, path string, body any, out any) error {
	code, err := s.api(method, path, body, out)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s %s: status %d", method, path, code)
	}
	return nil
}

// ffmpegCmd starts ffmpeg with args, bound to the test's lifetime.
func ffmpegCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ffmpeg", append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("ffmpeg %v: %s", args, stderr.String())
		}
	})
	return cmd
}

// push starts ffmpeg pushing the clip in real time with -c copy.
// loop repeats the clip until the test ends.
func push(t *testing.T, url string, loop bool, extra ...string) *exec.Cmd {
	args := []string{"-re"}
	if loop {
		args = append(args, "-stream_loop", "-1")
	}
	args = append(args, "-i", env.clip, "-c", "copy")
	args = append(args, extra...)
	format := "flv"
	if strings.HasPrefix(url, "rtsp://") {
		format = "rtsp"
	}
	args = append(args, "-f", format, url)
	return ffmpegCmd(t, args...)
}

// waitLive polls the HTTP-FLV URL until the stream answers 200.
func waitLive(t *testing.T, url string, within time.Duration) {
	t.Helper()
	waitLiveWith(t, http.DefaultClient, url, within)
}

// waitLiveWith polls url with c until it answers 200.
func waitLiveWith(t *testing.T, c *http.Client, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := c.Do(req)
		if err == nil {
			code := resp.StatusCode
			resp.Body.Close()
			cancel()
			if code == 200 {
				return
			}
		} else {
			cancel()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not live within %v", url, within)
}

// frame is one packet as framemd5 reports it.
type frame struct {
	stream int
	size   int
	hash   string
}

// framemd5 runs ffmpeg -c copy -f framemd5 on input and returns the packets.
func framemd5(t *testing.T, timeout time.Duration, input ...string) []frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"-hide_banner", "-nostdin", "-loglevel", "error"}, input...)
	args = append(args, "-map", "0", "-c", "copy", "-f", "framemd5", "-")
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && ctx.Err() == nil {
		t.Fatalf("framemd5 %v: %v: %s", input, err, stderr.String())
	}
	return parseFramemd5(t, out)
}

func parseFramemd5(t *testing.T, out []byte) []frame {
	var frames []frame
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		// stream_index, dts, pts, duration, size, hash
		f := strings.Split(line, ",")
		if len(f) < 6 {
			t.Fatalf("framemd5 line %q", line)
		}
		var fr frame
		fmt.Sscan(strings.TrimSpace(f[0]), &fr.stream)
		fmt.Sscan(strings.TrimSpace(f[4]), &fr.size)
		fr.hash = strings.TrimSpace(f[5])
		frames = append(frames, fr)
	}
	return frames
}

// byStream splits frames per stream index.
func byStream(fs []frame) map[int][]frame {
	m := map[int][]frame{}
	for _, f := range fs {
		m[f.stream] = append(m[f.stream], f)
	}
	return m
}

// assertBitExact checks that, per stream, got is a contiguous run of want
// (the player may join at a keyframe after the start) covering at least
// minShare of it, with identical bytes.
func assertBitExact(t *testing.T, want, got []frame, minShare float64) {
	t.Helper()
	w, g := byStream(want), byStream(got)
	if len(g) != len(w) {
		t.Fatalf("streams: got %d, want %d", len(g), len(w))
	}
	for idx, wf := range w {
		gf := g[idx]
		if len(gf) == 0 {
			t.Fatalf("stream %d: no packets", idx)
		}
		start := -1
		for i := range wf {
			if wf[i].hash == gf[0].hash {
				start = i
				break
			}
		}
		if start < 0 {
			t.Fatalf("stream %d: first received packet (%d bytes, %s) is not in the source", idx, gf[0].size, gf[0].hash)
		}
		n := 0
		for i := range gf {
			if start+i >= len(wf) {
				t.Fatalf("stream %d: %d packets more than the source", idx, len(gf)-i)
			}
			if wf[start+i].hash != gf[i].hash || wf[start+i].size != gf[i].size {
				t.Fatalf("stream %d: packet %d differs: source %d bytes %s, got %d bytes %s",
					idx, start+i, wf[start+i].size, wf[start+i].hash, gf[i].size, gf[i].hash)
			}
			n++
		}
		if share := float64(n) / float64(len(wf)); share < minShare {
			t.Fatalf("stream %d: got %d of %d packets (%.0f%%), want at least %.0f%%", idx, n, len(wf), share*100, minShare*100)
		}
		t.Logf("stream %d: %d of %d source packets received bit-exact (from packet %d)", idx, n, len(wf), start)
	}
}

// assertBitExactLossy is assertBitExact for a transport that may lose
// packets (RTP over UDP: no retransmission, and a busy host drops
// datagrams its socket buffer cannot hold). What a user relies on there is
// that every packet that arrives goes out bit for bit, in order, nothing
// invented or altered, and that losses stay rare: per stream, got must be
// a subsequence of want with identical bytes covering at least minShare of
// it. It logs how many packets were lost.
func assertBitExactLossy(t *testing.T, want, got []frame, minShare float64) {
	t.Helper()
	w, g := byStream(want), byStream(got)
	if len(g) != len(w) {
		t.Fatalf("streams: got %d, want %d", len(g), len(w))
	}
	for idx, wf := range w {
		gf := g[idx]
		if len(gf) == 0 {
			t.Fatalf("stream %d: no packets", idx)
		}
		j, first, lost := 0, -1, 0
		for i, f := range gf {
			k := j
			for k < len(wf) && (wf[k].hash != f.hash || wf[k].size != f.size) {
				k++
			}
			if k == len(wf) {
				t.Fatalf("stream %d: received packet %d (%d bytes, %s) is not in the source after source packet %d", idx, i, f.size, f.hash, j)
			}
			if first < 0 {
				first = k
			} else {
				lost += k - j
			}
			j = k + 1
		}
		if share := float64(len(gf)) / float64(len(wf)); share < minShare {
			t.Fatalf("stream %d: got %d of %d packets (%.0f%%), want at least %.0f%%", idx, len(gf), len(wf), share*100, minShare*100)
		}
		t.Logf("stream %d: %d of %d source packets received bit-exact (from packet %d), %d lost on the way", idx, len(gf), len(wf), first, lost)
	}
}

// flvPlayer reads an HTTP-FLV URL with av.FLVReader and records when each
// video frame arrives.
type flvPlayer struct {
	mu       sync.Mutex
	arrivals []time.Time
	packets  []*av.Packet
	err      error
	done     chan struct{}
	cancel   context.CancelFunc
	keepData bool
}

func playFLV(t *testing.T, url string, keepData bool) *flvPlayer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &flvPlayer{done: make(chan struct{}), cancel: cancel, keepData: keepData}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed on failure, else by the reading goroutine
	if err != nil {
		cancel()
		t.Fatalf("play %s: %v", url, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		t.Fatalf("play %s: status %d", url, resp.StatusCode)
	}
	go func() {
		defer close(p.done)
		defer resp.Body.Close()
		r, err := av.NewFLVReader(resp.Body)
		if err != nil {
			p.setErr(err)
			return
		}
		for {
			pkt, err := r.ReadPacket()
			if err != nil {
				p.setErr(err)
				return
			}
			p.mu.Lock()
			if pkt.Kind == av.KindVideo && !pkt.Header {
				p.arrivals = append(p.arrivals, time.Now())
			}
			if !p.keepData {
				pkt.Data = nil
			}
			p.packets = append(p.packets, pkt)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *flvPlayer) setErr(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

func (p *flvPlayer) stop() {
	p.cancel()
	<-p.done
}

// frames returns how many video frames arrived so far.
func (p *flvPlayer) frames() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.arrivals)
}

// maxGap is the largest interval between video frame arrivals after from.
func (p *flvPlayer) maxGap(from time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return largestGap(p.arrivals, from)
}

// largestGap is the largest interval between arrivals (in order) after
// from, counting the time since the last one.
func largestGap(arrivals []time.Time, from time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, a := range arrivals {
		if a.Before(from) {
			continue
		}
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return max(gap, time.Since(prev))
}

// waitFrames waits until at least n video frames arrived.
func (p *flvPlayer) waitFrames(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if p.frames() >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Fatalf("player got %d video frames in %v, want %d (err %v)", len(p.arrivals), within, n, p.err)
}

// parallel marks a test that asserts no timing (no gap, no latency) and
// loads the machine lightly as one that may run beside others: go test
// runs every serial test first, alone, then these, -parallel at a time
// (E2E_PARALLEL in the Makefile). LIVEFUSE_E2E_SERIAL=1 runs them one by
// one, for a quiet measurement or a bisect.
func parallel(t *testing.T) {
	t.Helper()
	if os.Getenv("LIVEFUSE_E2E_SERIAL") == "" {
		t.Parallel()
	}
}
