package lms

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// Emergency plans: the war room's rehearsed switch-type operations. A run
// is armed (its parameters checked and its impact previewed, nothing
// changed), then confirmed with the one-time token the arm answer carried,
// within plans.confirm_within (optionally by another operator), then
// executed and verified: the confirm answer comes once the effect shows
// (or the verification timed out). Every step is in the audit log: the
// arm call with the preview, the confirm call with the outcome, an expiry
// or a cancel. Runs are kept in memory, the newest plans.keep_runs.
//
// What the plans act on and verify outside the control plane (the CDN
// mixer, the media listeners) comes through PlanMedia, which the node
// wiring implements; lms never imports the media packages.

// PlansConfig is the plans section of the config.
type PlansConfig struct {
	// ConfirmWithin is how long an armed run waits for its confirmation
	// (default 60s).
	ConfirmWithin time.Duration `yaml:"confirm_within"`
	// TwoPerson requires the confirmation from another token holder than
	// the one who armed the run.
	TwoPerson bool `yaml:"two_person"`
	// DrillPrefix marks drill streams: a plan in drill mode only runs on a
	// stream whose name starts with it (default "drill-").
	DrillPrefix string `yaml:"drill_prefix"`
	// VerifyTimeout bounds the verification after a confirmation (default
	// 15s, at most 20s: the confirm answer waits for it); past it the run
	// fails.
	VerifyTimeout time.Duration `yaml:"verify_timeout"`
	// KeepRuns is how many runs are kept for GET /api/v1/plans (default 100).
	KeepRuns int `yaml:"keep_runs"`
}

// DefaultPlansConfig returns the defaults.
func DefaultPlansConfig() PlansConfig {
	return PlansConfig{ConfirmWithin: 60 * time.Second, DrillPrefix: "drill-", VerifyTimeout: 15 * time.Second, KeepRuns: 100}
}

func (c PlansConfig) withDefaults() PlansConfig {
	d := DefaultPlansConfig()
	if c.ConfirmWithin <= 0 {
		c.ConfirmWithin = d.ConfirmWithin
	}
	if c.DrillPrefix == "" {
		c.DrillPrefix = d.DrillPrefix
	}
	if c.VerifyTimeout <= 0 {
		c.VerifyTimeout = d.VerifyTimeout
	}
	if c.KeepRuns <= 0 {
		c.KeepRuns = d.KeepRuns
	}
	return c
}

// Validate checks the bounds.
func (c PlansConfig) Validate() error {
	if c.ConfirmWithin < 0 || c.ConfirmWithin > time.Hour {
		return errors.New("plans.confirm_within: want 1s to 1h")
	}
	if c.VerifyTimeout < 0 || c.VerifyTimeout > 20*time.Second {
		// The confirm answer waits for the verification, within the API
		// listener's write timeout (30 s by default).
		return errors.New("plans.verify_timeout: want up to 20s")
	}
	if c.KeepRuns < 0 || c.KeepRuns > 10000 {
		return errors.New("plans.keep_runs: want up to 10000")
	}
	if c.DrillPrefix != "" {
		if err := api.ValidateName(c.DrillPrefix); err != nil {
			return fmt.Errorf("plans.drill_prefix: %w", err)
		}
	}
	return nil
}

// PlanMedia is what plans act on and verify outside the control plane.
type PlanMedia interface {
	// VendorKnown reports whether the CDN mixer has vendor.
	VendorKnown(vendor string) bool
	// VendorUsers is how many users the mixer observed in vendor ×
	// region × isp over the last minute.
	VendorUsers(vendor, region, isp string) int
	// Blacklist adds the manual blacklist entry vendor × region × isp.
	Blacklist(ctx context.Context, vendor, region, isp, reason string) error
	// Dispatches reports whether dispatch still returns vendor to a
	// client of region × isp.
	Dispatches(vendor, region, isp string) bool
	// OutputsClear returns nil when the play outputs of app/name are
	// clear at every unit that has it live (HLS playlist without a
	// SAMPLE-AES key, FLV output not encrypting), else what is not.
	OutputsClear(ctx context.Context, app, name string) error
	// Units returns the units that have a media listener.
	Units(ctx context.Context) ([]string, error)
	// Serving returns, for every unit that has app/name live, whether it
	// serves its players (false: it refuses them).
	Serving(ctx context.Context, app, name string) (map[string]bool, error)
}

