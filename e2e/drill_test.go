package e2e

import (
	"context"
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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Multi-host drills (make drill): units a and b and the etcd witness on
// three hosts of a lab network, the nginx edge on a fourth, an encoder
// (this process's host) pushing main to a and backup to b, players
// behind the edge.

type fleet struct {
	lab       *lab
	a, b, w   *server
	edge      string // http://edge:8088
	edgeStop  func()
	endpoints []string // etcd client URLs (control network)
}

const drillStream = "ev"

func startFleet(t *testing.T) *fleet {
	t.Helper()
	nginxBin(t)
	l := newLab(t, "a", "b", "w", "edge")
	f := &fleet{lab: l}
	var members []string
	for _, n := range []string{"a", "b", "w"} {
		members = append(members, fmt.Sprintf("%s=http://%s:2380", n, l.hosts[n].ctlIP))
		f.endpoints = append(f.endpoints, l.hosts[n].ctlIP+":2379")
	}
	initial := strings.Join(members, ",")
	etcd := func(n string) string {
		h := l.hosts[n]
		return fmt.Sprintf(`    name: %s
    listen: "%s:2379"
    peer_listen: "%s:2380"
    initial_cluster: %q
    heartbeat_interval: 50ms
    election_timeout: 500ms
    start_timeout: 60s
`, n, h.ctlIP, h.ctlIP, initial)
	}
	unit := func(n string) *server {
		s := l.unitIn(n)
		ip := s.host
		cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
unit: %s
units:
  - {name: a, relay: "%s:1935"}
  - {name: b, relay: "%s:1935"}
relay_secret: "drill-relay-secret"
rtmp: {addr: "%s:1935"}
rtsp: {addr: "%s:8554", udp_rtp_addr: "%s:8000", udp_rtcp_addr: "%s:8001"}
http: {addr: "%s:8080", public_host: "%s"}
lms:
  api_addr: "%s:9090"
  api_token: %q
  node: {report_period: 500ms}
  etcd:
%sstreams:
  - {app: live, name: %s, publish_token: "evtok"}
`, filepath.Join(s.dir, "data"), n, l.hosts["a"].mediaIP, l.hosts["b"].mediaIP, ip, ip, ip, ip, ip, ip, ip, apiToken, etcd(n), drillStream)
		s.cfgPath = filepath.Join(s.dir, "livefuse.yaml")
		if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return s
	}
	f.a, f.b = unit("a"), unit("b")
	f.w = l.unitIn("w")
	f.w.sub = "witness"
	wcfg := fmt.Sprintf("data_dir: %s\nlms:\n  api_addr: \"%s:9090\"\n  etcd:\n%s", filepath.Join(f.w.dir, "data"), f.w.host, etcd("w"))
	f.w.cfgPath = filepath.Join(f.w.dir, "livefuse.yaml")
	if err := os.WriteFile(f.w.cfgPath, []byte(wcfg), 0o600); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3)
	for _, s := range []*server{f.a, f.b, f.w} {
		s.launch()
		t.Cleanup(s.stop)
	}
	for _, s := range []*server{f.a, f.b, f.w} {
		go func() { errs <- s.waitReady(60 * time.Second) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.edge, f.edgeStop = startEdgeIn(t, l.hosts["edge"], f.a, f.b)

	push(t, f.a.rtmpURL(drillStream, "token=evtok"), true)
	waitLive(t, f.a.flvURL(drillStream), 15*time.Second)
	waitLive(t, f.b.flvURL(drillStream), 15*time.Second)
	push(t, f.b.rtmpURL(drillStream, "token=evtok&feed=backup"), true)
	return f
}

// startEdgeIn runs the nginx edge of deploy/nginx on host h of the lab.
func startEdgeIn(t *testing.T, h *labHost, a, b *server) (string, func()) {
	t.Helper()
	tmpl, err := os.ReadFile("../deploy/nginx/livefuse-edge.conf.template")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
	conf := strings.NewReplacer("@PREFIX@", dir, "@LISTEN@", h.mediaIP+":8088",
		"@UNIT_A@", a.host+":8080", "@UNIT_B@", b.host+":8080").Replace(string(tmpl))
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.ns, nginxBin(t), "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	t.Cleanup(stop)
	base := "http://" + h.mediaIP + ":8088"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("edge not listening: %v: %s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return base, stop
}

// leadEtcd moves the etcd leadership to member name.
func leadEtcd(t *testing.T, endpoints []string, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var target uint64
	urls := map[uint64]string{}
	for _, m := range ml.Members {
		if m.Name == name {
			target = m.ID
		}
		if len(m.ClientURLs) > 0 {
			urls[m.ID] = strings.TrimPrefix(m.ClientURLs[0], "http://")
		}
	}
	for _, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil || st.Header.MemberId != st.Leader {
			continue
		}
		if st.Leader == target {
			return
		}
		lc, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = lc.MoveLeader(ctx, target)
		lc.Close()
		if err != nil {
			t.Fatalf("move etcd leader to %s: %v", name, err)
		}
		return
	}
	t.Fatalf("no etcd leader found among %v", endpoints)
}

// switchWithin posts a feed switch to s until it answers 200 (bounded)
// and returns how long that took from since.
func switchWithin(t *testing.T, s *server, feed string, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	for {
		code, err := s.api("POST", "/streams/live/"+drillStream+"/switch", map[string]any{"feed": feed}, nil)
		if err == nil && code == http.StatusOK {
			return time.Since(since)
		}
		if time.Since(since) > within {
			t.Fatalf("no switch answered by %s within %s: %d %v\n%s", s.host, within, code, err, s.tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activeFeed is the feed unit s shows for the drill stream, from its own
// live status (not the units' reports, which lag by their period).
func activeFeed(s *server) string {
	var st struct {
		Live struct {
			Switch struct {
				Active string `json:"active"`
			} `json:"switch"`
		} `json:"live"`
	}
	if _, err := s.api("GET", "/streams/live/"+drillStream, nil, &st); err != nil {
		return ""
	}
	return st.Live.Switch.Active
}

func TestDrillHostLost(t *testing.T) {
	f := startFleet(t)
	hls := playHLSProgress(t, f.edge+"/live/"+drillStream+"/index.m3u8")
	flv := playFLVReconnecting(t, f.edge+"/live/"+drillStream+".flv")
	time.Sleep(8 * time.Second)
	if hls.outTime() == 0 {
		t.Fatalf("HLS through the edge made no progress: %s", hls.stderr.String())
	}
	before := hls.longestStill(time.Now().Add(-5*time.Second), time.Now())
	// The worst case for the control plane: host a holds the etcd leader.
	leadEtcd(t, f.endpoints, "a")

	// The host goes away as a power cut would: links first (nothing it
	// sends gets out any more, no reset, no goodbye), then its processes.
	t0 := time.Now()
	f.lab.link("a", "eth0", false)
	f.lab.link("a", "eth1", false)
	syscall.Kill(-f.a.cmd.Process.Pid, syscall.SIGKILL)
	<-f.a.exited
	took := switchWithin(t, f.b, "backup", t0, 10*time.Second)
	t.Logf("FIGURE host a lost: unit b answered a switch %v after (etcd election timeout 500ms)", took.Round(time.Millisecond))
	time.Sleep(12 * time.Second)
	select {
	case <-hls.exited:
		t.Fatalf("the HLS player exited after host a went away: %s", hls.stderr.String())
	default:
	}
	stall := hls.longestStill(t0, time.Now()) - before
	at, ok := flv.firstFrameAfter(t0)
	if !ok {
		t.Fatal("the HTTP-FLV player got no frame through the edge after host a went away")
	}
	t.Logf("FIGURE host a lost: HLS through the edge stalled %v beyond steady state; HTTP-FLV frames again after %v",
		stall.Round(time.Millisecond), at.Sub(t0).Round(time.Millisecond))
	// One playlist or segment request may be in flight to host a when it
	// goes: the edge gives it up after its read timeout (2-4 s).
	if stall > 3*time.Second {
		t.Errorf("HLS stalled %v beyond steady state, want at most 3s", stall)
	}
	// The player notices the silence after 1 s (a dead host sends no
	// reset), then the edge gives up on unit a after its connect timeout.
	if at.Sub(t0) > 4*time.Second {
		t.Errorf("HTTP-FLV frames again after %v, want within 4s", at.Sub(t0))
	}
	// The target is 1 s; an election can take up to twice the election
	// timeout, and this machine is shared: the figure is what to watch.
	if took > 2*time.Second {
		t.Errorf("unit b answered the switch after %v, want within 2s (target 1s)", took)
	}
}

func TestDrillPartition(t *testing.T) {
	f := startFleet(t)
	flvA := playFLV(t, f.a.flvURL(drillStream), false)
	hls := playHLSProgress(t, f.edge+"/live/"+drillStream+"/index.m3u8")
	flvA.waitFrames(t, 25, 10*time.Second)
	time.Sleep(4 * time.Second)
	before := hls.longestStill(time.Now().Add(-4*time.Second), time.Now())

	// Host a loses the control network only: encoder and edge still reach it.
	t0 := time.Now()
	f.lab.link("a", "eth1", false)
	took := switchWithin(t, f.b, "backup", t0, 10*time.Second)
	if code, err := f.b.api("POST", "/streams", map[string]any{"app": "live", "name": "added", "publish_token": "t"}, nil); err != nil || code != http.StatusCreated {
		t.Fatalf("create on b during the partition: %d %v", code, err)
	}
	// The switch applies on b.
	deadline := time.Now().Add(5 * time.Second)
	for activeFeed(f.b) != "backup" {
		if time.Now().After(deadline) {
			t.Fatalf("unit b does not show backup after the switch (shows %q)", activeFeed(f.b))
		}
		time.Sleep(50 * time.Millisecond)
	}
	applied := time.Since(t0)
	// A switch sent to the cut-off unit a applies there at once, as a
	// local override (it cannot reach the registry's quorum).
	ta := time.Now()
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s:9090/api/v1/streams/live/%s/switch", f.a.host, drillStream),
		strings.NewReader(`{"feed":"backup"}`))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Livefuse-Local-Override") == "" {
		t.Fatalf("switch on cut-off unit a: %d %v, want 202 with a local override", resp.StatusCode, resp.Header)
	}
	answeredA := time.Since(ta)
	for activeFeed(f.a) != "backup" {
		if time.Since(ta) > 5*time.Second {
			t.Fatalf("unit a does not show backup after its local switch (shows %q)", activeFeed(f.a))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("FIGURE partition: a switch on cut-off unit a answered (202, local override) after %v, applied on a after %v",
		answeredA.Round(time.Millisecond), time.Since(ta).Round(time.Millisecond))
	// Reads on a come from its copy, marked stale.
	req, _ = http.NewRequest("GET", fmt.Sprintf("http://%s:9090/api/v1/streams", f.a.host), nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("X-Livefuse-Stale") == "" {
		t.Errorf("a read on cut-off unit a: %v %v, want 200 marked stale", resp, err)
	} else {
		resp.Body.Close()
	}
	// Unit a serves on: its players keep playing, its readyz is 200 and
	// says the store is away.
	time.Sleep(5 * time.Second)
	if gap := flvA.maxGap(t0); gap > time.Second {
		t.Errorf("a player on unit a saw a %v gap during the partition", gap)
	}
	resp, err = http.Get(fmt.Sprintf("http://%s:9090/readyz", f.a.host))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "unreachable") {
		t.Errorf("unit a readyz during the partition: %d %s, want 200 with the store unreachable", resp.StatusCode, body)
	}
	stall := hls.longestStill(t0, time.Now()) - before
	t.Logf("FIGURE partition of a from etcd: switch answered by b after %v, applied on b after %v; a's FLV player max gap %v; HLS through the edge stalled %v beyond steady state",
		took.Round(time.Millisecond), applied.Round(time.Millisecond), flvA.maxGap(t0).Round(time.Millisecond), stall.Round(time.Millisecond))
	if stall > 2*time.Second {
		t.Errorf("HLS stalled %v beyond steady state during the partition", stall)
	}

	// Heal: a converges with everything written meanwhile.
	healed := time.Now()
	f.lab.link("a", "eth1", true)
	deadline = time.Now().Add(30 * time.Second)
	for {
		var st struct {
			FeedPolicy string `json:"feed_policy"`
		}
		code1, _ := f.a.api("GET", "/streams/live/"+drillStream, nil, &st)
		code2, _ := f.a.api("GET", "/streams/live/added", nil, nil)
		if code1 == http.StatusOK && st.FeedPolicy == "backup" && code2 == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unit a did not converge within 30 s of the heal (policy %q, added %d)\n%s", st.FeedPolicy, code2, f.a.tail(60))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("FIGURE partition healed: unit a's registry converged %v after", time.Since(healed).Round(time.Millisecond))
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(f.a.logs(), "local override written to the registry") {
		if time.Now().After(deadline) {
			t.Fatalf("unit a's local override was not written to the registry after the heal:\n%s", f.a.tail(60))
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline = time.Now().Add(10 * time.Second)
	for activeFeed(f.a) != "backup" {
		if time.Now().After(deadline) {
			t.Fatalf("unit a does not show backup after the heal (shows %q)", activeFeed(f.a))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDrillDrain(t *testing.T) {
	f := startFleet(t)
	const crowd = 100
	players := startCrowd(t, f.a.flvURL(drillStream), crowd)
	hls := playHLSProgress(t, f.edge+"/live/"+drillStream+"/index.m3u8")
	edgeFLV := playFLV(t, f.edge+"/live/"+drillStream+".flv", false)
	waitNodeState(t, f.b, "a", "serving", 10*time.Second)
	time.Sleep(5 * time.Second)
	before := hls.longestStill(time.Now().Add(-4*time.Second), time.Now())
	n, _ := nodeOf(t, f.b, "a")
	if n.Load.Players < crowd {
		t.Errorf("unit a reports %d players, want at least %d", n.Load.Players, crowd)
	}

	t0 := time.Now()
	var rec nodeRecord
	if code, err := f.b.api("POST", "/nodes/"+n.ID+"/drain", nil, &rec); err != nil || code != http.StatusOK {
		t.Fatalf("drain: %d %v %+v", code, err, rec)
	}
	newcomer := playFLV(t, f.edge+"/live/"+drillStream+".flv", false)
	newcomer.waitFrames(t, 25, 10*time.Second)
	if rec, _ := nodeOf(t, f.b, "b"); rec.Load.Players == 0 {
		t.Errorf("the player that joined during the drain is not on unit b")
	}
	got0, ef := players.bytes.Load(), edgeFLV.frames()
	time.Sleep(3 * time.Second)
	if players.bytes.Load() <= got0 || edgeFLV.frames() <= ef {
		t.Fatal("players on unit a stopped during the drain")
	}
	for i := range players.cancels {
		players.cancels[i]()
		if i%10 == 9 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	edgeFLV.stop()
	lastLeft := time.Now()
	waitNodeState(t, f.b, "a", "drained", 15*time.Second)
	select {
	case <-hls.exited:
		t.Fatalf("the HLS player exited during the drain: %s", hls.stderr.String())
	default:
	}
	stall := hls.longestStill(t0, time.Now()) - before
	t.Logf("FIGURE drain of unit a with %d players: drained %v after the last left (%v after the drain began); HLS through the edge stalled %v beyond steady state",
		crowd+1, time.Since(lastLeft).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), stall.Round(time.Millisecond))
	if stall > 2*time.Second {
		t.Errorf("HLS stalled %v beyond steady state during the drain", stall)
	}
}
