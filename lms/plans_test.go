package lms

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/lms/api"
)

// fakeMedia is the CDN mixer and the media listeners of a plans test.
type fakeMedia struct {
	mu        sync.Mutex
	blacklist map[string]bool
	clear     bool
	serving   map[string]bool
}

func (f *fakeMedia) VendorKnown(v string) bool                  { return v == "cdnA" || v == "cdnB" }
func (f *fakeMedia) VendorUsers(vendor, region, isp string) int { return 7 }
func (f *fakeMedia) Blacklist(_ context.Context, vendor, region, isp, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blacklist[vendor+"/"+region+"/"+isp] = true
	return nil
}
func (f *fakeMedia) Dispatches(vendor, region, isp string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.blacklist[vendor+"/"+region+"/"+isp]
}
func (f *fakeMedia) OutputsClear(context.Context, string, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.clear {
		return fmt.Errorf("still encrypted")
	}
	return nil
}
func (f *fakeMedia) Units(context.Context) ([]string, error) { return []string{"a", "b"}, nil }
func (f *fakeMedia) Serving(context.Context, string, string) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for k, v := range f.serving {
		out[k] = v
	}
	return out, nil
}

func (f *fakeMedia) blacklisted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.blacklist)
}

type plansEnv struct {
	ts    *httptest.Server
	reg   *Registry
	plans *Plans
	media *fakeMedia
	clock *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func newPlansEnv(t testing.TB, pc PlansConfig) *plansEnv {
	t.Helper()
	st := prefixStore(t)
	reg := startRegistry(t, st)
	cfg := DefaultConfig()
	cfg.APIToken = testToken
	cfg.Tokens = []APIToken{{Name: "ops", Token: operatorToken, Role: RoleOperator}, {Name: "watch", Token: viewerToken, Role: RoleViewer}}
	srv, err := NewServer(cfg, reg, &fakeLive{}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetAuditStore(st)
	done := make(chan struct{})
	go srv.auditLog.run(done)
	t.Cleanup(func() { close(done) })
	media := &fakeMedia{blacklist: map[string]bool{}, serving: map[string]bool{"a": true, "b": true}}
	clock := &fakeClock{}
	p := NewPlans(pc, reg, st, media, testLogger(t))
	p.now = clock.now
	p.Mount(srv)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	for _, name := range []string{"ev", "drill-ev"} {
		if err := reg.Put(t.Context(), Stream{App: "live", Name: name, PublishToken: "tok", Enabled: true}); err != nil {
			t.Fatal(err)
		}
	}
	// Unit a reports what the registry asks of it, as a node would.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go reg.ReportUnit(ctx, "a", 100*time.Millisecond, func() map[string]UnitStatus {
		out := map[string]UnitStatus{}
		for _, s := range reg.List() {
			pol := s.FeedPolicy
			if pol == "" {
				pol = api.FeedAuto
			}
			active := pol
			if active == api.FeedAuto {
				active = api.FeedMain
			}
			out[s.Path()] = UnitStatus{Policy: pol, Active: active, Readers: 3}
		}
		return out
	})
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if u, _ := reg.Units(t.Context()); len(u["live/ev"]) == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no unit report")
		}
	}
	return &plansEnv{ts: ts, reg: reg, plans: p, media: media, clock: clock}
}

func (e *plansEnv) arm(t *testing.T, token, body string) (int, api.PlanRun, []byte) {
	t.Helper()
	code, b := call(t, e.ts, "POST", "/api/v1/plans", token, body)
	var run api.PlanRun
	if code == http.StatusCreated {
		mustUnmarshal(t, b, &run)
	}
	return code, run, b
}

func (e *plansEnv) confirm(t *testing.T, token, id, tok string) (int, api.PlanRun, []byte) {
	t.Helper()
	body, _ := json.Marshal(api.PlanConfirm{Token: tok})
	code, b := call(t, e.ts, "POST", "/api/v1/plans/"+id+"/confirm", token, string(body))
	var run api.PlanRun
	if code == http.StatusOK {
		mustUnmarshal(t, b, &run)
	}
	return code, run, b
}