// Plans arms, confirms, executes and verifies emergency plans.
type Plans struct {
	cfg   PlansConfig
	reg   *Registry
	st    *Store // nil: drain_node unavailable
	media PlanMedia
	log   *slog.Logger
	now   func() time.Time

	mu    sync.Mutex
	runs  []*planRun // oldest first, at most cfg.KeepRuns
	audit func(api.AuditEntry)
	// changed, when set, is called after every change of a run (console).
	changed func()
}

// planRun is a run and what only the server knows of it.
type planRun struct {
	run      api.PlanRun
	tokenSum [sha256.Size]byte
	used     bool // the token was spent (or the run ended)
	misses   int  // wrong tokens tried
	app      string
	name     string
}

// maxTokenMisses wrong confirmations cancel a run.
const maxTokenMisses = 5

// NewPlans returns the plans over reg (the streams), st (the node
// registry, for drain_node; may be nil) and media (may be nil: the plans
// that need it are refused).
func NewPlans(cfg PlansConfig, reg *Registry, st *Store, media PlanMedia, log *slog.Logger) *Plans {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Plans{cfg: cfg.withDefaults(), reg: reg, st: st, media: media, log: log, now: time.Now}
}

// OnChange makes fn be called after every change of a run (to push the
// plans view). Call it before Mount.
func (p *Plans) OnChange(fn func()) { p.changed = fn }

// Mount adds the plan routes to s and sends the plans' own audit entries
// (expiry, verification outcome) to s's audit log.
func (p *Plans) Mount(s *Server) {
	p.mu.Lock()
	p.audit = s.auditLog.add
	p.mu.Unlock()
	s.Handle("GET /api/v1/plans", http.HandlerFunc(p.handleList))
	s.Handle("POST /api/v1/plans", http.HandlerFunc(p.handleArm))
	s.Handle("GET /api/v1/plans/{id}", http.HandlerFunc(p.handleGet))
	s.Handle("POST /api/v1/plans/{id}/confirm", http.HandlerFunc(p.handleConfirm))
	s.Handle("POST /api/v1/plans/{id}/cancel", http.HandlerFunc(p.handleCancel))
}

// Kinds describes the plan kinds.
func (p *Plans) Kinds() []api.PlanKind {
	stream := api.PlanParam{Name: "stream", Required: true, Description: "app/name"}
	return []api.PlanKind{
		{Kind: api.PlanStopEncryption, Drill: true, Params: []api.PlanParam{stream},
			Description: "turn the stream's encryption off without interrupting the push; verified when the HLS playlist has no SAMPLE-AES key and the FLV output is clear"},
		{Kind: api.PlanBlacklistVendor, Params: []api.PlanParam{
			{Name: "vendor", Required: true, Description: "CDN vendor"},
			{Name: "region", Description: "region (empty: every region)"},
			{Name: "isp", Description: "ISP (empty: every ISP)"}},
			Description: "blacklist a CDN vendor in one region × ISP; verified when dispatch no longer returns it there"},
		{Kind: api.PlanForceFeed, Drill: true, Params: []api.PlanParam{stream, {Name: "feed", Required: true, Description: "main, backup or auto"}},
			Description: "force the main or backup feed (or back to auto) on every unit; verified when every unit's report shows it"},
		{Kind: api.PlanMoveUnit, Drill: true, Params: []api.PlanParam{stream, {Name: "unit", Required: true, Description: "the unit that serves the players"}},
			Description: "make one unit serve the stream's players and the others refuse them (edges fail over; publishers stay on every unit); verified when the unit serves and the others refuse"},
		{Kind: api.PlanDrainNode, Params: []api.PlanParam{{Name: "node", Required: true, Description: "node id"}},
			Description: "drain a node: no new players or publishers, it leaves once its players are gone; verified when the node reports draining"},
	}
}

