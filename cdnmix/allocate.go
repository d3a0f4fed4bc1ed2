package cdnmix

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Tier orders scores: every vendor under its commit scores above every
// vendor over it, and an excluded vendor scores nothing.
type Tier uint8

// Tiers, worst first.
const (
	TierExcluded    Tier = iota // disabled, blacklisted, not covering or at ceiling
	TierOverCommit              // load at or over commit, under ceiling
	TierUnderCommit             // load under commit
)

func (t Tier) String() string {
	switch t {
	case TierUnderCommit:
		return "under_commit"
	case TierOverCommit:
		return "over_commit"
	default:
		return "excluded"
	}
}

// MarshalText makes tiers readable in JSON.
func (t Tier) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (t *Tier) UnmarshalText(b []byte) error {
	switch string(b) {
	case "under_commit":
		*t = TierUnderCommit
	case "over_commit":
		*t = TierOverCommit
	case "excluded":
		*t = TierExcluded
	default:
		return fmt.Errorf("tier %q unknown", b)
	}
	return nil
}

// Score is one vendor's score in one bucket. Scores compare by Tier, then
// Value. Within the best tier present in a bucket, the dispatch ratio of a
// vendor is its Value over the sum of Values; vendors in lower tiers get
// ratio 0 but stay in the candidate list for client failover.
//
// Value, in Mbps weighted by a quality factor q in [QualityFloor, 1]:
//
//	under commit: q × remaining commit × (1 + CeilingTilt × remaining ceiling / ceiling)
//	over commit:  q × remaining ceiling
//
// so commits fill in proportion to what is left of them (all commits fill
// at about the same time, and a vendor close to its commit gets little),
// tilted towards vendors with more room above it; then ceilings fill the
// same way.
type Score struct {
	Tier   Tier    `json:"tier"`
	Value  float64 `json:"value"`
	Reason string  `json:"reason,omitempty"` // why excluded
}

// Less reports whether s ranks below o.
func (s Score) Less(o Score) bool {
	if s.Tier != o.Tier {
		return s.Tier < o.Tier
	}
	return s.Value < o.Value
}

// scoreInput is everything the score of one vendor in one bucket depends on.
type scoreInput struct {
	Enabled, Covered, Blacklisted bool
	Limits                        Limits  // of the pool the bucket draws from
	LoadMbps                      float64 // max(current, forecast) of that pool
	Quality                       float64 // in [floor, 1]
}

type scoreParams struct {
	ceilingTilt float64 // weight of the remaining ceiling fraction under commit
	headroom    float64 // fraction of the ceiling kept free
}

func scoreVendor(in scoreInput, p scoreParams) Score {
	switch {
	case !in.Enabled:
		return Score{Reason: "disabled"}
	case in.Blacklisted:
		return Score{Reason: "blacklisted"}
	case !in.Covered:
		return Score{Reason: "not covered"}
	}
	ceiling := in.Limits.CeilingMbps * (1 - p.headroom)
	remCeil := ceiling - in.LoadMbps
	if !(remCeil > 0) {
		return Score{Reason: "at ceiling"}
	}
	if remCommit := in.Limits.CommitMbps - in.LoadMbps; remCommit > 0 {
		return Score{Tier: TierUnderCommit, Value: in.Quality * remCommit * (1 + p.ceilingTilt*remCeil/ceiling)}
	}
	return Score{Tier: TierOverCommit, Value: in.Quality * remCeil}
}