func TestPlanBlacklistNeedsConfirmation(t *testing.T) {
	e := newPlansEnv(t, PlansConfig{})
	code, run, b := e.arm(t, operatorToken, `{"kind":"blacklist_vendor","vendor":"cdnA","region":"bj","isp":"ct"}`)
	if code != http.StatusCreated || run.State != api.PlanArmed || run.Token == "" {
		t.Fatalf("arm: %d %s", code, b)
	}
	if run.Preview.Players != 7 || len(run.Preview.Vendors) != 1 || run.Preview.Regions[0] != "bj/ct" || run.Preview.Summary == "" {
		t.Errorf("preview %+v", run.Preview)
	}
	// Armed, nothing changed; a wrong token changes nothing either.
	if e.media.blacklisted() != 0 {
		t.Fatal("arming blacklisted the vendor")
	}
	if code, _, b := e.confirm(t, operatorToken, run.ID, "not-the-token"); code != http.StatusForbidden {
		t.Fatalf("wrong token: %d %s", code, b)
	}
	if e.media.blacklisted() != 0 {
		t.Fatal("a wrong token blacklisted the vendor")
	}
	if got, _ := e.plans.Get(run.ID); got.State != api.PlanArmed || got.Token != "" {
		t.Fatalf("after a wrong token: %+v", got)
	}
	// A viewer may neither arm nor confirm.
	if code, _, _ := e.arm(t, viewerToken, `{"kind":"blacklist_vendor","vendor":"cdnA"}`); code != http.StatusForbidden {
		t.Fatalf("viewer arm: %d", code)
	}
	if code, _, _ := e.confirm(t, viewerToken, run.ID, run.Token); code != http.StatusForbidden {
		t.Fatalf("viewer confirm: %d", code)
	}
	code, done, b := e.confirm(t, operatorToken, run.ID, run.Token)
	if code != http.StatusOK || done.State != api.PlanVerified || done.VerifyMillis == nil || done.ConfirmedBy != "ops" {
		t.Fatalf("confirm: %d %s", code, b)
	}
	if e.media.Dispatches("cdnA", "bj", "ct") {
		t.Fatal("verified, but the vendor is still dispatched")
	}
	// The token is spent.
	if code, _, _ := e.confirm(t, operatorToken, run.ID, run.Token); code != http.StatusConflict {
		t.Fatalf("second confirm: %d, want 409", code)
	}
	// The audit has the arm (with its preview) and the confirmation (with
	// the outcome), and the outcome entry.
	want := map[string]bool{"plan.arm": false, "plan.confirm": false, "plan.outcome": false}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, b := call(t, e.ts, "GET", "/api/v1/audit?target=plan/"+run.ID, viewerToken, "")
		var l api.AuditList
		mustUnmarshal(t, b, &l)
		for _, en := range l.Entries {
			switch {
			case en.Action == "plan.arm" && en.Detail["preview"] != "" && en.Actor == "ops":
				want[en.Action] = true
			case en.Action == "plan.confirm" && en.Outcome == "done" && en.Detail["state"] == api.PlanVerified:
				want[en.Action] = true
			case en.Action == "plan.outcome" && en.Outcome == api.PlanVerified:
				want[en.Action] = true
			}
		}
		if (want["plan.arm"] && want["plan.confirm"] && want["plan.outcome"]) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for a, ok := range want {
		if !ok {
			t.Errorf("audit lacks %s", a)
		}
	}
}

func TestPlanExpires(t *testing.T) {
	e := newPlansEnv(t, PlansConfig{ConfirmWithin: time.Minute})
	_, run, _ := e.arm(t, operatorToken, `{"kind":"force_feed","stream":"live/ev","feed":"backup"}`)
	e.clock.advance(61 * time.Second)
	if code, _, b := e.confirm(t, operatorToken, run.ID, run.Token); code != http.StatusGone {
		t.Fatalf("confirm after expiry: %d %s", code, b)
	}
	if s, _ := e.reg.Get("live", "ev"); s.FeedPolicy != "" {
		t.Fatalf("expired run changed the feed policy to %q", s.FeedPolicy)
	}
	if got, _ := e.plans.Get(run.ID); got.State != api.PlanExpired {
		t.Fatalf("state %s", got.State)
	}
}