// List returns the runs, newest first, without tokens.
func (p *Plans) List() []api.PlanRun {
	p.expire()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]api.PlanRun, 0, len(p.runs))
	for i := len(p.runs) - 1; i >= 0; i-- {
		out = append(out, p.runs[i].snapshot())
	}
	return out
}

func (r *planRun) snapshot() api.PlanRun {
	out := r.run
	out.Token = ""
	out.Params = copyMap(r.run.Params)
	out.Steps = slices.Clone(r.run.Steps)
	out.Preview.Streams = slices.Clone(r.run.Preview.Streams)
	return out
}

func (r *planRun) step(at time.Time, ok bool, format string, args ...any) {
	r.run.Steps = append(r.run.Steps, api.PlanStep{At: at.UTC(), What: fmt.Sprintf(format, args...), OK: ok})
}

// planError is a refusal with its status.
type planError struct {
	code int
	msg  string
}

func (e *planError) Error() string { return e.msg }

func refuse(code int, format string, args ...any) error {
	return &planError{code: code, msg: fmt.Sprintf(format, args...)}
}

// streamKinds are the kinds that act on one stream (and run in drill mode).
func streamKind(kind string) bool {
	return kind == api.PlanStopEncryption || kind == api.PlanForceFeed || kind == api.PlanMoveUnit
}

// Arm checks req and returns an armed run with its preview and token. It
// changes nothing.
func (p *Plans) Arm(ctx context.Context, who string, req api.PlanRequest) (api.PlanRun, error) {
	params, app, name, err := p.check(ctx, req)
	if err != nil {
		return api.PlanRun{}, err
	}
	preview, err := p.preview(ctx, req.Kind, params, app, name)
	if err != nil {
		return api.PlanRun{}, err
	}
	id, err := NewToken()
	if err != nil {
		return api.PlanRun{}, err
	}
	tok, err := newSecret()
	if err != nil {
		return api.PlanRun{}, err
	}
	now := p.now()
	r := &planRun{tokenSum: sha256.Sum256([]byte(tok)), app: app, name: name, run: api.PlanRun{
		ID: id, Kind: req.Kind, Params: params, Drill: req.Drill, State: api.PlanArmed, Preview: preview,
		ArmedBy: who, ArmedAt: now.UTC(), ExpiresAt: now.Add(p.cfg.ConfirmWithin).UTC()}}
	drill := ""
	if req.Drill {
		drill = " (drill)"
	}
	r.step(now, true, "armed by %s%s: %s", who, drill, preview.Summary)
	p.mu.Lock()
	p.runs = append(p.runs, r)
	if over := len(p.runs) - p.cfg.KeepRuns; over > 0 {
		p.runs = slices.Delete(p.runs, 0, over)
	}
	out := r.snapshot()
	p.mu.Unlock()
	out.Token = tok
	p.log.Info("plan armed", "plan", id, "kind", req.Kind, "actor", who, "drill", req.Drill, "summary", preview.Summary)
	p.notify()
	return out, nil
}

