package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/lms"
)

func openTestStore(t *testing.T) *lms.Store {
	t.Helper()
	cfg := lms.DefaultConfig()
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := lms.OpenStore(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func startColl[T any](t *testing.T, st *lms.Store, kind string) *lms.Collection[T] {
	t.Helper()
	c, err := lms.NewCollection(st, kind, lms.CollectionOptions[T]{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func vendorNames(c *lms.Collection[cdnmix.StoredVendor]) []string {
	svs := c.List()
	slices.SortFunc(svs, func(a, b cdnmix.StoredVendor) int { return int(a.Pos - b.Pos) })
	var out []string
	for _, sv := range svs {
		out = append(out, sv.Vendor.Name)
	}
	return out
}

// The vendor list and blacklist an earlier version stored as blobs seed
// the collections once, in their order; the config's vendors then only
// seed a store never seeded, and an emptied list stays empty.
func TestSeedCDN(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	vb := func(name string) cdnmix.Vendor {
		return cdnmix.Vendor{Name: name, FLVBase: "http://" + name + ".example.com", CommitMbps: 1, CeilingMbps: 2, Enabled: true}
	}
	cfgVendors := []cdnmix.Vendor{vb("cfg")}

	t.Run("carried over from the blobs", func(t *testing.T) {
		st := openTestStore(t)
		reg := lms.NewRegistry(st, log)
		old, _ := json.Marshal([]cdnmix.Vendor{vb("zz"), vb("aa")})
		if _, err := reg.PutBlob(ctx, cdnBlobKind, vendorsBlob, old); err != nil {
			t.Fatal(err)
		}
		entry := cdnmix.BlacklistEntry{Vendor: "zz", Region: "GD", Reason: "old"}
		oldBL, _ := json.Marshal([]cdnmix.BlacklistEntry{entry})
		if _, err := reg.PutBlob(ctx, cdnBlobKind, blacklistBlob, oldBL); err != nil {
			t.Fatal(err)
		}
		vendors := startColl[cdnmix.StoredVendor](t, st, vendorsKind)
		blacklist := startColl[cdnmix.BlacklistEntry](t, st, blacklistKind)
		if err := seedCDN(ctx, reg, vendors, blacklist, cfgVendors, log); err != nil {
			t.Fatal(err)
		}
		if got := vendorNames(vendors); !slices.Equal(got, []string{"zz", "aa"}) {
			t.Errorf("vendors %v, want the blob's [zz aa] in its order", got)
		}
		if e, ok := blacklist.Get(cdnmix.BlacklistName("zz", "GD", "")); !ok || e.Reason != "old" {
			t.Errorf("blacklist %v", blacklist.All())
		}
	})

	t.Run("config seeds once", func(t *testing.T) {
		st := openTestStore(t)
		reg := lms.NewRegistry(st, log)
		vendors := startColl[cdnmix.StoredVendor](t, st, vendorsKind)
		blacklist := startColl[cdnmix.BlacklistEntry](t, st, blacklistKind)
		if err := seedCDN(ctx, reg, vendors, blacklist, cfgVendors, log); err != nil {
			t.Fatal(err)
		}
		if got := vendorNames(vendors); !slices.Equal(got, []string{"cfg"}) {
			t.Fatalf("vendors %v, want the config's", got)
		}
		if err := vendors.Delete(ctx, "cfg"); err != nil {
			t.Fatal(err)
		}
		if err := seedCDN(ctx, reg, vendors, blacklist, cfgVendors, log); err != nil {
			t.Fatal(err)
		}
		if vendors.Len() != 0 {
			t.Errorf("an emptied vendor list was seeded again: %v", vendorNames(vendors))
		}
	})
}

// The session token key is made once and shared: every node of a store
// (every call) gets the same one; a damaged stored key is refused.
func TestLoadTokenKey(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	st := openTestStore(t)
	reg := lms.NewRegistry(st, log)
	k1, err := loadTokenKey(ctx, reg, log)
	if err != nil || len(k1) != 32 {
		t.Fatalf("first key: %d bytes, %v", len(k1), err)
	}
	k2, err := loadTokenKey(ctx, reg, log)
	if err != nil || !slices.Equal(k1, k2) {
		t.Fatalf("second call: %v, same key %v", err, slices.Equal(k1, k2))
	}
	if _, err := reg.PutBlob(ctx, cdnBlobKind, tokenKeyBlob, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTokenKey(ctx, reg, log); err == nil {
		t.Error("a 5-byte stored key was accepted")
	}
}
