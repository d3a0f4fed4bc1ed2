package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/livefuse/livefuse/cdnmix"
)

// nginxVendor is one nginx cache in front of the origin, acting as a CDN
// vendor, writing its access log in cdnmix.AccessLogFormat.
type nginxVendor struct {
	t         *testing.T
	name, dir string
	port      int
	cmd       *exec.Cmd
	exited    chan struct{}
}

func nginxBin(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	msg := "nginx not installed (apt-get install nginx-light)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startNginx runs vendor name's nginx on port in front of the origin;
// extra goes into its server block, before the catch-all location.
func startNginx(t *testing.T, name string, port, originPort int, extra ...string) *nginxVendor {
	t.Helper()
	n := &nginxVendor{t: t, name: name, dir: t.TempDir(), port: port}
	os.MkdirAll(filepath.Join(n.dir, "tmp"), 0o755)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 512; }
http {
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  log_format cdnmix '%[4]s';
  server {
    listen 127.0.0.1:%[2]d;
    access_log %[1]s/access.log cdnmix;
%[5]s
    location / {
      proxy_pass http://127.0.0.1:%[3]d;
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_read_timeout 30s;
    }
  }
}
`, n.dir, port, originPort, cdnmix.AccessLogFormat, strings.Join(extra, "\n"))
	n.launch(conf, "/")
	return n
}

// launch writes conf into n.dir, starts nginx on it and waits until probe
// (a path) answers on n.port. The process is stopped at cleanup.
func (n *nginxVendor) launch(conf, probe string) {
	t, name, port := n.t, n.name, n.port
	t.Helper()
	path := filepath.Join(n.dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(nginxBin(t), "-p", n.dir, "-c", path, "-e", filepath.Join(n.dir, "error.log"))
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, io.Discard
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func() { n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(n.stop)
	cdnPoll(t, 10*time.Second, "nginx "+name+" listening", func() error {
		select {
		case <-n.exited:
			b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
			t.Fatalf("nginx %s exited: %s", name, b)
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, probe))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

func (n *nginxVendor) stop() {
	if n.cmd == nil {
		return
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	n.cmd = nil
}

// shipLogs tails the vendors' access logs and sends each line to cdn.logs
// until ctx ends; it counts lines per vendor. Lines are keyed by vendor, or
// with spread by vendor and line, so that one vendor's lines spread over
// the partitions (as a fleet's shippers should).
func shipLogs(ctx context.Context, t *testing.T, broker string, vendors []*nginxVendor, sent map[string]int, mu *sync.Mutex, spread bool) {
	w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: "cdn.logs", RequiredAcks: kafka.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond, Balancer: &kafka.Hash{}}
	defer w.Close()
	offsets := make([]int64, len(vendors))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, v := range vendors {
			f, err := os.Open(filepath.Join(v.dir, "access.log"))
			if err != nil {
				continue
			}
			f.Seek(offsets[i], io.SeekStart)
			r := bufio.NewReader(f)
			var msgs []kafka.Message
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					break // a partial line is read again next time
				}
				offsets[i] += int64(len(line))
				l, err := cdnmix.ParseAccessLog(v.name, []byte(line))
				if err != nil {
					t.Errorf("shipper: %s: %v", line, err)
					continue
				}
				b, _ := json.Marshal(l)
				key := []byte(v.name)
				if spread {
					key = fmt.Appendf(nil, "%s|%d", v.name, offsets[i])
				}
				msgs = append(msgs, kafka.Message{Key: key, Value: b})
			}
			f.Close()
			if len(msgs) == 0 {
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := w.WriteMessages(wctx, msgs...); err != nil && ctx.Err() == nil {
				t.Errorf("shipper: %v", err)
			}
			cancel()
			mu.Lock()
			sent[v.name] += len(msgs)
			mu.Unlock()
		}
	}
}

// dispatchOnce asks /dispatch as a client at xff and returns the vendor
// host port of the 302.
func dispatchOnce(t *testing.T, s *server, xff string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/dispatch/live/demo.flv", s.http), nil)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := (&http.Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("dispatch: %d", resp.StatusCode)
	}
	u, _ := url.Parse(resp.Header.Get("Location"))
	return u.Port()
}

// TestCDNNginxVendors: three nginx instances on loopback are the vendors in
// front of the origin; ffmpeg players go through /dispatch; a shipper
// sends the nginx access logs to cdn.logs (Kafka). The bandwidth cdnmix
// measures per vendor follows the dispatch ratios; blacklisting a vendor
// for the players' region moves new dispatches off it at once; stopping
// one nginx and posting stall beacons for it moves traffic away within
// two recompute periods of the beacons reaching the aggregates.
func TestCDNNginxVendors(t *testing.T) {
	parallel(t)
	nginxBin(t)
	geo, err := filepath.Abs("../cdnmix/testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	kb := startKafka(t)
	ports := []int{freePort(t), freePort(t), freePort(t)}
	names := []string{"v1", "v2", "v3"}
	commits := []int{600, 300, 300} // Mbps: ratios 1/2, 1/4, 1/4 while empty
	var vy strings.Builder
	for i, n := range names {
		fmt.Fprintf(&vy, "    - {name: %s, flv_base: \"http://127.0.0.1:%d\", commit_mbps: %d, ceiling_mbps: 100000}\n", n, ports[i], commits[i])
	}
	const recompute = time.Second
	cfg := fmt.Sprintf(`streams:
  - {app: live, name: demo, publish_token: "pubtok"}
bus: {kafka: {brokers: [%q]}}
cdnmix:
  vendors:
%s  geo: {cidr_file: %q}
  trusted_proxies: [127.0.0.1]
  regions: [GD, SH]
  isps: [telecom]
  recompute: %s
  bandwidth_window: 1m
  forecast_ahead: 1s
`, kb.addr, vy.String(), geo, recompute)
	s := startServer(t, cfg)
	push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 15*time.Second)
	vendors := make([]*nginxVendor, len(names))
	byPort := map[string]string{}
	for i, n := range names {
		vendors[i] = startNginx(t, n, ports[i], s.http)
		byPort[fmt.Sprint(ports[i])] = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	shipped := map[string]int{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { shipLogs(ctx, t, kb.addr, vendors, shipped, &mu, false) })

	// 12 players through /dispatch (127.0.0.1: the any-bucket), 6 s each.
	const players = 12
	var pw sync.WaitGroup
	for range players {
		cmd := ffmpegCmd(t, "-t", "6", "-i", fmt.Sprintf("http://127.0.0.1:%d/dispatch/live/demo.flv", s.http), "-c", "copy", "-f", "null", "-")
		pw.Go(func() { cmd.Wait() })
	}
	pw.Wait()
	cdnPoll(t, 20*time.Second, "every player's log line shipped", func() error {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range shipped {
			n += c
		}
		if n < players {
			return fmt.Errorf("shipped %v", shipped)
		}
		return nil
	})
	want := map[string]float64{"v1": 0.5, "v2": 0.25, "v3": 0.25}
	var got map[string]float64
	cdnPoll(t, 20*time.Second, "measured bandwidth follows the ratios", func() error {
		var p cdnPlan
		if err := s.apiOK("GET", "/cdn/plan", nil, &p); err != nil {
			return err
		}
		got = map[string]float64{}
		total := 0.0
		for _, pool := range p.Pools {
			got[pool.Vendor] += pool.Mbps
			total += pool.Mbps
		}
		if total == 0 {
			return fmt.Errorf("no bandwidth yet: %+v", p.Pools)
		}
		for v, w := range want {
			if math.Abs(got[v]/total-w) > 0.1 {
				return fmt.Errorf("%s: %.1f of %.1f Mbps (%.2f), ratio %.2f", v, got[v], total, got[v]/total, w)
			}
		}
		return nil
	})
	t.Logf("measured Mbps per vendor after %d players: %v (log lines %v)", players, got, shipped)

	// Blacklist v1 for GD: GD dispatches leave it at once, SH keeps it.
	const gd, sh = "198.51.100.7", "203.0.113.9"
	if code, err := s.api("POST", "/cdn/blacklist", map[string]string{"vendor": "v1", "region": "GD", "ttl": "10m"}, nil); err != nil || code != 201 {
		t.Fatalf("blacklist: %d %v", code, err)
	}
	shSeen := map[string]int{}
	for range 20 {
		if v := byPort[dispatchOnce(t, s, gd)]; v == "v1" {
			t.Fatal("GD dispatched to blacklisted v1")
		}
		shSeen[byPort[dispatchOnce(t, s, sh)]]++
	}
	if shSeen["v1"] == 0 {
		t.Fatalf("SH lost v1: %v", shSeen)
	}
	if code, err := s.api("DELETE", "/cdn/blacklist?vendor=v1&region=GD", nil, nil); err != nil || code != 204 {
		t.Fatalf("unblacklist: %d %v", code, err)
	}

	// v2 dies in GD: its nginx stops and its GD players report stalls.
	vendors[1].stop()
	postQoS(t, s, gd, stallBeacons("gd-v2", "v2", 30, 4000))
	postQoS(t, s, gd, stallBeacons("gd-v3", "v3", 30, 0))
	posted := time.Now()
	cdnPoll(t, 20*time.Second, "stall beacons in the aggregates", func() error {
		var q cdnQuality
		if err := s.apiOK("GET", "/cdn/quality?vendor=v2&region=GD&isp=telecom", nil, &q); err != nil {
			return err
		}
		if q.Now.Users != 30 || q.Now.StallRate != 1 {
			return fmt.Errorf("%+v", q.Now)
		}
		return nil
	})
	aggregated := time.Now()
	var moved time.Time
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		clean := true
		for range 10 {
			if byPort[dispatchOnce(t, s, gd)] == "v2" {
				clean = false
				break
			}
		}
		if clean {
			moved = time.Now()
			break
		}
	}
	if moved.IsZero() {
		t.Fatal("GD still dispatched to v2 20 s after its stall beacons")
	}
	t.Logf("GD moved off v2 %v after the beacons were posted, %v after they were in the aggregates (recompute %v)",
		moved.Sub(posted).Round(10*time.Millisecond), moved.Sub(aggregated).Round(10*time.Millisecond), recompute)
	if d := moved.Sub(aggregated); d > 2*recompute+time.Second/2 {
		t.Errorf("moved %v after the aggregates had the stalls: more than two recompute periods", d)
	}
	for range 20 {
		if v := byPort[dispatchOnce(t, s, sh)]; v == "" {
			t.Fatal("SH dispatch to an unknown port")
		}
	}
}