// check validates req against its kind and the current state, and returns
// the run's parameters (and its stream, for the stream kinds).
func (p *Plans) check(ctx context.Context, req api.PlanRequest) (params map[string]string, app, name string, err error) {
	params = map[string]string{}
	unused := map[string]string{"stream": req.Stream, "vendor": req.Vendor, "region": req.Region, "isp": req.ISP,
		"feed": req.Feed, "unit": req.Unit, "node": req.Node}
	take := func(key string, required bool) (string, error) {
		v := unused[key]
		delete(unused, key)
		if v == "" {
			if required {
				return "", refuse(http.StatusBadRequest, "%s: required by %s", key, req.Kind)
			}
			return "", nil
		}
		if len(v) > 128 {
			return "", refuse(http.StatusBadRequest, "%s: at most 128 bytes", key)
		}
		params[key] = v
		return v, nil
	}
	if streamKind(req.Kind) {
		s, err := take("stream", true)
		if err != nil {
			return nil, "", "", err
		}
		app, name = api.SplitPath(s)
		if api.ValidateName(app) != nil || api.ValidateName(name) != nil {
			return nil, "", "", refuse(http.StatusBadRequest, "stream %q: want app/name", s)
		}
		if _, ok := p.reg.Get(app, name); !ok {
			return nil, "", "", refuse(http.StatusNotFound, "stream %s/%s not found", app, name)
		}
		params["stream"] = app + "/" + name
		if req.Drill && !strings.HasPrefix(name, p.cfg.DrillPrefix) {
			return nil, "", "", refuse(http.StatusBadRequest,
				"drill: %s/%s is not a drill stream (drill streams are named %s…)", app, name, p.cfg.DrillPrefix)
		}
	} else if req.Drill {
		return nil, "", "", refuse(http.StatusBadRequest, "drill: %s does not run in drill mode (only the stream plans do)", req.Kind)
	}
	needMedia := func() error {
		if p.media == nil {
			return refuse(http.StatusConflict, "%s: not available on this node", req.Kind)
		}
		return nil
	}
	switch req.Kind {
	case api.PlanStopEncryption:
		if err := needMedia(); err != nil {
			return nil, "", "", err
		}
	case api.PlanBlacklistVendor:
		if err := needMedia(); err != nil {
			return nil, "", "", err
		}
		v, err := take("vendor", true)
		if err != nil {
			return nil, "", "", err
		}
		if !p.media.VendorKnown(v) {
			return nil, "", "", refuse(http.StatusBadRequest, "vendor %q unknown", v)
		}
		if _, err := take("region", false); err != nil {
			return nil, "", "", err
		}
		if _, err := take("isp", false); err != nil {
			return nil, "", "", err
		}
	case api.PlanForceFeed:
		f, err := take("feed", true)
		if err != nil {
			return nil, "", "", err
		}
		if api.ValidateFeedPolicy(f) != nil {
			return nil, "", "", refuse(http.StatusBadRequest, `feed: want "main", "backup" or "auto"`)
		}
	case api.PlanMoveUnit:
		if err := needMedia(); err != nil {
			return nil, "", "", err
		}
		u, err := take("unit", true)
		if err != nil {
			return nil, "", "", err
		}
		units, err := p.media.Units(ctx)
		if err != nil {
			return nil, "", "", refuse(http.StatusServiceUnavailable, "units unknown: %v", err)
		}
		if !slices.Contains(units, u) {
			return nil, "", "", refuse(http.StatusBadRequest, "unit %q unknown (units: %s)", u, strings.Join(units, ", "))
		}
	case api.PlanDrainNode:
		if p.st == nil {
			return nil, "", "", refuse(http.StatusConflict, "drain_node: no node registry on this node")
		}
		id, err := take("node", true)
		if err != nil {
			return nil, "", "", err
		}
		if _, err := p.node(ctx, id); err != nil {
			return nil, "", "", err
		}
	default:
		return nil, "", "", refuse(http.StatusBadRequest, "kind %q: want one of stop_encryption, blacklist_vendor, force_feed, move_unit, drain_node", req.Kind)
	}
	for k, v := range unused {
		if v != "" {
			return nil, "", "", refuse(http.StatusBadRequest, "%s: not a parameter of %s", k, req.Kind)
		}
	}
	return params, app, name, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// node returns the record of node id.
func (p *Plans) node(ctx context.Context, id string) (api.Node, error) {
	if api.ValidateName(id) != nil {
		return api.Node{}, refuse(http.StatusBadRequest, "node %q: not a node id", id)
	}
	ctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	nodes, err := ListNodes(ctx, p.st)
	if err != nil {
		return api.Node{}, refuse(http.StatusServiceUnavailable, "store unreachable: %v", err)
	}
	for _, n := range nodes {
		if n.ID == id {
			return n, nil
		}
	}
	return api.Node{}, refuse(http.StatusNotFound, "node %q not found", id)
}

// players sums the players of app/name over the units' reports.
func (p *Plans) players(ctx context.Context, path string) (int, []string) {
	units, err := p.reg.Units(ctx)
	if err != nil {
		return 0, nil
	}
	n := 0
	var names []string
	for _, u := range units[path] {
		n += u.Readers
		names = append(names, u.Unit)
	}
	return n, names
}

// preview states what the run will touch.
func (p *Plans) preview(ctx context.Context, kind string, params map[string]string, app, name string) (api.PlanPreview, error) {
	pv := api.PlanPreview{Streams: []string{}, Vendors: []string{}, Regions: []string{}}
	path := app + "/" + name
	if streamKind(kind) {
		pv.Streams = []string{path}
		pv.Players, pv.Units = p.players(ctx, path)
	}
	st, _ := p.reg.Get(app, name)
	switch kind {
	case api.PlanStopEncryption:
		was := "off already"
		if st.Encryption {
			was = "on"
		}
		pv.Summary = fmt.Sprintf("turn encryption of %s off (now %s); %d players will get clear output at the next keyframe, the push goes on", path, was, pv.Players)
	case api.PlanForceFeed:
		cur := st.FeedPolicy
		if cur == "" {
			cur = api.FeedAuto
		}
		pv.Summary = fmt.Sprintf("force feed %s of %s on every unit (policy now %s); %d players see the switch", params["feed"], path, cur, pv.Players)
	case api.PlanMoveUnit:
		units, _ := p.media.Units(ctx)
		var others []string
		for _, u := range units {
			if u != params["unit"] {
				others = append(others, u)
			}
		}
		pv.Units = append([]string{params["unit"]}, others...)
		pv.Summary = fmt.Sprintf("unit %s serves the players of %s; unit(s) %s refuse them (503) so edges fail over; %d players reconnect at most; publishers stay on every unit",
			params["unit"], path, strings.Join(others, ", "), pv.Players)
	case api.PlanBlacklistVendor:
		v, region, isp := params["vendor"], params["region"], params["isp"]
		pv.Vendors = []string{v}
		pv.Regions = []string{bucketName(region, isp)}
		pv.Players = p.media.VendorUsers(v, region, isp)
		pv.Summary = fmt.Sprintf("stop dispatching vendor %s in %s (until the entry is removed); %d users observed there in the last minute move to other vendors",
			v, bucketName(region, isp), pv.Players)
	case api.PlanDrainNode:
		n, err := p.node(ctx, params["node"])
		if err != nil {
			return pv, err
		}
		pv.Players = n.Load.Players
		if n.Unit != "" {
			pv.Units = []string{n.Unit}
		}
		pv.Summary = fmt.Sprintf("drain node %s (unit %s, %s now): no new players or publishers there, it leaves once its %d players are gone",
			n.ID, n.Unit, n.State, n.Load.Players)
	}
	return pv, nil
}

func bucketName(region, isp string) string {
	if region == "" {
		region = "*"
	}
	if isp == "" {
		isp = "*"
	}
	return region + "/" + isp
}

// findLocked returns run id (p.mu held).
func (p *Plans) findLocked(id string) *planRun {
	for _, r := range p.runs {
		if r.run.ID == id {
			return r
		}
	}
	return nil
}

// Get returns run id.
func (p *Plans) Get(id string) (api.PlanRun, bool) {
	p.expire()
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.findLocked(id)
	if r == nil {
		return api.PlanRun{}, false
	}
	return r.snapshot(), true
}

// Run ends the runs left unconfirmed as their time passes (recording the
// expiry in the audit log) until ctx is done; without it they end when
// next looked at.
func (p *Plans) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.expire()
		}
	}
}