// AllocatorConfig configures an Allocator. Zero fields take the defaults
// in brackets.
type AllocatorConfig struct {
	Vendors []Vendor
	// Buckets are computed even without traffic (e.g. 34 provinces × 5
	// ISPs). The any-bucket, buckets seen in observations or blacklist
	// entries, and regions and ISPs named by vendors are always added.
	Buckets []Bucket
	// Observer gives loads and quality; nil means no traffic seen.
	Observer Observer
	// Interval between recomputes in Run [2s].
	Interval time.Duration
	// MinChange: a bucket's ratios are replaced only when one moves by more
	// than this or a vendor starts or stops getting traffic [0.05]; a
	// negative value disables damping.
	MinChange float64
	// CeilingTilt weighs the remaining fraction of the ceiling while under
	// commit [0.5].
	CeilingTilt float64
	// CeilingHeadroom is the fraction of a ceiling treated as full, to
	// absorb the growth between two recomputes [0.02].
	CeilingHeadroom float64
	// MinQualityUsers: quality is trusted from this many users [10].
	MinQualityUsers int
	// StallCap is the stall rate at which quality reaches QualityFloor [0.2].
	StallCap float64
	// QualityFloor is the lowest quality factor [0.01].
	QualityFloor float64
	// Admission, when set, caps what one plan may dispatch: each capacity
	// pool admits only the viewers that fit in its room below the ceiling
	// (room / viewer Mbps / FleetSize) until the next recompute. Between
	// two recomputes an entrance wave can bring more viewers than a
	// ceiling's headroom holds; with admission a pool whose budget is
	// spent is skipped and the others keep their ratios, and a bucket with
	// every budget spent answers "no vendor" instead of overloading one.
	Admission bool
	// DefaultViewerMbps is one viewer's bandwidth where observations do not
	// tell it (no Users observed in the pool) [3].
	DefaultViewerMbps float64
	// FleetSize is the number of dispatcher nodes sharing the vendors; with
	// Admission each node admits 1/FleetSize of a pool's room per plan [1].
	FleetSize int
	// Share, when set, replaces 1/FleetSize: this node's measured share of
	// the fleet's dispatch requests, in (0, 1] (see [FleetView.Share]).
	Share func() float64
	// PendingWindow, when set, makes admission count the viewers this
	// node admitted that the observations do not show yet: a viewer
	// admitted at t counts in full until t+PendingDelay, then fades out
	// over PendingWindow (the bandwidth window, whose mean takes it in
	// as slowly). Without it, the next plan after a wave, built on
	// observations that lag, grants the same room again. A fleet's
	// observations pass through two stages, so its dispatch nodes set it.
	PendingWindow, PendingDelay time.Duration
	// Stale, if set, adds to PendingDelay how far behind the oldest part
	// of the observations is (a stage-one partition whose owner died
	// keeps its last figures until a new owner has caught up).
	Stale func() time.Duration
	// ViewerMbpsHold, when set, makes admission size viewers by the
	// highest estimate of a pool's viewer bandwidth over this long (the
	// quality window), the default counting while there were no users:
	// users are counted over the quality window and bandwidth over the
	// shorter bandwidth window, so right after viewers arrive or leave,
	// bandwidth / users reads low and would admit too many.
	ViewerMbpsHold time.Duration
	// StallRule, if set, enables the automatic stall rule.
	StallRule *StallRuleConfig
	// Now is the clock [time.Now].
	Now    func() time.Time
	Logger *slog.Logger
}

// Allocator turns vendors, observations and blacklists into a [Plan]: per
// region × ISP bucket, each vendor's score and dispatch ratio.
//
// Capacity pools: a vendor's overall commit and ceiling form one pool
// shared by every bucket outside its per-region limits; a region with its
// own limits is a pool of its own shared by that region's ISPs. A pool is
// not split between buckets in advance: its load is the sum over all its
// buckets, every bucket drawing on it sees the same remaining commit and
// ceiling, and so the pool fills from wherever demand comes. Load is
// max(current, forecast) summed over the pool.
//
// Recompute runs every Interval in Run, and at once after SetVendors or a
// blacklist change. The dispatch path reads only the last Plan, through an
// atomic pointer.
type Allocator struct {
	cfg    AllocatorConfig
	log    *slog.Logger
	now    func() time.Time
	params scoreParams
	// blacklist holds the manual entries (control API, SetBlacklist): the
	// ones a node may share with others. auto holds the stall rule's,
	// which each node derives from its own observations and keeps to
	// itself.
	blacklist Blacklist
	auto      Blacklist
	vset      atomic.Pointer[vendorSet]
	plan      atomic.Pointer[Plan]

	mu        sync.Mutex // serializes recomputes and guards what follows
	rule      *stallRule
	poolState map[poolKey]Tier
	admits    map[pendingKey][]admitted // with PendingWindow
	vmHold    map[pendingKey][]vmSample // with ViewerMbpsHold
}

type vmSample struct {
	at   time.Time
	mbps float64
}

