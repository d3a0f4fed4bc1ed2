package cdnmix

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/livefuse/livefuse/bus"
)

const mixerYAML = `
vendors:
  - name: a
    flv_base: http://a.example.com
    signing: hmac_sha256
    key: secret-a
    commit_mbps: 1000
    ceiling_mbps: 2000
  - name: b
    flv_base: http://b.example.com
    commit_mbps: 1000
    ceiling_mbps: 2000
geo:
  cidr_file: testdata/geo.csv
trusted_proxies: [127.0.0.1, 10.0.0.0/8]
regions: [GD, SH]
isps: [telecom, unicom]
recompute: 100ms
min_change: -1
admission: true
viewer_mbps: 2
fleet_size: 1
stall_rule: {threshold: 0.2, minutes: 2, min_users: 5, blacklist: false}
dispatch_ttl: 10s
sign_ttl: 30m
bandwidth_window: 5s
quality_window: 30s
forecast_ahead: 5s
group: node-1
`

func decodeConfig(t *testing.T, s string) (Config, error) {
	t.Helper()
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(s))
	dec.KnownFields(true)
	err := dec.Decode(&cfg)
	return cfg, err
}

func TestConfigYAML(t *testing.T) {
	cfg, err := decodeConfig(t, mixerYAML)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Vendors) != 2 || !cfg.Vendors[1].Enabled || cfg.Recompute != 100*time.Millisecond ||
		cfg.StallRule.Minutes != 2 || cfg.Group != "node-1" || cfg.SignTTL != 30*time.Minute {
		t.Fatalf("%+v", cfg)
	}
	if _, err := decodeConfig(t, "vendorz: []\n"); err == nil {
		t.Fatal("unknown key accepted")
	}
	// Defaults round-trip through YAML.
	b, err := yaml.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeConfig(t, string(b)); err != nil || got.Recompute != 2*time.Second || !got.Admission {
		t.Fatalf("defaults: %+v %v\n%s", got, err, b)
	}
}

type mixerEnv struct {
	m    *Mixer
	bus  *bus.Memory
	h    http.Handler
	api  http.Handler
	reg  *prometheus.Registry
	stop func()
}

func newMixerEnv(t *testing.T) *mixerEnv {
	t.Helper()
	cfg, err := decodeConfig(t, mixerYAML)
	if err != nil {
		t.Fatal(err)
	}
	b := bus.NewMemory(bus.MemoryConfig{Logger: quietLog})
	reg := prometheus.NewRegistry()
	m, err := New(cfg, b, quietLog, reg, WithStreamExists(func(app, name string) bool { return name == "demo" }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	media := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "media") })
	e := &mixerEnv{m: m, bus: b, h: m.Wrap(media), api: m.APIHandler(), reg: reg}
	e.stop = func() { cancel(); wg.Wait(); m.Close() }
	t.Cleanup(e.stop)
	return e
}

