package cdnmix

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// aggEnv is an aggregator on a settable clock.
type aggEnv struct {
	a   *Aggregator
	now time.Time
}

func newAggEnv(t testing.TB) *aggEnv {
	t.Helper()
	loc, err := LoadCIDRCSV("testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	e := &aggEnv{now: testNow}
	e.a, err = NewAggregator(AggregatorConfig{Locator: loc, Now: func() time.Time { return e.now }, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var gdKey = Key{"a", Bucket{"GD", "telecom"}}

func TestAggregatorBandwidth(t *testing.T) {
	mb := func(n float64) int64 { return int64(n * 1e6) }
	tests := []struct {
		name  string
		lines []bus.CDNLog
		key   Key
		want  float64 // Mbps over the 10 s window
		late  int64
	}{
		{"12.5 MB over the last 10 s is 10 Mbps",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow, DurationMs: 10_000, Bytes: mb(12.5), Status: 200}},
			gdKey, 10, 0},
		{"a 20 s pull counts half in the window",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow, DurationMs: 20_000, Bytes: mb(25), Status: 200}},
			gdKey, 10, 0},
		{"lines add up",
			[]bus.CDNLog{
				{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow, DurationMs: 10_000, Bytes: mb(12.5), Status: 200},
				{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow.Add(-5 * time.Second), DurationMs: 5_000, Bytes: mb(6.25), Status: 206},
			}, gdKey, 15, 0},
		{"an instant line lands in its second",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow.Add(-3 * time.Second), Bytes: mb(1.25), Status: 200}},
			gdKey, 1, 0},
		{"client IP located into its bucket",
			[]bus.CDNLog{{Vendor: "a", ClientIP: "198.51.100.7", Time: testNow, DurationMs: 10_000, Bytes: mb(12.5), Status: 200}},
			gdKey, 10, 0},
		{"unknown client IP goes to the any-bucket",
			[]bus.CDNLog{{Vendor: "a", ClientIP: "100.64.0.1", Time: testNow, DurationMs: 10_000, Bytes: mb(12.5), Status: 200}},
			Key{"a", Bucket{}}, 10, 0},
		{"failed pulls carry no load",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow, DurationMs: 10_000, Bytes: mb(12.5), Status: 502}},
			gdKey, 0, 0},
		{"a line older than the history is late",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow.Add(-3 * time.Minute), DurationMs: 10_000, Bytes: mb(12.5), Status: 200}},
			gdKey, 0, 1},
		{"a line from the future is late",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow.Add(2 * time.Minute), Bytes: mb(12.5), Status: 200}},
			gdKey, 0, 1},
		{"bytes from before the window only",
			[]bus.CDNLog{{Vendor: "a", Region: "GD", ISP: "telecom", Time: testNow.Add(-30 * time.Second), DurationMs: 10_000, Bytes: mb(12.5), Status: 200}},
			gdKey, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newAggEnv(t)
			for _, l := range tc.lines {
				e.a.AddLog(l)
			}
			got := e.a.Tick()[tc.key]
			if math.Abs(got.Mbps-tc.want) > 1e-6 {
				t.Fatalf("%.6f Mbps, want %v (snapshot %v)", got.Mbps, tc.want, e.a.Snapshot())
			}
			if st := e.a.Stats(); st.Late != tc.late {
				t.Fatalf("late %d, want %d", st.Late, tc.late)
			}
		})
	}
}

// beacons for n sessions of vendor a in GD/telecom (by client IP).
func sessionBeacons(prefix string, n int, events ...bus.Beacon) []bus.Beacon {
	var out []bus.Beacon
	for i := range n {
		for _, e := range events {
			e.Session = fmt.Sprintf("%s%d", prefix, i)
			e.Vendor, e.Client = "a", "198.51.100.9"
			out = append(out, e)
		}
	}
	return out
}