// pendingKey names a pool across vendor list changes.
type pendingKey struct{ vendor, region string }

// admitted is what one plan admitted into a pool.
type admitted struct {
	at time.Time
	n  int64
}

// NewAllocator validates cfg and computes a first plan.
func NewAllocator(cfg AllocatorConfig) (*Allocator, error) {
	if cfg.Interval < 0 || cfg.CeilingTilt < 0 || cfg.CeilingHeadroom < 0 || cfg.CeilingHeadroom >= 1 ||
		cfg.MinQualityUsers < 0 || cfg.StallCap < 0 || cfg.QualityFloor < 0 || cfg.QualityFloor > 1 ||
		cfg.DefaultViewerMbps < 0 || cfg.FleetSize < 0 {
		return nil, errors.New("allocator: interval, weights, headroom (< 1) and quality settings must not be negative")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.MinChange == 0 {
		cfg.MinChange = 0.05
	}
	if cfg.CeilingTilt == 0 {
		cfg.CeilingTilt = 0.5
	}
	if cfg.CeilingHeadroom == 0 {
		cfg.CeilingHeadroom = 0.02
	}
	if cfg.MinQualityUsers == 0 {
		cfg.MinQualityUsers = 10
	}
	if cfg.StallCap == 0 {
		cfg.StallCap = 0.2
	}
	if cfg.QualityFloor == 0 {
		cfg.QualityFloor = 0.01
	}
	if cfg.DefaultViewerMbps == 0 {
		cfg.DefaultViewerMbps = 3
	}
	if cfg.FleetSize == 0 {
		cfg.FleetSize = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Allocator{
		cfg:       cfg,
		log:       cfg.Logger.With("unit", "cdnmix"),
		now:       cfg.Now,
		params:    scoreParams{ceilingTilt: cfg.CeilingTilt, headroom: cfg.CeilingHeadroom},
		poolState: make(map[poolKey]Tier),
	}
	if cfg.StallRule != nil {
		r, err := newStallRule(*cfg.StallRule)
		if err != nil {
			return nil, fmt.Errorf("allocator: %w", err)
		}
		a.rule = r
	}
	vs, err := compileVendors(cfg.Vendors)
	if err != nil {
		return nil, fmt.Errorf("allocator: %w", err)
	}
	a.vset.Store(vs)
	a.Recompute(a.now())
	return a, nil
}

// Run recomputes every Interval until ctx ends.
func (a *Allocator) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.Recompute(a.now())
		}
	}
}

// Plan returns the last computed plan (never nil).
func (a *Allocator) Plan() *Plan { return a.plan.Load() }

// Interval returns the recompute period.
func (a *Allocator) Interval() time.Duration { return a.cfg.Interval }

// SetVendors validates and replaces the vendor list, then recomputes.
func (a *Allocator) SetVendors(vs []Vendor) error {
	set, err := compileVendors(vs)
	if err != nil {
		return err
	}
	a.vset.Store(set)
	a.log.Info("vendors set", "vendors", len(vs), "version", set.version)
	a.Recompute(a.now())
	return nil
}

// Vendors returns a copy of the vendor list.
func (a *Allocator) Vendors() []Vendor {
	vs := a.vset.Load()
	out := make([]Vendor, len(vs.list))
	for i, v := range vs.list {
		out[i] = v.Vendor.clone()
	}
	return out
}

// AddBlacklist adds or replaces a manual entry and recomputes at once.
func (a *Allocator) AddBlacklist(e BlacklistEntry) error {
	if err := a.blacklist.Add(e); err != nil {
		return err
	}
	a.log.Info("blacklist add", "vendor", e.Vendor, "bucket", Bucket{e.Region, e.ISP}.String(), "until", e.Until, "reason", e.Reason)
	a.Recompute(a.now())
	return nil
}

// RemoveBlacklist removes the entries for exactly vendor, region and ISP,
// manual and automatic, and recomputes at once; it reports whether there
// was one.
func (a *Allocator) RemoveBlacklist(vendor, region, isp string) bool {
	manual, auto := a.removeBlacklist(vendor, region, isp)
	return manual || auto
}

