package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// Emergency plans on two units (a runs the embedded etcd, b uses it),
// main pushed to a and backup to b (each relays to the other), the CDN
// mixer with vendors a and b, and the nginx edge in front: each plan is
// armed, previewed, confirmed (through the API and livectl) and verified,
// and what it did is checked apart from the plan's own verification.

const (
	plansOperator = "plans-operator-token-0123"
	plansViewer   = "plans-viewer-token-01234"
	plansStream   = "drill-ev"
)

// plansUnits starts the two units and pushes the drill stream.
func plansUnits(t *testing.T) (a, b *server, edge string) {
	t.Helper()
	geo, err := filepath.Abs("../cdnmix/testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	a, b = newUnit(t), newUnit(t)
	etcdPort := freePort(t)
	lmsExtra := fmt.Sprintf(`node: {report_period: 500ms}, tokens: [{name: ops, token: %q, role: operator}, {name: watch, token: %q, role: viewer}]`,
		plansOperator, plansViewer)
	common := fmt.Sprintf(`units:
  - {name: a, relay: "127.0.0.1:%d"}
  - {name: b, relay: "127.0.0.1:%d"}
relay_secret: "e2e-relay-secret"
plans: {confirm_within: 4s}
streams:
  - {app: live, name: %s, publish_token: pub, play_key: %s, encryption: true}
  - {app: live, name: ev, publish_token: pub}
  - {app: live, name: demo, publish_token: pub}
%s`, a.rtmp, b.rtmp, plansStream, encPlayKey, warRoomCDN(geo))
	a.configure(fmt.Sprintf("unit: a\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {listen: \"127.0.0.1:%d\"}, %s}\n",
		a.apiPort, apiToken, etcdPort, lmsExtra) + common)
	b.configure(fmt.Sprintf("unit: b\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {endpoints: [\"127.0.0.1:%d\"]}, %s}\n",
		b.apiPort, apiToken, etcdPort, lmsExtra) + common)
	a.start()
	t.Cleanup(a.stop)
	b.start()
	t.Cleanup(b.stop)
	edgePort := freePort(t)
	startEdge(t, edgePort, a, b)
	edge = fmt.Sprintf("http://127.0.0.1:%d/live/%s", edgePort, plansStream)

	push(t, a.rtmpURL(plansStream, "token=pub"), true)
	waitLive(t, signed(a.flvURL(plansStream), "/live/"+plansStream+".flv"), 15*time.Second)
	waitLive(t, signed(b.flvURL(plansStream), "/live/"+plansStream+".flv"), 15*time.Second)
	push(t, b.rtmpURL(plansStream, "token=pub&feed=backup"), true)
	return a, b, edge
}

// as returns a client of s's API calling it with token.
func as(s *server, token string) *server {
	return &server{t: s.t, host: s.host, apiPort: s.apiPort, token: token}
}

// runPlan arms req, checks nothing changed after a pause with still(),
// confirms and returns the run with the confirm call's own duration.
func runPlan(t *testing.T, s *server, req api.PlanRequest, still func() error) (api.PlanRun, time.Duration) {
	t.Helper()
	var run api.PlanRun
	if code, err := s.api("POST", "/plans", req, &run); err != nil || code != http.StatusCreated {
		t.Fatalf("arm %+v: %d %v", req, code, err)
	}
	if run.State != api.PlanArmed || run.Token == "" || run.Preview.Summary == "" {
		t.Fatalf("armed run %+v", run)
	}
	t.Logf("armed %s %s: %s", run.Kind, run.ID, run.Preview.Summary)
	if still != nil {
		time.Sleep(700 * time.Millisecond)
		if err := still(); err != nil {
			t.Fatalf("%s armed, not confirmed, yet: %v", run.Kind, err)
		}
	}
	// A wrong token changes nothing and leaves the run armed.
	if code, _ := s.api("POST", "/plans/"+run.ID+"/confirm", api.PlanConfirm{Token: "wrong-" + run.Token}, nil); code != http.StatusForbidden {
		t.Fatalf("wrong token: %d, want 403", code)
	}
	start := time.Now()
	var done api.PlanRun
	if code, err := s.api("POST", "/plans/"+run.ID+"/confirm", api.PlanConfirm{Token: run.Token}, &done); err != nil || code != http.StatusOK {
		t.Fatalf("confirm %s: %d %v", run.ID, code, err)
	}
	took := time.Since(start)
	if done.State != api.PlanVerified || done.VerifyMillis == nil {
		t.Fatalf("%s not verified: %+v", run.Kind, done)
	}
	t.Logf("%s verified %d ms after confirmation (confirm call %v)", run.Kind, *done.VerifyMillis, took.Round(time.Millisecond))
	return done, took
}

// unitPolicy reads the drill stream's units' switch state at s.
func unitsShow(s *server, feed string) error {
	var info api.StreamInfo
	if err := s.apiOK("GET", "/streams/live/"+plansStream, nil, &info); err != nil {
		return err
	}
	if len(info.Units) != 2 {
		return fmt.Errorf("%d units report", len(info.Units))
	}
	for _, u := range info.Units {
		if u.Policy != feed || (feed != api.FeedAuto && u.Active != feed) {
			return fmt.Errorf("unit %s policy %s shows %s", u.Unit, u.Policy, u.Active)
		}
	}
	return nil
}

// playStatus is the status of an HTTP-FLV request of the drill stream at url.
func playStatus(url string) (int, string) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(signed(url, "/live/"+plansStream+".flv"))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b := make([]byte, 200)
	n, _ := io.ReadFull(resp.Body, b)
	return resp.StatusCode, string(b[:n])
}

