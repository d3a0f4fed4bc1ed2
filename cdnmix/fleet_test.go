package cdnmix

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// capturePub keeps what is published.
type capturePub struct {
	mu   sync.Mutex
	msgs []bus.Message
}

func (p *capturePub) Publish(topic string, key, value []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, bus.Message{Topic: topic, Key: key, Value: value})
	return nil
}

func (p *capturePub) take() []bus.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msgs
	p.msgs = nil
	return m
}

type fleetEnv struct {
	now func() time.Time
	pub *capturePub
	s   *StageOne
	f   *FleetView
}

func newFleetEnv(t *testing.T, clock *time.Time) *fleetEnv {
	t.Helper()
	now := func() time.Time { return *clock }
	pub := &capturePub{}
	s, err := NewStageOne(StageOneConfig{
		NewAggregator: func() (*Aggregator, error) { return NewAggregator(AggregatorConfig{Now: now}) },
		Publisher:     pub, Topic: "p", Owner: "w1", Now: now, Need: 70 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &fleetEnv{now: now, pub: pub, s: s, f: NewFleetView(FleetViewConfig{Topic: "p", Now: now})}
}

// deliver publishes the stage-one partials and hands them to the view.
func (e *fleetEnv) deliver() map[Key]Observation {
	e.s.Publish()
	for _, m := range e.pub.take() {
		e.f.Handle(bus.Record{Message: m})
	}
	return e.f.Tick()
}

func beaconRecord(off int64, at time.Time, session, vendor string, emptyMs int64) bus.Record {
	b, _ := json.Marshal(bus.Beacon{Session: session, Vendor: vendor, Event: bus.BeaconHeartbeat, Time: at,
		BufferEmptyMs: emptyMs, Region: "GD", ISP: "telecom"})
	return bus.Record{Message: bus.Message{Topic: bus.TopicQoSBeacons, Value: b, Time: at}, Offset: off, HighWater: off + 1}
}

func logRecord(off int64, at time.Time, vendor string, bytes int64) bus.Record {
	b, _ := json.Marshal(bus.CDNLog{Vendor: vendor, Time: at, Bytes: bytes, DurationMs: 1000, Status: 200, Region: "GD", ISP: "telecom"})
	return bus.Record{Message: bus.Message{Topic: bus.TopicCDNLogs, Value: b, Time: at}, Offset: off, HighWater: off + 1}
}

// TestFleetTwoStages: partials of several partitions sum to the
// fleet-wide figures; redelivery within an ownership, a new owner that
// replays from the checkpoint, and a former owner's late partial count
// nothing twice.
func TestFleetTwoStages(t *testing.T) {
	clock := time.Unix(1_800_000_000, 0)
	e := newFleetEnv(t, &clock)
	k := Key{"v1", Bucket{"GD", "telecom"}}
	// Partition 0 and 1 of qos.beacons: 30 + 20 sessions, 10 of them
	// stalled; partition 0 of cdn.logs: 1.25 MB/s for 20 s = 10 Mbps.
	b0 := e.s.Open(bus.TopicQoSBeacons, 0)
	b1 := e.s.Open(bus.TopicQoSBeacons, 1)
	l0 := e.s.Open(bus.TopicCDNLogs, 0)
	var off0, off1, offL int64
	var recs0 []bus.Record
	for sec := range 20 {
		clock = clock.Add(time.Second)
		for i := range 30 {
			r := beaconRecord(off0, clock, fmt.Sprintf("a%d", i), "v1", map[bool]int64{true: 3000}[i < 10])
			recs0 = append(recs0, r)
			b0.Handle(r)
			off0++
		}
		for i := range 20 {
			b1.Handle(beaconRecord(off1, clock, fmt.Sprintf("b%d", i), "v1", 0))
			off1++
		}
		l0.Handle(logRecord(offL, clock, "v1", 1_250_000))
		offL++
		_ = sec
	}
	obs := e.deliver()
	want := Observation{Users: 50, StalledUsers: 10}
	check := func(what string, obs map[Key]Observation) {
		t.Helper()
		got := obs[k]
		if got.Users != want.Users || got.StalledUsers != want.StalledUsers || math.Abs(got.Mbps-10) > 0.01 {
			t.Fatalf("%s: users %d stalled %d mbps %.2f, want 50, 10, 10", what, got.Users, got.StalledUsers, got.Mbps)
		}
	}
	check("first", obs)

	// Redelivery of partition 0's records to the same owner.
	for _, r := range recs0 {
		b0.Handle(r)
	}
	check("redelivered", e.deliver())
	if st := e.s.Stats(); st.Duplicates != int64(len(recs0)) {
		t.Fatalf("duplicates %d, want %d", st.Duplicates, len(recs0))
	}

	// Partition 0 moves to a new owner (another worker) that starts at the
	// committed checkpoint and replays: it overwrites, never adds.
	cp, ok := b0.Checkpoint()
	if !ok || cp != 0 {
		t.Fatalf("checkpoint %d %v, want 0 (the state still needs every record)", cp, ok)
	}
	b0.Close()
	other := &StageOne{cfg: e.s.cfg, parts: map[string]*partOwner{}}
	other.cfg.Owner = "w2"
	nb0 := other.Open(bus.TopicQoSBeacons, 0)
	for _, r := range recs0[cp:] {
		nb0.Handle(r)
	}
	other.Publish()
	for _, m := range e.pub.take() {
		e.f.Handle(bus.Record{Message: m})
	}
	check("new owner", e.deliver())

	// A late partial of the former owner, behind the new one's, is ignored.
	old, _ := json.Marshal(fleetMsg{Kind: "partition", Source: "qos.beacons/0", Owner: "w1", At: clock, To: 5,
		Keys: []Partial{{Vendor: "v1", Region: "GD", ISP: "telecom", Users: 3}}})
	e.f.Handle(bus.Record{Message: bus.Message{Value: old}})
	check("late former owner", e.f.Tick())

	// A minute closes: the fleet-wide history has it.
	clock = clock.Add(45 * time.Second)
	other.Publish()
	for _, m := range e.pub.take() {
		e.f.Handle(bus.Record{Message: m})
	}
	e.deliver()
	if ms := e.f.Minutes(k); len(ms) != 1 || ms[0].Users != 50 || ms[0].StalledUsers != 10 {
		t.Fatalf("minutes %+v, want one with 50 users, 10 stalled", ms)
	}

	// The checkpoint moves on once the oldest records leave the window.
	clock = clock.Add(80 * time.Second)
	nb0.Handle(beaconRecord(off0, clock, "a0", "v1", 0))
	if cp, _ := nb0.Checkpoint(); cp != off0 {
		t.Fatalf("checkpoint %d after the window, want %d", cp, off0)
	}
	// A partition whose owner is gone stops counting after the TTL.
	clock = clock.Add(31 * time.Second)
	if obs := e.f.Tick(); len(obs) != 0 {
		t.Fatalf("partials outlived their ttl: %v", obs)
	}
}

// TestFleetShare: each node's admission share follows its share of the
// dispatch requests the nodes publish.
func TestFleetShare(t *testing.T) {
	clock := time.Unix(1_800_000_000, 0)
	f := NewFleetView(FleetViewConfig{Node: "a", Now: func() time.Time { return clock }})
	send := func(node string, n uint64) {
		b, _ := json.Marshal(fleetMsg{Kind: "node", Node: node, At: clock, Requests: n})
		f.Handle(bus.Record{Message: bus.Message{Value: b}})
	}
	f.Tick()
	if s := f.Share(); s != 1 {
		t.Fatalf("alone: share %v", s)
	}
	counts := map[string]uint64{}
	for range 8 {
		clock = clock.Add(time.Second)
		counts["a"] += 800
		counts["b"] += 100
		counts["c"] += 100
		for n, c := range counts {
			send(n, c)
		}
		f.Tick()
	}
	if s := f.Share(); math.Abs(s-0.8) > 0.03 {
		t.Fatalf("80 %% of the requests: share %.3f", s)
	}
	// b and c leave: a has the room alone after the node ttl.
	for range 7 {
		clock = clock.Add(time.Second)
		counts["a"] += 800
		send("a", counts["a"])
		f.Tick()
	}
	if s := f.Share(); s != 1 {
		t.Fatalf("the others gone: share %v", s)
	}
}

func TestAggregationRoles(t *testing.T) {
	for _, c := range []struct {
		roles []string
		ok    bool
		fleet bool
	}{
		{nil, true, false}, {[]string{"local"}, true, false}, {[]string{"stage_one"}, true, true},
		{[]string{"dispatch", "stage_one"}, true, true}, {[]string{"local", "dispatch"}, false, false},
		{[]string{"dispatcher"}, false, false},
	} {
		a, err := AggregationConfig{Roles: c.roles}.check()
		if (err == nil) != c.ok || err == nil && a.fleet() != c.fleet {
			t.Errorf("roles %v: err %v fleet %v", c.roles, err, a.fleet())
		}
	}
	// The in-process bus cannot carry partitions.
	cfg := DefaultConfig()
	cfg.Aggregation.Roles = []string{"dispatch"}
	if _, err := New(cfg, bus.NewMemory(bus.MemoryConfig{}), nil, nil); err == nil {
		t.Fatal("role dispatch on the memory bus accepted")
	}
}

// Admission with PendingWindow and a share: the next plan, on
// observations that do not show the viewers just admitted yet, does not
// grant their room again; the admitted viewers fade out of the pending
// load as the window takes them in; a share of 0.25 gets a quarter.
func TestAdmissionPending(t *testing.T) {
	o := &StaticObserver{}
	now := testNow
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 400, Users: 200, PullSuccess: 1}})
	share := 1.0
	al, err := NewAllocator(AllocatorConfig{
		Vendors: []Vendor{vendor("a", 900, 1000), vendor("b", 100, 100000)},
		Buckets: []Bucket{testBucket}, Observer: o, Logger: quietLog, Admission: true,
		PendingWindow: 10 * time.Second, PendingDelay: 3 * time.Second, Share: func() float64 { return share },
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	budgetA := func(p *Plan) int64 {
		for _, ps := range p.Pools {
			if ps.Vendor == "a" {
				return ps.Budget
			}
		}
		return -2
	}
	bp := al.Plan().Lookup(testBucket)
	for range 1000 {
		bp.Pick()
	}
	// The observations move a little (not the viewers admitted): without
	// the pending count a would get 290 - 2 again.
	now = now.Add(time.Second)
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 404, Users: 202, PullSuccess: 1}})
	if b := budgetA(al.Recompute(now)); b != 0 {
		t.Fatalf("budget %d right after the wave, want 0", b)
	}
	// 7 s after they were counted (delay 3 s, then 4 s of the 10 s window
	// seen), load unchanged: 60 % of the 290 viewers are pending, so
	// (580 - 0.6 × 290 × 2) / 2 = 116 fit.
	now = now.Add(7 * time.Second)
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 400, Users: 200, PullSuccess: 1}})
	if b := budgetA(al.Recompute(now)); b != 116 {
		t.Fatalf("budget %d 4 s into the window, want 116", b)
	}
	now = now.Add(time.Minute)
	share = 0.25
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 402, Users: 201, PullSuccess: 1}})
	if b := budgetA(al.Recompute(now)); b != 72 {
		t.Fatalf("budget %d at share 0.25, want 72 (a quarter of 289)", b)
	}
}