// expire ends the armed runs whose confirmation time passed.
func (p *Plans) expire() {
	now := p.now()
	var ended []api.PlanRun
	p.mu.Lock()
	for _, r := range p.runs {
		if r.run.State == api.PlanArmed && now.After(r.run.ExpiresAt) {
			r.run.State, r.used = api.PlanExpired, true
			r.step(now, false, "expired unconfirmed after %s", p.cfg.ConfirmWithin)
			ended = append(ended, r.snapshot())
		}
	}
	p.mu.Unlock()
	for _, r := range ended {
		p.record("system", "", "plan.expired", r, nil)
	}
	if len(ended) > 0 {
		p.notify()
	}
}

// Cancel ends an armed run.
func (p *Plans) Cancel(id, who string) (api.PlanRun, error) {
	p.expire()
	p.mu.Lock()
	r := p.findLocked(id)
	if r == nil {
		p.mu.Unlock()
		return api.PlanRun{}, refuse(http.StatusNotFound, "plan run %q not found", id)
	}
	if r.run.State != api.PlanArmed {
		out := r.snapshot()
		p.mu.Unlock()
		return out, refuse(http.StatusConflict, "plan run %s is %s, not armed", id, r.run.State)
	}
	r.run.State, r.used = api.PlanCancelled, true
	r.step(p.now(), true, "cancelled by %s", who)
	out := r.snapshot()
	p.mu.Unlock()
	p.notify()
	return out, nil
}

