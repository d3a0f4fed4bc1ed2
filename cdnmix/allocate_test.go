package cdnmix

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"
)

var (
	testNow    = time.Unix(1_700_000_000, 0)
	testBucket = Bucket{"GD", "telecom"}
	quietLog   = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func vendor(name string, commit, ceiling float64) Vendor {
	return Vendor{Name: name, FLVBase: "http://" + name + ".example.com", CommitMbps: commit, CeilingMbps: ceiling, Enabled: true}
}

func newTestAllocator(t testing.TB, vs []Vendor, obs map[Key]Observation, buckets ...Bucket) *Allocator {
	t.Helper()
	o := &StaticObserver{}
	o.Replace(obs)
	a, err := NewAllocator(AllocatorConfig{
		Vendors: vs, Buckets: buckets, Observer: o, Logger: quietLog,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func load(mbps float64) Observation { return Observation{Mbps: mbps} }

func quality(mbps float64, users int, stall, success float64) Observation {
	return Observation{Mbps: mbps, Users: users, StallRate: stall, PullSuccess: success}
}

func candidate(t testing.TB, p *Plan, b Bucket, vendor string) Candidate {
	t.Helper()
	bp, ok := p.Bucket(b)
	if !ok {
		t.Fatalf("no bucket %v", b)
	}
	for _, c := range bp.Candidates {
		if c.Vendor == vendor {
			return c
		}
	}
	t.Fatalf("no vendor %s in %v", vendor, b)
	return Candidate{}
}

// TestScoringRules has one row per rule of the issue: vendor x against
// vendor y in testBucket.
func TestScoringRules(t *testing.T) {
	k := func(v string) Key { return Key{v, testBucket} }
	tests := []struct {
		name      string
		x, y      Vendor
		obs       map[Key]Observation
		blacklist bool   // blacklist x in GD
		excluded  string // x is excluded for this reason
		xBetter   bool   // else y must score higher
	}{
		{name: "disabled scores nothing", x: func() Vendor { v := vendor("x", 100, 200); v.Enabled = false; return v }(),
			y: vendor("y", 100, 200), excluded: "disabled"},
		{name: "blacklisted scores nothing", x: vendor("x", 100, 200), y: vendor("y", 100, 200), blacklist: true, excluded: "blacklisted"},
		{name: "not covering the bucket scores nothing", x: func() Vendor { v := vendor("x", 100, 200); v.Coverage.Regions = []string{"SH"}; return v }(),
			y: vendor("y", 100, 200), excluded: "not covered"},
		{name: "at ceiling scores nothing", x: vendor("x", 100, 200), y: vendor("y", 100, 200),
			obs: map[Key]Observation{k("x"): load(200)}, excluded: "at ceiling"},
		{name: "within ceiling headroom scores nothing", x: vendor("x", 100, 200), y: vendor("y", 100, 200),
			obs: map[Key]Observation{k("x"): load(199)}, excluded: "at ceiling"},
		{name: "forecast at ceiling scores nothing", x: vendor("x", 100, 200), y: vendor("y", 100, 200),
			obs: map[Key]Observation{k("x"): {Mbps: 50, ForecastMbps: 250}}, excluded: "at ceiling"},
		{name: "under commit beats over commit", x: vendor("x", 100, 110), y: vendor("y", 10, 100000),
			obs: map[Key]Observation{k("x"): load(99.9), k("y"): load(11)}, xBetter: true},
		{name: "forecast over commit counts as over", x: vendor("x", 100, 1000), y: vendor("y", 100, 1000),
			obs: map[Key]Observation{k("x"): {Mbps: 10, ForecastMbps: 150}, k("y"): load(90)}},
		{name: "under commit: more remaining commit wins", x: vendor("x", 100, 200), y: vendor("y", 100, 200),
			obs: map[Key]Observation{k("x"): load(10), k("y"): load(50)}, xBetter: true},
		{name: "under commit: more remaining ceiling wins", x: vendor("x", 100, 400), y: vendor("y", 100, 200),
			obs: map[Key]Observation{k("x"): load(10), k("y"): load(10)}, xBetter: true},
		{name: "over commit: more remaining ceiling wins", x: vendor("x", 100, 400), y: vendor("y", 100, 300),
			obs: map[Key]Observation{k("x"): load(150), k("y"): load(150)}, xBetter: true},
		{name: "over commit: lower stall rate wins", x: vendor("x", 100, 400), y: vendor("y", 100, 400),
			obs: map[Key]Observation{k("x"): quality(150, 100, 0.01, 1), k("y"): quality(150, 100, 0.08, 1)}, xBetter: true},
		{name: "over commit: higher pull success wins", x: vendor("x", 100, 400), y: vendor("y", 100, 400),
			obs: map[Key]Observation{k("x"): quality(150, 100, 0, 0.99), k("y"): quality(150, 100, 0, 0.8)}, xBetter: true},
		{name: "quality from too few users is ignored", x: vendor("x", 100, 400), y: vendor("y", 100, 400),
			obs: map[Key]Observation{k("x"): quality(150, 3, 0.9, 0.1), k("y"): quality(160, 100, 0, 1)}, xBetter: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAllocator(t, []Vendor{tc.x, tc.y}, tc.obs, testBucket)
			if tc.blacklist {
				if err := a.AddBlacklist(BlacklistEntry{Vendor: "x", Region: "GD"}); err != nil {
					t.Fatal(err)
				}
			}
			p := a.Plan()
			x, y := candidate(t, p, testBucket, "x"), candidate(t, p, testBucket, "y")
			if tc.excluded != "" {
				if x.Score.Tier != TierExcluded || x.Score.Reason != tc.excluded || x.Ratio != 0 {
					t.Fatalf("x: got %+v, want excluded (%s)", x, tc.excluded)
				}
				if y.Ratio != 1 {
					t.Fatalf("y should take everything, got %+v", y)
				}
				return
			}
			if x.Score.Tier == TierExcluded || y.Score.Tier == TierExcluded {
				t.Fatalf("unexpected exclusion: x %+v y %+v", x, y)
			}
			if got := y.Score.Less(x.Score); got != tc.xBetter {
				t.Fatalf("x %+v vs y %+v: x better = %v, want %v", x.Score, y.Score, got, tc.xBetter)
			}
			if math.Abs(x.Ratio+y.Ratio-1) > 1e-9 {
				t.Fatalf("ratios do not sum to 1: %v + %v", x.Ratio, y.Ratio)
			}
		})
	}
}

// The ratio of scores is the dispatch ratio, within the best tier.
func TestRatiosFollowScores(t *testing.T) {
	k := func(v string) Key { return Key{v, testBucket} }
	obs := map[Key]Observation{k("a"): load(100), k("b"): load(300), k("c"): load(700)}
	a := newTestAllocator(t, []Vendor{vendor("a", 500, 1000), vendor("b", 500, 1000), vendor("c", 500, 1000)}, obs, testBucket)
	p := a.Plan()
	ca, cb, cc := candidate(t, p, testBucket, "a"), candidate(t, p, testBucket, "b"), candidate(t, p, testBucket, "c")
	if cc.Score.Tier != TierOverCommit || cc.Ratio != 0 {
		t.Fatalf("c over commit while a, b under: %+v", cc)
	}
	want := ca.Score.Value / (ca.Score.Value + cb.Score.Value)
	if math.Abs(ca.Ratio-want) > 1e-9 || math.Abs(ca.Ratio+cb.Ratio-1) > 1e-9 {
		t.Fatalf("ratios %v %v, want %v", ca.Ratio, cb.Ratio, want)
	}
	bp, _ := p.Bucket(testBucket)
	if live := bp.Live(); len(live) != 3 || live[0].Vendor != "a" || live[2].Vendor != "c" {
		t.Fatalf("live order: %+v", live)
	}
}

func TestDamping(t *testing.T) {
	k := func(v string) Key { return Key{v, testBucket} }
	o := &StaticObserver{}
	o.Replace(map[Key]Observation{k("a"): load(100), k("b"): load(100)})
	a, err := NewAllocator(AllocatorConfig{Vendors: []Vendor{vendor("a", 1000, 2000), vendor("b", 1000, 2000)},
		Buckets: []Bucket{testBucket}, Observer: o, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ratio := func() float64 { return candidate(t, a.Recompute(testNow), testBucket, "a").Ratio }
	if r := ratio(); math.Abs(r-0.5) > 1e-9 {
		t.Fatalf("start: %v", r)
	}
	steps := []struct {
		name  string
		loadA float64
		want  float64 // a's ratio, -1 = "changed from 0.5"
	}{
		{"small move keeps old ratios", 150, 0.5},
		{"still small", 200, 0.5},
		{"big move replaces them", 600, -1},
	}
	for _, s := range steps {
		o.Set(k("a"), load(s.loadA))
		r := ratio()
		if s.want >= 0 && math.Abs(r-s.want) > 1e-9 || s.want < 0 && math.Abs(r-0.5) < 0.05 {
			t.Fatalf("%s: ratio %v", s.name, r)
		}
	}
	// A vendor dropping to zero is always applied, however small its share was.
	o.Set(k("a"), load(1990))
	if r := ratio(); r != 0 {
		t.Fatalf("at ceiling: ratio %v", r)
	}
}

func TestRegionalPools(t *testing.T) {
	v := vendor("a", 100, 200)
	v.Regions = map[string]Limits{"GD": {CommitMbps: 50, CeilingMbps: 60}}
	obs := map[Key]Observation{
		{"a", Bucket{"GD", "telecom"}}: load(40),
		{"a", Bucket{"GD", "unicom"}}:  load(20), // GD pool: 60 → at ceiling
		{"a", Bucket{"SH", "telecom"}}: load(10), // overall pool
	}
	a := newTestAllocator(t, []Vendor{v, vendor("b", 100, 200)}, obs, Bucket{"SH", "telecom"})
	p := a.Plan()
	if c := candidate(t, p, Bucket{"GD", "telecom"}, "a"); c.Score.Reason != "at ceiling" {
		t.Fatalf("GD: %+v", c)
	}
	if c := candidate(t, p, Bucket{"SH", "telecom"}, "a"); c.Score.Tier != TierUnderCommit {
		t.Fatalf("SH: %+v", c)
	}
	got := map[string]PoolStatus{}
	for _, ps := range p.Pools {
		got[ps.Vendor+"/"+ps.Region] = ps
	}
	if ps := got["a/GD"]; ps.Mbps != 60 || ps.CeilingMbps != 60 || ps.State != TierExcluded {
		t.Fatalf("a/GD pool %+v", ps)
	}
	if ps := got["a/"]; ps.Mbps != 10 || ps.CommitMbps != 100 {
		t.Fatalf("a overall pool %+v", ps)
	}
}

func TestLookupFallbackAndBlacklistBuckets(t *testing.T) {
	c := vendor("c", 100, 200)
	c.Coverage.Regions = []string{"GD"}
	a := newTestAllocator(t, []Vendor{vendor("a", 100, 200), c}, nil, testBucket)
	if err := a.AddBlacklist(BlacklistEntry{Vendor: "a", Region: "BJ", Until: testNow.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	p := a.Plan()
	tests := []struct {
		client Bucket
		want   Bucket
		live   string
	}{
		{testBucket, testBucket, "a,c"},
		{Bucket{"GD", "mobile"}, Bucket{Region: "GD"}, "a,c"}, // region bucket from c's coverage
		{Bucket{"BJ", "mobile"}, Bucket{Region: "BJ"}, ""},    // a blacklisted, c does not cover
		{Bucket{"XZ", "mobile"}, Bucket{}, "a"},
		{Bucket{}, Bucket{}, "a"},
	}
	for _, tc := range tests {
		bp := p.Lookup(tc.client)
		var names []string
		for _, l := range bp.Live() {
			names = append(names, l.Vendor)
		}
		if bp.Bucket != tc.want || strings.Join(names, ",") != tc.live {
			t.Errorf("%v: got %v %v, want %v %s", tc.client, bp.Bucket, names, tc.want, tc.live)
		}
	}
	if _, ok := p.Lookup(Bucket{"BJ", "x"}).Pick(); ok {
		t.Error("pick in a bucket with no live vendor")
	}
}

func TestSetVendors(t *testing.T) {
	a := newTestAllocator(t, []Vendor{vendor("a", 100, 200)}, nil)
	v1 := a.Plan().VendorVersion()
	if err := a.SetVendors([]Vendor{vendor("a", 100, 200), {Name: "bad"}}); err == nil {
		t.Fatal("invalid vendor accepted")
	}
	if err := a.SetVendors([]Vendor{vendor("a", 100, 200), vendor("b", 50, 100)}); err != nil {
		t.Fatal(err)
	}
	if got := a.Vendors(); len(got) != 2 || got[1].Name != "b" {
		t.Fatalf("vendors %+v", got)
	}
	if a.Plan().VendorVersion() == v1 {
		t.Fatal("version did not change")
	}
	if c := candidate(t, a.Plan(), Bucket{}, "b"); c.Ratio == 0 {
		t.Fatalf("new vendor not in plan: %+v", c)
	}
}

func TestHolt(t *testing.T) {
	tests := []struct {
		name        string
		alpha, beta float64
		in          []float64
		steps       float64
		want        float64
	}{
		{"empty", 0.5, 0.5, nil, 3, 0},
		{"one value", 0.5, 0.5, []float64{7}, 3, 7},
		{"linear series is exact", 0.5, 0.3, []float64{10, 20, 30, 40, 50}, 2, 70},
		{"flat series", 0.3, 0.3, []float64{5, 5, 5, 5}, 10, 5},
		{"alpha 1 beta 1 follows last step", 1, 1, []float64{0, 10, 30}, 1, 50},
	}
	for _, tc := range tests {
		h := Holt{Alpha: tc.alpha, Beta: tc.beta}
		for _, v := range tc.in {
			h.Update(v)
		}
		if got := h.Forecast(tc.steps); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	// An entrance wave: the forecast runs ahead of the current value.
	h := Holt{Alpha: 0.5, Beta: 0.3}
	for i := range 10 {
		h.Update(float64(i * i))
	}
	if h.Forecast(3) <= 81 {
		t.Errorf("forecast %v does not lead a rising series", h.Forecast(3))
	}
}

// benchAllocator: 10 vendors × 34 provinces × 5 ISPs, every key observed.
func benchAllocator(b *testing.B) *Allocator {
	var vs []Vendor
	for i := range 10 {
		v := vendor(fmt.Sprintf("v%d", i), 100_000, 300_000)
		if i%3 == 0 {
			v.Regions = map[string]Limits{"P0": {CommitMbps: 1000, CeilingMbps: 5000}}
		}
		vs = append(vs, v)
	}
	var buckets []Bucket
	obs := make(map[Key]Observation)
	for p := range 34 {
		for i := range 5 {
			bk := Bucket{fmt.Sprintf("P%d", p), fmt.Sprintf("isp%d", i)}
			buckets = append(buckets, bk)
			for _, v := range vs {
				obs[Key{v.Name, bk}] = Observation{Mbps: float64(p*i) * 10, ForecastMbps: float64(p*i) * 12,
					Users: 100 + p, StallRate: float64(i) / 100, PullSuccess: 0.99}
			}
		}
	}
	return newTestAllocator(b, vs, obs, buckets...)
}

func BenchmarkRecompute(b *testing.B) {
	a := benchAllocator(b)
	b.ReportAllocs()
	for b.Loop() {
		a.Recompute(testNow)
	}
}