// removeBlacklist is RemoveBlacklist reporting which list had the entry.
func (a *Allocator) removeBlacklist(vendor, region, isp string) (manual, auto bool) {
	manual = a.blacklist.Remove(vendor, region, isp)
	auto = a.auto.Remove(vendor, region, isp)
	if manual || auto {
		a.log.Info("blacklist remove", "vendor", vendor, "bucket", Bucket{region, isp}.String(), "automatic", auto && !manual)
		a.Recompute(a.now())
	}
	return manual, auto
}

// SetBlacklist replaces the manual entries with es and recomputes at once;
// the stall rule's entries stay. Entries keep their Until: one that has
// ended already is dropped.
func (a *Allocator) SetBlacklist(es []BlacklistEntry) error {
	if err := a.blacklist.Replace(es); err != nil {
		return err
	}
	a.log.Info("blacklist set", "entries", len(es))
	a.Recompute(a.now())
	return nil
}

// Blacklist returns the active entries, manual and automatic.
func (a *Allocator) Blacklist() []BlacklistEntry {
	now := a.now()
	out := append(a.blacklist.List(now), a.auto.List(now)...)
	sortEntries(out)
	return out
}

// ManualBlacklist returns the active manual entries (those of the control
// API and SetBlacklist, not the stall rule's).
func (a *Allocator) ManualBlacklist() []BlacklistEntry { return a.blacklist.List(a.now()) }

type poolKey struct {
	vendor int
	region string // "" = the overall pool
}

type poolLoad struct {
	cur, forecast float64
	users         float64 // viewers behind userMbps
	userMbps      float64 // Mbps of the observations that count users
}

// viewerMbps estimates one viewer's bandwidth in the pool.
func (p poolLoad) viewerMbps(def float64) float64 {
	if p.users >= 1 && p.userMbps > 0 {
		return p.userMbps / p.users
	}
	return def
}

func (p poolLoad) load() float64 { return max(p.cur, p.forecast) }

// qualityAgg sums quality over the observations that fall in a bucket.
type qualityAgg struct {
	users, stalled, success float64
}

func (q *qualityAgg) add(ob Observation) {
	u := float64(ob.Users)
	q.users += u
	q.stalled += u * clamp01(ob.StallRate)
	q.success += u * clamp01(ob.PullSuccess)
}

func (a *Allocator) quality(q qualityAgg) float64 {
	if q.users < float64(a.cfg.MinQualityUsers) {
		return 1
	}
	stall := q.stalled / q.users
	f := (q.success / q.users) * max(0, 1-stall/a.cfg.StallCap)
	return max(f, a.cfg.QualityFloor)
}

func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return min(x, 1)
}