func TestPlanForceFeed(t *testing.T) {
	e := newPlansEnv(t, PlansConfig{})
	code, run, b := e.arm(t, testToken, `{"kind":"force_feed","stream":"live/ev","feed":"backup"}`)
	if code != http.StatusCreated || run.Preview.Players != 3 || run.Preview.Streams[0] != "live/ev" {
		t.Fatalf("arm: %d %s", code, b)
	}
	if s, _ := e.reg.Get("live", "ev"); s.FeedPolicy != "" {
		t.Fatal("arming changed the feed policy")
	}
	code, done, b := e.confirm(t, operatorToken, run.ID, run.Token)
	if code != http.StatusOK || done.State != api.PlanVerified {
		t.Fatalf("confirm: %d %s", code, b)
	}
	if s, _ := e.reg.Get("live", "ev"); s.FeedPolicy != api.FeedBackup {
		t.Fatalf("feed policy %q", s.FeedPolicy)
	}
}

func TestPlanTwoPerson(t *testing.T) {
	e := newPlansEnv(t, PlansConfig{TwoPerson: true})
	_, run, _ := e.arm(t, operatorToken, `{"kind":"blacklist_vendor","vendor":"cdnB"}`)
	if code, _, _ := e.confirm(t, operatorToken, run.ID, run.Token); code != http.StatusForbidden {
		t.Fatalf("the arming operator confirmed: %d", code)
	}
	if e.media.blacklisted() != 0 {
		t.Fatal("changed without a second operator")
	}
	if code, done, b := e.confirm(t, testToken, run.ID, run.Token); code != http.StatusOK || done.State != api.PlanVerified || done.ConfirmedBy != "admin" {
		t.Fatalf("second operator: %d %s", code, b)
	}
}

func TestPlanMoveUnitFailsVerification(t *testing.T) {
	e := newPlansEnv(t, PlansConfig{VerifyTimeout: 300 * time.Millisecond})
	_, run, _ := e.arm(t, operatorToken, `{"kind":"move_unit","stream":"live/ev","unit":"b"}`)
	// Unit a still serves (the fake media never changes): the run fails
	// after the verification timeout, and says why.
	code, done, b := e.confirm(t, operatorToken, run.ID, run.Token)
	if code != http.StatusOK || done.State != api.PlanFailed || done.Error == "" {
		t.Fatalf("confirm: %d %s", code, b)
	}
	if s, _ := e.reg.Get("live", "ev"); s.ServeUnit != "b" {
		t.Fatalf("serve_unit %q", s.ServeUnit)
	}
}

