package cdnmix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

func TestParseVendorStats(t *testing.T) {
	tests := []struct {
		in   string
		want map[Bucket]float64
	}{
		{`{"mbps": 12.5}`, map[Bucket]float64{{}: 12.5}},
		{`{"buckets": [{"region": "GD", "isp": "telecom", "mbps": 8}, {"region": "GD", "isp": "telecom", "mbps": 2}, {"mbps": 1}]}`,
			map[Bucket]float64{{"GD", "telecom"}: 10, {}: 1}},
		{`{"mbps": 0}`, map[Bucket]float64{{}: 0}},
		{``, nil}, {`{}`, nil}, {`{"mbps": -1}`, nil}, {`{"mbps": 1e13}`, nil}, {`{"mbps": "1"}`, nil},
		{`{"mbps": 1, "buckets": [{"mbps": 1}]}`, nil}, {`{"buckets": [{"mbps": -2}]}`, nil}, {`[1]`, nil},
	}
	for _, tc := range tests {
		got, err := ParseVendorStats([]byte(tc.in))
		if tc.want == nil {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %v %v", tc.in, got, err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseVendorStats(f *testing.F) {
	f.Add([]byte(`{"mbps": 12.5}`))
	f.Add([]byte(`{"buckets": [{"region": "GD", "isp": "telecom", "mbps": 8}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseVendorStats(b)
		if err != nil {
			return
		}
		for k, v := range m {
			if !(v >= 0) || v > maxStatsMbps*maxStatsBuckets {
				t.Fatalf("%v: %v", k, v)
			}
		}
	})
}

// Polled stats replace the log lines' bandwidth of that vendor until they
// go stale; other vendors keep theirs.
func TestAggregatorPolled(t *testing.T) {
	e := newAggEnv(t)
	for _, v := range []string{"a", "b"} {
		e.a.AddLog(bus.CDNLog{Vendor: v, Region: "GD", ISP: "telecom", Time: e.now, DurationMs: 10_000, Bytes: 12_500_000, Status: 200})
	}
	e.a.SetPolled("a", map[Bucket]float64{{"SH", "telecom"}: 40})
	snap := e.a.Tick()
	if got := snap[gdKey].Mbps; got != 0 {
		t.Errorf("a in GD: %v Mbps, want 0 (the stats do not name GD)", got)
	}
	if got := snap[Key{"a", Bucket{"SH", "telecom"}}].Mbps; got != 40 {
		t.Errorf("a in SH: %v, want 40", got)
	}
	if got := snap[Key{"b", Bucket{"GD", "telecom"}}].Mbps; got != 10 {
		t.Errorf("b in GD: %v, want 10 from its log lines", got)
	}
	e.now = e.now.Add(31 * time.Second)
	e.a.AddLog(bus.CDNLog{Vendor: "a", Region: "GD", ISP: "telecom", Time: e.now, DurationMs: 10_000, Bytes: 12_500_000, Status: 200})
	if got := e.a.Tick()[gdKey].Mbps; got != 10 {
		t.Errorf("a in GD after the stats went stale: %v, want 10", got)
	}
}

// The mixer polls stats_url and the plan's pool shows the figure.
func TestMixerPollsStats(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, `{"buckets": [{"region": "GD", "isp": "telecom", "mbps": 321}]}`)
	}))
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.Vendors = []Vendor{vendor("a", 1000, 2000)}
	cfg.Vendors[0].StatsURL = srv.URL + "/stats"
	cfg.StatsInterval, cfg.Recompute = 50*time.Millisecond, 50*time.Millisecond
	m, err := New(cfg, bus.NewMemory(bus.MemoryConfig{}), quietLog, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := m.Allocator().Plan()
		if len(p.Pools) == 1 && p.Pools[0].Mbps == 321 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pools %+v after %d polls", p.Pools, hits.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	bad := vendor("x", 1, 2)
	bad.StatsURL = "ftp://x"
	if err := bad.Validate(); err == nil {
		t.Fatal("ftp stats_url accepted")
	}
}
