// Command hostiletool measures what hostile connections cost a livefuse
// node: the memory per idle RTMP connection, per idle HTTP keep-alive
// connection and per RTMP connection held at the pre-authorization limits
// (RSS growth over N connections, divided by N), and the server's CPU and
// a canary player's largest gap between video frames while N hostile
// connections are open. It is a measurement, not a test: it prints figures
// and asserts nothing.
//
//	go run ./e2e/hostiletool -server bin/livefuse [-n 1000] [-runs 3]
//
// Each run starts a fresh server per phase (RSS seldom shrinks, so one
// phase's connections would hide the next one's cost). The connections
// come from 127.0.0.2 and up, at most -per-addr from one address, so the
// default per-address caps do not refuse them. The server's setup timeout
// is raised (-setup-timeout) so that the held connections stay for the
// measurement; what a connection costs does not depend on it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/livefuse/livefuse/av"
)

type options struct {
	server       string
	n            int
	runs         int
	perAddr      int
	window       time.Duration
	setupTimeout time.Duration
	keep         bool
	only         string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hostiletool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.server, "server", "bin/livefuse", "livefuse binary")
	fs.IntVar(&o.n, "n", 1000, "hostile connections per phase")
	fs.IntVar(&o.runs, "runs", 3, "runs (medians with min..max are printed)")
	fs.IntVar(&o.perAddr, "per-addr", 125, "connections from one loopback source address")
	fs.DurationVar(&o.window, "window", 10*time.Second, "CPU and canary measurement window")
	fs.DurationVar(&o.setupTimeout, "setup-timeout", 10*time.Minute, "the server's rtmp.setup_timeout")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (server logs)")
	fs.StringVar(&o.only, "only", "", "run one phase only: idle_rtmp, idle_http or held_rtmp")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.n < 1 || o.runs < 1 || o.perAddr < 1 || o.n/o.perAddr > 250 {
		fmt.Fprintln(stderr, "hostiletool: -n, -runs, -per-addr must be positive, n/per-addr at most 250")
		return 2
	}
	switch o.only {
	case "", "idle_rtmp", "idle_http", "held_rtmp":
	default:
		fmt.Fprintf(stderr, "hostiletool: -only %q: want idle_rtmp, idle_http or held_rtmp\n", o.only)
		return 2
	}
	dir, err := os.MkdirTemp("", "hostiletool-")
	if err != nil {
		fmt.Fprintln(stderr, "hostiletool:", err)
		return 1
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(stdout, "temp dir:", dir)
	}
	clip := filepath.Join(dir, "clip.flv")
	if err := makeClip(clip); err != nil {
		fmt.Fprintln(stderr, "hostiletool:", err)
		return 1
	}
	var all []map[string]float64
	for r := range o.runs {
		res, err := oneRun(o, filepath.Join(dir, fmt.Sprintf("run%d", r)), clip, stdout)
		if err != nil {
			fmt.Fprintf(stderr, "hostiletool: run %d: %v\n", r+1, err)
			return 1
		}
		all = append(all, res)
	}
	summary(stdout, o, all)
	return 0
}

// metrics in print order, with their units.
var metrics = []struct{ key, label string }{
	{"idle_rtmp_kib", "idle RTMP connection (after the handshake), KiB each"},
	{"idle_http_kib", "idle HTTP keep-alive connection (after one request), KiB each"},
	{"held_rtmp_kib", "RTMP connection at the pre-authorization limits, KiB each"},
	{"cpu_base_pct", "server CPU, canary only, % of one core"},
	{"cpu_hostile_pct", "server CPU with N held connections trickling, % of one core"},
	{"gap_base_ms", "canary's largest gap, canary only, ms"},
	{"gap_hostile_ms", "canary's largest gap with N held connections trickling, ms"},
	{"open_ms", "time to open N held connections, ms"},
}

func summary(w io.Writer, o options, all []map[string]float64) {
	fmt.Fprintf(w, "\n== %d connections per phase, %d runs: median (min..max)\n", o.n, len(all))
	for _, m := range metrics {
		var v []float64
		for _, r := range all {
			if x, ok := r[m.key]; ok {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		fmt.Fprintf(w, "%-70s %8.1f (%.1f..%.1f)\n", m.label, v[len(v)/2], v[0], v[len(v)-1])
	}
}

func oneRun(o options, dir, clip string, out io.Writer) (map[string]float64, error) {
	res := map[string]float64{}
	phases := []struct {
		name string
		f    func(*node) error
	}{
		{"idle_rtmp", func(nd *node) error {
			kib, err := perConn(nd, o, func(host int) (net.Conn, error) { return dialRTMP(nd.rtmp, host) })
			res["idle_rtmp_kib"] = kib
			return err
		}},
		{"idle_http", func(nd *node) error {
			kib, err := perConn(nd, o, func(host int) (net.Conn, error) { return idleHTTP(nd.http, host) })
			res["idle_http_kib"] = kib
			return err
		}},
		{"held_rtmp", func(nd *node) error { return heldPhase(nd, o, res) }},
	}
	for _, ph := range phases {
		if o.only != "" && o.only != ph.name {
			continue
		}
		nd, err := startNode(o, filepath.Join(dir, ph.name), clip)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ph.name, err)
		}
		err = ph.f(nd)
		nd.stop()
		if err != nil {
			return nil, fmt.Errorf("%s: %w (server log: %s)", ph.name, err, nd.logPath)
		}
	}
	var parts []string
	for _, m := range metrics {
		if v, ok := res[m.key]; ok {
			parts = append(parts, fmt.Sprintf("%s=%.1f", m.key, v))
		}
	}
	fmt.Fprintln(out, "run:", strings.Join(parts, " "))
	return res, nil
}

