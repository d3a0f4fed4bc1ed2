package cdnmix

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// The vendors and the manual blacklist live in a store that every node of
// a deployment shares (the lms collections "cdn-vendors" and
// "cdn-blacklist"), one record per vendor and per entry, so that changes
// to different vendors or entries never collide and changes to the same
// one are compare-and-swap. The control API writes through the store and
// applies what the store then holds; other nodes apply it from their
// watch ([Mixer.SyncVendors], [Mixer.SyncBlacklist]). Without a store
// (tests, a mixer on its own) the mixer keeps them in memory.

// StoredVendor is a vendor as the store keeps it: the vendor and its place
// in the list (the order of the allocator's ties and of fallback.json).
// Vendors with the same Pos are ordered by name.
type StoredVendor struct {
	Pos    int64  `json:"pos"`
	Vendor Vendor `json:"vendor"`
}

// VendorStore holds the vendors by name. lms.Collection satisfies it.
type VendorStore interface {
	// All returns every stored vendor by name.
	All() map[string]StoredVendor
	// Update changes one vendor atomically: fn gets the stored one (nil
	// when none) and returns the new one (nil deletes it); it is called
	// again when a concurrent write came first.
	Update(ctx context.Context, name string, fn func(cur *StoredVendor) (*StoredVendor, error)) (*StoredVendor, error)
	// UpdateAll replaces the whole set atomically, like Update.
	UpdateAll(ctx context.Context, fn func(cur map[string]StoredVendor) (map[string]StoredVendor, error)) error
}

// BlacklistStore holds the manual blacklist entries by [BlacklistName].
// lms.Collection satisfies it.
type BlacklistStore interface {
	All() map[string]BlacklistEntry
	Update(ctx context.Context, name string, fn func(cur *BlacklistEntry) (*BlacklistEntry, error)) (*BlacklistEntry, error)
}

// BlacklistName is the store name of the entry for vendor × region × ISP.
func BlacklistName(vendor, region, isp string) string {
	return url.QueryEscape(vendor) + "," + url.QueryEscape(region) + "," + url.QueryEscape(isp)
}

// StoreVendors returns vs as the store keeps them, in their order.
func StoreVendors(vs []Vendor) map[string]StoredVendor {
	out := make(map[string]StoredVendor, len(vs))
	for i, v := range vs {
		out[v.Name] = StoredVendor{Pos: int64(i), Vendor: v}
	}
	return out
}

// orderedVendors returns the stored vendors in list order.
func orderedVendors(m map[string]StoredVendor) []Vendor {
	svs := slices.Collect(maps.Values(m))
	slices.SortFunc(svs, func(a, b StoredVendor) int {
		return cmp.Or(cmp.Compare(a.Pos, b.Pos), strings.Compare(a.Vendor.Name, b.Vendor.Name))
	})
	out := make([]Vendor, len(svs))
	for i, sv := range svs {
		out[i] = sv.Vendor
	}
	return out
}

// SyncVendors gives the allocator the stored vendors unless it has them
// already; a stored set that does not validate is logged (never its keys)
// and the current list stays.
func (m *Mixer) SyncVendors() {
	m.vmu.Lock()
	defer m.vmu.Unlock()
	vs := orderedVendors(m.vendors.All())
	if sameVendors(vs, m.alloc.Vendors()) {
		return
	}
	if err := m.alloc.SetVendors(vs); err != nil {
		m.log.Error("stored cdn vendors refused, keeping the current list", "err", err)
		return
	}
	m.log.Info("cdn vendors applied from the store", "vendors", len(vs))
}

// SyncBlacklist gives the allocator the stored manual blacklist (entries
// that have ended are left out; the rest end at their Until, the same
// moment on every node). The stall rule's entries stay.
func (m *Mixer) SyncBlacklist() {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	now := m.opts.now()
	var es []BlacklistEntry
	for _, e := range m.blacklist.All() {
		if e.active(now) {
			es = append(es, e)
		}
	}
	sortEntries(es)
	if slices.Equal(es, m.alloc.ManualBlacklist()) {
		return
	}
	if err := m.alloc.SetBlacklist(es); err != nil {
		m.log.Error("stored cdn blacklist refused, keeping the current one", "err", err)
	}
}

// errKeep makes a store update write nothing.
var errKeep = errors.New("keep")

// pruneBlacklist removes the stored entries that have ended (with the
// next change through the API, so the store holds the active entries and
// those ended since). An entry replaced meanwhile by an active one stays.
func (m *Mixer) pruneBlacklist(ctx context.Context) {
	now := m.opts.now()
	for name, e := range m.blacklist.All() {
		if e.active(now) {
			continue
		}
		_, err := m.blacklist.Update(ctx, name, func(cur *BlacklistEntry) (*BlacklistEntry, error) {
			if cur == nil || cur.active(now) {
				return nil, errKeep
			}
			return nil, nil
		})
		if err != nil && !errors.Is(err, errKeep) {
			m.log.Warn("ended blacklist entry not removed from the store", "vendor", e.Vendor, "err", err)
		}
	}
}

func sameVendors(a, b []Vendor) bool {
	return reflect.DeepEqual(a, b)
}

// memStore is the in-memory store of a mixer without a shared one. Like
// the shared store, its updates are compare-and-swap (on a version of the
// whole map): fn runs without the lock, so it may read the store.
type memStore[T any] struct {
	mu      sync.Mutex
	m       map[string]T
	version int
}

func newMemStore[T any](m map[string]T) *memStore[T] {
	if m == nil {
		m = map[string]T{}
	}
	return &memStore[T]{m: m}
}

func (s *memStore[T]) All() map[string]T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func (s *memStore[T]) snapshot() (map[string]T, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m), s.version
}

// commit stores next if nothing changed since version.
func (s *memStore[T]) commit(next map[string]T, version int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.version != version {
		return false
	}
	s.m, s.version = next, version+1
	return true
}

func (s *memStore[T]) Update(ctx context.Context, name string, fn func(cur *T) (*T, error)) (*T, error) {
	var out *T
	err := s.UpdateAll(ctx, func(m map[string]T) (map[string]T, error) {
		var cur *T
		if v, ok := m[name]; ok {
			cur = &v
		}
		next, err := fn(cur)
		if err != nil {
			return nil, err
		}
		if out = next; next == nil {
			delete(m, name)
		} else {
			m[name] = *next
		}
		return m, nil
	})
	return out, err
}

func (s *memStore[T]) UpdateAll(ctx context.Context, fn func(cur map[string]T) (map[string]T, error)) error {
	for ctx.Err() == nil {
		cur, version := s.snapshot()
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if s.commit(maps.Clone(next), version) {
			return nil
		}
	}
	return ctx.Err()
}