// lastMethod is the key method of the newest segment of the drill
// stream's media playlist at s.
func lastMethod(t *testing.T, s *server) string {
	methods := segmentKeyMethods(mediaPlaylist(t, hlsPlay(s, plansStream)))
	if len(methods) == 0 {
		return "NONE"
	}
	return methods[len(methods)-1]
}

func medianMS(ds []int64) int64 {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

var verifiedRe = regexp.MustCompile(`verified (\d+) ms after confirmation`)
var confirmRe = regexp.MustCompile(`livectl plans confirm (\S+) (\S+)`)

func TestPlans(t *testing.T) {
	a, b, edge := plansUnits(t)
	ops, viewer := as(a, plansOperator), as(a, plansViewer)
	figures := map[string][]int64{}
	ms := func(r api.PlanRun) {
		figures[r.Kind] = append(figures[r.Kind], *r.VerifyMillis)
	}
	var runs []string

	// A viewer may not arm; a drill on a stream that is not one is refused.
	if code, _ := viewer.api("POST", "/plans", api.PlanRequest{Kind: api.PlanForceFeed, Stream: "live/" + plansStream, Feed: "backup"}, nil); code != http.StatusForbidden {
		t.Fatalf("viewer arm: %d, want 403", code)
	}
	if code, _ := ops.api("POST", "/plans", api.PlanRequest{Kind: api.PlanForceFeed, Stream: "live/ev", Feed: "backup", Drill: true}, nil); code != http.StatusBadRequest {
		t.Fatalf("drill on live/ev: %d, want 400", code)
	}
	if err := waitFor(20*time.Second, func() error { return unitsShow(a, api.FeedAuto) }); err != nil {
		t.Fatalf("both units before the plans: %v", err)
	}

	// force_feed: backup, main, backup; then auto through livectl.
	cur := ""
	for _, feed := range []string{"backup", "main", "backup"} {
		run, _ := runPlan(t, ops, api.PlanRequest{Kind: api.PlanForceFeed, Stream: "live/" + plansStream, Feed: feed, Drill: true},
			func() error {
				var info api.StreamInfo
				if err := a.apiOK("GET", "/streams/live/"+plansStream, nil, &info); err != nil {
					return err
				}
				if info.FeedPolicy != cur {
					return fmt.Errorf("feed policy %q, was %q", info.FeedPolicy, cur)
				}
				return nil
			})
		cur = feed
		if err := unitsShow(b, feed); err != nil {
			t.Fatalf("force_feed %s verified, but: %v", feed, err)
		}
		ms(run)
		runs = append(runs, run.ID)
	}
	ctl := livectlBin(t)
	livectl := func(token string, args ...string) (string, error) {
		cmd := exec.Command(ctl, append([]string{"--api", fmt.Sprintf("http://127.0.0.1:%d", a.apiPort), "--token", token}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := livectl(plansOperator, "plans", "arm", "force_feed", "--stream", "live/"+plansStream, "--feed", "auto", "--drill")
	m := confirmRe.FindStringSubmatch(out)
	if err != nil || m == nil || !strings.Contains(out, "preview:") {
		t.Fatalf("livectl plans arm: %v\n%s", err, out)
	}
	out, err = livectl(plansOperator, "plans", "confirm", m[1], m[2])
	if err != nil || !verifiedRe.MatchString(out) {
		t.Fatalf("livectl plans confirm: %v\n%s", err, out)
	}
	runs = append(runs, m[1])
	t.Logf("livectl plans confirm:\n%s", out)
	if out, err := livectl(plansViewer, "plans", "arm", "force_feed", "--stream", "live/"+plansStream, "--feed", "main", "--drill"); err == nil {
		t.Fatalf("livectl plans arm as a viewer succeeded:\n%s", out)
	}

	// A run left unconfirmed expires (plans.confirm_within 4s) and changes nothing.
	var exp api.PlanRun
	if code, err := ops.api("POST", "/plans", api.PlanRequest{Kind: api.PlanForceFeed, Stream: "live/" + plansStream, Feed: "backup", Drill: true}, &exp); err != nil || code != http.StatusCreated {
		t.Fatalf("arm: %d %v", code, err)
	}
	time.Sleep(4500 * time.Millisecond)
	if code, _ := ops.api("POST", "/plans/"+exp.ID+"/confirm", api.PlanConfirm{Token: exp.Token}, nil); code != http.StatusGone {
		t.Fatalf("confirm after expiry: %d, want 410", code)
	}
	if err := unitsShow(a, api.FeedAuto); err != nil {
		t.Fatalf("an expired run changed the feed: %v", err)
	}
	runs = append(runs, exp.ID)

	// blacklist_vendor a in GD/telecom (then SH/telecom, then GD/telecom
	// again after removing it); the last through livectl --yes.
	const gd, sh = "198.51.100.7", "203.0.113.9"
	if err := waitFor(10*time.Second, func() error { return blFirst(t, a, gd, "a") }); err != nil {
		t.Fatal(err)
	}
	for i, region := range []string{"GD", "SH"} {
		xff := map[string]string{"GD": gd, "SH": sh}[region]
		run, _ := runPlan(t, ops, api.PlanRequest{Kind: api.PlanBlacklistVendor, Vendor: "a", Region: region, ISP: "telecom"},
			func() error { return blFirst(t, a, xff, "a") })
		if err := blOff(t, a, xff, "a"); err != nil {
			t.Fatalf("blacklist %d verified, but: %v", i, err)
		}
		if run.Preview.Vendors[0] != "a" || run.Preview.Regions[0] != region+"/telecom" {
			t.Errorf("preview %+v", run.Preview)
		}
		ms(run)
		runs = append(runs, run.ID)
	}
	if code, err := a.api("DELETE", "/cdn/blacklist?vendor=a&region=GD&isp=telecom", nil, nil); err != nil || code != http.StatusNoContent {
		t.Fatalf("remove the entry: %d %v", code, err)
	}
	if err := waitFor(10*time.Second, func() error { return blFirst(t, a, gd, "a") }); err != nil {
		t.Fatal(err)
	}
	out, err = livectl(plansOperator, "plans", "arm", "blacklist_vendor", "--vendor", "a", "--region", "GD", "--isp", "telecom", "--yes")
	m = verifiedRe.FindStringSubmatch(out)
	if err != nil || m == nil || !strings.Contains(out, "preview:") {
		t.Fatalf("livectl plans arm --yes: %v\n%s", err, out)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	figures[api.PlanBlacklistVendor] = append(figures[api.PlanBlacklistVendor], v)
	if err := blOff(t, a, gd, "a"); err != nil {
		t.Fatalf("livectl blacklist verified, but: %v", err)
	}
	if id := regexp.MustCompile(`plan run (\S+):`).FindStringSubmatch(out); id != nil {
		runs = append(runs, id[1])
	}

	// move_unit: b serves, a refuses (the edge fails over); then a; then b.
	// A player on unit a shows in the preview and is disconnected by the
	// first move.
	player := playFLV(t, signed(a.flvURL(plansStream), "/live/"+plansStream+".flv"), false)
	player.waitFrames(t, 5, 10*time.Second)
	if err := waitFor(10*time.Second, func() error {
		var info api.StreamInfo
		if err := a.apiOK("GET", "/streams/live/"+plansStream, nil, &info); err != nil {
			return err
		}
		for _, u := range info.Units {
			if u.Unit == "a" && u.Readers >= 1 {
				return nil
			}
		}
		return fmt.Errorf("unit a reports no player: %+v", info.Units)
	}); err != nil {
		t.Fatal(err)
	}
	for i, unit := range []string{"b", "a", "b"} {
		other := map[string]*server{"a": b, "b": a}[unit]
		chosen := map[string]*server{"a": a, "b": b}[unit]
		run, _ := runPlan(t, ops, api.PlanRequest{Kind: api.PlanMoveUnit, Stream: "live/" + plansStream, Unit: unit, Drill: true},
			func() error {
				if code, body := playStatus(other.flvURL(plansStream)); code != http.StatusOK {
					return fmt.Errorf("unit refuses before the confirmation: %d %s", code, body)
				}
				return nil
			})
		if code, body := playStatus(other.flvURL(plansStream)); code != http.StatusServiceUnavailable || !strings.Contains(body, "unit "+unit) {
			t.Fatalf("move to %s verified, but the other unit answers %d %q", unit, code, body)
		}
		if code, body := playStatus(chosen.flvURL(plansStream)); code != http.StatusOK {
			t.Fatalf("move to %s verified, but it answers %d %q", unit, code, body)
		}
		// The edge fails over at once; a unit it marked failed on an
		// earlier refusal is tried again after its fail_timeout (3 s).
		edgeStart := time.Now()
		if err := waitFor(12*time.Second, func() error {
			if code, body := playStatus(edge + ".flv"); code != http.StatusOK {
				return fmt.Errorf("%d %q", code, body)
			}
			return nil
		}); err != nil {
			t.Fatalf("edge after the move to %s: %v", unit, err)
		}
		t.Logf("edge plays from unit %s %v after the confirmation answer", unit, time.Since(edgeStart).Round(time.Millisecond))
		if !slices.Contains(run.Preview.Units, "a") || !slices.Contains(run.Preview.Units, "b") {
			t.Errorf("move preview units %v", run.Preview.Units)
		}
		if i == 0 {
			if run.Preview.Players < 1 {
				t.Errorf("move preview: %d players, want the one on unit a", run.Preview.Players)
			}
			select {
			case <-player.done:
				t.Logf("the player on unit a was disconnected after %d frames", player.frames())
			case <-time.After(5 * time.Second):
				t.Fatal("the player on unit a still plays after the move to b")
			}
		}
		ms(run)
		runs = append(runs, run.ID)
	}
	// The publishers stayed: both units still have both feeds.
	var info api.StreamInfo
	if err := a.apiOK("GET", "/streams/live/"+plansStream, nil, &info); err != nil {
		t.Fatal(err)
	}
	for _, u := range info.Units {
		live := 0
		for _, f := range u.Feeds {
			if f.State == "live" {
				live++
			}
		}
		if live != 2 {
			t.Errorf("unit %s after the moves: %d live feeds, want 2 (%+v)", u.Unit, live, u.Feeds)
		}
	}
	if code, err := a.api("PATCH", "/streams/live/"+plansStream, map[string]any{"serve_unit": ""}, nil); err != nil || code != http.StatusOK {
		t.Fatalf("serve everywhere again: %d %v", code, err)
	}

	// stop_encryption (encryption turned back on between runs): once, or
	// LIVEFUSE_PLAN_RUNS times (make plans-timing: 3).
	encRuns := 1
	if n, err := strconv.Atoi(os.Getenv("LIVEFUSE_PLAN_RUNS")); err == nil && n > 1 && n <= 10 {
		encRuns = n
	}
	for i := range encRuns {
		if err := waitFor(30*time.Second, func() error {
			for _, s := range []*server{a, b} {
				if m := lastMethod(t, s); m != "SAMPLE-AES" {
					return fmt.Errorf("newest segment %s", m)
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("encrypted before run %d: %v", i, err)
		}
		run, _ := runPlan(t, ops, api.PlanRequest{Kind: api.PlanStopEncryption, Stream: "live/" + plansStream, Drill: true},
			func() error {
				if m := lastMethod(t, a); m != "SAMPLE-AES" {
					return fmt.Errorf("newest segment %s", m)
				}
				return nil
			})
		for _, s := range []*server{a, b} {
			if m := lastMethod(t, s); m != "NONE" {
				t.Fatalf("stop_encryption verified, but a unit's newest segment is under %s", m)
			}
		}
		ms(run)
		runs = append(runs, run.ID)
		if i < encRuns-1 {
			if code, err := a.api("PATCH", "/streams/live/"+plansStream, map[string]any{"encryption": true}, nil); err != nil || code != http.StatusOK {
				t.Fatalf("encryption on again: %d %v", code, err)
			}
		}
	}

	// livectl streams switch waits for the units and prints what they show.
	out, err = livectl(plansOperator, "streams", "switch", "live/"+plansStream, "backup")
	if err != nil || !strings.Contains(out, "unit a: showing backup") || !strings.Contains(out, "unit b: showing backup") {
		t.Fatalf("livectl streams switch: %v\n%s", err, out)
	}
	t.Logf("livectl streams switch:\n%s", out)

	// drain_node: unit b's node.
	var nodes api.NodeList
	if err := a.apiOK("GET", "/nodes", nil, &nodes); err != nil {
		t.Fatal(err)
	}
	var bID string
	for _, n := range nodes.Nodes {
		if n.Unit == "b" {
			bID = n.ID
		}
	}
	if bID == "" {
		t.Fatalf("no node of unit b in %+v", nodes)
	}
	run, _ := runPlan(t, ops, api.PlanRequest{Kind: api.PlanDrainNode, Node: bID}, func() error {
		var l api.NodeList
		a.apiOK("GET", "/nodes", nil, &l)
		for _, n := range l.Nodes {
			if n.ID == bID && n.State != api.NodeServing {
				return fmt.Errorf("node %s %s", n.ID, n.State)
			}
		}
		return nil
	})
	ms(run)
	runs = append(runs, run.ID)

	// The audit has every step of every run: the arm with its preview,
	// the confirmation with the outcome (or the refusal), the outcome.
	if err := waitFor(10*time.Second, func() error {
		var l api.AuditList
		if err := viewer.apiOK("GET", "/audit?target=plan/&limit=1000", nil, &l); err != nil {
			return err
		}
		have := map[string]map[string]bool{}
		for _, e := range l.Entries {
			id := strings.TrimPrefix(e.Target, "plan/")
			if have[id] == nil {
				have[id] = map[string]bool{}
			}
			switch {
			case e.Action == "plan.arm" && e.Detail["preview"] != "":
				have[id]["arm"] = true
			case e.Action == "plan.confirm" && e.Outcome == "refused":
				have[id]["refused"] = true
			case e.Action == "plan.confirm" && e.Detail["state"] == api.PlanVerified:
				have[id]["confirm"] = true
			case e.Action == "plan.outcome" && e.Outcome == api.PlanVerified:
				have[id]["outcome"] = true
			case e.Action == "plan.expired":
				have[id]["expired"] = true
			}
		}
		for _, id := range runs {
			want := []string{"arm", "confirm", "outcome"}
			if id == exp.ID {
				want = []string{"arm", "expired", "refused"}
			}
			for _, w := range want {
				if !have[id][w] {
					return fmt.Errorf("run %s: no %s entry (has %v)", id, w, have[id])
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("audit: %v", err)
	}

	for _, k := range []string{api.PlanStopEncryption, api.PlanBlacklistVendor, api.PlanForceFeed, api.PlanMoveUnit, api.PlanDrainNode} {
		t.Logf("FIGURE confirm→verified %s: runs %v ms, median %d ms", k, figures[k], medianMS(figures[k]))
	}
}

// waitFor polls cond every 100 ms until it is nil, at most within.
func waitFor(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// warRoomCDN is the cdnmix section of the plans and console tests: vendors
// a and b, regions GD and SH × telecom from the geo file, a plan that
// follows every change at once.
func warRoomCDN(geo string) string {
	return fmt.Sprintf(`cdnmix:
  vendors:
    - {name: a, flv_base: "http://cdn-a.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
    - {name: b, flv_base: "http://cdn-b.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
  geo: {cidr_file: %q}
  trusted_proxies: [127.0.0.1]
  regions: [GD, SH]
  isps: [telecom]
  recompute: 500ms
  min_change: -1
`, geo)
}
