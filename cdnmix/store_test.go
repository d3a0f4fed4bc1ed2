package cdnmix

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Two mixers sharing one store (two nodes): changes through either API,
// at once, all reach both, in one order; a vendor sent without its key
// keeps the stored one.
func TestMixersShareStores(t *testing.T) {
	now := testNow
	cfg, err := decodeConfig(t, mixerYAML)
	if err != nil {
		t.Fatal(err)
	}
	vendors := newMemStore(StoreVendors(cfg.Vendors)) // seeded, as the node does
	blacklist := newMemStore[BlacklistEntry](nil)
	var ms []*Mixer
	for range 2 {
		ms = append(ms, newClockMixer(t, &now, WithVendorStore(vendors), WithBlacklistStore(blacklist)))
	}
	do := (&mixerEnv{}).do
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			h := m.APIHandler()
			for j := range 20 {
				name := fmt.Sprintf("m%d-%02d", i, j)
				body := fmt.Sprintf(`{"flv_base":"http://%s.example.com","signing":"hmac_sha256","key":"k-%s","commit_mbps":1,"ceiling_mbps":2}`, name, name)
				if w := do(h, "PUT", "/api/v1/cdn/vendors/"+name, body, ""); w.Code != 201 {
					t.Errorf("PUT %s: %d %s", name, w.Code, w.Body)
				}
				if w := do(h, "POST", "/api/v1/cdn/blacklist", fmt.Sprintf(`{"vendor":"a","region":"r%d-%02d"}`, i, j), ""); w.Code != 201 {
					t.Errorf("POST blacklist: %d %s", w.Code, w.Body)
				}
			}
		})
	}
	wg.Wait()
	var orders [2][]string
	for i, m := range ms {
		m.SyncVendors()
		m.SyncBlacklist()
		for _, v := range m.Allocator().Vendors() {
			orders[i] = append(orders[i], v.Name)
		}
		if n := len(m.ManualBlacklist()); n != 40 {
			t.Errorf("mixer %d: %d blacklist entries, want 40", i, n)
		}
	}
	if len(orders[0]) != len(ms[0].cfg.Vendors)+40 || !slices.Equal(orders[0], orders[1]) {
		t.Fatalf("vendors:\n%v\n%v", orders[0], orders[1])
	}
	// An edit without the key keeps it, on both.
	if w := do(ms[1].APIHandler(), "PUT", "/api/v1/cdn/vendors/m0-00",
		`{"flv_base":"http://m0-00.example.com","signing":"hmac_sha256","commit_mbps":5,"ceiling_mbps":6}`, ""); w.Code != 200 {
		t.Fatalf("edit without the key: %d %s", w.Code, w.Body)
	}
	ms[0].SyncVendors()
	for i, m := range ms {
		i0 := slices.IndexFunc(m.Allocator().Vendors(), func(v Vendor) bool { return v.Name == "m0-00" })
		if v := m.Allocator().Vendors()[i0]; v.Key != "k-m0-00" || v.CommitMbps != 5 {
			t.Errorf("mixer %d: m0-00 after the edit: key kept %v, commit %v", i, v.Key == "k-m0-00", v.CommitMbps)
		}
		if got := m.Allocator().Vendors()[i0].Name; got != orders[0][i0] {
			t.Errorf("mixer %d: the edit moved m0-00", i)
		}
	}
}

// Ended entries leave the store with the next change.
func TestBlacklistPrunedFromStore(t *testing.T) {
	now := testNow
	store := newMemStore[BlacklistEntry](nil)
	m := newClockMixer(t, &now, WithBlacklistStore(store))
	h := m.APIHandler()
	do := (&mixerEnv{}).do
	if w := do(h, "POST", "/api/v1/cdn/blacklist", `{"vendor":"a","region":"GD","ttl":"1m"}`, ""); w.Code != 201 {
		t.Fatal(w.Code, w.Body)
	}
	now = now.Add(2 * time.Minute)
	if w := do(h, "POST", "/api/v1/cdn/blacklist", `{"vendor":"b"}`, ""); w.Code != 201 {
		t.Fatal(w.Code, w.Body)
	}
	all := store.All()
	if _, ok := all[BlacklistName("b", "", "")]; !ok || len(all) != 1 {
		t.Errorf("store after the next change: %+v, want only b's entry", all)
	}
}
