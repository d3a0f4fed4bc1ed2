package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// kfakeBin builds bus/internal/kfakebroker once per run.
var kfakeBin = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(env.dir, "kfakebroker")
	out, err := exec.Command("go", "build", "-o", bin, "../bus/internal/kfakebroker").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build kfakebroker: %w: %s", err, out)
	}
	return bin, nil
})

// kafkaBroker is a one-broker Kafka-protocol cluster in its own process,
// restartable on the same port and data.
type kafkaBroker struct {
	t          *testing.T
	port       int
	dir, addr  string
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	exited     chan struct{}
	stderr     bytes.Buffer
	stderrLock sync.Mutex
}

func startKafka(t *testing.T) *kafkaBroker {
	t.Helper()
	k := &kafkaBroker{t: t, port: freePort(t), dir: t.TempDir()}
	k.start()
	t.Cleanup(k.stop)
	return k
}

func (k *kafkaBroker) start() {
	t := k.t
	t.Helper()
	bin, err := kfakeBin()
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(bin, "-port", fmt.Sprint(k.port), "-data", k.dir)
		cmd.Stderr = &lockedWriter{mu: &k.stderrLock, w: &k.stderr}
		stdin, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			if sc.Scan() {
				line <- sc.Text()
			}
			close(line)
			io.Copy(io.Discard, out)
		}()
		go func() { cmd.Wait(); close(exited) }()
		select {
		case l := <-line:
			if addr, ok := strings.CutPrefix(l, "ready "); ok {
				k.cmd, k.stdin, k.exited, k.addr = cmd, stdin, exited, addr
				return
			}
		case <-time.After(15 * time.Second):
		}
		cmd.Process.Kill()
		<-exited
		if attempt >= 20 { // the port may linger for a moment after a stop
			k.stderrLock.Lock()
			defer k.stderrLock.Unlock()
			t.Fatalf("kafka broker did not start: %s", k.stderr.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (k *kafkaBroker) stop() {
	if k.cmd == nil {
		return
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		k.cmd.Process.Kill()
		<-k.exited
	}
	k.stdin.Close()
	k.cmd = nil
}

// cdnPoll calls cond every 100 ms until it is true or within passes.
func cdnPoll(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, within, err)
}

func cdnVendorsYAML(geo string, extra string) string {
	return fmt.Sprintf(`streams:
  - {app: live, name: demo, publish_token: "pubtok"}
cdnmix:
  vendors:
    - {name: a, flv_base: "http://cdn-a.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
    - {name: b, flv_base: "http://cdn-b.example.com", signing: hmac_sha256, key: bkey, commit_mbps: 1000, ceiling_mbps: 4000}
  geo: {cidr_file: %q}
  trusted_proxies: [127.0.0.1]
  regions: [GD, SH]
  isps: [telecom]
  recompute: 500ms
  min_change: -1
%s`, geo, extra)
}

// postQoS posts beacons to /qos as a client at xff (the harness connects
// from 127.0.0.1, a trusted proxy). Each beacon's "session" stands for one
// player: it gets the qos_token of its vendor from a dispatch answer for
// that client, as a player would, and carries it instead.
func postQoS(t *testing.T, s *server, xff string, beacons []map[string]any) {
	t.Helper()
	tokens := map[string]string{}
	for _, b := range beacons {
		sess, vendor := b["session"].(string), b["vendor"].(string)
		if tokens[sess] == "" {
			tokens[sess] = qosToken(t, s, xff, vendor)
		}
		b["token"] = tokens[sess]
		delete(b, "session")
	}
	b, _ := json.Marshal(beacons)
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/qos", s.http), bytes.NewReader(b))
	req.Header.Set("X-Forwarded-For", xff)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /qos: %d", resp.StatusCode)
	}
}