// Recompute builds and publishes a new plan for time now and returns it.
func (a *Allocator) Recompute(now time.Time) *Plan {
	a.mu.Lock()
	defer a.mu.Unlock()
	vs := a.vset.Load()
	var obs map[Key]Observation
	if a.cfg.Observer != nil {
		obs = a.cfg.Observer.Snapshot()
	}
	a.applyStallRule(now, obs)
	a.blacklist.Expire(now)
	a.auto.Expire(now)
	bl := append(a.blacklist.List(now), a.auto.List(now)...)

	pools := make(map[poolKey]poolLoad, len(vs.list))
	qual := make(map[Key]*qualityAgg, len(obs)*2)
	addQ := func(k Key, ob Observation) {
		q := qual[k]
		if q == nil {
			q = &qualityAgg{}
			qual[k] = q
		}
		q.add(ob)
	}
	for k, ob := range obs {
		vi, ok := vs.byName[k.Vendor]
		if !ok {
			continue
		}
		pk := vs.list[vi].pool(k.Bucket.Region)
		pl := pools[pk]
		pl.cur += max(ob.Mbps, 0)
		pl.forecast += max(ob.ForecastMbps, 0)
		if ob.Users > 0 {
			pl.users += float64(ob.Users)
			pl.userMbps += max(ob.Mbps, 0)
		}
		pools[pk] = pl
		// Quality for the bucket itself and the coarser buckets above it.
		r, i := k.Bucket.Region, k.Bucket.ISP
		addQ(k, ob)
		if i != "" {
			addQ(Key{k.Vendor, Bucket{r, ""}}, ob)
		}
		if r != "" {
			addQ(Key{k.Vendor, Bucket{"", i}}, ob)
		}
		if r != "" && i != "" {
			addQ(Key{k.Vendor, Bucket{}}, ob)
		}
	}

	prev := a.plan.Load()
	if prev != nil && prev.vendors != vs {
		prev = nil // vendor indices changed: no damping across a vendor change
	}
	nv := len(vs.list)

	// Everything about a vendor in a bucket; loads are per pool.
	type work struct {
		b      Bucket
		in     []scoreInput
		scores []Score
		ratios []float64
	}
	var works []*work
	for b := range a.bucketSet(vs, obs, bl) {
		w := &work{b: b, in: make([]scoreInput, nv), scores: make([]Score, nv), ratios: make([]float64, nv)}
		for vi, v := range vs.list {
			q := 1.0
			if qa := qual[Key{v.Name, b}]; qa != nil {
				q = a.quality(*qa)
			}
			w.in[vi] = scoreInput{
				Enabled:     v.Enabled,
				Covered:     v.Coverage.Covers(b),
				Blacklisted: blocked(bl, v.Name, b),
				Limits:      v.limits(b.Region),
				Quality:     q,
			}
		}
		works = append(works, w)
	}
	loads := make(map[poolKey]float64, len(pools))
	for pk, pl := range pools {
		loads[pk] = pl.load()
	}
	for _, w := range works {
		best := TierExcluded
		for vi, v := range vs.list {
			w.in[vi].LoadMbps = loads[v.pool(w.b.Region)]
			w.scores[vi] = scoreVendor(w.in[vi], a.params)
			best = max(best, w.scores[vi].Tier)
		}
		sum := 0.0
		for _, s := range w.scores {
			if s.Tier == best {
				sum += s.Value
			}
		}
		for vi, s := range w.scores {
			if best != TierExcluded && s.Tier == best && sum > 0 {
				w.ratios[vi] = s.Value / sum
			}
		}
	}

	plan := &Plan{At: now, vendors: vs, obs: obs, buckets: make(map[Bucket]*BucketPlan, len(works))}
	if a.cfg.Admission {
		vm := a.viewerMbps(now, vs, pools)
		plan.budgets = a.budgets(vs, loads, prev, obs, a.pending(now, vs, prev, vm), vm)
	}
	for _, w := range works {
		bp := &BucketPlan{Bucket: w.b, Candidates: make([]Candidate, nv), ratios: w.ratios}
		if plan.budgets != nil {
			bp.budgets = make([]*budget, nv)
			for vi, v := range vs.list {
				bp.budgets[vi] = plan.budgets[v.pool(w.b.Region)]
			}
		}
		for vi, v := range vs.list {
			bp.Candidates[vi] = Candidate{Vendor: v.Name, Score: w.scores[vi], index: vi}
		}
		if old := prev.bucket(w.b); old != nil && !a.moved(old.ratios, bp.ratios) {
			bp.ratios, bp.wrr = old.ratios, old.wrr
		} else {
			bp.wrr = newWRR(bp.ratios)
		}
		for vi := range bp.Candidates {
			bp.Candidates[vi].Ratio = bp.ratios[vi]
		}
		slices.SortStableFunc(bp.Candidates, func(x, y Candidate) int {
			if c := cmp.Compare(y.Score.Tier, x.Score.Tier); c != 0 {
				return c
			}
			return cmp.Compare(y.Score.Value, x.Score.Value)
		})
		for _, c := range bp.Candidates {
			if c.Score.Tier != TierExcluded {
				bp.live++
			}
		}
		plan.buckets[w.b] = bp
	}
	plan.Pools = a.poolStatus(vs, pools, loads, plan.budgets)
	a.plan.Store(plan)
	return plan
}

