package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// The console's alerts and plans views against the real alert engine and
// the real plans: an ingest alert ("fps under 10 for 2 s", the encoder
// restarted at 5 fps) fires, is acknowledged and silenced from the page,
// and resolves back at 25 fps; stop_encryption, force_feed and
// blacklist_vendor are armed from the form, previewed in the
// confirmation dialog, cancelled (nothing changes), armed again,
// confirmed and shown verified; the audit view lists every step; under
// plans.two_person the armer's confirmation is refused in the dialog and
// a second operator confirms with the token; a viewer sees no plan form
// and may not arm; move_unit runs on two units. About 30 s.

const (
	consoleOperatorToken  = "console-operator-token-0123"
	consoleOperator2Token = "console-operator2-token-0123"
)

func TestConsoleAlertsPlans(t *testing.T) {
	geo, err := filepath.Abs("../cdnmix/testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	s := newUnit(t)
	s.configure(fmt.Sprintf(`lms: {api_addr: "127.0.0.1:%d", api_token: %q, node: {report_period: 500ms},
  tokens: [{name: ops, token: %q, role: operator}, {name: watch, token: %q, role: viewer}]}
streams:
  - {app: live, name: alarm, publish_token: pub}
  - {app: live, name: demo, publish_token: pub}
  - {app: live, name: %s, publish_token: pub, play_key: %s, encryption: true}
alerts:
  interval: 250ms
  rules:
    - {name: fps-low, kind: ingest_fps_below, threshold: 10, for_s: 2, severity: critical}
plans: {confirm_within: 30s}
%s`, s.apiPort, apiToken, consoleOperatorToken, consoleViewerToken, plansStream, encPlayKey, warRoomCDN(geo)))
	s.start()
	t.Cleanup(s.stop)

	// The plans' stream, main and backup, while the alert runs.
	push(t, s.rtmpURL(plansStream, "token=pub"), true)
	push(t, s.rtmpURL(plansStream, "token=pub&feed=backup"), true)
	enc := consoleEncoder(t, s.rtmpURL("alarm", "token=pub"), 25)
	defer func() { killEncoder(enc) }()

	p := openConsole(t, s, consoleOperatorToken)

	t.Run("alert fires, acked, resolves", func(t *testing.T) {
		p.t = t
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=alerts]"})
		firstReport(t, s, "live/alarm", "main", 20*time.Second)
		killEncoder(enc)
		enc = consoleEncoder(t, s.rtmpURL("alarm", "token=pub"), 5)
		restart := time.Now()
		row := p.waitAlert("firing", 30*time.Second, func(r consoleAlert) bool { return r.Rule == "fps-low" && r.State == "firing" && r.Ack })
		t.Logf("alert firing in the console %v after the 5 fps encoder started: %+v", time.Since(restart).Round(time.Millisecond), row)
		if !strings.Contains(row.Labels, "stream=live/alarm") || row.Severity != "critical" {
			t.Errorf("firing row %+v: want stream=live/alarm, critical", row)
		}
		var count string
		p.eval(`document.getElementById('firing-count').textContent`, &count)
		if count != "1" {
			t.Errorf("firing count on the tab %q, want 1", count)
		}
		p.shot("alert-firing")

		p.do(map[string]any{"op": "click", "selector": fmt.Sprintf("#alerts button[data-ack=%q]", row.ID)})
		acked := p.waitAlert("acked", 10*time.Second, func(r consoleAlert) bool { return r.ID == row.ID && strings.Contains(r.Buttons, "acked by ops") })
		var l api.AlertList
		if err := s.apiOK("GET", "/alerts", nil, &l); err != nil {
			t.Fatal(err)
		}
		var got *api.Alert
		for i := range l.Alerts {
			if l.Alerts[i].ID == row.ID {
				got = &l.Alerts[i]
			}
		}
		if got == nil || got.AckedBy != "ops" || got.AckedAt == nil {
			t.Fatalf("the API after the console's ack: %+v, want acked_by ops", got)
		}
		t.Logf("acked from the console: %+v", acked)
		// Silenced from the console for the chosen 15 minutes.
		p.eval(`(() => { document.getElementById('silence-for').value = '900'; return true; })()`, nil)
		p.do(map[string]any{"op": "click", "selector": fmt.Sprintf("#alerts button[data-silence=%q]", row.ID)})
		silenced := p.waitAlert("silenced", 10*time.Second, func(r consoleAlert) bool { return r.ID == row.ID && strings.Contains(r.Buttons, "silenced until") })
		if err := s.apiOK("GET", "/alerts", nil, &l); err != nil {
			t.Fatal(err)
		}
		for _, al := range l.Alerts {
			if al.ID == row.ID && (al.SilencedUntil == nil || al.SilencedUntil.Sub(time.Now()) < 14*time.Minute || al.SilencedUntil.Sub(time.Now()) > 15*time.Minute) {
				t.Errorf("the API after the console's silence: %+v, want silenced for 15 min", al)
			}
		}
		t.Logf("silenced from the console: %+v", silenced)
		p.shot("alert-acked-silenced")

		killEncoder(enc)
		enc = consoleEncoder(t, s.rtmpURL("alarm", "token=pub"), 25)
		back := time.Now()
		res := p.waitAlert("resolved", 30*time.Second, func(r consoleAlert) bool { return r.ID == row.ID && r.State == "resolved" })
		t.Logf("alert resolved in the console %v after the 25 fps encoder started: %+v", time.Since(back).Round(time.Millisecond), res)
		p.eval(`document.getElementById('firing-count').textContent`, &count)
		if count != "" {
			t.Errorf("firing count on the tab %q after the resolution, want none", count)
		}
		p.shot("alert-resolved")
	})

	var runs []string
	plan := func(t *testing.T, kind string, params map[string]string, preview []string, still func() error) {
		t.Helper()
		p.t = t
		runs = append(runs, p.planTwice(s, kind, params, preview, still)...)
	}

	t.Run("stop_encryption", func(t *testing.T) {
		if err := waitFor(30*time.Second, func() error {
			if m := lastMethod(t, s); m != "SAMPLE-AES" {
				return fmt.Errorf("newest segment %s", m)
			}
			return nil
		}); err != nil {
			t.Fatalf("encrypted before the plan: %v", err)
		}
		plan(t, api.PlanStopEncryption, map[string]string{"stream": "live/" + plansStream}, []string{"live/" + plansStream}, func() error {
			var st api.Stream
			if err := s.apiOK("GET", "/streams/live/"+plansStream, nil, &st); err != nil {
				return err
			}
			if m := lastMethod(t, s); m != "SAMPLE-AES" || !st.Encryption {
				return fmt.Errorf("newest segment %s, encryption %v", m, st.Encryption)
			}
			return nil
		})
		if m := lastMethod(t, s); m != "NONE" {
			t.Errorf("stop_encryption verified, but the newest segment is under %s", m)
		}
	})

	t.Run("force_feed", func(t *testing.T) {
		feedIs := func(policy, active string) error {
			var info api.StreamInfo
			if err := s.apiOK("GET", "/streams/live/"+plansStream, nil, &info); err != nil {
				return err
			}
			if info.Live == nil || info.Live.Switch == nil {
				return fmt.Errorf("not live")
			}
			if info.FeedPolicy != policy || info.Live.Switch.Active != active {
				return fmt.Errorf("policy %q shows %s, want %q showing %s", info.FeedPolicy, info.Live.Switch.Active, policy, active)
			}
			return nil
		}
		if err := waitFor(20*time.Second, func() error { return feedIs("", "main") }); err != nil {
			t.Fatalf("before the plan: %v", err)
		}
		plan(t, api.PlanForceFeed, map[string]string{"stream": "live/" + plansStream, "feed": "backup"}, []string{"live/" + plansStream},
			func() error { return feedIs("", "main") })
		if err := feedIs("backup", "backup"); err != nil {
			t.Errorf("force_feed verified, but: %v", err)
		}
		// The card shows the forced feed on air.
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=streams]"})
		c := p.waitCard("backup on air", "live/"+plansStream+"|a|backup", 10*time.Second, func(c consoleCard) bool { return c.has("active") })
		t.Logf("backup card %+v", c)
	})

	t.Run("blacklist_vendor", func(t *testing.T) {
		const gd = "198.51.100.7"
		if err := waitFor(10*time.Second, func() error { return blFirst(t, s, gd, "a") }); err != nil {
			t.Fatal(err)
		}
		plan(t, api.PlanBlacklistVendor, map[string]string{"vendor": "a", "region": "GD", "isp": "telecom"}, []string{"vendors: a", "GD/telecom"},
			func() error { return blFirst(t, s, gd, "a") })
		if err := blOff(t, s, gd, "a"); err != nil {
			t.Errorf("blacklist verified, but: %v", err)
		}
		// The CDN view lists the entry.
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=cdn]"})
		if err := waitFor(5*time.Second, func() error {
			var n int
			p.eval(`document.querySelectorAll('#blacklist tbody tr[data-vendor=a]').length`, &n)
			if n == 0 {
				return fmt.Errorf("no blacklist row of vendor a")
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})

	// The audit view lists arm, cancel, confirm and outcome of every run.
	t.Run("audit", func(t *testing.T) {
		p.t = t
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=audit]"})
		p.eval(`(() => { const f = document.querySelector('#audit-filter'); f.querySelector('[name=target]').value = 'plan/';
			f.querySelector('[name=limit]').value = '1000'; return true; })()`, nil)
		var rows []string
		var missing []string
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.do(map[string]any{"op": "click", "selector": "#audit-filter button[type=submit]"})
			time.Sleep(300 * time.Millisecond)
			p.eval(`Array.from(document.querySelectorAll('#audit tbody tr')).map((tr) => Array.from(tr.children).slice(1, 7).map((td) => td.textContent).join(' | '))`, &rows)
			missing = missing[:0]
			for i, id := range runs {
				want := []string{"plan.arm", "plan.cancel"}
				if i%2 == 1 {
					want = []string{"plan.arm", "plan.confirm", "plan.outcome"}
				}
				for _, w := range want {
					found := false
					for _, r := range rows {
						if strings.Contains(r, " | "+w+" | plan/"+id+" | ") {
							found = true
						}
					}
					if !found {
						missing = append(missing, w+" "+id)
					}
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				p.shot("failed-audit-plans")
				t.Fatalf("the audit view lacks %v:\n%s", missing, strings.Join(rows, "\n"))
			}
		}
		t.Logf("audit view: %d plan entries for %d runs", len(rows), len(runs))
		p.shot("audit-plans")
	})

	// plans.two_person: the operator who armed a run cannot confirm it;
	// the dialog says so and shows the token, and another operator
	// confirms it from the runs list with that token.
	t.Run("two_person", func(t *testing.T) {
		p.t = t
		s2 := newUnit(t)
		s2.configure(fmt.Sprintf(`lms: {api_addr: "127.0.0.1:%d", api_token: %q,
  tokens: [{name: ops, token: %q, role: operator}, {name: ops2, token: %q, role: operator}]}
streams:
  - {app: live, name: demo, publish_token: pub}
plans: {two_person: true, confirm_within: 30s}
%s`, s2.apiPort, apiToken, consoleOperatorToken, consoleOperator2Token, warRoomCDN(geo)))
		s2.start()
		t.Cleanup(s2.stop)
		q := openConsole(t, s2, consoleOperatorToken)
		q.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=plans]"})
		pv := q.armFromForm(api.PlanBlacklistVendor, map[string]string{"vendor": "a", "region": "SH", "isp": "telecom"})
		q.allowHTTP = append(q.allowHTTP, "403 /api/v1/plans/"+pv.ID+"/confirm")
		var tok string
		q.eval(`document.getElementById('confirm-token').textContent`, &tok)
		if tok == "" {
			t.Fatal("the dialog shows no confirmation token")
		}
		q.do(map[string]any{"op": "click", "selector": "#confirm-ok"})
		var msg string
		if err := waitFor(10*time.Second, func() error {
			q.eval(`document.getElementById('confirm').open ? document.getElementById('confirm-error').textContent : 'closed'`, &msg)
			if !strings.Contains(msg, "two_person") {
				return fmt.Errorf("dialog says %q", msg)
			}
			return nil
		}); err != nil {
			q.shot("failed-two-person-refusal")
			t.Fatalf("the armer's own confirmation: %v", err)
		}
		q.shot("two-person-refused")
		q.do(map[string]any{"op": "click", "selector": "#confirm-leave"})
		q.waitDialogClosed()
		q.waitRun("left armed", pv.ID, 5*time.Second, "armed")

		q.do(map[string]any{"op": "click", "selector": "#logout"})
		q.do(map[string]any{"op": "login", "token": consoleOperator2Token})
		q.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=plans]"})
		q.do(map[string]any{"op": "click", "selector": fmt.Sprintf("#runs button[data-confirm=%q]", pv.ID)})
		q.eval(fmt.Sprintf(`(() => { document.getElementById('confirm-token-input').value = %q; return true; })()`, tok), nil)
		var preview string
		q.eval(`document.getElementById('confirm-preview').textContent`, &preview)
		if !strings.Contains(preview, "SH/telecom") {
			t.Errorf("second operator's dialog preview %q", preview)
		}
		q.shot("two-person-second")
		q.do(map[string]any{"op": "click", "selector": "#confirm-ok"})
		q.waitRun("verified by the second operator", pv.ID, 20*time.Second, "verified")
		q.waitDialogClosed()
		var r api.PlanRun
		if err := s2.apiOK("GET", "/plans/"+pv.ID, nil, &r); err != nil || r.ArmedBy != "ops" || r.ConfirmedBy != "ops2" || r.State != api.PlanVerified {
			t.Fatalf("two-person run in the API: %+v %v", r, err)
		}
		q.shot("two-person-verified")
	})

	t.Run("viewer", func(t *testing.T) {
		p.t = t
		p.do(map[string]any{"op": "click", "selector": "#logout"})
		var role string
		json.Unmarshal(p.do(map[string]any{"op": "login", "token": consoleViewerToken}), &role)
		if role != "viewer" {
			t.Fatalf("logged in as %q, want viewer", role)
		}
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=plans]"})
		var vis struct {
			Form    bool
			Buttons int
			Runs    int
		}
		p.eval(`({Form: document.getElementById('arm').offsetParent !== null,
			Buttons: Array.from(document.querySelectorAll('#view-plans button, #view-alerts button')).filter((b) => b.offsetParent !== null).length,
			Runs: document.querySelectorAll('#runs tbody tr').length})`, &vis)
		if vis.Form || vis.Buttons != 0 || vis.Runs < len(runs) {
			t.Errorf("viewer's plans view: %+v, want no form, no buttons, the %d runs listed", vis, len(runs))
		}
		p.shot("viewer-plans-runs")
		code, err := as(s, consoleViewerToken).api("POST", "/plans", api.PlanRequest{Kind: api.PlanForceFeed, Stream: "live/" + plansStream, Feed: "main"}, nil)
		if err != nil || code != http.StatusForbidden {
			t.Errorf("viewer arm: %d %v, want 403", code, err)
		}
	})
	p.t = t

	// move_unit on two units (plans_test.go's: a runs the store, main
	// pushed to a, backup to b, each relaying to the other): from the
	// console on unit a, unit b serves the players and a refuses them.
	t.Run("move_unit", func(t *testing.T) {
		a, b, _ := plansUnits(t)
		q := openConsole(t, a, plansOperator)
		if err := waitFor(20*time.Second, func() error { return unitsShow(a, api.FeedAuto) }); err != nil {
			t.Fatalf("both units before the plan: %v", err)
		}
		serves := func(aCode, bCode int) error {
			if code, body := playStatus(a.flvURL(plansStream)); code != aCode {
				return fmt.Errorf("unit a answers %d %q, want %d", code, body, aCode)
			}
			if code, body := playStatus(b.flvURL(plansStream)); code != bCode {
				return fmt.Errorf("unit b answers %d %q, want %d", code, body, bCode)
			}
			return nil
		}
		q.planTwice(a, api.PlanMoveUnit, map[string]string{"stream": "live/" + plansStream, "unit": "b", "drill": "true"},
			[]string{"live/" + plansStream, "units: b, a"}, func() error { return serves(http.StatusOK, http.StatusOK) })
		if err := serves(http.StatusServiceUnavailable, http.StatusOK); err != nil {
			t.Errorf("move_unit verified, but: %v", err)
		}
	})
	p.t = t
}