// Confirm checks tok against run id and, when it is the run's token,
// executes the run and waits for its verification (at most
// plans.verify_timeout). who is the confirming token's holder.
func (p *Plans) Confirm(ctx context.Context, id, who, tok string) (api.PlanRun, error) {
	p.expire()
	p.mu.Lock()
	r := p.findLocked(id)
	if r == nil {
		p.mu.Unlock()
		return api.PlanRun{}, refuse(http.StatusNotFound, "plan run %q not found", id)
	}
	switch r.run.State {
	case api.PlanArmed:
	case api.PlanExpired:
		out := r.snapshot()
		p.mu.Unlock()
		return out, refuse(http.StatusGone, "plan run %s expired at %s unconfirmed: arm it again", id, r.run.ExpiresAt.Format(time.RFC3339))
	default:
		out := r.snapshot()
		p.mu.Unlock()
		return out, refuse(http.StatusConflict, "plan run %s is %s: its token was used", id, out.State)
	}
	got := sha256.Sum256([]byte(tok))
	if r.used || subtle.ConstantTimeCompare(got[:], r.tokenSum[:]) != 1 {
		r.misses++
		r.step(p.now(), false, "wrong confirmation token from %s", who)
		if r.misses >= maxTokenMisses {
			r.run.State, r.used = api.PlanCancelled, true
			r.step(p.now(), false, "cancelled after %d wrong tokens", r.misses)
		}
		p.mu.Unlock()
		p.notify()
		return api.PlanRun{}, refuse(http.StatusForbidden, "wrong confirmation token for plan run %s", id)
	}
	if p.cfg.TwoPerson && who == r.run.ArmedBy {
		p.mu.Unlock()
		return api.PlanRun{}, refuse(http.StatusForbidden, "plans.two_person: %s armed plan run %s, another operator must confirm it", who, id)
	}
	now := p.now()
	r.used = true
	r.run.State = api.PlanExecuting
	r.run.ConfirmedBy = who
	t := now.UTC()
	r.run.ConfirmedAt = &t
	r.step(now, true, "confirmed by %s", who)
	kind, params, app, name := r.run.Kind, copyMap(r.run.Params), r.app, r.name
	p.mu.Unlock()
	p.notify()

	// The run goes on if the caller leaves: the change must not stop half
	// way, and its outcome is recorded either way.
	ctx = context.WithoutCancel(ctx)
	err := p.execute(ctx, id, kind, params, app, name)
	p.mu.Lock()
	if err != nil {
		r.run.State, r.run.Error = api.PlanFailed, err.Error()
		r.step(p.now(), false, "execution failed: %v", err)
	} else {
		r.step(p.now(), true, "executed: %s", r.run.Preview.Summary)
	}
	p.mu.Unlock()
	p.notify()
	if err == nil {
		err = p.verify(ctx, kind, params, app, name, now)
		at := p.now()
		p.mu.Lock()
		if err != nil {
			r.run.State, r.run.Error = api.PlanFailed, "verification: "+err.Error()
			r.step(at, false, "not verified within %s: %v", p.cfg.VerifyTimeout, err)
		} else {
			ms := at.Sub(now).Milliseconds()
			ut := at.UTC()
			r.run.State, r.run.VerifiedAt, r.run.VerifyMillis = api.PlanVerified, &ut, &ms
			r.step(at, true, "verified %d ms after confirmation", ms)
		}
		p.mu.Unlock()
	}
	out := p.snap(r)
	p.record(who, "", "plan.outcome", out, err)
	p.log.Info("plan run ended", "plan", id, "kind", kind, "actor", who, "state", out.State, "verify_ms", out.VerifyMillis, "err", err)
	p.notify()
	return out, nil
}

