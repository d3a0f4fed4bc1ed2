package cdnmix

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Scenario is a simulator input, usually a YAML file (see
// testdata/entrance-wave.yaml). Durations are Go durations ("30s").
// Zero fields take the defaults in brackets.
type Scenario struct {
	Name     string        `yaml:"name"`
	Step     time.Duration `yaml:"step"`     // simulated tick [1s]
	Duration time.Duration `yaml:"duration"` // required
	// Recompute is the allocator period [2s].
	Recompute time.Duration `yaml:"recompute"`
	// ForecastPeriods: the aggregator's Holt forecast looks this many
	// recompute periods ahead [3]; HoltAlpha [0.5] and HoltBeta [0.3].
	ForecastPeriods float64 `yaml:"forecast_periods"`
	HoltAlpha       float64 `yaml:"holt_alpha"`
	HoltBeta        float64 `yaml:"holt_beta"`
	// BitrateMbps per viewer (required).
	BitrateMbps float64 `yaml:"bitrate_mbps"`
	// ChurnPerMinute is the fraction of viewers that reconnect (and so go
	// through dispatch again) per minute [0.05]. Stalled viewers reconnect
	// on top of that, at their vendor's stall rate per minute.
	ChurnPerMinute float64 `yaml:"churn_per_minute"`
	// BaseStallRate is every vendor's stall rate outside events [0.005].
	BaseStallRate float64 `yaml:"base_stall_rate"`
	// ViewersPerDispatch groups viewers into one simulated dispatch
	// [peak audience / 2,000,000, at least 1].
	ViewersPerDispatch int `yaml:"viewers_per_dispatch"`
	// MinChange and CeilingHeadroom are passed to the allocator.
	MinChange       float64          `yaml:"min_change"`
	CeilingHeadroom float64          `yaml:"ceiling_headroom"`
	StallRule       *StallRuleConfig `yaml:"stall_rule"`

	Vendors []Vendor `yaml:"vendors"`
	// Buckets split the audience; shares are normalized.
	Buckets []ScenarioBucket `yaml:"buckets"`
	// Audience is the concurrent viewer curve, linear between points.
	Audience []AudiencePoint `yaml:"audience"`
	Events   []ScenarioEvent `yaml:"events"`
}

// ScenarioBucket is one region × ISP and its share of the audience.
type ScenarioBucket struct {
	Region string  `yaml:"region"`
	ISP    string  `yaml:"isp"`
	Share  float64 `yaml:"share"`
}

// AudiencePoint is a point of the audience curve.
type AudiencePoint struct {
	At      time.Duration `yaml:"at"`
	Viewers float64       `yaml:"viewers"`
}

// ScenarioEvent degrades a vendor from At to Until (0: the end) in the
// buckets matching Region and ISP (empty: all).
type ScenarioEvent struct {
	At          time.Duration `yaml:"at"`
	Until       time.Duration `yaml:"until"`
	Vendor      string        `yaml:"vendor"`
	Region      string        `yaml:"region"`
	ISP         string        `yaml:"isp"`
	StallRate   float64       `yaml:"stall_rate"`
	PullFailure float64       `yaml:"pull_failure"`
}

// Limits that keep a scenario's cost bounded.
const (
	maxSimSteps     = 100_000
	maxSimDispatch  = 50_000_000 // simulated dispatches in one run
	maxSimViewers   = 1e9
	maxSimDimension = 10_000 // vendors × buckets
)

// LoadScenario reads a scenario YAML file.
func LoadScenario(path string) (Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario: %w", err)
	}
	s, err := ParseScenario(b)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// ParseScenario decodes and checks a scenario.
func ParseScenario(b []byte) (Scenario, error) {
	var s Scenario
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return Scenario{}, fmt.Errorf("yaml: %w", err)
	}
	if err := s.normalize(); err != nil {
		return Scenario{}, err
	}
	return s, nil
}

