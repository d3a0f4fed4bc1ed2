package lms

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBlobs(t *testing.T) {
	st := prefixStore(t)
	r := startRegistry(t, st)
	ctx := t.Context()

	if _, ok, err := r.GetBlob(ctx, "cdnmix", "vendors"); err != nil || ok {
		t.Fatalf("GetBlob of nothing: ok %v, err %v", ok, err)
	}
	created, rev1, err := r.CreateBlob(ctx, "cdnmix", "vendors", []byte(`[1]`))
	if err != nil || !created || rev1 == 0 {
		t.Fatalf("CreateBlob: created %v rev %d err %v", created, rev1, err)
	}
	if created, _, err := r.CreateBlob(ctx, "cdnmix", "vendors", []byte(`[2]`)); err != nil || created {
		t.Fatalf("CreateBlob over a blob: created %v, err %v", created, err)
	}
	if b, ok, err := r.GetBlob(ctx, "cdnmix", "vendors"); err != nil || !ok || string(b) != `[1]` {
		t.Fatalf("GetBlob after a refused create: %q %v %v", b, ok, err)
	}
	rev2, err := r.PutBlob(ctx, "cdnmix", "vendors", []byte(`[3]`))
	if err != nil || rev2 <= rev1 {
		t.Fatalf("PutBlob: rev %d (after %d), err %v", rev2, rev1, err)
	}
	if _, err := r.PutBlob(ctx, "cdnmix", "other", nil); err != nil {
		t.Fatalf("PutBlob of an empty value: %v", err)
	}
	// Another kind whose name extends this one stays apart.
	if _, err := r.PutBlob(ctx, "cdnmixer", "vendors", []byte("x")); err != nil {
		t.Fatal(err)
	}
	all, rev, err := r.GetBlobs(ctx, "cdnmix")
	if err != nil || len(all) != 2 || string(all["vendors"]) != `[3]` || len(all["other"]) != 0 || rev < rev2 {
		t.Fatalf("GetBlobs: %q rev %d err %v", all, rev, err)
	}
	if ok, err := r.DeleteBlob(ctx, "cdnmix", "other"); err != nil || !ok {
		t.Fatalf("DeleteBlob: %v %v", ok, err)
	}
	if ok, err := r.DeleteBlob(ctx, "cdnmix", "other"); err != nil || ok {
		t.Fatalf("DeleteBlob again: %v %v", ok, err)
	}
	// Blobs are not streams.
	if r.Len() != 0 {
		t.Errorf("registry has %d streams", r.Len())
	}

	for _, tc := range []struct {
		name, kind, blob string
		size             int
	}{
		{"empty kind", "", "x", 1},
		{"kind with slash", "a/b", "x", 1},
		{"upper case kind", "CDN", "x", 1},
		{"empty name", "k", "", 1},
		{"name with slash", "k", "a/b", 1},
		{"long name", "k", strings.Repeat("n", 257), 1},
		{"too large", "k", "x", MaxBlob + 1},
	} {
		if _, err := r.PutBlob(ctx, tc.kind, tc.blob, make([]byte, tc.size)); err == nil {
			t.Errorf("%s: PutBlob accepted it", tc.name)
		}
		if _, _, err := r.CreateBlob(ctx, tc.kind, tc.blob, make([]byte, tc.size)); err == nil {
			t.Errorf("%s: CreateBlob accepted it", tc.name)
		}
	}
	if _, _, err := r.GetBlobs(ctx, "a/b"); err == nil {
		t.Error("GetBlobs accepted a bad kind")
	}
	if err := r.WatchBlobs(ctx, "a/b", func(BlobEvent) {}); err == nil {
		t.Error("WatchBlobs accepted a bad kind")
	}
}

// eventLog collects BlobEvents from a watch.
type eventLog struct {
	mu     sync.Mutex
	events []BlobEvent
}

func (l *eventLog) add(e BlobEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// wait returns the events once there are n (or fails after 5 s).
func (l *eventLog) wait(t *testing.T, n int) []BlobEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		got := append([]BlobEvent(nil), l.events...)
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events in 5 s, want %d: %+v", len(got), n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchBlobs watches through one registry what another one ("another
// node" on the same store) writes.
func TestWatchBlobs(t *testing.T) {
	st := prefixStore(t)
	node1, node2 := startRegistry(t, st), startRegistry(t, st)
	ctx := t.Context()
	if _, err := node1.PutBlob(ctx, "cdnmix", "vendors", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := node1.PutBlob(ctx, "other", "vendors", []byte("not this kind")); err != nil {
		t.Fatal(err)
	}

	var log eventLog
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- node2.WatchBlobs(wctx, "cdnmix", log.add) }()

	// The current state comes first.
	got := log.wait(t, 1)
	if e := got[0]; e.Name != "vendors" || string(e.Value) != "v1" || e.Deleted || e.Revision == 0 {
		t.Fatalf("first event %+v", e)
	}
	rev, err := node1.PutBlob(ctx, "cdnmix", "vendors", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node1.PutBlob(ctx, "cdnmix", "x", []byte("x1")); err != nil {
		t.Fatal(err)
	}
	if _, err := node1.PutBlob(ctx, "other", "vendors", []byte("still not")); err != nil {
		t.Fatal(err)
	}
	if _, err := node1.DeleteBlob(ctx, "cdnmix", "x"); err != nil {
		t.Fatal(err)
	}
	got = log.wait(t, 4)
	want := []BlobEvent{
		{Name: "vendors", Value: []byte("v1")},
		{Name: "vendors", Value: []byte("v2"), Revision: rev},
		{Name: "x", Value: []byte("x1")},
		{Name: "x", Deleted: true},
	}
	if len(got) != len(want) {
		t.Fatalf("events %+v", got)
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.Name || !bytes.Equal(g.Value, w.Value) || g.Deleted != w.Deleted || (w.Revision != 0 && g.Revision != w.Revision) {
			t.Errorf("event %d: %+v, want %+v", i, g, w)
		}
		if i > 0 && g.Revision <= got[i-1].Revision {
			t.Errorf("event %d: revision %d after %d", i, g.Revision, got[i-1].Revision)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("WatchBlobs returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchBlobs did not return after its context ended")
	}
}

// TestResyncBlobs checks the reload after a broken watch reports exactly
// what changed meanwhile.
func TestResyncBlobs(t *testing.T) {
	st := prefixStore(t)
	r := startRegistry(t, st)
	ctx := t.Context()
	same, err := r.PutBlob(ctx, "k", "same", []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutBlob(ctx, "k", "changed", []byte("c2")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutBlob(ctx, "k", "new", []byte("n")); err != nil {
		t.Fatal(err)
	}
	known := map[string]int64{"same": same, "changed": 1, "gone": 1}
	var log eventLog
	rev, err := r.resyncBlobs(ctx, "k", known, log.add)
	if err != nil || rev == 0 {
		t.Fatalf("resync: rev %d, err %v", rev, err)
	}
	byName := map[string]BlobEvent{}
	for _, e := range log.wait(t, 3) {
		byName[e.Name] = e
	}
	if len(log.events) != 3 || !byName["gone"].Deleted || string(byName["changed"].Value) != "c2" ||
		string(byName["new"].Value) != "n" {
		t.Errorf("events %+v", log.events)
	}
	if _, ok := byName["same"]; ok {
		t.Error("an unchanged blob was reported")
	}
	if _, ok := known["gone"]; ok || len(known) != 3 {
		t.Errorf("known after resync: %v", known)
	}
}