func (p *Plans) snap(r *planRun) api.PlanRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.snapshot()
}

func (p *Plans) notify() {
	if p.changed != nil {
		p.changed()
	}
}

// execute makes the run's change.
func (p *Plans) execute(ctx context.Context, id, kind string, params map[string]string, app, name string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	update := func(fn func(*Stream)) error {
		_, err := p.reg.Update(ctx, app, name, func(s *Stream) error { fn(s); return nil })
		return err
	}
	switch kind {
	case api.PlanStopEncryption:
		return update(func(s *Stream) { s.Encryption = false })
	case api.PlanForceFeed:
		return update(func(s *Stream) { s.FeedPolicy = params["feed"] })
	case api.PlanMoveUnit:
		return update(func(s *Stream) { s.ServeUnit = params["unit"] })
	case api.PlanBlacklistVendor:
		return p.media.Blacklist(ctx, params["vendor"], params["region"], params["isp"], "plan "+id)
	case api.PlanDrainNode:
		return RequestDrain(ctx, p.st, params["node"], true)
	}
	return fmt.Errorf("kind %q", kind)
}

// verifyPoll is how often a verification looks again.
const verifyPoll = 50 * time.Millisecond

// verify waits until the run's effect shows, at most cfg.VerifyTimeout.
func (p *Plans) verify(ctx context.Context, kind string, params map[string]string, app, name string, confirmed time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.VerifyTimeout)
	defer cancel()
	path := app + "/" + name
	check := func() error {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		defer ccancel()
		switch kind {
		case api.PlanStopEncryption:
			return p.media.OutputsClear(cctx, app, name)
		case api.PlanBlacklistVendor:
			if p.media.Dispatches(params["vendor"], params["region"], params["isp"]) {
				return fmt.Errorf("dispatch still returns %s in %s", params["vendor"], bucketName(params["region"], params["isp"]))
			}
			return nil
		case api.PlanForceFeed:
			return p.feedShown(cctx, path, params["feed"], confirmed)
		case api.PlanMoveUnit:
			serving, err := p.media.Serving(cctx, app, name)
			if err != nil {
				return err
			}
			var wrong []string
			if !serving[params["unit"]] {
				wrong = append(wrong, "unit "+params["unit"]+" does not serve it (not live there?)")
			}
			for _, u := range sortedKeys(serving) {
				if (u == params["unit"]) != serving[u] {
					verb := "refuses"
					if serving[u] {
						verb = "serves"
					}
					wrong = append(wrong, "unit "+u+" "+verb)
				}
			}
			if len(wrong) > 0 {
				return errors.New(strings.Join(wrong, "; "))
			}
			return nil
		case api.PlanDrainNode:
			n, err := p.node(cctx, params["node"])
			if err != nil {
				return err
			}
			if n.State != api.NodeDraining && n.State != api.NodeDrained {
				return fmt.Errorf("node %s is %s", n.ID, n.State)
			}
			return nil
		}
		return fmt.Errorf("kind %q", kind)
	}
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(verifyPoll):
		}
	}
}