func (e *mixerEnv) do(h http.Handler, method, target, body, remote string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if remote != "" {
		r.RemoteAddr = remote
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

const gdClient, shClient = "198.51.100.7:5000", "203.0.113.9:5000"

func (e *mixerEnv) dispatchHost(t *testing.T, remote string) string {
	t.Helper()
	w := e.do(e.h, "GET", "/dispatch/live/demo.flv", "", remote)
	if w.Code != http.StatusFound {
		t.Fatalf("dispatch: %d %s", w.Code, w.Body)
	}
	u, _ := url.Parse(w.Header().Get("Location"))
	return u.Host
}

// qosToken dispatches as remote and returns the qos_token of vendor's
// candidate.
func (e *mixerEnv) qosToken(t *testing.T, remote, vendor string) string {
	t.Helper()
	w := e.do(e.h, "GET", "/dispatch/live/demo.flv?format=json", "", remote)
	var ans struct {
		QoSToken   string `json:"qos_token"`
		Candidates []struct {
			Vendor   string `json:"vendor"`
			QoSToken string `json:"qos_token"`
		} `json:"candidates"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || w.Code != 200 {
		t.Fatalf("dispatch: %d %s", w.Code, w.Body)
	}
	if ans.QoSToken == "" || ans.QoSToken != ans.Candidates[0].QoSToken {
		t.Fatalf("top-level qos_token is not the chosen candidate's: %s", w.Body)
	}
	for _, c := range ans.Candidates {
		if c.Vendor == vendor && c.QoSToken != "" {
			return c.QoSToken
		}
	}
	t.Fatalf("no token for %s: %s", vendor, w.Body)
	return ""
}

func TestMixerPublicPaths(t *testing.T) {
	e := newMixerEnv(t)
	if w := e.do(e.h, "GET", "/live/demo.flv", "", gdClient); w.Body.String() != "media" {
		t.Fatalf("media path not passed on: %d %q", w.Code, w.Body)
	}
	if w := e.do(e.h, "GET", "/dispatch/live/nope.flv", "", gdClient); w.Code != http.StatusNotFound {
		t.Fatalf("unknown stream: %d", w.Code)
	}
	hosts := map[string]int{}
	for range 100 {
		hosts[e.dispatchHost(t, gdClient)]++
	}
	if hosts["a.example.com"] != 50 || hosts["b.example.com"] != 50 {
		t.Fatalf("hosts %v", hosts)
	}
	// Beacons through /qos and the bus reach the aggregator, in GD/telecom
	// by the client address.
	tok := e.qosToken(t, gdClient, "a")
	body := `[{"token":"` + tok + `","event":"start"},{"token":"` + tok + `","event":"first_frame","first_frame_ms":420}]`
	if w := e.do(e.h, "POST", "/qos", body, gdClient); w.Code != http.StatusNoContent {
		t.Fatalf("qos: %d %s", w.Code, w.Body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ob := e.m.Aggregator().Snapshot()[gdKey]
		if ob.Users == 1 && ob.FirstFrameP50 == 420*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("beacon not aggregated: %+v", e.m.Aggregator().Snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Metrics.
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"cdnmix_dispatches_total", "cdnmix_pool_ceiling_mbps", "cdnmix_qos_requests_total", "cdnmix_aggregator_input_total"} {
		if !names[n] {
			t.Errorf("metric %s missing (have %v)", n, names)
		}
	}
}

func TestMixerAPI(t *testing.T) {
	e := newMixerEnv(t)
	tests := []struct {
		name, method, target, body string
		want                       int
		check                      func(t *testing.T, body []byte)
	}{
		{"list redacts keys", "GET", "/api/v1/cdn/vendors", "", 200, func(t *testing.T, b []byte) {
			if bytes.Contains(b, []byte("secret-a")) || !bytes.Contains(b, []byte(`"key_set": true`)) {
				t.Fatalf("%s", b)
			}
		}},
		{"one vendor", "GET", "/api/v1/cdn/vendors/a", "", 200, nil},
		{"unknown vendor", "GET", "/api/v1/cdn/vendors/zz", "", 404, nil},
		{"edit without the key keeps it", "PUT", "/api/v1/cdn/vendors/a",
			`{"flv_base":"http://a2.example.com","signing":"hmac_sha256","commit_mbps":1000,"ceiling_mbps":2000}`, 200, nil},
		{"add a vendor", "PUT", "/api/v1/cdn/vendors/c", `{"flv_base":"http://c.example.com","commit_mbps":1,"ceiling_mbps":2,"enabled":false}`, 201, nil},
		{"invalid vendor", "PUT", "/api/v1/cdn/vendors/d", `{"commit_mbps":1}`, 400, nil},
		{"name mismatch", "PUT", "/api/v1/cdn/vendors/d", `{"name":"e","flv_base":"http://e"}`, 400, nil},
		{"not json", "PUT", "/api/v1/cdn/vendors/d", `{`, 400, nil},
		{"delete", "DELETE", "/api/v1/cdn/vendors/c", "", 200, nil},
		{"delete unknown", "DELETE", "/api/v1/cdn/vendors/c", "", 404, nil},
		{"blacklist a in GD", "POST", "/api/v1/cdn/blacklist", `{"vendor":"a","region":"GD","ttl":"10m"}`, 201, nil},
		{"blacklist unknown vendor", "POST", "/api/v1/cdn/blacklist", `{"vendor":"zz"}`, 400, nil},
		{"blacklist bad ttl", "POST", "/api/v1/cdn/blacklist", `{"vendor":"a","ttl":"soon"}`, 400, nil},
		{"blacklist list", "GET", "/api/v1/cdn/blacklist", "", 200, func(t *testing.T, b []byte) {
			if !bytes.Contains(b, []byte(`"region": "GD"`)) {
				t.Fatalf("%s", b)
			}
		}},
		{"plan", "GET", "/api/v1/cdn/plan", "", 200, func(t *testing.T, b []byte) {
			var pv PlanView
			if err := json.Unmarshal(b, &pv); err != nil || len(pv.Pools) != 2 || len(pv.Buckets) < 9 {
				t.Fatalf("%v %s", err, b)
			}
		}},
		{"quality", "GET", "/api/v1/cdn/quality?vendor=a&region=GD&isp=telecom", "", 200, nil},
		{"quality needs a vendor", "GET", "/api/v1/cdn/quality", "", 400, nil},
	}
	for _, tc := range tests {
		w := e.do(e.api, tc.method, tc.target, tc.body, "")
		if w.Code != tc.want {
			t.Fatalf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
		if tc.check != nil {
			tc.check(t, w.Body.Bytes())
		}
	}
	// The edited vendor still signs with its key.
	loc := e.do(e.h, "GET", "/dispatch/live/demo.flv", "", shClient)
	for range 3 {
		if strings.Contains(loc.Header().Get("Location"), "a2.example.com") {
			break
		}
		loc = e.do(e.h, "GET", "/dispatch/live/demo.flv", "", shClient)
	}
	u, _ := url.Parse(loc.Header().Get("Location"))
	if u.Host != "a2.example.com" || VerifyHMAC(u.Path, u.Query().Get("expires"), u.Query().Get("signature"), "secret-a", time.Now()) != nil {
		t.Fatalf("edited vendor URL %s", u)
	}
	// Blacklisted in GD: every GD dispatch goes to b at once; SH still mixes.
	for range 20 {
		if h := e.dispatchHost(t, gdClient); h != "b.example.com" {
			t.Fatalf("GD dispatched to %s while a is blacklisted there", h)
		}
	}
	sh := map[string]int{}
	for range 20 {
		sh[e.dispatchHost(t, shClient)]++
	}
	if sh["a2.example.com"] == 0 {
		t.Fatalf("SH lost a: %v", sh)
	}
	if w := e.do(e.api, "DELETE", "/api/v1/cdn/blacklist?vendor=a&region=GD", "", ""); w.Code != http.StatusNoContent {
		t.Fatalf("unblacklist: %d", w.Code)
	}
	if w := e.do(e.api, "DELETE", "/api/v1/cdn/blacklist", `{"vendor":"a","region":"GD"}`, ""); w.Code != http.StatusNotFound {
		t.Fatalf("second unblacklist: %d", w.Code)
	}
	gd := map[string]int{}
	for range 20 {
		gd[e.dispatchHost(t, gdClient)]++
	}
	if gd["a2.example.com"] == 0 {
		t.Fatalf("GD did not get a back: %v", gd)
	}
}

// The stall rule through the Mixer: after `minutes` bad minutes an audit
// event cdn.stall_alert is published, and with blacklist set the vendor
// leaves that bucket only.
func TestMixerStallRule(t *testing.T) {
	now := time.Unix(1_700_000_000/60*60, 0)
	clock := func() time.Time { return now }
	cfg, err := decodeConfig(t, mixerYAML)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StallRule = StallRuleConfig{Threshold: 0.2, Minutes: 2, MinUsers: 5, Blacklist: true, TTL: time.Hour}
	b := bus.NewMemory(bus.MemoryConfig{Logger: quietLog})
	m, err := New(cfg, b, quietLog, nil, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	alerts := make(chan bus.AuditEvent, 10)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		b.Subscribe(ctx, bus.TopicAudit, "t", func(_ context.Context, msg bus.Message) error {
			var e bus.AuditEvent
			if err := bus.Decode(msg, &e); err != nil {
				return err
			}
			alerts <- e
			return nil
		})
	})
	for i := range 100 { // wait for the subscription: a probe comes through
		bus.Emit(b, bus.AuditEvent{Actor: "probe"})
		if len(alerts) > 0 {
			break
		}
		if i == 99 {
			t.Fatal("audit subscription not up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for len(alerts) > 0 {
		<-alerts
	}
	a := m.Aggregator()
	for minute := range 3 {
		now = now.Add(time.Minute)
		for i := range 10 {
			ms := int64(0)
			if i < 4 {
				ms = 2500 // 40% of a's GD users stall
			}
			a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: "a", Region: "GD", ISP: "telecom", Event: bus.BeaconHeartbeat, BufferEmptyMs: ms})
			a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: "b", Region: "GD", ISP: "telecom", Event: bus.BeaconHeartbeat})
		}
		a.Tick()
		m.Allocator().Recompute(now)
		if minute == 0 && len(m.Allocator().Blacklist()) > 0 {
			t.Fatal("blacklisted after one bad minute")
		}
	}
	var got bus.AuditEvent
	for got.Actor != "cdnmix" { // skip late probes
		select {
		case got = <-alerts:
		case <-time.After(5 * time.Second):
			t.Fatal("no stall alert")
		}
	}
	if got.Action != "cdn.stall_alert" || got.Target != "a" || !strings.Contains(string(got.Detail), `"Region":"GD"`) {
		t.Fatalf("alert %+v %s", got, got.Detail)
	}
	bl := m.Allocator().Blacklist()
	if len(bl) != 1 || bl[0].Vendor != "a" || bl[0].Region != "GD" || bl[0].ISP != "telecom" {
		t.Fatalf("blacklist %+v", bl)
	}
	if c := candidate(t, m.Allocator().Plan(), Bucket{"SH", "telecom"}, "a"); c.Ratio == 0 {
		t.Fatalf("a lost SH too: %+v", c)
	}
}
