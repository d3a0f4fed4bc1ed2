package cdnmix

import (
	"slices"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

func TestBlacklistReplace(t *testing.T) {
	t0 := testNow
	keep := BlacklistEntry{Vendor: "k", Region: "SH"}
	tests := []struct {
		name    string
		set     []BlacklistEntry
		wantErr bool
		want    []BlacklistEntry // List(t0) afterwards
	}{
		{"empty clears", nil, false, []BlacklistEntry{}},
		{"replaces, sorted", []BlacklistEntry{
			{Vendor: "b", Region: "GD"},
			{Vendor: "a", ISP: "mobile", Until: t0.Add(time.Minute)},
		}, false, []BlacklistEntry{
			{Vendor: "a", ISP: "mobile", Until: t0.Add(time.Minute)},
			{Vendor: "b", Region: "GD"},
		}},
		{"last of one key wins", []BlacklistEntry{
			{Vendor: "a", Region: "GD", Reason: "first"},
			{Vendor: "a", Region: "GD", Reason: "second"},
		}, false, []BlacklistEntry{{Vendor: "a", Region: "GD", Reason: "second"}}},
		{"ended entries are not active", []BlacklistEntry{
			{Vendor: "a", Until: t0},
			{Vendor: "b", Until: t0.Add(-time.Hour)},
			{Vendor: "c", Until: t0.Add(time.Nanosecond)},
		}, false, []BlacklistEntry{{Vendor: "c", Until: t0.Add(time.Nanosecond)}}},
		{"no vendor: refused, nothing changes", []BlacklistEntry{
			{Vendor: "a"}, {Region: "GD"},
		}, true, []BlacklistEntry{keep}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var bl Blacklist
			if err := bl.Add(keep); err != nil {
				t.Fatal(err)
			}
			if err := bl.Replace(tc.set); (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if got := bl.List(t0); !slices.Equal(got, tc.want) {
				t.Fatalf("list %+v, want %+v", got, tc.want)
			}
		})
	}
}

// newClockMixer is a Mixer on mixerYAML with a settable clock, not running
// (plans are recomputed by the changes and by hand).
func newClockMixer(t *testing.T, now *time.Time, opts ...Option) *Mixer {
	t.Helper()
	cfg, err := decodeConfig(t, mixerYAML)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, bus.NewMemory(bus.MemoryConfig{Logger: quietLog}), quietLog, nil,
		append(opts, WithClock(func() time.Time { return *now }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// The control API writes the manual entries to the store, with absolute
// Until times; refused requests and automatic entries change nothing there.
func TestMixerBlacklistStored(t *testing.T) {
	now := testNow
	store := newMemStore[BlacklistEntry](nil)
	m := newClockMixer(t, &now, WithBlacklistStore(store))
	api := (&mixerEnv{}).do
	h := m.APIHandler()
	if err := m.alloc.auto.Add(BlacklistEntry{Vendor: "b", Region: "SH", Until: now.Add(time.Hour), Reason: "stall rule: test"}); err != nil {
		t.Fatal(err)
	}
	aGD := BlacklistEntry{Vendor: "a", Region: "GD", Until: now.Add(10 * time.Minute).UTC(), Reason: "control API"}
	bAll := BlacklistEntry{Vendor: "b", Reason: "maintenance"}
	tests := []struct {
		name, method, target, body string
		code                       int
		stored                     []BlacklistEntry
	}{
		{"add with a ttl", "POST", "/api/v1/cdn/blacklist", `{"vendor":"a","region":"GD","ttl":"10m"}`, 201, []BlacklistEntry{aGD}},
		{"add until removed", "POST", "/api/v1/cdn/blacklist", `{"vendor":"b","reason":"maintenance"}`, 201, []BlacklistEntry{aGD, bAll}},
		{"unknown vendor", "POST", "/api/v1/cdn/blacklist", `{"vendor":"zz"}`, 400, []BlacklistEntry{aGD, bAll}},
		{"bad ttl", "POST", "/api/v1/cdn/blacklist", `{"vendor":"a","ttl":"-1m"}`, 400, []BlacklistEntry{aGD, bAll}},
		{"remove", "DELETE", "/api/v1/cdn/blacklist?vendor=a&region=GD", "", 204, []BlacklistEntry{bAll}},
		{"remove again", "DELETE", "/api/v1/cdn/blacklist?vendor=a&region=GD", "", 404, []BlacklistEntry{bAll}},
		{"remove an automatic entry", "DELETE", "/api/v1/cdn/blacklist?vendor=b&region=SH", "", 204, []BlacklistEntry{bAll}},
		{"remove the last", "DELETE", "/api/v1/cdn/blacklist", `{"vendor":"b"}`, 204, nil},
	}
	for _, tc := range tests {
		w := api(h, tc.method, tc.target, tc.body, "")
		if w.Code != tc.code {
			t.Fatalf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.code)
		}
		var stored []BlacklistEntry
		for _, e := range store.All() {
			stored = append(stored, e)
		}
		sortEntries(stored)
		if !slices.Equal(stored, tc.stored) {
			t.Errorf("%s: stored %+v, want %+v", tc.name, stored, tc.stored)
		}
		if manual := m.ManualBlacklist(); len(manual) != len(tc.stored) {
			t.Errorf("%s: applied %+v, want %+v", tc.name, manual, tc.stored)
		}
	}
}

// SetBlacklist replaces the manual entries, keeps the stall rule's and
// ends each entry at its Until.
func TestMixerSetBlacklist(t *testing.T) {
	gd, sh := Bucket{"GD", "telecom"}, Bucket{"SH", "telecom"}
	type probe struct {
		after   time.Duration // clock advance before the check
		b       Bucket
		vendor  string
		blocked bool
	}
	tests := []struct {
		name    string
		auto    []BlacklistEntry // the stall rule's, before the set
		set     []BlacklistEntry // relative Until: from now
		wantErr bool
		probes  []probe
	}{
		{"entry blocks until its Until", nil, []BlacklistEntry{{Vendor: "a", Region: "GD", Until: testNow.Add(time.Minute)}}, false,
			[]probe{{0, gd, "a", true}, {0, sh, "a", false}, {59 * time.Second, gd, "a", true}, {time.Second, gd, "a", false}}},
		{"zero Until lasts", nil, []BlacklistEntry{{Vendor: "b", ISP: "telecom"}}, false,
			[]probe{{0, gd, "b", true}, {24 * time.Hour, sh, "b", true}, {0, gd, "a", false}}},
		{"ended entry ignored", nil, []BlacklistEntry{{Vendor: "a", Region: "GD", Until: testNow.Add(-time.Second)}}, false,
			[]probe{{0, gd, "a", false}}},
		{"empty keeps the stall rule's", []BlacklistEntry{{Vendor: "a", Region: "SH", Until: testNow.Add(time.Hour)}}, nil, false,
			[]probe{{0, sh, "a", true}, {0, gd, "a", false}}},
		{"refused: no vendor", nil, []BlacklistEntry{{Region: "GD"}}, true,
			[]probe{{0, gd, "a", true}}}, // the earlier manual entry stays
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := testNow
			m := newClockMixer(t, &now)
			// A manual entry from before, replaced by the set.
			if err := m.SetBlacklist([]BlacklistEntry{{Vendor: "a", Region: "GD"}}); err != nil {
				t.Fatal(err)
			}
			for _, e := range tc.auto {
				if err := m.alloc.auto.Add(e); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.SetBlacklist(tc.set); (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			for i, p := range tc.probes {
				now = now.Add(p.after)
				m.Allocator().Recompute(now)
				if got := candidate(t, m.Allocator().Plan(), p.b, p.vendor).Ratio == 0; got != p.blocked {
					t.Errorf("probe %d (+%v, %s in %s): blocked %v, want %v", i, p.after, p.vendor, p.b, got, p.blocked)
				}
			}
			for _, e := range m.ManualBlacklist() {
				if slices.Contains(tc.auto, e) {
					t.Errorf("stall rule entry %+v listed as manual", e)
				}
			}
		})
	}
}

// Entries one mixer stores end at the same moment on another that shares
// the store (Until is absolute, however late the change reaches it).
func TestBlacklistSharedExpiry(t *testing.T) {
	now1, now2 := testNow, testNow
	store := newMemStore[BlacklistEntry](nil)
	m2 := newClockMixer(t, &now2, WithBlacklistStore(store))
	m1 := newClockMixer(t, &now1, WithBlacklistStore(store))
	if w := (&mixerEnv{}).do(m1.APIHandler(), "POST", "/api/v1/cdn/blacklist", `{"vendor":"a","region":"GD","ttl":"1m"}`, ""); w.Code != 201 {
		t.Fatalf("POST: %d %s", w.Code, w.Body)
	}
	now2 = now2.Add(30 * time.Second) // the change reaches node 2 late
	m2.SyncBlacklist()
	if got := m2.ManualBlacklist(); len(got) != 1 || !got[0].Until.Equal(testNow.Add(time.Minute)) {
		t.Errorf("node 2 entries %+v", got)
	}
	gd := Bucket{"GD", "telecom"}
	for _, tc := range []struct {
		at      time.Duration
		blocked bool
	}{{30 * time.Second, true}, {59 * time.Second, true}, {time.Minute, false}} {
		for i, m := range []*Mixer{m1, m2} {
			at := testNow.Add(tc.at)
			if got := candidate(t, m.Allocator().Recompute(at), gd, "a").Ratio == 0; got != tc.blocked {
				t.Errorf("node %d at +%v: blocked %v, want %v", i+1, tc.at, got, tc.blocked)
			}
		}
	}
}