// feedShown checks that every unit reporting path, in a report made after
// confirmed, applies feed (and shows it, unless auto).
func (p *Plans) feedShown(ctx context.Context, path, feed string, confirmed time.Time) error {
	units, err := p.reg.Units(ctx)
	if err != nil {
		return err
	}
	us := units[path]
	if len(us) == 0 {
		return fmt.Errorf("no unit reports %s live", path)
	}
	var wrong []string
	for _, u := range us {
		switch {
		case u.ReportedAt.Before(confirmed):
			wrong = append(wrong, "unit "+u.Unit+" has not reported since")
		case u.Policy != feed:
			wrong = append(wrong, "unit "+u.Unit+" policy "+u.Policy)
		case feed != api.FeedAuto && u.Active != feed:
			wrong = append(wrong, "unit "+u.Unit+" shows "+u.Active)
		}
	}
	if len(wrong) > 0 {
		return errors.New(strings.Join(wrong, "; "))
	}
	return nil
}

// record adds a plan entry of the run to the audit log.
func (p *Plans) record(actor, role, action string, r api.PlanRun, err error) {
	p.mu.Lock()
	add := p.audit
	p.mu.Unlock()
	if add == nil {
		return
	}
	id, _ := NewToken()
	e := api.AuditEntry{ID: id, Time: p.now().UTC(), Actor: actor, Role: role, Action: action, Target: "plan/" + r.ID,
		Outcome: r.State, Detail: planDetail(r)}
	if err != nil {
		e.Detail["error"] = err.Error()
	}
	p.log.Info("audit", "audit", action, "actor", actor, "target", e.Target, "state", r.State)
	add(e)
}

// planDetail is what the audit keeps of a run.
func planDetail(r api.PlanRun) map[string]string {
	d := map[string]string{"kind": r.Kind, "state": r.State, "preview": r.Preview.Summary,
		"players": strconv.Itoa(r.Preview.Players), "drill": strconv.FormatBool(r.Drill)}
	for k, v := range r.Params {
		d["param."+k] = v
	}
	if r.VerifyMillis != nil {
		d["verify_ms"] = strconv.FormatInt(*r.VerifyMillis, 10)
	}
	if r.Error != "" {
		d["error"] = r.Error
	}
	return d
}

// caller returns who made r (set by authenticate).
func caller(r *http.Request) principal {
	who, _ := r.Context().Value(principalKey{}).(principal)
	return who
}

func (p *Plans) fail(w http.ResponseWriter, err error) {
	var pe *planError
	if errors.As(err, &pe) {
		writeError(w, pe.code, pe.msg)
		return
	}
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		p.log.Error("plans: request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func (p *Plans) handleList(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.PlanList{Kinds: p.Kinds(), Runs: p.List()})
}

func (p *Plans) handleGet(w http.ResponseWriter, r *http.Request) {
	run, ok := p.Get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "plan run not found")
		return
	}
	writeJSON(w, http.StatusOK, run)
}

func (p *Plans) handleArm(w http.ResponseWriter, r *http.Request) {
	var req api.PlanRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	who := caller(r)
	noteAudit(r, "plan.arm", "plan/", "kind", req.Kind, "drill", req.Drill)
	run, err := p.Arm(r.Context(), who.name, req)
	if err != nil {
		noteAudit(r, "plan.arm", "plan/", "kind", req.Kind, "error", err.Error())
		p.fail(w, err)
		return
	}
	kv := []any{}
	for k, v := range planDetail(run) {
		kv = append(kv, k, v)
	}
	noteAudit(r, "plan.arm", "plan/"+run.ID, kv...)
	writeJSON(w, http.StatusCreated, run)
}

func (p *Plans) handleConfirm(w http.ResponseWriter, r *http.Request) {
	var req api.PlanConfirm
	if !decodeJSON(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	noteAudit(r, "plan.confirm", "plan/"+id)
	run, err := p.Confirm(r.Context(), id, caller(r).name, req.Token)
	if err != nil {
		noteAudit(r, "plan.confirm", "plan/"+id, "error", err.Error())
		p.fail(w, err)
		return
	}
	kv := []any{}
	for k, v := range planDetail(run) {
		kv = append(kv, k, v)
	}
	noteAudit(r, "plan.confirm", "plan/"+id, kv...)
	writeJSON(w, http.StatusOK, run)
}

func (p *Plans) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	noteAudit(r, "plan.cancel", "plan/"+id)
	run, err := p.Cancel(id, caller(r).name)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}