// perConn opens o.n connections with dial, and returns the RSS growth per
// connection in KiB, measured 2 s after the last one opened.
func perConn(nd *node, o options, dial func(host int) (net.Conn, error)) (float64, error) {
	settle(nd)
	base := nd.rss()
	conns, err := openMany(o, dial)
	defer closeAll(conns)
	if err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	if !nd.alive() {
		return 0, errors.New("the server died")
	}
	return float64(nd.rss()-base) / 1024 / float64(len(conns)), nil
}

// settle lets the canary run and the heap settle before a baseline.
func settle(nd *node) {
	time.Sleep(3 * time.Second)
}

// heldPhase measures CPU and the canary over a window with the canary
// only, then opens o.n connections held at the pre-authorization limits
// (8 chunk streams, each with an 8 KiB message of which all but the last
// chunk was sent), measures their memory, and then measures CPU and the
// canary again over a window while every connection trickles the last
// chunk, one byte every 2 s.
func heldPhase(nd *node, o options, res map[string]float64) error {
	settle(nd)
	res["cpu_base_pct"], res["gap_base_ms"] = nd.window(o.window)
	base := nd.rss()
	start := time.Now()
	conns, err := openMany(o, func(host int) (net.Conn, error) {
		c, err := dialRTMP(nd.rtmp, host)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write(heldBytes()); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	defer closeAll(conns)
	if err != nil {
		return err
	}
	res["open_ms"] = float64(time.Since(start).Milliseconds())
	time.Sleep(2 * time.Second)
	res["held_rtmp_kib"] = float64(nd.rss()-base) / 1024 / float64(len(conns))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the connections over the 2 s period.
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(i) * 2 * time.Second / time.Duration(len(conns))):
			}
			tk := time.NewTicker(2 * time.Second)
			defer tk.Stop()
			// The last chunk of chunk stream 3: its header, then 127 of its
			// 128 bytes (the message stays incomplete).
			last := append([]byte{0xc0 | 3}, make([]byte, 127)...)
			for _, b := range last {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
	}
	res["cpu_hostile_pct"], res["gap_hostile_ms"] = nd.window(o.window)
	close(stop)
	wg.Wait()
	open := 0
	buf := make([]byte, 4096)
	for _, c := range conns {
		// Open: reads time out (after whatever the server sent).
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		for range 100 {
			_, err := c.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open++
			}
			if err != nil {
				break
			}
		}
	}
	if open < len(conns) {
		return fmt.Errorf("%d of %d held connections were closed by the server during the measurement", len(conns)-open, len(conns))
	}
	if !nd.alive() {
		return errors.New("the server died")
	}
	return nil
}

// heldBytes is what one held connection sends after the handshake: on each
// of the 8 chunk streams a pre-authorization connection may open (3..10),
// a type 0 header of an 8192-byte video message and 63 of its 64 chunks of
// 128 bytes.
func heldBytes() []byte {
	var b []byte
	chunk := make([]byte, 128)
	for csid := byte(3); csid <= 10; csid++ {
		b = append(b, csid, 0, 0, 0, 0, 0x20, 0x00, 9, 1, 0, 0, 0)
		for i := range 63 {
			if i > 0 {
				b = append(b, 0xc0|csid)
			}
			b = append(b, chunk...)
		}
	}
	return b
}

// openMany opens o.n connections, 32 at a time, spread over source
// addresses 127.0.0.2 and up, o.perAddr each.
func openMany(o options, dial func(host int) (net.Conn, error)) ([]net.Conn, error) {
	conns := make([]net.Conn, o.n)
	errs := make([]error, o.n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range o.n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i], errs[i] = dial(2 + i/o.perAddr)
		}()
	}
	wg.Wait()
	var ok []net.Conn
	for _, c := range conns {
		if c != nil {
			ok = append(ok, c)
		}
	}
	if err := errors.Join(errs...); err != nil {
		closeAll(ok)
		return nil, fmt.Errorf("%d of %d connections failed: %w", o.n-len(ok), o.n, errors.Join(errs...))
	}
	return ok, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

func dialer(host int) *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(host))}}
}