// budgets sizes each pool's admission budget for a new plan: the viewers
// that fit between its load and its ceiling (less headroom), split across
// the fleet. When the observations are the same as the previous plan's
// (a recompute after a blacklist or vendor change), the viewers admitted
// since are not in the load yet, so they are carried and subtracted.
func (a *Allocator) budgets(vs *vendorSet, loads map[poolKey]float64, prev *Plan, obs map[Key]Observation, pending, vm map[poolKey]float64) map[poolKey]*budget {
	same := prev != nil && prev.budgets != nil && maps.Equal(prev.obs, obs)
	out := make(map[poolKey]*budget, len(vs.list))
	share := 1 / float64(a.cfg.FleetSize)
	if a.cfg.Share != nil {
		if s := a.cfg.Share(); s > 0 && s <= 1 {
			share = s
		}
	}
	for vi, v := range vs.list {
		for _, r := range append([]string{""}, slices.Collect(maps.Keys(v.Regions))...) {
			pk := poolKey{vi, r}
			lim := v.limits(r)
			room := lim.CeilingMbps*(1-a.cfg.CeilingHeadroom) - loads[pk]
			n := int64(0)
			if mine := room*share - pending[pk]; room > 0 && mine > 0 {
				n = int64(mine / vm[pk])
			}
			b := &budget{}
			if old := prev.budgetOf(pk); same && old != nil {
				b.carried = old.carried + old.taken()
			}
			b.granted = max(0, n-b.carried)
			b.left.Store(b.granted)
			out[pk] = b
		}
	}
	return out
}

// viewerMbps returns the bandwidth admission counts per viewer of each
// pool: the current estimate, or with ViewerMbpsHold the highest over
// that long.
func (a *Allocator) viewerMbps(now time.Time, vs *vendorSet, pools map[poolKey]poolLoad) map[poolKey]float64 {
	out := make(map[poolKey]float64, len(pools)+len(vs.list))
	if a.cfg.ViewerMbpsHold > 0 && a.vmHold == nil {
		a.vmHold = make(map[pendingKey][]vmSample)
	}
	seen := make(map[pendingKey]bool)
	for vi, v := range vs.list {
		for _, r := range append([]string{""}, slices.Collect(maps.Keys(v.Regions))...) {
			pk := poolKey{vi, r}
			cur := pools[pk].viewerMbps(a.cfg.DefaultViewerMbps)
			out[pk] = cur
			if a.cfg.ViewerMbpsHold <= 0 {
				continue
			}
			k := pendingKey{v.Name, r}
			seen[k] = true
			list := append(a.vmHold[k], vmSample{now, cur})
			i := 0
			for i < len(list)-1 && now.Sub(list[i].at) > a.cfg.ViewerMbpsHold {
				i++
			}
			list = list[i:]
			a.vmHold[k] = list
			for _, s := range list {
				out[pk] = max(out[pk], s.mbps)
			}
		}
	}
	for k := range a.vmHold {
		if !seen[k] {
			delete(a.vmHold, k)
		}
	}
	return out
}

// pending records what the previous plan admitted and returns, per pool,
// the Mbps of this node's admitted viewers the observations do not show
// yet (see PendingWindow); nil without PendingWindow.
func (a *Allocator) pending(now time.Time, vs *vendorSet, prev *Plan, vm map[poolKey]float64) map[poolKey]float64 {
	if a.cfg.PendingWindow <= 0 {
		return nil
	}
	if a.admits == nil {
		a.admits = make(map[pendingKey][]admitted)
	}
	if prev != nil && prev.budgets != nil {
		for pk, b := range prev.budgets {
			if n := b.taken(); n > 0 && pk.vendor < len(prev.vendors.list) {
				k := pendingKey{prev.vendors.list[pk.vendor].Name, pk.region}
				a.admits[k] = append(a.admits[k], admitted{now, n}) // taken by now: counted late, never early
			}
		}
	}
	delay := a.cfg.PendingDelay
	if a.cfg.Stale != nil {
		delay += max(0, a.cfg.Stale())
	}
	horizon := delay + a.cfg.PendingWindow
	out := make(map[poolKey]float64)
	for k, list := range a.admits {
		i := 0
		for i < len(list) && now.Sub(list[i].at) > horizon {
			i++
		}
		list = list[i:]
		if len(list) == 0 {
			delete(a.admits, k)
			continue
		}
		a.admits[k] = list
		vi, ok := vs.byName[k.vendor]
		if !ok {
			continue
		}
		pk := poolKey{vi, k.region}
		for _, ad := range list {
			seen := clamp01(float64(now.Sub(ad.at)-delay) / float64(a.cfg.PendingWindow))
			out[pk] += float64(ad.n) * vm[pk] * (1 - seen)
		}
	}
	return out
}