func TestPlanArmRefusals(t *testing.T) {
	e := newPlansEnv(t, PlansConfig{})
	for _, tc := range []struct{ name, body string }{
		{"unknown kind", `{"kind":"reboot"}`},
		{"missing stream", `{"kind":"stop_encryption"}`},
		{"bad feed", `{"kind":"force_feed","stream":"live/ev","feed":"sideways"}`},
		{"unknown vendor", `{"kind":"blacklist_vendor","vendor":"nope"}`},
		{"unknown unit", `{"kind":"move_unit","stream":"live/ev","unit":"z"}`},
		{"foreign parameter", `{"kind":"force_feed","stream":"live/ev","feed":"main","vendor":"cdnA"}`},
		{"drill on a stream that is not a drill stream", `{"kind":"force_feed","stream":"live/ev","feed":"main","drill":true}`},
		{"drill on a plan without a stream", `{"kind":"blacklist_vendor","vendor":"cdnA","drill":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, b := e.arm(t, operatorToken, tc.body); code != http.StatusBadRequest {
				t.Fatalf("%s: %d %s, want 400", tc.body, code, b)
			}
		})
	}
	if code, _, _ := e.arm(t, operatorToken, `{"kind":"force_feed","stream":"live/missing","feed":"main"}`); code != http.StatusNotFound {
		t.Fatalf("missing stream: %d", code)
	}
	if code, run, b := e.arm(t, operatorToken, `{"kind":"force_feed","stream":"live/drill-ev","feed":"main","drill":true}`); code != http.StatusCreated || !run.Drill {
		t.Fatalf("drill on a drill stream: %d %s", code, b)
	}
	_, b := call(t, e.ts, "GET", "/api/v1/plans", viewerToken, "")
	var l api.PlanList
	mustUnmarshal(t, b, &l)
	if len(l.Kinds) != 5 || len(l.Runs) != 1 || l.Runs[0].Token != "" {
		t.Fatalf("list: %s", b)
	}
}

func TestPlanMoveUnit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		serving map[string]bool
		want    string
	}{
		{"b serves, a refuses", map[string]bool{"a": false, "b": true}, api.PlanVerified},
		{"b not live, a refuses", map[string]bool{"a": false}, api.PlanFailed},
		{"both serve", map[string]bool{"a": true, "b": true}, api.PlanFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPlansEnv(t, PlansConfig{VerifyTimeout: 300 * time.Millisecond})
			e.media.serving = tc.serving
			code, run, b := e.arm(t, operatorToken, `{"kind":"move_unit","stream":"live/ev","unit":"b"}`)
			if code != http.StatusCreated || len(run.Preview.Units) != 2 || run.Preview.Units[0] != "b" {
				t.Fatalf("arm: %d %s", code, b)
			}
			if s, _ := e.reg.Get("live", "ev"); s.ServeUnit != "" {
				t.Fatal("arming moved the stream")
			}
			_, done, b := e.confirm(t, operatorToken, run.ID, run.Token)
			if done.State != tc.want {
				t.Fatalf("state %s, want %s: %s", done.State, tc.want, b)
			}
			if s, _ := e.reg.Get("live", "ev"); s.ServeUnit != "b" {
				t.Fatalf("serve_unit %q", s.ServeUnit)
			}
		})
	}
}

func TestPlansConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  PlansConfig
		ok   bool
	}{
		{"defaults", DefaultPlansConfig(), true},
		{"zero", PlansConfig{}, true},
		{"confirm within 2h", PlansConfig{ConfirmWithin: 2 * time.Hour}, false},
		{"verify 1m", PlansConfig{VerifyTimeout: time.Minute}, false},
		{"bad drill prefix", PlansConfig{DrillPrefix: "a b"}, false},
		{"too many runs", PlansConfig{KeepRuns: 100000}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// FuzzPlanArm posts any body to the arm route as an operator: the answer
// is a run or a refusal (never a server error), and arming alone changes
// nothing: no blacklist entry, no stream's feed policy or serving unit.
func FuzzPlanArm(f *testing.F) {
	f.Add(`{"kind":"blacklist_vendor","vendor":"cdnA","region":"GD","isp":"telecom"}`)
	f.Add(`{"kind":"force_feed","stream":"live/ev","feed":"backup"}`)
	f.Add(`{"kind":"move_unit","stream":"live/drill-ev","unit":"b","drill":true}`)
	f.Add(`{"kind":"stop_encryption","stream":"live/../x"}`)
	f.Add(`{"kind":"drain_node","node":"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"}`)
	f.Add(`{"kind":"force_feed","stream":"live/ev","feed":"backup","extra":1}`)
	f.Add(`[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`)
	e := newPlansEnv(f, DefaultPlansConfig())
	f.Fuzz(func(t *testing.T, body string) {
		code, b := call(t, e.ts, "POST", "/api/v1/plans", operatorToken, body)
		if code >= 500 || (code != http.StatusCreated && code/100 != 4) {
			t.Fatalf("arm %q: %d %s", body, code, b)
		}
		if n := e.media.blacklisted(); n != 0 {
			t.Fatalf("arm %q blacklisted %d entries", body, n)
		}
		for _, s := range e.reg.List() {
			if s.FeedPolicy != "" || s.ServeUnit != "" {
				t.Fatalf("arm %q changed %s: %+v", body, s.Path(), s)
			}
		}
	})
}
