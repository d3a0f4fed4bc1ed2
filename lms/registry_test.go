package lms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// change is one change of a stream seen by a subscriber.
type change struct{ old, new *Stream }

// waitChange returns the next change delivered on ch, failing after 10 s.
func waitChange(t *testing.T, ch <-chan change) change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change delivered within 10 s")
		return change{}
	}
}

// subscribe returns a channel that receives every change of r.
func subscribe(r *Registry) <-chan change {
	ch := make(chan change, 64)
	r.Subscribe(func(old, new *Stream) { ch <- change{old, new} })
	return ch
}

func TestRegistryCRUD(t *testing.T) {
	ctx := t.Context()
	r := startRegistry(t, prefixStore(t))

	if err := r.Put(ctx, Stream{App: "live", Name: "a", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	a, ok := r.Get("live", "a")
	if !ok {
		t.Fatal("Get after Put: not found")
	}
	if len(a.PublishToken) != 24 {
		t.Errorf("generated publish token has %d chars, want 24", len(a.PublishToken))
	}
	if a.CreatedAt.IsZero() || a.UpdatedAt.IsZero() {
		t.Errorf("timestamps not set: %+v", a)
	}

	b, err := r.Create(ctx, Stream{App: "live", Name: "b", PublishToken: "tok-b", Source: "rtsp://cam.local/s"})
	if err != nil {
		t.Fatal(err)
	}
	if b.PublishToken != "tok-b" {
		t.Errorf("given publish token replaced")
	}
	if _, err := r.Create(ctx, Stream{App: "live", Name: "b"}); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: got %v, want ErrExists", err)
	}

	// Put keeps CreatedAt of the stored stream.
	created := a.CreatedAt
	a.Record = true
	a.CreatedAt = time.Time{}
	if err := r.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	a2, _ := r.Get("live", "a")
	if !a2.Record || !a2.CreatedAt.Equal(created) {
		t.Errorf("Put replace: got %+v", a2)
	}

	if got := r.List(); len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Errorf("List = %+v, want a, b", got)
	}

	u, err := r.Update(ctx, "live", "b", func(s *Stream) error { s.Enabled = true; return nil })
	if err != nil || !u.Enabled || u.Source != "rtsp://cam.local/s" {
		t.Errorf("Update: %+v, %v", u, err)
	}
	boom := errors.New("boom")
	if _, err := r.Update(ctx, "live", "b", func(s *Stream) error { s.Enabled = false; return boom }); !errors.Is(err, boom) {
		t.Errorf("Update with failing fn: %v", err)
	}
	if _, err := r.Update(ctx, "live", "b", func(s *Stream) error { s.Source = "http://x"; s.Enabled = false; return nil }); !errors.Is(err, ErrInvalid) {
		t.Errorf("Update to invalid source: %v, want ErrInvalid", err)
	}
	if s, _ := r.Get("live", "b"); !s.Enabled || s.Source != "rtsp://cam.local/s" {
		t.Errorf("failed Updates changed the stream: %+v", s)
	}
	if _, err := r.Update(ctx, "live", "nope", func(*Stream) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update missing: %v", err)
	}

	if err := r.Delete(ctx, "live", "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get("live", "a"); ok {
		t.Error("Get after Delete: still there")
	}
	if err := r.Delete(ctx, "live", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
}

func TestRegistryValidation(t *testing.T) {
	r := startRegistry(t, prefixStore(t))
	tests := []struct {
		name string
		s    Stream
	}{
		{"empty name", Stream{App: "live"}},
		{"dot name", Stream{App: "live", Name: ".x"}},
		{"slash in name", Stream{App: "live", Name: "a/b"}},
		{"space in token", Stream{App: "live", Name: "x", PublishToken: "a b"}},
		{"http source", Stream{App: "live", Name: "x", Source: "http://h/x"}},
		{"bad profile", Stream{App: "live", Name: "x", Profile: "a b"}},
	}
	for _, tc := range tests {
		if err := r.Put(t.Context(), tc.s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Put = %v, want ErrInvalid", tc.name, err)
		}
		if _, err := r.Create(t.Context(), tc.s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Create = %v, want ErrInvalid", tc.name, err)
		}
	}
	if n := r.Len(); n != 0 {
		t.Errorf("%d streams stored after invalid writes", n)
	}
}

// A second Registry on the same etcd (another node) changes streams; the
// first sees every change through its watch, in order, without a restart.
func TestRegistryWatch(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	r1 := NewRegistry(st, testLogger(t))
	ch := subscribe(r1)
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r1.Close)
	r2 := startRegistry(t, st)

	if err := r2.Put(ctx, Stream{App: "live", Name: "w", PublishToken: "t1"}); err != nil {
		t.Fatal(err)
	}
	if c := waitChange(t, ch); c.old != nil || c.new == nil || c.new.Name != "w" {
		t.Fatalf("create: got %+v", c)
	}
	if _, err := r2.Update(ctx, "live", "w", func(s *Stream) error { s.Enabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	c := waitChange(t, ch)
	if c.old == nil || c.new == nil || c.old.Enabled || !c.new.Enabled {
		t.Fatalf("update: got old %+v new %+v", c.old, c.new)
	}
	if s, _ := r1.Get("live", "w"); !s.Enabled {
		t.Error("r1 copy not updated")
	}

	// A value that is not a valid stream, written straight into etcd,
	// removes the stream from the copy instead of breaking the registry.
	if _, err := st.cli.Put(ctx, r1.dir+"live/w", "{not json"); err != nil {
		t.Fatal(err)
	}
	if c := waitChange(t, ch); c.old == nil || c.new != nil {
		t.Fatalf("bad value: got %+v", c)
	}
	if err := r2.Put(ctx, Stream{App: "live", Name: "w", PublishToken: "t2"}); err != nil {
		t.Fatal(err)
	}
	waitChange(t, ch)
	if err := r2.Delete(ctx, "live", "w"); err != nil {
		t.Fatal(err)
	}
	if c := waitChange(t, ch); c.old == nil || c.new != nil || c.old.PublishToken != "t2" {
		t.Fatalf("delete: got %+v", c)
	}
}

// When the watch falls behind a compaction, the registry reloads and
// reports the difference.
func TestRegistryReloadAfterCompaction(t *testing.T) {
	ctx := t.Context()
	st := prefixStore(t)
	w := startRegistry(t, st)
	if err := w.Put(ctx, Stream{App: "live", Name: "gone", PublishToken: "x"}); err != nil {
		t.Fatal(err)
	}

	r := NewRegistry(st, testLogger(t))
	ch := subscribe(r)
	rev, err := r.c.reload(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(ctx, "live", "gone"); err != nil {
		t.Fatal(err)
	}
	if err := w.Put(ctx, Stream{App: "live", Name: "new", PublishToken: "y"}); err != nil {
		t.Fatal(err)
	}
	gr, err := st.cli.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.cli.Compact(ctx, gr.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.c.watch(wctx, rev) }()
	go func() { defer cancel(); r.c.deliver(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	got := map[string]bool{}
	for range 2 {
		c := waitChange(t, ch)
		switch {
		case c.old != nil && c.new == nil:
			got["deleted "+c.old.Name] = true
		case c.old == nil && c.new != nil:
			got["created "+c.new.Name] = true
		}
	}
	if !got["deleted gone"] || !got["created new"] {
		t.Errorf("changes after reload: %v", got)
	}
	if _, ok := r.Get("live", "new"); !ok {
		t.Error("reloaded copy misses live/new")
	}
}

func TestSeed(t *testing.T) {
	ctx := t.Context()
	r := startRegistry(t, prefixStore(t))
	if _, err := r.Create(ctx, Stream{App: "live", Name: "kept", PublishToken: "from-api", Enabled: false}); err != nil {
		t.Fatal(err)
	}
	err := r.Seed(ctx, []Stream{
		{App: "live", Name: "kept", PublishToken: "from-config", Enabled: true},
		{App: "live", Name: "fresh", PublishToken: "cfg", Enabled: true},
		{App: "live", Name: "bad name"},
	})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Seed error = %v, want the invalid entry reported", err)
	}
	if s, _ := r.Get("live", "kept"); s.PublishToken != "from-api" || s.Enabled {
		t.Errorf("Seed overwrote a stored stream: %+v", s)
	}
	if s, ok := r.Get("live", "fresh"); !ok || s.PublishToken != "cfg" || !s.Enabled {
		t.Errorf("Seed did not add live/fresh: %+v", s)
	}
}

// Streams survive closing and reopening the same data directory.
func TestStorePersistence(t *testing.T) {
	ctx := t.Context()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	open := func() (*Store, *Registry) {
		st, err := OpenStore(ctx, cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		r := NewRegistry(st, testLogger(t))
		if err := r.Start(ctx); err != nil {
			st.Close()
			t.Fatal(err)
		}
		return st, r
	}
	st, r := open()
	err := r.Put(ctx, Stream{App: "live", Name: "persist", PublishToken: "p", Profile: "hd"})
	r.Close()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	st, r = open()
	defer st.Close()
	defer r.Close()
	if s, ok := r.Get("live", "persist"); !ok || s.Profile != "hd" {
		t.Errorf("after reopen: %+v, %v", s, ok)
	}
	if err := st.Ready(ctx); err != nil {
		t.Error(err)
	}
}

func TestOpenStoreNeedsDataDir(t *testing.T) {
	if _, err := OpenStore(t.Context(), DefaultConfig(), nil); err == nil {
		t.Error("OpenStore without data_dir or endpoints succeeded")
	}
}

// TestUpdateConcurrent: many writers updating one stream at once all
// succeed through the retries (or, at worst, get ErrConflict, never
// another error), and the stored stream is one of the written values.
func TestUpdateConcurrent(t *testing.T) {
	r := startRegistry(t, prefixStore(t))
	ctx := t.Context()
	if _, err := r.Create(ctx, Stream{App: "live", Name: "c", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	const writers = 32
	errs := make(chan error, writers)
	written := map[string]bool{}
	for i := range writers {
		src := fmt.Sprintf("rtmp://up%d.local/live/c", i)
		written[src] = true
		go func() {
			_, err := r.Update(ctx, "live", "c", func(s *Stream) error { s.Source = src; return nil })
			errs <- err
		}()
	}
	var conflicts int
	for range writers {
		err := <-errs
		switch {
		case err == nil:
		case errors.Is(err, ErrConflict):
			conflicts++
		default:
			t.Errorf("Update: %v, want nil or ErrConflict", err)
		}
	}
	t.Logf("%d of %d writers ended in ErrConflict", conflicts, writers)
	if s, _ := r.Get("live", "c"); !written[s.Source] {
		t.Errorf("stored source %q is none of the written values", s.Source)
	}
}

// TestKeyAccess: encryption cannot be turned on without a play key, nor
// the play key of an encrypted stream removed, unless open key access is
// allowed; a stream stored so before stays writable.
func TestKeyAccess(t *testing.T) {
	st := prefixStore(t)
	r := startRegistry(t, st)
	ctx := t.Context()
	enc := func(on bool) func(*Stream) error { return func(s *Stream) error { s.Encryption = on; return nil } }
	if _, err := r.Create(ctx, Stream{App: "live", Name: "a", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Update(ctx, "live", "a", enc(true)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "play_key") {
		t.Errorf("encryption on without play key: %v, want ErrInvalid naming play_key", err)
	}
	if _, err := r.Create(ctx, Stream{App: "live", Name: "b", Enabled: true, Encryption: true}); !errors.Is(err, ErrInvalid) {
		t.Errorf("create encrypted without play key: %v", err)
	}
	if err := r.Put(ctx, Stream{App: "live", Name: "b", Enabled: true, Encryption: true}); !errors.Is(err, ErrInvalid) {
		t.Errorf("put encrypted without play key: %v", err)
	}
	if _, err := r.Create(ctx, Stream{App: "live", Name: "k", Enabled: true, PlayKey: "pk", Encryption: true}); err != nil {
		t.Errorf("create encrypted with play key: %v", err)
	}
	if _, err := r.Update(ctx, "live", "k", func(s *Stream) error { s.PlayKey = ""; return nil }); !errors.Is(err, ErrInvalid) {
		t.Errorf("remove the play key of an encrypted stream: %v", err)
	}
	if _, err := r.Update(ctx, "live", "k", func(s *Stream) error { s.PlayKey, s.Encryption = "", false; return nil }); err != nil {
		t.Errorf("remove play key and encryption together: %v", err)
	}

	open := NewRegistry(st, testLogger(t))
	open.SetOpenKeyAccess(true)
	if err := open.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(open.Close)
	if _, err := open.Update(ctx, "live", "a", enc(true)); err != nil {
		t.Fatalf("open key access: %v", err)
	}
	// Stored without a key (open access, or before the rule): other
	// fields still change on a registry that refuses new ones.
	if _, err := r.Update(ctx, "live", "a", func(s *Stream) error { s.Record = true; return nil }); err != nil {
		t.Errorf("update another field of a stored keyless encrypted stream: %v", err)
	}
}

// TestEncryptionRefusal: on a node that cannot encrypt its outputs,
// turning encryption on is refused with the node's reason, through
// Create, Put and Update; a stream stored encrypted before stays writable.
func TestEncryptionRefusal(t *testing.T) {
	st := prefixStore(t)
	before := startRegistry(t, st)
	ctx := t.Context()
	if _, err := before.Create(ctx, Stream{App: "live", Name: "old", Enabled: true, PlayKey: "pk", Encryption: true}); err != nil {
		t.Fatal(err)
	}
	r := NewRegistry(st, testLogger(t))
	r.SetEncryptionRefusal("no encrypted form for hls_variant fmp4")
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	want := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hls_variant fmp4") {
			t.Errorf("%s: %v, want ErrInvalid with the reason", what, err)
		}
	}
	_, err := r.Create(ctx, Stream{App: "live", Name: "a", Enabled: true, PlayKey: "pk", Encryption: true})
	want("create", err)
	want("put", r.Put(ctx, Stream{App: "live", Name: "b", Enabled: true, PlayKey: "pk", Encryption: true}))
	if _, err := r.Create(ctx, Stream{App: "live", Name: "c", Enabled: true, PlayKey: "pk"}); err != nil {
		t.Fatal(err)
	}
	_, err = r.Update(ctx, "live", "c", func(s *Stream) error { s.Encryption = true; return nil })
	want("update", err)
	if _, err := r.Update(ctx, "live", "old", func(s *Stream) error { s.Record = true; return nil }); err != nil {
		t.Errorf("update another field of a stream stored encrypted: %v", err)
	}
	if _, err := r.Update(ctx, "live", "old", func(s *Stream) error { s.Encryption = false; return nil }); err != nil {
		t.Errorf("turn encryption off: %v", err)
	}
}
