package lms

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/lms/api"
)

// fakeSources is every alert source in one, changed by the test between
// evaluations.
type fakeSources struct {
	mu       sync.Mutex
	streams  []StreamHealth
	quality  []QualityStat
	vendors  []VendorLoad
	spool    [2]int64
	restarts map[string]int64
	expected []string
	alive    []string
	etcdErr  error
}

func (f *fakeSources) StreamHealth() []StreamHealth {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams
}
func (f *fakeSources) Quality() []QualityStat   { return f.quality }
func (f *fakeSources) VendorLoad() []VendorLoad { return f.vendors }
func (f *fakeSources) Spool() (int64, int64)    { return f.spool[0], f.spool[1] }
func (f *fakeSources) TranscodeRestarts() map[string]int64 {
	return f.restarts
}
func (f *fakeSources) Units(context.Context) ([]string, []string, error) {
	return f.expected, f.alive, nil
}

func (f *fakeSources) sources() AlertSources {
	return AlertSources{Unit: "a", Streams: f, Quality: f, Vendors: f, Spool: f, Restarts: f, Units: f,
		Probes: []AlertProbe{{Kind: api.AlertEtcd, Check: func(context.Context) error { return f.etcdErr }}}}
}

func liveFeed(name string, fps, kbps, keyMS float64) api.FeedStatus {
	return api.FeedStatus{Feed: name, State: "live", FPS: fps, BitrateKbps: kbps, KeyframeIntervalMillis: keyMS, Audio: true}
}

func cam(feeds ...api.FeedStatus) []StreamHealth {
	return []StreamHealth{{Stream: "live/cam", Unit: "a", Feeds: feeds}}
}

// step is one evaluation: the sources' state, the time since the last
// step, and whether the rule's alert fires after it.
type step struct {
	dt     time.Duration
	set    func(*fakeSources)
	firing int // alerts of the rule firing after the step
}

