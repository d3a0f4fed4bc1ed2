package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Two origin units in two processes behind the nginx edge of deploy/nginx:
// unit a is killed with SIGKILL while an ffmpeg HLS player and a
// reconnecting HTTP-FLV player watch through the edge.

// newUnit prepares a server on fresh ports; configure and start it later.
func newUnit(t *testing.T) *server {
	s := &server{t: t, dir: t.TempDir(), token: apiToken}
	s.rtmp, s.rtsp, s.http, s.apiPort = freePort(t), freePort(t), freePort(t), freePort(t)
	return s
}

func (s *server) configure(extra string) {
	t := s.t
	udp := freeUDPPair(t)
	cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
rtmp: {addr: "127.0.0.1:%d"}
rtsp: {addr: "127.0.0.1:%d", udp_rtp_addr: "127.0.0.1:%d", udp_rtcp_addr: "127.0.0.1:%d"}
http: {addr: "127.0.0.1:%d", public_host: "127.0.0.1"}
`, filepath.Join(s.dir, "data"), s.rtmp, s.rtsp, udp, udp+1, s.http) + extra
	s.cfgPath = filepath.Join(s.dir, "livefuse.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startEdge runs nginx with deploy/nginx's template in front of the units.
func startEdge(t *testing.T, port int, a, b *server) *nginxVendor {
	t.Helper()
	tmpl, err := os.ReadFile("../deploy/nginx/livefuse-edge.conf.template")
	if err != nil {
		t.Fatal(err)
	}
	n := &nginxVendor{t: t, name: "edge", dir: t.TempDir(), port: port}
	os.MkdirAll(filepath.Join(n.dir, "tmp"), 0o755)
	conf := strings.NewReplacer("@PREFIX@", n.dir, "@LISTEN@", fmt.Sprintf("127.0.0.1:%d", port),
		"@UNIT_A@", fmt.Sprintf("127.0.0.1:%d", a.http), "@UNIT_B@", fmt.Sprintf("127.0.0.1:%d", b.http)).Replace(string(tmpl))
	n.launch(conf, "/healthz")
	return n
}

var segRe = regexp.MustCompile(`(?m)^(seg[0-9]+\.ts)$`)

// playlist returns the media sequence and the segment names of a playlist.
func playlist(url string) (int, []string, error) {
	body, err := httpGet(url)
	if err != nil {
		return 0, nil, err
	}
	m := mediaSeqRe.FindStringSubmatch(body)
	if m == nil {
		return 0, nil, fmt.Errorf("no media sequence in %q", body)
	}
	seq, _ := strconv.Atoi(m[1])
	var names []string
	for _, s := range segRe.FindAllStringSubmatch(body, -1) {
		names = append(names, s[1])
	}
	return seq, names, nil
}

// reconnectingFLV reads HTTP-FLV from url, reconnecting at once whenever
// the connection ends, and stamps every video frame's arrival.
type reconnectingFLV struct {
	mu       sync.Mutex
	arrivals []time.Time
	conns    []time.Time // when each connection delivered its first frame
	cancel   context.CancelFunc
	done     chan struct{}
}

func playFLVReconnecting(t *testing.T, url string) *reconnectingFLV {
	ctx, cancel := context.WithCancel(context.Background())
	p := &reconnectingFLV{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; i < 10000 && ctx.Err() == nil; i++ {
			p.once(ctx, url)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

func (p *reconnectingFLV) once(ctx context.Context, url string) {
	// Like a real player's stall detector: a connection silent for 1 s
	// (a unit or host gone without a reset) is dropped and made again.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if time.Since(time.Unix(0, last.Load())) > time.Second {
					cancel()
					return
				}
			}
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return
	}
	r, err := av.NewFLVReader(resp.Body)
	if err != nil {
		return
	}
	first := true
	for {
		pkt, err := r.ReadPacket()
		if err != nil {
			return
		}
		last.Store(time.Now().UnixNano())
		if pkt.Kind == av.KindVideo && !pkt.Header {
			now := time.Now()
			p.mu.Lock()
			p.arrivals = append(p.arrivals, now)
			if first {
				p.conns = append(p.conns, now)
				first = false
			}
			p.mu.Unlock()
		}
	}
}

// firstFrameAfter returns the first frame of a connection made after t0.
func (p *reconnectingFLV) firstFrameAfter(t0 time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if c.After(t0) {
			return c, true
		}
	}
	return time.Time{}, false
}

// progressPlayer is ffmpeg playing HLS (-c copy to nothing) with its
// -progress output read: out_time at each report.
type progressPlayer struct {
	mu     sync.Mutex
	at     []time.Time
	out    []time.Duration
	cmd    *exec.Cmd
	exited chan struct{}
	stderr bytes.Buffer
}

func playHLSProgress(t *testing.T, url string) *progressPlayer {
	p := &progressPlayer{exited: make(chan struct{})}
	p.cmd = exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-stats_period", "0.1",
		"-progress", "pipe:1", "-i", url, "-c", "copy", "-f", "mpegts", "-y", os.DevNull)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v, ok := strings.CutPrefix(sc.Text(), "out_time_us=")
			if !ok {
				continue
			}
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.at = append(p.at, time.Now())
			p.out = append(p.out, time.Duration(us)*time.Microsecond)
			p.mu.Unlock()
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	})
	return p
}

// longestStill is the longest wall-clock interval in [from, to] during
// which out_time did not advance.
func (p *progressPlayer) longestStill(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	var since time.Time
	var last time.Duration = -1
	for i, at := range p.at {
		if at.Before(from) || at.After(to) {
			if at.Before(from) {
				last = p.out[i]
				since = from
			}
			continue
		}
		if since.IsZero() {
			since, last = at, p.out[i]
			continue
		}
		if p.out[i] > last {
			longest = max(longest, at.Sub(since))
			since, last = at, p.out[i]
		}
	}
	if !since.IsZero() {
		longest = max(longest, to.Sub(since))
	}
	return longest
}

func (p *progressPlayer) outTime() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.out) == 0 {
		return 0
	}
	return p.out[len(p.out)-1]
}

// startDualBehindEdge starts units a and b (b on a's embedded etcd) with
// stream live/name, the nginx edge in front, main pushed to a and backup
// to b; lmsExtra and extra go into both configs (inside lms, and at the
// top). It returns the edge's base URL of the stream.
func startDualBehindEdge(t *testing.T, name, token, lmsExtra, extra string) (a, b *server, edge string) {
	t.Helper()
	nginxBin(t)
	a, b = newUnit(t), newUnit(t)
	etcdPort := freePort(t)
	units := fmt.Sprintf(`units:
  - {name: a, relay: "127.0.0.1:%d"}
  - {name: b, relay: "127.0.0.1:%d"}
relay_secret: "e2e-relay-secret"
streams:
  - {app: live, name: %s, publish_token: %q}
`, a.rtmp, b.rtmp, name, token) + extra
	if lmsExtra != "" {
		lmsExtra = ", " + lmsExtra
	}
	a.configure(fmt.Sprintf("unit: a\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {listen: \"127.0.0.1:%d\"}%s}\n", a.apiPort, apiToken, etcdPort, lmsExtra) + units)
	b.configure(fmt.Sprintf("unit: b\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {endpoints: [\"127.0.0.1:%d\"]}%s}\n", b.apiPort, apiToken, etcdPort, lmsExtra) + units)
	a.start()
	t.Cleanup(a.stop)
	b.start()
	t.Cleanup(b.stop)
	edgePort := freePort(t)
	startEdge(t, edgePort, a, b)
	edge = fmt.Sprintf("http://127.0.0.1:%d/live/%s", edgePort, name)

	// Main encoder into unit a, backup encoder into unit b: each unit
	// relays what it accepts to the other.
	push(t, a.rtmpURL(name, "token="+token), true)
	waitLive(t, a.flvURL(name), 10*time.Second)
	waitLive(t, b.flvURL(name), 10*time.Second)
	push(t, b.rtmpURL(name, "token="+token+"&feed=backup"), true)
	return a, b, edge
}

func TestDualUnitsBehindEdge(t *testing.T) {
	a, b, edge := startDualBehindEdge(t, "ha", "hatok", "", "")

	// A relay without the secret is refused, and the feeds are untouched.
	bad := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-t", "2", "-i", env.clip, "-c", "copy", "-f", "flv",
		a.rtmpURL("ha", "relay=wrong&feed=backup"))
	if out, err := bad.CombinedOutput(); err == nil {
		t.Errorf("a relay with a wrong secret was accepted: %s", out)
	}

	// Steady state: both units have both feeds and serve the same HLS.
	var aSeq, bSeq int
	var aSegs, bSegs []string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var err1, err2 error
		aSeq, aSegs, err1 = playlist(a.hlsURL("ha"))
		bSeq, bSegs, err2 = playlist(b.hlsURL("ha"))
		if err1 == nil && err2 == nil && len(aSegs) >= 3 && len(bSegs) >= 3 && aSeq == bSeq && slicesEqual(aSegs, bSegs) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if aSeq != bSeq || !slicesEqual(aSegs, bSegs) {
		t.Fatalf("units' playlists differ: a seq %d %v, b seq %d %v", aSeq, aSegs, bSeq, bSegs)
	}
	common := aSegs[len(aSegs)-2]
	sa, err1 := httpGet(strings.TrimSuffix(a.hlsURL("ha"), "index.m3u8") + common)
	sb, err2 := httpGet(strings.TrimSuffix(b.hlsURL("ha"), "index.m3u8") + common)
	if err1 != nil || err2 != nil || len(sa) == 0 || sa != sb {
		t.Errorf("segment %s differs between the units (%d and %d bytes; %v %v)", common, len(sa), len(sb), err1, err2)
	} else {
		t.Logf("units a and b: media sequence %d, segments %v, %s identical (%d bytes)", aSeq, aSegs, common, len(sa))
	}
	var info struct {
		Units []struct {
			Unit   string `json:"unit"`
			Active string `json:"active"`
			Feeds  []struct {
				Feed, State, Protocol string
			} `json:"feeds"`
		} `json:"units"`
	}
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := b.api("GET", "/streams/live/ha", nil, &info); err == nil && len(info.Units) == 2 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(info.Units) != 2 {
		t.Fatalf("unit b's API shows %d units, want a and b: %+v", len(info.Units), info)
	}
	for _, u := range info.Units {
		if u.Active != "main" || len(u.Feeds) != 2 || u.Feeds[0].State != "live" || u.Feeds[1].State != "live" {
			t.Errorf("unit %s: %+v, want main shown and both feeds live", u.Unit, u)
		}
	}

	// Players through the edge.
	hls := playHLSProgress(t, edge+"/index.m3u8")
	flv := playFLVReconnecting(t, edge+".flv")
	time.Sleep(8 * time.Second)
	if hls.outTime() == 0 {
		t.Fatalf("HLS player through the edge made no progress: %s", hls.stderr.String())
	}
	before := hls.longestStill(time.Now().Add(-5*time.Second), time.Now())

	// Unit a dies.
	t0 := time.Now()
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.exited
	time.Sleep(12 * time.Second)
	select {
	case <-hls.exited:
		t.Fatalf("the HLS player exited after unit a died: %s", hls.stderr.String())
	default:
	}
	after := hls.longestStill(t0, time.Now())
	stall := after - before
	t.Logf("FIGURE HLS through the edge: longest time without progress %v after unit a died, %v before (segments are 2 s): stall %v (target 2s)", after.Round(time.Millisecond), before.Round(time.Millisecond), stall.Round(time.Millisecond))
	if stall > 2*time.Second {
		t.Errorf("HLS player stalled %v longer than in steady state, want at most 2s", stall)
	}
	at, ok := flv.firstFrameAfter(t0)
	if !ok {
		t.Fatal("the HTTP-FLV player got no frame through the edge after unit a died")
	}
	t.Logf("FIGURE HTTP-FLV through the edge: frames again %v after unit a died (target 2s)", at.Sub(t0).Round(time.Millisecond))
	if at.Sub(t0) > 2*time.Second {
		t.Errorf("HTTP-FLV player got frames again after %v, want within 2s", at.Sub(t0))
	}
	// Unit b lost the relayed main feed and shows its own backup encoder.
	var st struct {
		Live struct {
			Switch struct {
				Active string `json:"active"`
			} `json:"switch"`
		} `json:"live"`
	}
	if _, err := b.api("GET", "/streams/live/ha", nil, &st); err != nil || st.Live.Switch.Active != "backup" {
		t.Errorf("unit b after unit a died: showing %q (%v), want backup", st.Live.Switch.Active, err)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