func TestAggregatorQuality(t *testing.T) {
	start := bus.Beacon{Event: bus.BeaconStart}
	ff := func(ms int64) bus.Beacon { return bus.Beacon{Event: bus.BeaconFirstFrame, FirstFrameMs: ms} }
	stall := func(ms int64) bus.Beacon { return bus.Beacon{Event: bus.BeaconStall, BufferEmptyMs: ms} }
	hb := func(ms int64) bus.Beacon { return bus.Beacon{Event: bus.BeaconHeartbeat, BufferEmptyMs: ms} }
	fail := bus.Beacon{Event: bus.BeaconError, Error: "404"}
	cat := func(bs ...[]bus.Beacon) []bus.Beacon {
		var out []bus.Beacon
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	tests := []struct {
		name                   string
		beacons                []bus.Beacon
		users, stalled         int
		stallRate, pullSuccess float64
		p50, p95               time.Duration
	}{
		{"no stalls", sessionBeacons("s", 10, start, ff(500), hb(0)), 10, 0, 0, 1, 500 * time.Millisecond, 500 * time.Millisecond},
		{"a stall is 2 s of empty buffer or more",
			cat(sessionBeacons("ok", 6, start, ff(300), stall(1999)), sessionBeacons("bad", 4, start, ff(900), stall(2000))),
			10, 4, 0.4, 1, 300 * time.Millisecond, 900 * time.Millisecond},
		{"a heartbeat reporting 2 s empty is a stall", sessionBeacons("s", 5, start, ff(400), hb(2500)), 5, 5, 1, 1, 400 * time.Millisecond, 400 * time.Millisecond},
		{"failed pulls lower pull success",
			cat(sessionBeacons("ok", 8, start, ff(200)), sessionBeacons("bad", 2, start, fail)),
			10, 0, 0, 0.8, 200 * time.Millisecond, 200 * time.Millisecond},
		{"several stalls of one user count once", sessionBeacons("s", 2, start, ff(100), stall(3000), stall(5000)), 2, 2, 1, 1, 100 * time.Millisecond, 100 * time.Millisecond},
		{"heartbeats alone: users without pull attempts", sessionBeacons("s", 3, hb(0)), 3, 0, 0, 1, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newAggEnv(t)
			for _, b := range tc.beacons {
				if err := e.a.AddBeacon(b); err != nil {
					t.Fatal(err)
				}
			}
			ob := e.a.Tick()[gdKey]
			if ob.Users != tc.users || ob.StalledUsers != tc.stalled || math.Abs(ob.StallRate-tc.stallRate) > 1e-9 ||
				math.Abs(ob.PullSuccess-tc.pullSuccess) > 1e-9 || ob.FirstFrameP50 != tc.p50 || ob.FirstFrameP95 != tc.p95 {
				t.Fatalf("got %+v", ob)
			}
		})
	}
}

func TestAggregatorPercentilesAndWindow(t *testing.T) {
	e := newAggEnv(t)
	for i := range 100 { // first frames 10, 20, ..., 1000 ms
		e.a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: "a", Region: "GD", ISP: "telecom",
			Event: bus.BeaconFirstFrame, FirstFrameMs: int64(10 * (i + 1))})
	}
	ob := e.a.Tick()[gdKey]
	if ob.FirstFrameP50 != 500*time.Millisecond || ob.FirstFrameP95 != 950*time.Millisecond {
		t.Fatalf("p50 %v p95 %v", ob.FirstFrameP50, ob.FirstFrameP95)
	}
	// 61 s later those sessions are out of the window; a minute was closed.
	e.now = e.now.Add(61 * time.Second)
	if ob := e.a.Tick()[gdKey]; ob.Users != 0 {
		t.Fatalf("users after the window: %+v", ob)
	}
	mins := e.a.Minutes(gdKey)
	if len(mins) != 1 || mins[0].Users != 0 && mins[0].Users != 100 {
		t.Fatalf("minutes %+v", mins)
	}
}

func TestAggregatorMinutes(t *testing.T) {
	e := newAggEnv(t)
	e.now = time.Unix(1_700_000_000/60*60, 0) // on a minute
	e.a.Tick()
	// Minute 1: 4 users, one stalls.
	for i := range 4 {
		ms := int64(0)
		if i == 0 {
			ms = 4000
		}
		e.now = e.now.Add(time.Second)
		e.a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: "a", Region: "GD", ISP: "telecom", Event: bus.BeaconStall, BufferEmptyMs: ms})
	}
	e.now = e.now.Add(57 * time.Second) // just into the next minute
	e.a.Tick()
	mins := e.a.Minutes(gdKey)
	if len(mins) != 1 {
		t.Fatalf("minutes %+v", mins)
	}
	m := mins[0]
	if m.Users != 4 || m.StalledUsers != 1 || m.StallRate != 0.25 || m.ZeroStallRate != 0.75 || !m.Minute.Equal(time.Unix(1_700_000_000/60*60, 0)) {
		t.Fatalf("minute %+v", m)
	}
}