func TestAlertRules(t *testing.T) {
	sec := time.Second
	cases := []struct {
		name  string
		rule  api.AlertRule
		steps []step
	}{
		{"fps under 10 for 2s fires after 2s and resolves", api.AlertRule{Name: "fps", Kind: api.AlertIngestFPS, Threshold: 10, ForSeconds: 2},
			[]step{
				{0, func(f *fakeSources) { f.streams = cam(liveFeed("main", 25, 2000, 2000)) }, 0},
				{sec, func(f *fakeSources) { f.streams = cam(liveFeed("main", 5, 500, 2000)) }, 0},
				{sec, nil, 0},
				{sec, nil, 1},
				{sec, func(f *fakeSources) {
					f.streams = cam(api.FeedStatus{Feed: "main", State: "offline", LastPacketAgeMillis: 900})
				}, 1},
				{sec, func(f *fakeSources) { f.streams = cam(liveFeed("main", 25, 2000, 2000)) }, 0},
			}},
		{"a dip shorter than for_s does not fire", api.AlertRule{Name: "fps", Kind: api.AlertIngestFPS, Threshold: 10, ForSeconds: 2},
			[]step{
				{0, func(f *fakeSources) { f.streams = cam(liveFeed("main", 5, 500, 2000)) }, 0},
				{sec, func(f *fakeSources) { f.streams = cam(liveFeed("main", 25, 500, 2000)) }, 0},
				{sec, func(f *fakeSources) { f.streams = cam(liveFeed("main", 5, 500, 2000)) }, 0},
				{sec, nil, 0},
			}},
		{"bitrate under", api.AlertRule{Name: "br", Kind: api.AlertIngestBitrate, Threshold: 300, ForSeconds: 0},
			[]step{{0, func(f *fakeSources) {
				f.streams = cam(liveFeed("main", 25, 100, 2000), liveFeed("backup", 25, 100, 2000))
			}, 2}}},
		{"keyframe interval over", api.AlertRule{Name: "gop", Kind: api.AlertKeyframeInterval, Threshold: 4000, ForSeconds: 1},
			[]step{
				{0, func(f *fakeSources) { f.streams = cam(liveFeed("main", 25, 100, 10000)) }, 0},
				{sec, nil, 1},
				{0, func(f *fakeSources) { f.streams = cam(liveFeed("main", 25, 100, 2000)) }, 0},
			}},
		{"feed lost only after it was live; resolves when the stream ends", api.AlertRule{Name: "lost", Kind: api.AlertFeedLost, ForSeconds: 1},
			[]step{
				{0, func(f *fakeSources) {
					f.streams = cam(liveFeed("main", 25, 100, 2000), api.FeedStatus{Feed: "backup", State: "offline"})
				}, 0},
				{sec, func(f *fakeSources) {
					f.streams = cam(api.FeedStatus{Feed: "main", State: "stalled", LastPacketAgeMillis: 800}, api.FeedStatus{Feed: "backup", State: "offline"})
				}, 0},
				{sec, nil, 1},
				{sec, func(f *fakeSources) { f.streams = nil }, 0},
			}},
		{"single feed", api.AlertRule{Name: "one", Kind: api.AlertSingleFeed, ForSeconds: 5},
			[]step{
				{0, func(f *fakeSources) {
					f.streams = cam(liveFeed("main", 25, 100, 2000), liveFeed("backup", 25, 100, 2000))
				}, 0},
				{sec, func(f *fakeSources) {
					f.streams = cam(liveFeed("main", 25, 100, 2000), api.FeedStatus{Feed: "backup", State: "offline"})
				}, 0},
				{5 * sec, nil, 1},
			}},
		{"switch fires at once and resolves for_s after", api.AlertRule{Name: "sw", Kind: api.AlertSwitch, ForSeconds: 10},
			[]step{
				{0, func(f *fakeSources) { f.streams = []StreamHealth{{Stream: "live/cam", Unit: "a", Switches: 0}} }, 0},
				{0, func(f *fakeSources) { f.streams = []StreamHealth{{Stream: "live/cam", Unit: "a", Switches: 1}} }, 0},
				{sec, func(f *fakeSources) {
					f.streams = []StreamHealth{{Stream: "live/cam", Unit: "a", Switches: 2, LastReason: "feed main stalled"}}
				}, 1},
				{9 * sec, nil, 1},
				{2 * sec, nil, 0},
			}},
		{"stall rate per vendor region isp, min users", api.AlertRule{Name: "stall", Kind: api.AlertStallRate, Threshold: 5, ForSeconds: 60, MinUsers: 10},
			[]step{
				{0, func(f *fakeSources) {
					f.quality = []QualityStat{{Vendor: "x", Region: "gd", ISP: "ct", Users: 100, StallRate: 0.2},
						{Vendor: "x", Region: "bj", ISP: "cu", Users: 5, StallRate: 1}, {Vendor: "y", Region: "gd", ISP: "ct", Users: 100, StallRate: 0.01}}
				}, 0},
				{60 * sec, nil, 1},
			}},
		{"vendor over ceiling", api.AlertRule{Name: "ceil", Kind: api.AlertVendorCeiling, Threshold: 90},
			[]step{{0, func(f *fakeSources) {
				f.vendors = []VendorLoad{{Vendor: "x", Mbps: 950, CeilingMbps: 1000}, {Vendor: "y", Mbps: 10, CeilingMbps: 1000}, {Vendor: "z", Mbps: 10}}
			}, 1}}},
		{"spool", api.AlertRule{Name: "spool", Kind: api.AlertSpool, Threshold: 80},
			[]step{
				{0, func(f *fakeSources) { f.spool = [2]int64{10, 100} }, 0},
				{sec, func(f *fakeSources) { f.spool = [2]int64{90, 100} }, 1},
			}},
		{"transcode restarts within the window", api.AlertRule{Name: "tr", Kind: api.AlertTranscodeRestarts, Threshold: 1, ForSeconds: 60},
			[]step{
				{0, func(f *fakeSources) { f.restarts = map[string]int64{"live/cam": 4} }, 0},
				{sec, func(f *fakeSources) { f.restarts = map[string]int64{"live/cam": 5} }, 0},
				{sec, func(f *fakeSources) { f.restarts = map[string]int64{"live/cam": 6} }, 1},
				{60 * sec, nil, 0},
			}},
		{"unit lost", api.AlertRule{Name: "unit", Kind: api.AlertUnitLost, ForSeconds: 1},
			[]step{
				{0, func(f *fakeSources) { f.expected, f.alive = []string{"a", "b"}, []string{"a", "b"} }, 0},
				{sec, func(f *fakeSources) { f.alive = []string{"a"} }, 0},
				{sec, nil, 1},
			}},
		{"etcd unreachable", api.AlertRule{Name: "etcd", Kind: api.AlertEtcd, ForSeconds: 1},
			[]step{
				{0, func(f *fakeSources) { f.etcdErr = errors.New("context deadline exceeded") }, 0},
				{sec, nil, 1},
				{sec, func(f *fakeSources) { f.etcdErr = nil }, 0},
			}},
		{"stream filter", api.AlertRule{Name: "fps", Kind: api.AlertIngestFPS, Threshold: 10, Stream: "live/other"},
			[]step{{0, func(f *fakeSources) { f.streams = cam(liveFeed("main", 1, 500, 2000)) }, 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSources{}
			cfg := DefaultAlertsConfig()
			cfg.Rules = []api.AlertRule{tc.rule}
			a, err := NewAlerts(cfg, f.sources(), nil)
			if err != nil {
				t.Fatal(err)
			}
			clock := time.Unix(1_000_000, 0)
			a.now = func() time.Time { return clock }
			for i, s := range tc.steps {
				clock = clock.Add(s.dt)
				if s.set != nil {
					s.set(f)
				}
				a.Probe(t.Context())
				a.Evaluate()
				firing := 0
				for _, al := range a.List() {
					if al.State == api.AlertFiring {
						firing++
						if al.Rule != tc.rule.Name || al.Threshold != tc.rule.Threshold || al.Summary == "" || al.ID == "" {
							t.Errorf("step %d: alert %+v", i, al)
						}
					}
				}
				if firing != s.firing {
					t.Fatalf("step %d: %d firing, want %d: %+v", i, firing, s.firing, a.List())
				}
			}
		})
	}
}

// recordingPublisher keeps what the engine publishes on the bus.
type recordingPublisher struct {
	mu  sync.Mutex
	got []api.Alert
}

func (p *recordingPublisher) Publish(topic string, _, value []byte) error {
	if topic != AlertsTopic {
		return fmt.Errorf("topic %q", topic)
	}
	var al api.Alert
	if err := json.Unmarshal(value, &al); err != nil {
		return err
	}
	p.mu.Lock()
	p.got = append(p.got, al)
	p.mu.Unlock()
	return nil
}

// TestAlertWebhook checks the transitions reach the bus and a webhook
// (signed, retried after a 503), and that a silence keeps them from the
// webhook but not from the bus.
func TestAlertWebhook(t *testing.T) {
	const secret = "0123456789abcdef-secret"
	var mu sync.Mutex
	var bodies []api.Alert
	calls := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if got, want := r.Header.Get(SignatureHeader), Sign(secret, body); !hmac.Equal([]byte(got), []byte(want)) {
			t.Errorf("signature %q, want %q", got, want)
		}
		var al api.Alert
		if err := json.Unmarshal(body, &al); err != nil {
			t.Errorf("body: %v", err)
		}
		bodies = append(bodies, al)
	}))
	defer hook.Close()
	f := &fakeSources{streams: cam(liveFeed("main", 5, 500, 2000))}
	cfg := DefaultAlertsConfig()
	cfg.Rules = []api.AlertRule{{Name: "fps", Kind: api.AlertIngestFPS, Threshold: 10}}
	cfg.Webhooks = []AlertWebhook{{URL: hook.URL + "/hook", Secret: secret}}
	a, err := NewAlerts(cfg, f.sources(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	a.SetPublisher(pub)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, h := range a.hooks {
			h.run(ctx)
		}
	}()
	defer func() { cancel(); <-done }()
	a.Evaluate() // fires
	f.mu.Lock()
	f.streams = cam(liveFeed("main", 25, 500, 2000))
	f.mu.Unlock()
	a.Evaluate() // resolves
	if _, err := a.Silence(api.Silence{Rule: "fps", DurationS: 60}, "ops"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.streams = cam(liveFeed("main", 5, 500, 2000))
	f.mu.Unlock()
	a.Evaluate() // fires, silenced
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(bodies)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0].State != api.AlertFiring || bodies[1].State != api.AlertResolved || bodies[0].ID != bodies[1].ID {
		t.Fatalf("webhook got %+v, want firing then resolved of one alert (the silenced one not sent)", bodies)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.got) != 3 || pub.got[2].SilencedUntil == nil {
		t.Fatalf("bus got %+v, want three transitions, the last silenced", pub.got)
	}
}

func TestAlertsConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*AlertsConfig)
		ok   bool
	}{
		{"defaults", func(*AlertsConfig) {}, true},
		{"unknown kind", func(c *AlertsConfig) { c.Rules = []api.AlertRule{{Name: "x", Kind: "nope"}} }, false},
		{"duplicate rule", func(c *AlertsConfig) {
			c.Rules = []api.AlertRule{{Name: "x", Kind: api.AlertSwitch}, {Name: "x", Kind: api.AlertSwitch}}
		}, false},
		{"negative threshold", func(c *AlertsConfig) { c.Rules = []api.AlertRule{{Name: "x", Kind: api.AlertSpool, Threshold: -1}} }, false},
		{"webhook without secret", func(c *AlertsConfig) { c.Webhooks = []AlertWebhook{{URL: "http://h/x"}} }, false},
		{"webhook ftp", func(c *AlertsConfig) {
			c.Webhooks = []AlertWebhook{{URL: "ftp://h/x", Secret: strings.Repeat("s", 16)}}
		}, false},
		{"interval too short", func(c *AlertsConfig) { c.Interval = time.Millisecond }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultAlertsConfig()
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestAlertsAPI checks the routes and the roles: a viewer reads but may
// not change rules or ack; an operator acks and silences; only admin puts
// rules; every change is audited.
func TestAlertsAPI(t *testing.T) {
	reg := startRegistry(t, prefixStore(t))
	logs := &syncBuffer{}
	cfg := DefaultConfig()
	cfg.APIToken = testToken
	cfg.Tokens = []APIToken{{Name: "watcher", Token: "viewer-token-0123456789", Role: RoleViewer},
		{Name: "ops", Token: "operator-token-0123456789", Role: RoleOperator}}
	srv, err := NewServer(cfg, reg, nil, newBufLogger(logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSources{streams: cam(liveFeed("main", 5, 500, 2000))}
	acfg := DefaultAlertsConfig()
	acfg.Rules = []api.AlertRule{{Name: "fps", Kind: api.AlertIngestFPS, Threshold: 10}}
	a, err := NewAlerts(acfg, f.sources(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Mount(srv)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	a.Evaluate()

	code, body := call(t, ts, "GET", "/api/v1/alerts?state=firing", "viewer-token-0123456789", "")
	var list api.AlertList
	mustUnmarshal(t, body, &list)
	if code != 200 || len(list.Alerts) != 1 || list.Alerts[0].Labels.Stream != "live/cam" || list.Alerts[0].Labels.Feed != "main" {
		t.Fatalf("GET alerts: %d %s", code, body)
	}
	id := list.Alerts[0].ID
	rules := `{"rules":[{"name":"fps","kind":"ingest_fps_below","threshold":3,"for_s":2}]}`
	for _, c := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"PUT", "/api/v1/alerts/rules", "viewer-token-0123456789", rules, http.StatusForbidden},
		{"PUT", "/api/v1/alerts/rules", "operator-token-0123456789", rules, http.StatusForbidden},
		{"POST", "/api/v1/alerts/" + id + "/ack", "viewer-token-0123456789", "", http.StatusForbidden},
		{"POST", "/api/v1/alerts/" + id + "/ack", "operator-token-0123456789", "", http.StatusOK},
		{"POST", "/api/v1/alerts/nope/ack", "operator-token-0123456789", "", http.StatusNotFound},
		{"POST", "/api/v1/alerts/silences", "operator-token-0123456789", `{"rule":"fps","labels":{"stream":"live/cam"},"duration_s":600}`, http.StatusCreated},
		{"POST", "/api/v1/alerts/silences", "operator-token-0123456789", `{"duration_s":600}`, http.StatusBadRequest},
		{"PUT", "/api/v1/alerts/rules", testToken, `{"rules":[{"name":"x","kind":"nope"}]}`, http.StatusBadRequest},
		{"PUT", "/api/v1/alerts/rules", testToken, rules, http.StatusOK},
		{"DELETE", "/api/v1/alerts", testToken, "", http.StatusMethodNotAllowed},
		{"GET", "/api/v1/alerts/rules", "viewer-token-0123456789", "", http.StatusOK},
		{"GET", "/api/v1/alerts?state=bogus", "viewer-token-0123456789", "", http.StatusBadRequest},
	} {
		if code, body := call(t, ts, c.method, c.path, c.token, c.body); code != c.want {
			t.Errorf("%s %s as %s: %d %s, want %d", c.method, c.path, c.token[:5], code, body, c.want)
		}
	}
	// The new rule (threshold 3) no longer holds at 5 fps: resolved at once.
	code, body = call(t, ts, "GET", "/api/v1/alerts", "viewer-token-0123456789", "")
	mustUnmarshal(t, body, &list)
	if code != 200 || len(list.Alerts) != 1 || list.Alerts[0].State != api.AlertResolved || list.Alerts[0].AckedBy != "ops" ||
		list.Alerts[0].SilencedUntil == nil {
		t.Fatalf("after the rule change: %d %s", code, body)
	}
	for _, action := range []string{"audit=\"alert ack\"", "audit=\"alert silence\"", "audit=\"alert rules\""} {
		if !strings.Contains(logs.String(), action) {
			t.Errorf("no %s in the audit log:\n%s", action, logs.String())
		}
	}
}

// BenchmarkAlertEvaluate is the cost of one evaluation of one rule over
// 200 streams × 2 feeds (the figures of the measure), 200 vendor ×
// region × ISP buckets, 40 vendor pools and 2 units, per kind, with no
// condition holding (the steady state).
func BenchmarkAlertEvaluate(b *testing.B) {
	f := &fakeSources{restarts: map[string]int64{}}
	for i := range 200 {
		f.streams = append(f.streams, StreamHealth{Stream: fmt.Sprintf("live/s%03d", i), Unit: "a", Switches: 1,
			Feeds: []api.FeedStatus{liveFeed("main", 25, 3000, 2000), liveFeed("backup", 25, 3000, 2000)}})
		f.restarts[fmt.Sprintf("live/s%03d", i)] = 0
	}
	for i := range 200 {
		f.quality = append(f.quality, QualityStat{Vendor: fmt.Sprintf("v%d", i%4), Region: fmt.Sprintf("r%d", i/4), ISP: "ct", Users: 100, StallRate: 0.01})
	}
	for i := range 40 {
		f.vendors = append(f.vendors, VendorLoad{Vendor: fmt.Sprintf("v%d", i%4), Region: fmt.Sprintf("r%d", i/4), Mbps: 100, CeilingMbps: 1000})
	}
	f.spool = [2]int64{1, 100}
	f.expected, f.alive = []string{"a", "b"}, []string{"a", "b"}
	for _, r := range DefaultAlertRules() {
		b.Run(r.Kind, func(b *testing.B) {
			cfg := DefaultAlertsConfig()
			cfg.Rules = []api.AlertRule{r}
			a, err := NewAlerts(cfg, f.sources(), nil)
			if err != nil {
				b.Fatal(err)
			}
			a.Probe(b.Context())
			b.ReportAllocs()
			for b.Loop() {
				a.Evaluate()
			}
		})
	}
}

// TestAlertRulesInStore: rules put through one node reach another node on
// the same store, and a node started later begins with them rather than
// with its config's.
func TestAlertRulesInStore(t *testing.T) {
	st := prefixStore(t)
	newNode := func() *Alerts {
		cfg := DefaultAlertsConfig()
		a, err := NewAlerts(cfg, AlertSources{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		if err := a.UseStore(ctx, st); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); a.closeStore() })
		return a
	}
	a, b := newNode(), newNode()
	want := []api.AlertRule{{Name: "fps", Kind: api.AlertIngestFPS, Threshold: 12, ForSeconds: 3}}
	if err := a.putRules(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	same := func(x *Alerts) bool {
		rs := x.Rules()
		return len(rs) == 1 && rs[0] == want[0]
	}
	deadline := time.Now().Add(5 * time.Second)
	for !same(b) {
		if time.Now().After(deadline) {
			t.Fatalf("node b has %+v, want %+v", b.Rules(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := newNode(); !same(c) {
		t.Fatalf("a node started later has %+v, want the stored rules", c.Rules())
	}
	if err := a.putRules(t.Context(), []api.AlertRule{{Name: "x", Kind: "nope"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid rules: %v", err)
	}
}
