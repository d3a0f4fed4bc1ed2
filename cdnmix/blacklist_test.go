package cdnmix

import (
	"testing"
	"time"
)

func TestBlacklistExpiry(t *testing.T) {
	var bl Blacklist
	t0 := testNow
	for _, e := range []BlacklistEntry{
		{Vendor: "a", Region: "GD", Until: t0.Add(time.Minute)},
		{Vendor: "a", Region: "GD", ISP: "telecom", Until: t0.Add(2 * time.Minute)},
		{Vendor: "b", Until: time.Time{}}, // until removed
	} {
		if err := bl.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := bl.Add(BlacklistEntry{Region: "GD"}); err == nil {
		t.Fatal("entry without vendor accepted")
	}
	tests := []struct {
		name   string
		vendor string
		b      Bucket
		at     time.Duration
		want   bool
	}{
		{"region entry covers all ISPs", "a", Bucket{"GD", "mobile"}, 0, true},
		{"not another region", "a", Bucket{"SH", "mobile"}, 0, false},
		{"unknown region is not blocked by a region entry", "a", Bucket{}, 0, false},
		{"region entry expired", "a", Bucket{"GD", "mobile"}, 61 * time.Second, false},
		{"isp entry still on", "a", Bucket{"GD", "telecom"}, 61 * time.Second, true},
		{"expiry is exclusive of until", "a", Bucket{"GD", "telecom"}, 2 * time.Minute, false},
		{"vendor-wide entry", "b", Bucket{"XZ", "x"}, time.Hour, true},
		{"vendor-wide covers unknown region", "b", Bucket{}, time.Hour, true},
	}
	for _, tc := range tests {
		if got := bl.Blocked(tc.vendor, tc.b, t0.Add(tc.at)); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	if n := len(bl.List(t0.Add(90 * time.Second))); n != 2 {
		t.Errorf("list at 90s: %d entries", n)
	}
	if n := bl.Expire(t0.Add(3 * time.Minute)); n != 2 {
		t.Errorf("expired %d, want 2", n)
	}
	if !bl.Remove("b", "", "") || bl.Remove("b", "", "") {
		t.Error("remove")
	}
	if n := len(bl.List(t0)); n != 0 {
		t.Errorf("left %d", n)
	}
}

func TestAllocatorBlacklistExpires(t *testing.T) {
	now := testNow
	o := &StaticObserver{}
	a, err := NewAllocator(AllocatorConfig{Vendors: []Vendor{vendor("a", 100, 200), vendor("b", 100, 200)},
		Buckets: []Bucket{testBucket}, Observer: o, Logger: quietLog, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AddBlacklist(BlacklistEntry{Vendor: "a", Region: "GD", Until: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if c := candidate(t, a.Plan(), testBucket, "a"); c.Ratio != 0 {
		t.Fatalf("blacklisted vendor has ratio %v at once", c.Ratio)
	}
	if got := a.Blacklist(); len(got) != 1 {
		t.Fatalf("list %+v", got)
	}
	now = now.Add(time.Minute)
	if c := candidate(t, a.Recompute(now), testBucket, "a"); c.Ratio == 0 {
		t.Fatal("vendor still out after expiry")
	}
	if len(a.Blacklist()) != 0 {
		t.Fatal("expired entry listed")
	}
	if a.RemoveBlacklist("a", "GD", "") {
		t.Fatal("removed an expired entry")
	}
}

func TestStallRule(t *testing.T) {
	bad := Observation{Users: 100, StallRate: 0.3, PullSuccess: 1}
	good := Observation{Users: 100, StallRate: 0.01, PullSuccess: 1}
	few := Observation{Users: 5, StallRate: 0.9, PullSuccess: 1}
	k := Key{"a", testBucket}
	tests := []struct {
		name      string
		blacklist bool
		minutes   []Observation // one per minute
		gapAfter  int           // skip a minute after this index (-1: none)
		alertAt   int           // index of the minute that alerts, -1 none
	}{
		{"three bad minutes alert", false, []Observation{bad, bad, bad, bad}, -1, 2},
		{"a good minute resets", false, []Observation{bad, bad, good, bad, bad}, -1, -1},
		{"few users do not count", false, []Observation{few, few, few, few}, -1, -1},
		{"a gap resets", false, []Observation{bad, bad, bad}, 1, -1},
		{"blacklist option", true, []Observation{bad, bad, bad}, -1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var alerts []Alert
			now := testNow.Truncate(time.Minute)
			o := &StaticObserver{}
			a, err := NewAllocator(AllocatorConfig{
				Vendors: []Vendor{vendor("a", 100, 200), vendor("b", 100, 200)}, Buckets: []Bucket{testBucket},
				Observer: o, Logger: quietLog, Now: func() time.Time { return now },
				StallRule: &StallRuleConfig{Threshold: 0.1, Minutes: 3, Blacklist: tc.blacklist, TTL: time.Hour,
					OnAlert: func(al Alert) { alerts = append(alerts, al) }},
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, ob := range tc.minutes {
				now = now.Add(time.Minute)
				o.Set(k, ob)
				a.Recompute(now)
				a.Recompute(now.Add(10 * time.Second)) // same minute: not counted twice
				want := 0
				if tc.alertAt >= 0 && i >= tc.alertAt {
					want = 1
				}
				if len(alerts) != want {
					t.Fatalf("minute %d: %d alerts, want %d", i, len(alerts), want)
				}
				if i == tc.gapAfter {
					now = now.Add(time.Minute)
				}
			}
			if len(alerts) == 0 {
				return
			}
			if al := alerts[0]; al.Vendor != "a" || al.Region != "GD" || al.ISP != "telecom" || al.Blacklisted != tc.blacklist {
				t.Fatalf("alert %+v", al)
			}
			ratio := candidate(t, a.Plan(), testBucket, "a").Ratio
			if tc.blacklist != (ratio == 0) {
				t.Fatalf("blacklist %v but ratio %v", tc.blacklist, ratio)
			}
		})
	}
}