// consoleAlert is a row of the alerts view.
type consoleAlert struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Severity string `json:"severity"`
	Rule     string `json:"rule"`
	Labels   string `json:"labels"`
	Buttons  string `json:"buttons"`
	Ack      bool   `json:"ack"`
}

// waitAlert polls the alerts view every 100 ms until a row satisfies cond.
func (p *consolePage) waitAlert(what string, d time.Duration, cond func(consoleAlert) bool) consoleAlert {
	p.t.Helper()
	deadline := time.Now().Add(d)
	var rows []consoleAlert
	for {
		p.eval(`Array.from(document.querySelectorAll('#alerts tbody tr')).map((tr) => { const td = tr.children;
			return {id: tr.dataset.id, state: td[0].textContent, severity: td[1].textContent, rule: td[2].textContent,
				labels: td[4].textContent, buttons: td[7].textContent, ack: !!td[7].querySelector('button[data-ack]')}; })`, &rows)
		for _, r := range rows {
			if cond(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			p.shot("failed-alert-" + what)
			p.t.Fatalf("alert %s: not within %v; rows %+v", what, d, rows)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// armedDialog is what the confirmation dialog shows.
type armedDialog struct {
	ID      string `json:"id"`
	Title   string `json:"title"`
	Preview string `json:"preview"`
}

// armFromForm picks kind in the plan form, fills its fields, clicks Arm
// and waits for the confirmation dialog.
func (p *consolePage) armFromForm(kind string, params map[string]string) armedDialog {
	p.t.Helper()
	b, _ := json.Marshal(params)
	// The form is there once the page has read the plan kinds.
	for deadline := time.Now().Add(5 * time.Second); ; {
		var ok bool
		p.eval(fmt.Sprintf(`(() => { const sel = document.getElementById('plan-kind');
			if (!Array.from(sel.options).some((o) => o.value === %q)) return false;
			sel.value = %q; sel.dispatchEvent(new Event('change'));
			const ps = %s;
			for (const inp of document.querySelectorAll('#plan-params input')) inp.value = ps[inp.name] || '';
			document.getElementById('plan-drill').checked = ps.drill === 'true';
			return true; })()`, kind, kind, b), &ok)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			p.shot("failed-arm-" + kind)
			p.t.Fatalf("the plan form offers no %s", kind)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.do(map[string]any{"op": "click", "selector": "#plan-arm"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var d armedDialog
		p.eval(`(() => { const d = document.getElementById('confirm'); if (!d.open) return {};
			return {id: d.dataset.run || '', title: document.getElementById('confirm-title').textContent,
				preview: document.getElementById('confirm-preview').textContent}; })()`, &d)
		if d.ID != "" {
			return d
		}
		if time.Now().After(deadline) {
			p.shot("failed-arm-" + kind)
			p.t.Fatalf("arm %s: no confirmation dialog within 10 s", kind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRun waits until run id's row in the plans view shows state, and
// returns the row's state cell.
func (p *consolePage) waitRun(what, id string, d time.Duration, state string) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var cell string
		p.eval(fmt.Sprintf(`(() => { const tr = document.querySelector('#runs tbody tr[data-id=' + JSON.stringify(%q) + ']');
			return tr ? tr.querySelector('.state').textContent : ''; })()`, id), &cell)
		if strings.HasPrefix(cell, state) {
			return cell
		}
		if time.Now().After(deadline) {
			p.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			p.t.Fatalf("%s: run %s shows %q, not %s within %v", what, id, cell, state, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitDialogClosed waits until the confirmation dialog is closed.
func (p *consolePage) waitDialogClosed() {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var open bool
		p.eval(`document.getElementById('confirm').open`, &open)
		if !open {
			return
		}
		if time.Now().After(deadline) {
			p.shot("failed-dialog-open")
			p.t.Fatal("the confirmation dialog is still open after 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// planTwice arms kind with params from the page's plan form, checks the
// dialog's preview, cancels it and checks with still that nothing
// changed, arms it again, confirms and waits for the run to show
// verified. It returns the two runs' ids.
func (p *consolePage) planTwice(s *server, kind string, params map[string]string, preview []string, still func() error) []string {
	t := p.t
	t.Helper()
	p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=plans]"})
	var ids []string
	var cancelled string
	for round := range 2 {
		pv := p.armFromForm(kind, params)
		ids = append(ids, pv.ID)
		if (params["drill"] == "true") != strings.Contains(pv.Title, "(drill)") {
			t.Errorf("%s dialog title %q, drill %q", kind, pv.Title, params["drill"])
		}
		for _, w := range preview {
			if !strings.Contains(pv.Preview, w) {
				t.Errorf("%s preview %q lacks %q", kind, pv.Preview, w)
			}
		}
		if round == 0 {
			p.shot("plan-" + kind + "-preview")
			p.do(map[string]any{"op": "click", "selector": "#confirm-cancel"})
			cancelled = p.waitRun(kind+" cancelled", pv.ID, 10*time.Second, "cancelled")
			time.Sleep(500 * time.Millisecond)
			if err := still(); err != nil {
				t.Fatalf("%s cancelled from the console, yet: %v", kind, err)
			}
			var r api.PlanRun
			if err := s.apiOK("GET", "/plans/"+pv.ID, nil, &r); err != nil || r.State != api.PlanCancelled {
				t.Fatalf("cancelled run in the API: %+v %v", r, err)
			}
			continue
		}
		start := time.Now()
		p.do(map[string]any{"op": "click", "selector": "#confirm-ok"})
		state := p.waitRun(kind+" verified", pv.ID, 20*time.Second, "verified")
		p.waitDialogClosed()
		var r api.PlanRun
		if err := s.apiOK("GET", "/plans/"+pv.ID, nil, &r); err != nil || r.State != api.PlanVerified || r.ConfirmedBy != "ops" {
			t.Fatalf("confirmed run in the API: %+v %v", r, err)
		}
		t.Logf("%s: cancelled run shows %q; confirmed run shows %q %v after the click (verify %d ms)", kind, cancelled, state,
			time.Since(start).Round(time.Millisecond), *r.VerifyMillis)
		p.shot("plan-" + kind + "-verified")
	}
	return ids
}