// dialRTMP connects and runs the simple handshake (C0 C1, S0 S1 S2, C2).
func dialRTMP(addr string, host int) (net.Conn, error) {
	c, err := dialer(host).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	c0c1 := make([]byte, 1537)
	c0c1[0] = 3
	s := make([]byte, 3073)
	if _, err = c.Write(c0c1); err == nil {
		if _, err = io.ReadFull(c, s); err == nil {
			_, err = c.Write(s[1:1537])
		}
	}
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return c, nil
}

// idleHTTP connects, sends one request, reads the answer and leaves the
// connection open.
func idleHTTP(addr string, host int) (net.Conn, error) {
	c, err := dialer(host).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /live/nothing-here.flv HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("request: %w", err)
	}
	return c, nil
}

// --- the node -------------------------------------------------------------

type node struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	rtmp, http string
	logPath    string
	pusher     *exec.Cmd
	player     *player
}

func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

func startNode(o options, dir, clip string) (*node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	a, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`data_dir: %q
log_level: info
rtmp: {addr: %q, setup_timeout: %s}
rtsp: {addr: %q, udp_rtp_addr: "", udp_rtcp_addr: ""}
http: {addr: %q}
lms: {api_addr: %q, api_token: "secret"}
streams:
  - {app: live, name: canary, publish_token: "canary"}
`, filepath.Join(dir, "data"), a[0], o.setupTimeout, a[1], a[2], a[3])
	cfgPath := filepath.Join(dir, "livefuse.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	nd := &node{rtmp: a[0], http: a[2], logPath: filepath.Join(dir, "livefuse.log"), exited: make(chan struct{})}
	logf, err := os.Create(nd.logPath)
	if err != nil {
		return nil, err
	}
	nd.cmd = exec.Command(o.server, "serve", "--config", cfgPath)
	nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
	nd.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := nd.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { nd.cmd.Wait(); logf.Close(); close(nd.exited) }()
	ready := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && nd.alive(); time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + a[3] + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ready = true
				break
			}
		}
	}
	if !ready {
		nd.stop()
		return nil, fmt.Errorf("server not ready in 30 s (log %s)", nd.logPath)
	}
	nd.pusher = exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", clip, "-c", "copy", "-f", "flv", "rtmp://"+a[0]+"/live/canary?token=canary")
	nd.pusher.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := nd.pusher.Start(); err != nil {
		nd.stop()
		return nil, err
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if nd.player, err = play("http://" + a[2] + "/live/canary.flv"); err == nil {
			break
		}
	}
	if nd.player == nil {
		nd.stop()
		return nil, fmt.Errorf("canary: %w", err)
	}
	return nd, nil
}

func (nd *node) alive() bool {
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

func (nd *node) stop() {
	if nd.player != nil {
		nd.player.stop()
	}
	if nd.pusher != nil && nd.pusher.Process != nil {
		syscall.Kill(-nd.pusher.Process.Pid, syscall.SIGKILL)
		nd.pusher.Wait()
	}
	if !nd.alive() {
		return
	}
	nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-nd.cmd.Process.Pid, syscall.SIGKILL)
		<-nd.exited
	}
}

func (nd *node) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", nd.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTicks returns the process's user and system time in clock ticks.
func (nd *node) cpuTicks() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", nd.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64) // utime: field 14 of stat
	k, _ := strconv.ParseInt(f[12], 10, 64) // stime: field 15
	return u + k
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// window returns the server's CPU (% of one core) and the canary's largest
// gap (ms) over d.
func (nd *node) window(d time.Duration) (float64, float64) {
	t0, c0 := time.Now(), nd.cpuTicks()
	time.Sleep(d)
	cpu := float64(nd.cpuTicks()-c0) / clockTicks / time.Since(t0).Seconds() * 100
	return cpu, float64(nd.player.maxGap(t0).Milliseconds())
}

// --- the canary player ----------------------------------------------------

type player struct {
	mu       sync.Mutex
	arrivals []time.Time
	cancel   context.CancelFunc
	done     chan struct{}
}

func play(url string) (*player, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed on failure, else by the reading goroutine
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	p := &player{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer resp.Body.Close()
		r, err := av.NewFLVReader(resp.Body)
		if err != nil {
			return
		}
		for {
			pkt, err := r.ReadPacket()
			if err != nil {
				return
			}
			if pkt.Kind == av.KindVideo && !pkt.Header {
				p.mu.Lock()
				p.arrivals = append(p.arrivals, time.Now())
				p.mu.Unlock()
			}
		}
	}()
	return p, nil
}

func (p *player) stop() {
	p.cancel()
	<-p.done
}

// maxGap is the largest interval between video frames since from (up to
// now).
func (p *player) maxGap(from time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gap time.Duration
	prev := from
	for _, a := range p.arrivals {
		if a.Before(from) {
			continue
		}
		gap = max(gap, a.Sub(prev))
		prev = a
	}
	return max(gap, time.Since(prev))
}

// makeClip encodes a 10 s 640x360 H.264 (2 s GOP) + AAC clip as FLV.
func makeClip(out string) error {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "96k", "-ac", "2", "-f", "flv", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ffmpeg clip: %w: %s", err, b)
	}
	return nil
}