func TestAggregatorForecast(t *testing.T) {
	e := newAggEnv(t)
	var ob Observation
	for i := range 20 { // bandwidth rising by 1 Mbps every second
		e.now = e.now.Add(time.Second)
		e.a.AddLog(bus.CDNLog{Vendor: "a", Region: "GD", ISP: "telecom", Time: e.now, DurationMs: 1000, Bytes: int64(i) * 125_000 * 10, Status: 200})
		ob = e.a.Tick()[gdKey]
	}
	if !(ob.ForecastMbps > ob.Mbps*1.3) {
		t.Fatalf("forecast %.1f does not lead a rising %.1f Mbps", ob.ForecastMbps, ob.Mbps)
	}
}

// Malformed input is counted and dropped, never stored.
func TestAggregatorBadInput(t *testing.T) {
	e := newAggEnv(t)
	badLogs := []string{
		``, `{`, `[]`, `null`, `"x"`, `{"vendor":""}`, `{"vendor":"a b"}`, `{"vendor":"a","bytes":-1}`,
		`{"vendor":"a","bytes":"12"}`, `{"vendor":"a","duration_ms":-5}`, `{"vendor":"a","status":1000}`,
		`{"vendor":"a","time":"yesterday"}`, `{"vendor":"a","bytes":1e30}`,
	}
	for _, s := range badLogs {
		if err := e.a.HandleLog(context.Background(), bus.Message{Topic: bus.TopicCDNLogs, Value: []byte(s)}); !errors.Is(err, ErrMalformed) {
			t.Errorf("log %q: %v", s, err)
		}
	}
	badBeacons := []string{
		``, `{`, `[]`, `[{}]`, `{"session":"s","vendor":"a"}`, `{"session":"s","vendor":"a","event":"dance"}`,
		`{"session":"","vendor":"a","event":"start"}`, `{"session":"s","vendor":"","event":"start"}`,
		`{"session":"s","vendor":"a","event":"stall","buffer_empty_ms":-1}`,
		`{"session":"s","vendor":"a","event":"first_frame","first_frame_ms":99999999999}`,
		`{"session":"` + strings.Repeat("x", 200) + `","vendor":"a","event":"start"}`,
		`[` + strings.Repeat(`{"session":"s","vendor":"a","event":"start"},`, 100) + `{"session":"s","vendor":"a","event":"start"}]`,
	}
	for _, s := range badBeacons {
		if err := e.a.HandleBeacon(context.Background(), bus.Message{Topic: bus.TopicQoSBeacons, Value: []byte(s)}); !errors.Is(err, ErrMalformed) {
			t.Errorf("beacon %q: %v", s, err)
		}
	}
	st := e.a.Stats()
	if st.BadLogs != int64(len(badLogs)) || st.BadBeacons != int64(len(badBeacons)) || st.Logs != 0 || st.Beacons != 0 || st.Keys != 0 {
		t.Fatalf("stats %+v", st)
	}
	if snap := e.a.Tick(); len(snap) != 0 {
		t.Fatalf("snapshot %v", snap)
	}
}

func TestParseAccessLog(t *testing.T) {
	tests := []struct {
		line string
		want bus.CDNLog
		bad  bool
	}{
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 200 1250000 10.000 /live/demo.flv",
			want: bus.CDNLog{Vendor: "v", Time: time.Date(2026, 12, 1, 10, 0, 5, 0, time.UTC), Bytes: 1250000, DurationMs: 10000, Status: 200, ClientIP: "198.51.100.7", Stream: "live/demo"}},
		{line: "2026-12-01T10:00:05+08:00 2001:db8::1 206 10 0.005 /live/demo/seg1.ts",
			want: bus.CDNLog{Vendor: "v", Time: time.Date(2026, 12, 1, 2, 0, 5, 0, time.UTC), Bytes: 10, DurationMs: 5, Status: 206, ClientIP: "2001:db8::1", Stream: "live/demo"}},
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 404 0 0.000 /favicon.ico",
			want: bus.CDNLog{Vendor: "v", Time: time.Date(2026, 12, 1, 10, 0, 5, 0, time.UTC), Status: 404, ClientIP: "198.51.100.7"}},
		{line: "", bad: true},
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 200 1 1.0", bad: true},
		{line: "yesterday 198.51.100.7 200 1 1.0 /x", bad: true},
		{line: "2026-12-01T10:00:05+00:00 host 200 1 1.0 /x", bad: true},
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 ok 1 1.0 /x", bad: true},
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 200 -1 1.0 /x", bad: true},
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 200 1 NaN /x", bad: true},
		{line: "2026-12-01T10:00:05+00:00 198.51.100.7 200 1 -1 /x", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseAccessLog("v", []byte(tc.line))
		if tc.bad {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%q: %v", tc.line, err)
			}
			continue
		}
		if err != nil || !got.Time.Equal(tc.want.Time) {
			t.Errorf("%q: %+v %v", tc.line, got, err)
			continue
		}
		got.Time = tc.want.Time
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