func (s *Scenario) normalize() error {
	if s.Step == 0 {
		s.Step = time.Second
	}
	if s.Recompute == 0 {
		s.Recompute = 2 * time.Second
	}
	if s.ForecastPeriods == 0 {
		s.ForecastPeriods = 3
	}
	if s.HoltAlpha == 0 {
		s.HoltAlpha = 0.5
	}
	if s.HoltBeta == 0 {
		s.HoltBeta = 0.3
	}
	if s.ChurnPerMinute == 0 {
		s.ChurnPerMinute = 0.05
	}
	if s.BaseStallRate == 0 {
		s.BaseStallRate = 0.005
	}
	switch {
	case s.Step < 0 || s.Duration <= 0:
		return errors.New("step must be positive and duration set")
	case s.Duration/s.Step > maxSimSteps:
		return fmt.Errorf("more than %d steps", maxSimSteps)
	case s.Recompute < s.Step:
		return errors.New("recompute must be at least one step")
	case !(s.BitrateMbps > 0):
		return errors.New("bitrate_mbps must be positive")
	case s.ForecastPeriods < 0 || s.HoltAlpha < 0 || s.HoltAlpha > 1 || s.HoltBeta < 0 || s.HoltBeta > 1:
		return errors.New("forecast_periods must not be negative, holt_alpha and holt_beta in [0, 1]")
	case s.ChurnPerMinute < 0 || s.ChurnPerMinute > 1 || s.BaseStallRate < 0 || s.BaseStallRate > 1:
		return errors.New("churn_per_minute and base_stall_rate must be in [0, 1]")
	case s.ViewersPerDispatch < 0:
		return errors.New("viewers_per_dispatch must not be negative")
	case len(s.Vendors) == 0 || len(s.Buckets) == 0 || len(s.Audience) == 0:
		return errors.New("vendors, buckets and audience are required")
	case len(s.Vendors)*len(s.Buckets) > maxSimDimension:
		return fmt.Errorf("more than %d vendor × bucket pairs", maxSimDimension)
	}
	if err := ValidateVendors(s.Vendors); err != nil {
		return err
	}
	total := 0.0
	seen := map[Bucket]bool{}
	for _, b := range s.Buckets {
		if !(b.Share > 0) {
			return fmt.Errorf("bucket %s: share must be positive", Bucket{b.Region, b.ISP})
		}
		if seen[Bucket{b.Region, b.ISP}] {
			return fmt.Errorf("bucket %s listed twice", Bucket{b.Region, b.ISP})
		}
		seen[Bucket{b.Region, b.ISP}] = true
		total += b.Share
	}
	for i := range s.Buckets {
		s.Buckets[i].Share /= total
	}
	peak := 0.0
	for i, p := range s.Audience {
		if i > 0 && p.At <= s.Audience[i-1].At {
			return errors.New("audience points must be in increasing time")
		}
		if p.Viewers < 0 || p.Viewers > maxSimViewers {
			return fmt.Errorf("audience viewers %g out of range", p.Viewers)
		}
		peak = max(peak, p.Viewers)
	}
	if s.ViewersPerDispatch == 0 {
		s.ViewersPerDispatch = max(1, int(math.Ceil(peak/2e6)))
	}
	for _, e := range s.Events {
		if !slices.ContainsFunc(s.Vendors, func(v Vendor) bool { return v.Name == e.Vendor }) {
			return fmt.Errorf("event at %s: unknown vendor %q", e.At, e.Vendor)
		}
		if e.StallRate < 0 || e.StallRate > 1 || e.PullFailure < 0 || e.PullFailure > 1 {
			return fmt.Errorf("event at %s: rates must be in [0, 1]", e.At)
		}
	}
	return nil
}