// With ViewerMbpsHold, viewers leaving (bandwidth falls at once, users
// only after the quality window) do not make a viewer look cheaper.
func TestAdmissionViewerMbpsHold(t *testing.T) {
	o := &StaticObserver{}
	now := testNow
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 400, Users: 200, PullSuccess: 1}})
	al, err := NewAllocator(AllocatorConfig{
		Vendors: []Vendor{vendor("a", 900, 1000), vendor("b", 100, 100000)},
		Buckets: []Bucket{testBucket}, Observer: o, Logger: quietLog, Admission: true,
		ViewerMbpsHold: 30 * time.Second, Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	budgetA := func(p *Plan) int64 {
		for _, ps := range p.Pools {
			if ps.Vendor == "a" {
				return ps.Budget
			}
		}
		return -2
	}
	if b := budgetA(al.Plan()); b != 290 {
		t.Fatalf("budget %d, want 290 at 2 Mbps a viewer", b)
	}
	// Half the viewers leave: 200 Mbps, the 200 users still counted.
	now = now.Add(5 * time.Second)
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 200, Users: 200, PullSuccess: 1}})
	if b := budgetA(al.Recompute(now)); b != 390 {
		t.Fatalf("budget %d after half left, want 390 (780 Mbps at the 2 Mbps held), not 780", b)
	}
	// After the hold, the new estimate counts.
	now = now.Add(31 * time.Second)
	o.Replace(map[Key]Observation{{"a", testBucket}: {Mbps: 200, Users: 201, PullSuccess: 1}})
	if b := budgetA(al.Recompute(now)); b < 700 {
		t.Fatalf("budget %d after the hold, want about 780", b)
	}
}

// FuzzFleetHandle: any record of the partials topic is taken or counted
// bad, never a panic, and the view still sums afterwards.
func FuzzFleetHandle(f *testing.F) {
	f.Add([]byte(`{"kind":"partition","source":"part/qos.beacons/0","owner":"w1","at":"2026-12-03T10:00:00Z","to":5,"keys":[]}`))
	f.Add([]byte(`{"kind":"node","node":"n1","at":"2026-12-03T10:00:00Z","requests":10}`))
	f.Add([]byte(`{"kind":"node","node":"","at":"2026-12-03T10:00:00Z"}`))
	f.Add([]byte(`{"kind":"partition","keys":[[[[[[[[[[`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		clock := time.Date(2026, 12, 3, 10, 0, 1, 0, time.UTC)
		v := NewFleetView(FleetViewConfig{Node: "a", Now: func() time.Time { return clock }})
		v.Handle(bus.Record{Message: bus.Message{Value: b}})
		v.Tick()
	})
}