// qosToken asks /dispatch (JSON) as a client at xff and returns the
// qos_token of vendor's candidate.
func qosToken(t *testing.T, s *server, xff, vendor string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/dispatch/live/demo.flv?format=json", s.http), nil)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Candidates []struct {
			Vendor   string `json:"vendor"`
			QoSToken string `json:"qos_token"`
		} `json:"candidates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != 200 {
		t.Fatalf("dispatch json: %d %v", resp.StatusCode, err)
	}
	for _, c := range ans.Candidates {
		if c.Vendor == vendor && c.QoSToken != "" {
			return c.QoSToken
		}
	}
	t.Fatalf("no qos_token for vendor %s in %+v", vendor, ans.Candidates)
	return ""
}

type cdnQuality struct {
	Now struct {
		Mbps      float64 `json:"mbps"`
		Users     int     `json:"users"`
		StallRate float64 `json:"stall_rate"`
	} `json:"now"`
}

type cdnPlan struct {
	Pools []struct {
		Vendor string  `json:"vendor"`
		Mbps   float64 `json:"mbps"`
	} `json:"pools"`
	Buckets []struct {
		Region, ISP string
		Candidates  []struct {
			Vendor string  `json:"vendor"`
			Ratio  float64 `json:"ratio"`
		} `json:"candidates"`
	} `json:"buckets"`
}

func (p cdnPlan) ratio(region, isp, vendor string) float64 {
	for _, b := range p.Buckets {
		if b.Region == region && b.ISP == isp {
			for _, c := range b.Candidates {
				if c.Vendor == vendor {
					return c.Ratio
				}
			}
		}
	}
	return -1
}

func stallBeacons(prefix, vendor string, n int, emptyMs int) []map[string]any {
	var out []map[string]any
	for i := range n {
		s := fmt.Sprintf("%s-%d", prefix, i)
		out = append(out,
			map[string]any{"session": s, "stream": "live/demo", "vendor": vendor, "event": "start"},
			map[string]any{"session": s, "vendor": vendor, "event": "first_frame", "first_frame_ms": 400},
			map[string]any{"session": s, "vendor": vendor, "event": "stall", "buffer_empty_ms": emptyMs})
	}
	return out
}

// TestCDNKafkaFeedback runs livefuse with bus.kafka on a real Kafka-protocol
// broker (kfake, its own process): beacons posted to /qos and log lines
// shipped to cdn.logs flow through Kafka into cdnmix's aggregates; stall
// beacons for vendor a in GD move GD's dispatch ratio off a and leave SH
// alone; beacons posted while the broker is down arrive after it returns.
func TestCDNKafkaFeedback(t *testing.T) {
	parallel(t)
	geo, err := filepath.Abs("../cdnmix/testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	kb := startKafka(t)
	s := startServer(t, cdnVendorsYAML(geo, "")+fmt.Sprintf("bus: {kafka: {brokers: [%q], retry_max: 1s}}\n", kb.addr))

	// Dispatch works from the first plan: GD client through the trusted proxy.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/dispatch/live/demo.flv", s.http), nil)
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	resp, err := (&http.Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/live/demo.flv") {
		t.Fatalf("dispatch: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The shipper: CDN log lines for a in GD/telecom, 12.5 MB over 10 s
	// each second (10 Mbps), straight to cdn.logs with kafka-go.
	w := &kafka.Writer{Addr: kafka.TCP(kb.addr), Topic: "cdn.logs", RequiredAcks: kafka.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	ship := func() {
		line, _ := json.Marshal(map[string]any{"vendor": "a", "time": time.Now().UTC(), "bytes": 12_500_000,
			"duration_ms": 10_000, "status": 200, "client_ip": "198.51.100.7", "stream": "live/demo"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("a"), Value: line}); err != nil {
			t.Errorf("ship log line: %v", err)
		}
	}
	ship()
	// 30 GD users of a stall (3 s empty buffer); b's and SH's do not.
	postQoS(t, s, "198.51.100.7", stallBeacons("gd-a", "a", 30, 3000))
	postQoS(t, s, "198.51.100.7", stallBeacons("gd-b", "b", 30, 500))
	postQoS(t, s, "203.0.113.9", stallBeacons("sh-a", "a", 30, 0))

	var q cdnQuality
	cdnPoll(t, 30*time.Second, "beacons and log lines in the aggregates", func() error {
		q = cdnQuality{}
		if err := s.apiOK("GET", "/cdn/quality?vendor=a&region=GD&isp=telecom", nil, &q); err != nil {
			return err
		}
		if q.Now.Users != 30 || q.Now.StallRate != 1 || q.Now.Mbps < 1 {
			return fmt.Errorf("a in GD: %+v", q.Now)
		}
		return nil
	})
	cdnPoll(t, 10*time.Second, "GD moves off a, SH keeps it", func() error {
		var p cdnPlan
		if err := s.apiOK("GET", "/cdn/plan", nil, &p); err != nil {
			return err
		}
		gd, sh := p.ratio("GD", "telecom", "a"), p.ratio("SH", "telecom", "a")
		if !(gd >= 0 && gd < 0.05 && sh > 0.4) {
			return fmt.Errorf("a's ratio: GD %.3f, SH %.3f", gd, sh)
		}
		return nil
	})

	// Broker away: POST /qos still answers at once; the node spills, and
	// after the restart the beacons arrive.
	kb.stop()
	postQoS(t, s, "203.0.113.9", stallBeacons("sh-b-outage", "b", 20, 0))
	time.Sleep(3 * time.Second)
	kb.start()
	cdnPoll(t, 45*time.Second, "beacons posted during the outage", func() error {
		var q cdnQuality
		if err := s.apiOK("GET", "/cdn/quality?vendor=b&region=SH&isp=telecom", nil, &q); err != nil {
			return err
		}
		if q.Now.Users != 20 {
			return fmt.Errorf("b in SH: %+v", q.Now)
		}
		return nil
	})
	if !strings.Contains(s.logs(), "broker answers again") {
		t.Errorf("no sign of the outage in the node's log")
	}
}