// viewersAt interpolates the audience curve.
func (s *Scenario) viewersAt(t time.Duration) float64 {
	a := s.Audience
	if t <= a[0].At {
		return a[0].Viewers
	}
	for i := 1; i < len(a); i++ {
		if t <= a[i].At {
			f := float64(t-a[i-1].At) / float64(a[i].At-a[i-1].At)
			return a[i-1].Viewers + f*(a[i].Viewers-a[i-1].Viewers)
		}
	}
	return a[len(a)-1].Viewers
}

// quality returns the stall rate and pull success of vendor in b at t.
func (s *Scenario) quality(vendor string, b Bucket, t time.Duration) (stall, success float64) {
	stall, success = s.BaseStallRate, 1
	for _, e := range s.Events {
		if e.Vendor != vendor || t < e.At || e.Until > 0 && t >= e.Until ||
			e.Region != "" && e.Region != b.Region || e.ISP != "" && e.ISP != b.ISP {
			continue
		}
		stall, success = e.StallRate, 1-e.PullFailure
	}
	return stall, success
}

// SimPool is one capacity pool in a simulation result.
type SimPool struct {
	Vendor string
	Region string // "" = the vendor's overall pool
	Limits Limits
}

// Result is a simulation run: per step, per vendor and bucket, bandwidth
// and how many viewers were dispatched.
type Result struct {
	Scenario Scenario
	Vendors  []string
	Buckets  []Bucket
	Pools    []SimPool
	// PoolOf[v][b] indexes Pools.
	PoolOf [][]int
	// Times[t] is the time of step t; the others are indexed [t][v][b]
	// and [t][pool].
	Times      []time.Duration
	Mbps       [][][]float64
	Dispatched [][][]int64 // viewers
	PoolMbps   [][]float64
	// DemandMbps[t] is the audience's bandwidth; Unserved[t] the viewers
	// waiting for a vendor.
	DemandMbps []float64
	Unserved   []int64
	Alerts     []Alert
}