func (a *Allocator) applyStallRule(now time.Time, obs map[Key]Observation) {
	if a.rule == nil {
		return
	}
	for _, al := range a.rule.check(now, obs) {
		if al.Blacklisted {
			e := BlacklistEntry{Vendor: al.Vendor, Region: al.Region, ISP: al.ISP,
				Until: now.Add(a.rule.cfg.TTL), Reason: "stall rule: " + al.String()}
			// Per node: the rule sees this node's observations only, and
			// its entries are neither reported to WithBlacklistChanged
			// nor replaced by SetBlacklist.
			if err := a.auto.Add(e); err != nil {
				a.log.Error("stall rule blacklist", "vendor", al.Vendor, "err", err)
			}
		}
		if a.rule.cfg.OnAlert != nil {
			a.rule.cfg.OnAlert(al)
		} else {
			a.log.Warn("stall rule", "vendor", al.Vendor, "bucket", Bucket{al.Region, al.ISP}.String(),
				"stall_rate", al.StallRate, "users", al.Users, "minutes", al.Minutes, "blacklisted", al.Blacklisted)
		}
	}
}

// moved reports whether new ratios differ enough from old to replace them.
func (a *Allocator) moved(old, cur []float64) bool {
	if a.cfg.MinChange < 0 || len(old) != len(cur) {
		return true
	}
	for i := range cur {
		if (old[i] > 0) != (cur[i] > 0) || math.Abs(old[i]-cur[i]) > a.cfg.MinChange {
			return true
		}
	}
	return false
}

func blocked(bl []BlacklistEntry, vendor string, b Bucket) bool {
	for _, e := range bl {
		if e.matches(vendor, b) {
			return true
		}
	}
	return false
}

func (a *Allocator) bucketSet(vs *vendorSet, obs map[Key]Observation, bl []BlacklistEntry) map[Bucket]struct{} {
	set := make(map[Bucket]struct{}, len(a.cfg.Buckets)+64)
	set[Bucket{}] = struct{}{}
	for _, b := range a.cfg.Buckets {
		set[b] = struct{}{}
	}
	for k := range obs {
		set[k.Bucket] = struct{}{}
	}
	for _, e := range bl {
		set[Bucket{e.Region, e.ISP}] = struct{}{}
	}
	for _, v := range vs.list {
		for r := range v.Regions {
			set[Bucket{Region: r}] = struct{}{}
		}
		for _, r := range v.Coverage.Regions {
			set[Bucket{Region: r}] = struct{}{}
		}
		for _, i := range v.Coverage.ISPs {
			set[Bucket{ISP: i}] = struct{}{}
		}
	}
	return set
}

// PoolStatus is the state of one capacity pool in a plan.
type PoolStatus struct {
	Vendor       string  `json:"vendor"`
	Region       string  `json:"region,omitempty"` // "" = the overall pool
	CommitMbps   float64 `json:"commit_mbps"`
	CeilingMbps  float64 `json:"ceiling_mbps"`
	Mbps         float64 `json:"mbps"`
	ForecastMbps float64 `json:"forecast_mbps"`
	// LoadMbps is the load scored: max(current, forecast).
	LoadMbps float64 `json:"load_mbps"`
	// ViewerMbps is the bandwidth of one viewer (observed, or the default)
	// and Budget the viewers the pool was granted for this plan on this
	// dispatcher node; -1 means no limit (admission off).
	ViewerMbps float64 `json:"viewer_mbps"`
	Budget     int64   `json:"budget"`
	State      Tier    `json:"state"`
}