// Through the in-process bus into the aggregator and on to the
// allocator: a vendor whose users stall in GD loses its GD traffic, and
// keeps it elsewhere.
func TestBeaconsMoveTraffic(t *testing.T) {
	e := newAggEnv(t)
	m := bus.NewMemory(bus.MemoryConfig{Logger: quietLog})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { e.a.Run(ctx, m, "cdnmix") })
	defer func() { cancel(); wg.Wait() }()
	for range 100 { // wait for both subscriptions
		if m.Stats().Queued == 0 {
			bus.Emit(m, bus.Beacon{Session: "probe", Vendor: "b", Region: "SH", ISP: "telecom", Event: bus.BeaconHeartbeat})
		}
		if e.a.Stats().Beacons > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	al, err := NewAllocator(AllocatorConfig{Vendors: []Vendor{vendor("a", 1000, 2000), vendor("b", 1000, 2000)},
		Buckets: []Bucket{{"GD", "telecom"}, {"SH", "telecom"}}, Observer: e.a, Logger: quietLog, MinChange: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, bk := range []Bucket{{"GD", "telecom"}, {"SH", "telecom"}} {
		for i := range 50 {
			for _, v := range []string{"a", "b"} {
				ms := int64(0)
				if v == "a" && bk.Region == "GD" {
					ms = 3000
				}
				bus.Emit(m, bus.Beacon{Session: fmt.Sprintf("%s-%s-%d", v, bk.Region, i), Vendor: v, Region: bk.Region, ISP: bk.ISP,
					Event: bus.BeaconHeartbeat, BufferEmptyMs: ms})
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.a.Stats().Beacons < 201 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	e.a.Tick()
	p := al.Recompute(testNow)
	gdA, shA := candidate(t, p, Bucket{"GD", "telecom"}, "a"), candidate(t, p, Bucket{"SH", "telecom"}, "a")
	if gdA.Ratio > 0.05 || math.Abs(shA.Ratio-0.5) > 0.01 {
		t.Fatalf("a in GD %+v, in SH %+v", gdA, shA)
	}
}

func FuzzParseBeacons(f *testing.F) {
	f.Add([]byte(`{"session":"s","vendor":"a","event":"stall","buffer_empty_ms":2500}`))
	f.Add([]byte(`[{"session":"s","vendor":"a","event":"first_frame","first_frame_ms":300,"client":"198.51.100.1"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := newAggEnv(t)
		bs, err := ParseBeacons(b)
		if err == nil && (len(bs) == 0 || len(bs) > maxBeaconBatch) {
			t.Fatalf("%d beacons accepted", len(bs))
		}
		e.a.HandleBeacon(context.Background(), bus.Message{Value: b})
		e.a.Tick()
	})
}

func FuzzDecodeCDNLog(f *testing.F) {
	f.Add([]byte(`{"vendor":"a","time":"2023-11-14T22:13:20Z","bytes":1000,"duration_ms":1000,"status":200,"client_ip":"198.51.100.1"}`))
	f.Add([]byte(`{"vendor":"a","bytes":1,"duration_ms":86400000}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := newAggEnv(t)
		e.a.HandleLog(context.Background(), bus.Message{Value: b})
		for k, ob := range e.a.Tick() {
			if !(ob.Mbps >= 0) || math.IsInf(ob.Mbps, 0) {
				t.Fatalf("%v: %v Mbps", k, ob.Mbps)
			}
		}
	})
}

func FuzzParseAccessLog(f *testing.F) {
	f.Add([]byte("2026-12-01T10:00:05+00:00 198.51.100.7 200 1250000 10.000 /live/demo.flv"))
	f.Add([]byte("2026-12-01T10:00:05Z ::1 499 0 0.1 /live/x/index.m3u8"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseAccessLog("v", b)
		if err != nil {
			return
		}
		if l.Bytes < 0 || l.DurationMs < 0 || l.Vendor != "v" {
			t.Fatalf("accepted %+v", l)
		}
		e := newAggEnv(t)
		e.a.AddLog(l)
		e.a.Tick()
	})
}