// Simulate runs the scenario through the real Allocator and smooth WRR in
// simulated time and writes CSV rows to out:
//
//	time_s,vendor,bucket,mbps,commit_mbps,ceiling_mbps
//
// one row per vendor × bucket per step (commit and ceiling of the pool the
// bucket draws from) plus one per vendor pool with bucket "pool:*" (the
// overall pool) or "pool:REGION". Result.WriteSVG draws the chart.
func Simulate(scenario Scenario, out io.Writer) (Result, error) {
	s := scenario
	s.Vendors = slices.Clone(s.Vendors)
	s.Buckets = slices.Clone(s.Buckets)
	if err := s.normalize(); err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}
	nv, nb := len(s.Vendors), len(s.Buckets)
	res := Result{Scenario: s}
	buckets := make([]Bucket, nb)
	for i, b := range s.Buckets {
		buckets[i] = Bucket{b.Region, b.ISP}
	}
	res.Buckets = buckets
	poolIndex := map[poolKey]int{}
	res.PoolOf = make([][]int, nv)
	for vi, v := range s.Vendors {
		res.Vendors = append(res.Vendors, v.Name)
		cv := &compiledVendor{Vendor: v, idx: vi}
		res.PoolOf[vi] = make([]int, nb)
		for bi, b := range buckets {
			pk := cv.pool(b.Region)
			pi, ok := poolIndex[pk]
			if !ok {
				pi = len(res.Pools)
				poolIndex[pk] = pi
				res.Pools = append(res.Pools, SimPool{Vendor: v.Name, Region: pk.region, Limits: cv.limits(pk.region)})
			}
			res.PoolOf[vi][bi] = pi
		}
	}

	epoch := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var now time.Time
	obs := &StaticObserver{}
	var alerts []Alert
	cfg := AllocatorConfig{
		Vendors: s.Vendors, Buckets: buckets, Observer: obs, Interval: s.Recompute,
		MinChange: s.MinChange, CeilingHeadroom: s.CeilingHeadroom,
		Admission: true, DefaultViewerMbps: s.BitrateMbps,
		Now:    func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if s.StallRule != nil {
		rule := *s.StallRule
		rule.OnAlert = func(a Alert) { alerts = append(alerts, a) }
		cfg.StallRule = &rule
	}
	now = epoch
	alloc, err := NewAllocator(cfg)
	if err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}

	unit := int64(s.ViewersPerDispatch)
	units := make([][]int64, nv) // [v][b] viewers in units
	churnAcc := make([][]float64, nv)
	holt := make([][]Holt, nv)
	for vi := range units {
		units[vi] = make([]int64, nb)
		churnAcc[vi] = make([]float64, nb)
		holt[vi] = make([]Holt, nb)
		for bi := range holt[vi] {
			holt[vi][bi] = Holt{Alpha: s.HoltAlpha, Beta: s.HoltBeta}
		}
	}
	pending := make([]int64, nb)
	var plan *Plan
	var dispatches int64
	csv := bufio.NewWriter(out)
	fmt.Fprintln(csv, "time_s,vendor,bucket,mbps,commit_mbps,ceiling_mbps")
	stepsPerRecompute := int(s.Recompute / s.Step)
	bitrate := s.BitrateMbps * float64(unit)

	for step := 0; time.Duration(step)*s.Step <= s.Duration; step++ {
		t := time.Duration(step) * s.Step
		now = epoch.Add(t)
		if step%stepsPerRecompute == 0 {
			snap := make(map[Key]Observation, nv*nb)
			for vi, v := range s.Vendors {
				for bi, b := range buckets {
					mbps := float64(units[vi][bi]) * bitrate
					h := &holt[vi][bi]
					h.Update(mbps)
					stall, success := s.quality(v.Name, b, t)
					users := int(units[vi][bi] * unit)
					snap[Key{v.Name, b}] = Observation{Mbps: mbps, ForecastMbps: max(0, h.Forecast(s.ForecastPeriods)),
						Users: users, StalledUsers: int(float64(users) * stall), StallRate: stall, PullSuccess: success}
				}
			}
			obs.Replace(snap)
			plan = alloc.Recompute(now)
		}

		// Audience changes and reconnects go to pending; pending viewers
		// are dispatched through the plan.
		target := s.viewersAt(t) / float64(unit)
		for bi, sb := range s.Buckets {
			cur := pending[bi]
			for vi := range units {
				cur += units[vi][bi]
			}
			diff := int64(math.Round(target*sb.Share)) - cur
			if diff >= 0 {
				pending[bi] += diff
				continue
			}
			leave := -diff
			take := min(leave, pending[bi])
			pending[bi] -= take
			leave -= take
			if onVendors := cur - pending[bi] - take; leave > 0 && onVendors > 0 {
				frac := float64(leave) / float64(onVendors)
				for vi := range units {
					units[vi][bi] -= min(units[vi][bi], int64(math.Round(float64(units[vi][bi])*frac)))
				}
			}
		}
		for vi, v := range s.Vendors {
			for bi, b := range buckets {
				stall, _ := s.quality(v.Name, b, t)
				churnAcc[vi][bi] += float64(units[vi][bi]) * (s.ChurnPerMinute + stall) * s.Step.Minutes()
				n := min(int64(churnAcc[vi][bi]), units[vi][bi])
				churnAcc[vi][bi] -= float64(n)
				units[vi][bi] -= n
				pending[bi] += n
			}
		}
		disp := make([][]int64, nv)
		for vi := range disp {
			disp[vi] = make([]int64, nb)
		}
		for bi, b := range buckets {
			bp := plan.Lookup(b)
			for pending[bi] > 0 {
				vi := bp.pick(unit)
				if vi < 0 {
					break
				}
				units[vi][bi]++
				disp[vi][bi] += unit
				pending[bi]--
				dispatches++
			}
		}
		if dispatches > maxSimDispatch {
			return Result{}, fmt.Errorf("simulate: more than %d dispatches; raise viewers_per_dispatch", maxSimDispatch)
		}

		// Record.
		mbps := make([][]float64, nv)
		poolMbps := make([]float64, len(res.Pools))
		demand := 0.0
		var unserved int64
		for bi := range buckets {
			unserved += pending[bi] * unit
			demand += float64(pending[bi]) * bitrate
		}
		for vi := range units {
			mbps[vi] = make([]float64, nb)
			for bi := range buckets {
				m := float64(units[vi][bi]) * bitrate
				mbps[vi][bi] = m
				poolMbps[res.PoolOf[vi][bi]] += m
				demand += m
			}
		}
		res.Times = append(res.Times, t)
		res.Mbps = append(res.Mbps, mbps)
		res.Dispatched = append(res.Dispatched, disp)
		res.PoolMbps = append(res.PoolMbps, poolMbps)
		res.DemandMbps = append(res.DemandMbps, demand)
		res.Unserved = append(res.Unserved, unserved)

		ts := strconv.FormatFloat(t.Seconds(), 'f', -1, 64)
		for vi, v := range res.Vendors {
			for bi, b := range buckets {
				l := res.Pools[res.PoolOf[vi][bi]].Limits
				fmt.Fprintf(csv, "%s,%s,%s,%.1f,%g,%g\n", ts, v, b, mbps[vi][bi], l.CommitMbps, l.CeilingMbps)
			}
		}
		for pi, p := range res.Pools {
			name := "pool:*"
			if p.Region != "" {
				name = "pool:" + p.Region
			}
			fmt.Fprintf(csv, "%s,%s,%s,%.1f,%g,%g\n", ts, p.Vendor, name, poolMbps[pi], p.Limits.CommitMbps, p.Limits.CeilingMbps)
		}
	}
	res.Alerts = alerts
	if err := csv.Flush(); err != nil {
		return res, fmt.Errorf("simulate: write csv: %w", err)
	}
	return res, nil
}

