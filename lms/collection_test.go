package lms

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type testItem struct {
	N    int    `json:"n"`
	Note string `json:"note,omitempty"`
}

func newTestCollection(t *testing.T, st *Store, kind string) *Collection[testItem] {
	t.Helper()
	c, err := NewCollection(st, kind, CollectionOptions[testItem]{Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startTestCollection(t *testing.T, st *Store, kind string) *Collection[testItem] {
	t.Helper()
	c := newTestCollection(t, st, kind)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// changes returns a channel that receives every change of c.
func changes(c *Collection[testItem]) <-chan Change[testItem] {
	ch := make(chan Change[testItem], 256)
	c.Subscribe(func(x Change[testItem]) { ch <- x })
	return ch
}

func nextChange(t *testing.T, ch <-chan Change[testItem]) Change[testItem] {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change delivered within 10 s")
		return Change[testItem]{}
	}
}

func TestCollectionCAS(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	c := startTestCollection(t, st, "things")

	rev, err := c.Create(ctx, "a", testItem{N: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "a", testItem{N: 2}); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v, want ErrExists", err)
	}
	// A write based on the current revision wins; a second one based on
	// the same (now old) revision lost the race and writes nothing.
	if _, err := c.CAS(ctx, "a", testItem{N: 3}, rev); err != nil {
		t.Fatalf("CAS on the current revision: %v", err)
	}
	if _, err := c.CAS(ctx, "a", testItem{N: 4}, rev); !errors.Is(err, ErrConflict) {
		t.Errorf("CAS on an old revision: %v, want ErrConflict", err)
	}
	if v, _ := c.Get("a"); v.N != 3 {
		t.Errorf("after the lost CAS: %+v, want N 3", v)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	if _, ok := c.Get("a"); ok {
		t.Error("Get after Delete found it")
	}
}

// Writers on two copies (two nodes) incrementing one item and adding
// items of their own: no update is lost.
func TestCollectionUpdateNoLostUpdate(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	nodes := []*Collection[testItem]{startTestCollection(t, st, "things"), startTestCollection(t, st, "things")}
	const per = 25
	var wg sync.WaitGroup
	errs := make(chan error, 4*per)
	for i, c := range nodes {
		for w := range 2 {
			wg.Go(func() {
				for j := range per {
					if _, err := c.Update(ctx, "counter", func(cur *testItem) (*testItem, error) {
						n := testItem{N: 1}
						if cur != nil {
							n.N = cur.N + 1
						}
						return &n, nil
					}); err != nil {
						errs <- err
					}
					if err := c.UpdateAll(ctx, func(cur map[string]testItem) (map[string]testItem, error) {
						cur[fmt.Sprintf("n%d-w%d-%d", i, w, j)] = testItem{N: j}
						return cur, nil
					}); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, c := range nodes {
		if err := c.WaitFresh(ctx); err != nil {
			t.Fatal(err)
		}
		if v, _ := c.Get("counter"); v.N != 4*per {
			t.Errorf("node %d: counter %d, want %d", i, v.N, 4*per)
		}
		if n := c.Len(); n != 1+4*per {
			t.Errorf("node %d: %d items, want %d", i, n, 1+4*per)
		}
	}
}

// UpdateAll's snapshot check catches an item created, changed or deleted
// between its read and its write.
func TestCollectionUpdateAllConflict(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	c := startTestCollection(t, st, "things")
	if _, err := c.Put(ctx, "a", testItem{N: 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		other func() error
	}{
		{"created", func() error { _, err := c.Put(ctx, "b", testItem{}); return err }},
		{"changed", func() error { _, err := c.Put(ctx, "a", testItem{N: 9}); return err }},
		{"deleted", func() error { return c.Delete(ctx, "b") }},
	} {
		if tc.name == "deleted" {
			if _, err := c.Put(ctx, "b", testItem{}); err != nil {
				t.Fatal(err)
			}
		}
		calls := 0
		err := c.UpdateAll(ctx, func(cur map[string]testItem) (map[string]testItem, error) {
			calls++
			if calls == 1 {
				if err := tc.other(); err != nil {
					t.Fatal(err)
				}
			}
			return map[string]testItem{"a": {N: 100 + len(cur)}}, nil
		})
		if err != nil || calls != 2 {
			t.Errorf("%s: UpdateAll %v after %d calls, want a retry", tc.name, err, calls)
		}
	}
	if all := c.All(); len(all) != 1 || all["a"].N != 101 {
		t.Errorf("after UpdateAll: %+v", all)
	}
}

// When the watch falls behind a compaction, the collection reloads and
// reports exactly the differences, then follows changes again.
func TestCollectionWatchResumesAfterCompaction(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	w := startTestCollection(t, st, "things")
	for _, n := range []string{"same", "changed", "gone"} {
		if _, err := w.Put(ctx, n, testItem{N: 1}); err != nil {
			t.Fatal(err)
		}
	}

	c := newTestCollection(t, st, "things")
	ch := changes(c)
	rev, err := c.reload(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, "changed", testItem{N: 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, "new", testItem{N: 1}); err != nil {
		t.Fatal(err)
	}
	gr, err := st.cli.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.cli.Compact(ctx, gr.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	c.follow(ctx, rev) // from before the compaction
	t.Cleanup(c.Close)

	got := map[string]string{}
	for range 3 {
		x := nextChange(t, ch)
		switch {
		case x.Old == nil:
			got[x.Name] = "created"
		case x.New == nil:
			got[x.Name] = "deleted"
		default:
			got[x.Name] = fmt.Sprintf("changed %d→%d", x.Old.N, x.New.N)
		}
	}
	want := map[string]string{"changed": "changed 1→2", "gone": "deleted", "new": "created"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes after the reload: %v, want %v", got, want)
	}
	// The watch follows again from the reload.
	if _, err := w.Put(ctx, "after", testItem{N: 7}); err != nil {
		t.Fatal(err)
	}
	if x := nextChange(t, ch); x.Name != "after" || x.New == nil || x.New.N != 7 {
		t.Errorf("change after the resumed watch: %+v", x)
	}
	if len(c.All()) != 4 {
		t.Errorf("copy after the reload: %v", c.All())
	}
}

// SeedOnce writes only into a collection never seeded: one emptied later
// stays empty.
func TestCollectionSeedOnce(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	c := startTestCollection(t, st, "things")
	if ok, err := c.SeedOnce(ctx, map[string]testItem{"a": {N: 1}, "b": {N: 2}}); !ok || err != nil {
		t.Fatalf("first SeedOnce: %v %v", ok, err)
	}
	if c.Len() != 2 {
		t.Fatalf("after the seed: %v", c.All())
	}
	for _, n := range []string{"a", "b"} {
		if err := c.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := c.SeedOnce(ctx, map[string]testItem{"a": {N: 1}}); ok || err != nil {
		t.Errorf("second SeedOnce: %v %v, want no write", ok, err)
	}
	if seeded, err := c.Seeded(ctx); !seeded || err != nil {
		t.Errorf("Seeded: %v %v", seeded, err)
	}
	if c.Len() != 0 {
		t.Errorf("emptied collection seeded again: %v", c.All())
	}
}

// The watch's backoff grows from Min, never passes 1.5 × Max (jitter
// included), and starts again from Min after a success.
func TestBackoffBounded(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}.start()
	var last time.Duration
	for i := range 50 {
		d := b.next()
		if d < b.b.Min/2 || d >= b.b.Max*3/2 {
			t.Fatalf("pause %d: %v outside [%v, %v)", i, d, b.b.Min/2, b.b.Max*3/2)
		}
		last = d
	}
	if last < b.b.Max/2 {
		t.Errorf("after 50 failures the pause is %v, want about Max", last)
	}
	b.reset()
	if d := b.next(); d >= b.b.Min*3/2 {
		t.Errorf("after reset: %v, want about Min", d)
	}
}

// A closed collection stops its watch: Close returns, and further changes
// are not delivered.
func TestCollectionClose(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	c := newTestCollection(t, st, "things")
	ch := changes(c)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	w := startTestCollection(t, st, "things")
	if _, err := w.Put(ctx, "x", testItem{}); err != nil {
		t.Fatal(err)
	}
	nextChange(t, ch)
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := w.Put(cctx, "y", testItem{}); err != nil {
		t.Fatal(err)
	}
	select {
	case x := <-ch:
		t.Errorf("change delivered after Close: %+v", x)
	case <-cctx.Done():
	}
}

// An atomic update larger than one etcd transaction is refused with a
// clear error, and writes nothing.
func TestCollectionAtomicBound(t *testing.T) {
	ctx := t.Context()
	c := startTestCollection(t, prefixStore(t), "things")
	big := map[string]testItem{}
	for i := range MaxAtomicItems + 1 {
		big[fmt.Sprint(i)] = testItem{N: i}
	}
	if err := c.UpdateAll(ctx, func(map[string]testItem) (map[string]testItem, error) { return big, nil }); !errors.Is(err, ErrTooLarge) {
		t.Errorf("UpdateAll of %d items: %v, want ErrTooLarge", len(big), err)
	}
	if _, err := c.SeedOnce(ctx, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("SeedOnce of %d items: %v, want ErrTooLarge", len(big), err)
	}
	if c.Len() != 0 {
		t.Errorf("%d items stored by refused updates", c.Len())
	}
	delete(big, "0")
	if err := c.UpdateAll(ctx, func(map[string]testItem) (map[string]testItem, error) { return big, nil }); err != nil {
		t.Errorf("UpdateAll of %d items: %v", len(big), err)
	}
	if c.Len() != MaxAtomicItems {
		t.Errorf("%d items stored, want %d", c.Len(), MaxAtomicItems)
	}
}

// OnChange is called after each batch of changes, never more often than
// there are changes, and the last call sees them all.
func TestCollectionOnChange(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	c := newTestCollection(t, st, "things")
	seen := make(chan int, 100)
	c.OnChange(func() { seen <- c.Len() })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w := startTestCollection(t, st, "things")
	const n = 50
	if err := w.UpdateAll(ctx, func(map[string]testItem) (map[string]testItem, error) {
		m := map[string]testItem{}
		for i := range n {
			m[fmt.Sprint(i)] = testItem{N: i}
		}
		return m, nil
	}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	for {
		select {
		case got := <-seen:
			calls++
			if got == n {
				// One transaction: its changes arrive as one batch.
				if calls != 1 {
					t.Errorf("%d calls for one transaction of %d changes", calls, n)
				}
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no call saw the %d items within 10 s (%d calls)", n, calls)
		}
	}
}
