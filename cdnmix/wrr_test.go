package cdnmix

import (
	"math"
	"testing"
	"time"
)

func TestWRRRatios(t *testing.T) {
	tests := []struct {
		name   string
		ratios []float64
	}{
		{"three uneven", []float64{0.5, 0.3, 0.2}},
		{"odd thirds", []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}},
		{"tiny share", []float64{0.97, 0.02, 0.01}},
		{"one at ceiling gets nothing", []float64{0.6, 0, 0.4}},
		{"ten vendors", []float64{0.19, 0.01, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1}},
	}
	const picks = 10_000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWRR(tc.ratios)
			counts := make([]int, len(tc.ratios))
			for range picks {
				counts[w.next(nil, 1)]++
			}
			for i, r := range tc.ratios {
				got := float64(counts[i]) / picks
				if math.Abs(got-r) > 0.01 {
					t.Errorf("vendor %d: share %.4f, want %.4f ± 0.01", i, got, r)
				}
				if r == 0 && counts[i] != 0 {
					t.Errorf("vendor %d with ratio 0 picked %d times", i, counts[i])
				}
			}
		})
	}
	if got := newWRR([]float64{0, 0}).next(nil, 1); got != -1 {
		t.Errorf("no peers: got %d", got)
	}
}

// Smoothness: in any window of 10 picks over 0.5/0.3/0.2, each vendor
// appears within one of its share (nginx's interleaving, no bursts).
func TestWRRSmooth(t *testing.T) {
	w := newWRR([]float64{0.5, 0.3, 0.2})
	seq := make([]int, 1000)
	for i := range seq {
		seq[i] = w.next(nil, 1)
	}
	for start := 0; start+10 <= len(seq); start++ {
		var c [3]int
		for _, v := range seq[start : start+10] {
			c[v]++
		}
		if c[0] < 4 || c[0] > 6 || c[1] < 2 || c[1] > 4 || c[2] < 1 || c[2] > 3 {
			t.Fatalf("window at %d: %v", start, c)
		}
	}
}

// End to end through the allocator: a vendor whose load is at its ceiling
// gets no pick in 10,000, and the others hold their ratios.
func TestPickHoldsPlanRatios(t *testing.T) {
	k := func(v string) Key { return Key{v, testBucket} }
	obs := map[Key]Observation{k("a"): load(500), k("b"): load(200), k("full"): load(1000)}
	a := newTestAllocator(t, []Vendor{vendor("a", 100, 2000), vendor("b", 100, 1000), vendor("full", 100, 1000)}, obs, testBucket)
	bp, _ := a.Plan().Bucket(testBucket)
	want := map[string]float64{}
	for _, c := range bp.Candidates {
		want[c.Vendor] = c.Ratio
	}
	if want["full"] != 0 {
		t.Fatalf("full vendor has ratio %v", want["full"])
	}
	got := map[string]int{}
	for range 10_000 {
		v, ok := bp.Pick()
		if !ok {
			t.Fatal("no pick")
		}
		got[v]++
	}
	for v, r := range want {
		if share := float64(got[v]) / 10_000; math.Abs(share-r) > 0.01 {
			t.Errorf("%s: share %.4f, want %.4f", v, share, r)
		}
	}
	if got["full"] != 0 {
		t.Errorf("vendor at ceiling picked %d times", got["full"])
	}
}

// Admission: a pool admits only the viewers that fit below its ceiling in
// one plan; then it is skipped, and a recompute on the same observations
// carries what it already admitted.
func TestAdmissionBudget(t *testing.T) {
	o := &StaticObserver{}
	// a: room 0.98×1000−400 = 580 Mbps at 2 Mbps a viewer = 290 viewers.
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 400, Users: 200, PullSuccess: 1}})
	al, err := NewAllocator(AllocatorConfig{
		Vendors: []Vendor{vendor("a", 900, 1000), vendor("b", 100, 100000)},
		Buckets: []Bucket{testBucket}, Observer: o, Logger: quietLog, Admission: true,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	plan := al.Plan()
	var ps PoolStatus
	for _, p := range plan.Pools {
		if p.Vendor == "a" {
			ps = p
		}
	}
	if ps.ViewerMbps != 2 || ps.Budget != 290 {
		t.Fatalf("pool a: %+v", ps)
	}
	bp := plan.Lookup(testBucket)
	got := map[string]int{}
	for range 1000 {
		v, ok := bp.Pick()
		if !ok {
			t.Fatal("no pick")
		}
		got[v]++
	}
	if got["a"] != 290 || got["b"] != 710 {
		t.Fatalf("picks %v, want a capped at 290", got)
	}
	// Same observations: a has nothing left.
	bp = al.Recompute(testNow).Lookup(testBucket)
	for range 100 {
		if v, _ := bp.Pick(); v == "a" {
			t.Fatal("a picked after its budget was carried")
		}
	}
	// New observations: a budget again.
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 980, Users: 490, PullSuccess: 1}})
	bp = al.Recompute(testNow).Lookup(testBucket)
	for range 100 {
		if v, _ := bp.Pick(); v == "a" {
			t.Fatal("a picked at its ceiling")
		}
	}
}