// VendorMbps returns vendor vi's bandwidth summed over buckets at step t.
func (r *Result) VendorMbps(t, vi int) float64 {
	sum := 0.0
	for _, m := range r.Mbps[t][vi] {
		sum += m
	}
	return sum
}

// Share returns vendor vi's share of bucket bi's bandwidth at step t.
func (r *Result) Share(t, vi, bi int) float64 {
	total := 0.0
	for v := range r.Mbps[t] {
		total += r.Mbps[t][v][bi]
	}
	if total == 0 {
		return 0
	}
	return r.Mbps[t][vi][bi] / total
}

// VendorSummary is one vendor's figures over a simulation run.
type VendorSummary struct {
	Vendor      string
	CommitMbps  float64 // total over its pools
	CeilingMbps float64
	PeakMbps    float64
	EndMbps     float64
	// OverCeiling counts steps where one of its pools was above its
	// ceiling (should be 0).
	OverCeiling int
}

// Summary returns per-vendor figures and the most viewers left waiting at
// any step.
func (r *Result) Summary() (vendors []VendorSummary, peakUnserved int64) {
	for vi, name := range r.Vendors {
		vs := VendorSummary{Vendor: name}
		for pi, p := range r.Pools {
			if p.Vendor != name {
				continue
			}
			vs.CommitMbps += p.Limits.CommitMbps
			vs.CeilingMbps += p.Limits.CeilingMbps
			for t := range r.Times {
				if r.PoolMbps[t][pi] > p.Limits.CeilingMbps {
					vs.OverCeiling++
				}
			}
		}
		for t := range r.Times {
			vs.PeakMbps = max(vs.PeakMbps, r.VendorMbps(t, vi))
		}
		if n := len(r.Times); n > 0 {
			vs.EndMbps = r.VendorMbps(n-1, vi)
		}
		vendors = append(vendors, vs)
	}
	for _, u := range r.Unserved {
		peakUnserved = max(peakUnserved, u)
	}
	return vendors, peakUnserved
}