func (a *Allocator) poolStatus(vs *vendorSet, pools map[poolKey]poolLoad, loads map[poolKey]float64, budgets map[poolKey]*budget) []PoolStatus {
	var out []PoolStatus
	for vi, v := range vs.list {
		regions := slices.Sorted(maps.Keys(v.Regions))
		for _, r := range append([]string{""}, regions...) {
			pk := poolKey{vi, r}
			pl := pools[pk]
			lim := v.limits(r)
			s := scoreVendor(scoreInput{Enabled: true, Covered: true, Limits: lim, LoadMbps: loads[pk], Quality: 1}, a.params)
			ps := PoolStatus{Vendor: v.Name, Region: r, CommitMbps: lim.CommitMbps,
				CeilingMbps: lim.CeilingMbps, Mbps: pl.cur, ForecastMbps: pl.forecast, LoadMbps: loads[pk],
				ViewerMbps: pl.viewerMbps(a.cfg.DefaultViewerMbps), Budget: -1, State: s.Tier}
			if b := budgets[pk]; b != nil {
				ps.Budget = b.granted
			}
			out = append(out, ps)
			if old, ok := a.poolState[pk]; ok && old != s.Tier || !ok && s.Tier != TierUnderCommit {
				a.log.Info("vendor pool state", "vendor", v.Name, "region", r, "state", s.Tier.String(),
					"mbps", pl.cur, "forecast_mbps", pl.forecast, "commit_mbps", lim.CommitMbps, "ceiling_mbps", lim.CeilingMbps)
			}
			a.poolState[pk] = s.Tier
		}
	}
	return out
}

// Candidate is one vendor in one bucket of a plan.
type Candidate struct {
	Vendor string  `json:"vendor"`
	Score  Score   `json:"score"`
	Ratio  float64 `json:"ratio"` // dispatch ratio, 0..1
	index  int     // into Plan.vendors.list
}

// BucketPlan is the allocation for one bucket.
type BucketPlan struct {
	Bucket Bucket
	// Candidates holds every vendor, best score first; excluded ones last.
	Candidates []Candidate
	live       int
	ratios     []float64 // by vendor index
	wrr        *wrr
	budgets    []*budget // by vendor index; nil without admission
}

// Live returns the candidates that are not excluded, best first.
func (bp *BucketPlan) Live() []Candidate { return bp.Candidates[:bp.live] }

// Pick chooses a vendor by smooth weighted round-robin over the ratios.
// With admission, a vendor whose pool budget is spent is skipped.
func (bp *BucketPlan) Pick() (vendor string, ok bool) {
	i := bp.pick(1)
	if i < 0 {
		return "", false
	}
	for _, c := range bp.Candidates {
		if c.index == i {
			return c.Vendor, true
		}
	}
	return "", false
}

// pick returns the vendor index for n viewers, charging their pool's
// budget, or -1.
func (bp *BucketPlan) pick(n int64) int { return bp.wrr.next(bp.budgets, n) }

// Plan is one immutable allocation result. Only the round-robin state
// inside each bucket changes, under its own lock.
type Plan struct {
	At      time.Time
	Pools   []PoolStatus
	vendors *vendorSet
	buckets map[Bucket]*BucketPlan
	obs     map[Key]Observation // the observations it was built from
	budgets map[poolKey]*budget // nil without admission
}

func (p *Plan) budgetOf(pk poolKey) *budget {
	if p == nil {
		return nil
	}
	return p.budgets[pk]
}

// VendorVersion identifies the vendor list the plan was built from; it is
// the fallback.json version.
func (p *Plan) VendorVersion() uint64 { return p.vendors.version }

// Bucket returns the plan of exactly b.
func (p *Plan) Bucket(b Bucket) (*BucketPlan, bool) {
	bp, ok := p.buckets[b]
	return bp, ok
}

func (p *Plan) bucket(b Bucket) *BucketPlan {
	if p == nil {
		return nil
	}
	return p.buckets[b]
}

// Buckets returns the buckets of the plan, sorted.
func (p *Plan) Buckets() []Bucket {
	out := slices.Collect(maps.Keys(p.buckets))
	slices.SortFunc(out, func(x, y Bucket) int {
		return cmp.Or(cmp.Compare(x.Region, y.Region), cmp.Compare(x.ISP, y.ISP))
	})
	return out
}

// Lookup returns the plan for a client in b: the bucket itself, else its
// region, else its ISP, else the any-bucket.
func (p *Plan) Lookup(b Bucket) *BucketPlan {
	if bp := p.buckets[b]; bp != nil {
		return bp
	}
	if b.ISP != "" {
		if bp := p.buckets[Bucket{Region: b.Region}]; bp != nil {
			return bp
		}
	}
	if b.Region != "" {
		if bp := p.buckets[Bucket{ISP: b.ISP}]; bp != nil {
			return bp
		}
	}
	return p.buckets[Bucket{}]
}
