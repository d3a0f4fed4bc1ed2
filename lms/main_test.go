package lms

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// sharedStore is one embedded etcd for the whole package's tests (each
// start costs about half a second); tests isolate themselves with their own
// key prefix through prefixStore.
var sharedStore *Store

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lms-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	sharedStore, err = OpenStore(ctx, cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer sharedStore.Close()
	return m.Run()
}

// prefixStore returns a Store on the shared etcd with a key prefix of its
// own for t.
func prefixStore(t testing.TB) *Store {
	t.Helper()
	id, err := NewToken() // unique across -count runs on the same etcd
	if err != nil {
		t.Fatal(err)
	}
	return &Store{
		cli:    sharedStore.cli,
		prefix: "/test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + id + "/",
		log:    testLogger(t),
	}
}

// testLogger logs to t, so a failing test shows what lms said.
func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.F); ok {
		// A fuzz target's F must not be logged to while it fuzzes.
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// startRegistry returns a started Registry over st, closed at the end of t.
func startRegistry(t testing.TB, st *Store) *Registry {
	t.Helper()
	r := NewRegistry(st, testLogger(t))
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}
