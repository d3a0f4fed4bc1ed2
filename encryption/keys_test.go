package encryption

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

func TestNewKey(t *testing.T) {
	a, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKey()
	if a.Key == b.Key || a.IV == b.IV || a.ID == b.ID {
		t.Fatal("two keys share bytes")
	}
	if !ValidKeyID(a.ID) || len(a.ID) != 32 {
		t.Fatalf("id %q", a.ID)
	}
}

// TestKeyNeverPrinted checks that formatting and logging a key never shows
// its bytes.
func TestKeyNeverPrinted(t *testing.T) {
	k := testKey(t)
	secret := hex.EncodeToString(k.Key[:])
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	log.Info("key", "key", k)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("key", "key", k)
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), logged.String(),
	} {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprint(k.Key[0], " ", k.Key[1])) || strings.Contains(strings.ToLower(s), "2b7e") {
			t.Errorf("key bytes printed: %s", s)
		}
		if !strings.Contains(s, k.ID) {
			t.Errorf("key id missing: %s", s)
		}
	}
}

func TestSealer(t *testing.T) {
	master, err := ParseMasterKey(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSealer(master)
	k, _ := NewKey()
	blob, err := s.Seal("live/a", k)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, k.Key[:]) || bytes.Contains(blob, k.IV[:]) {
		t.Fatal("sealed blob holds the key in the clear")
	}
	got, err := s.Open("live/a", blob)
	if err != nil || got.ID != k.ID || got.Key != k.Key || got.IV != k.IV {
		t.Fatalf("open: %v %v", got, err)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{1}, 32))
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	for name, f := range map[string]func() (*Key, error){
		"other stream":     func() (*Key, error) { return s.Open("live/b", blob) },
		"other master key": func() (*Key, error) { return other.Open("live/a", blob) },
		"tampered":         func() (*Key, error) { return s.Open("live/a", tampered) },
		"short":            func() (*Key, error) { return s.Open("live/a", blob[:10]) },
		"garbage":          func() (*Key, error) { return s.Open("live/a", []byte("hello world, not a key")) },
	} {
		if k, err := f(); err == nil {
			t.Errorf("%s: opened %v", name, k)
		}
	}
	for _, bad := range []string{"", "xyz", strings.Repeat("a", 30), "AAAA"} {
		if _, err := ParseMasterKey(bad); err == nil {
			t.Errorf("master key %q accepted", bad)
		}
	}
	if _, err := ParseMasterKey("q83vEjRWeJASNFZ4kBI0Vg=="); err != nil { // base64 of 16 bytes
		t.Error(err)
	}
}

func TestMemKeyStore(t *testing.T) {
	var s MemKeyStore
	ctx := context.Background()
	k, _ := NewKey()
	if _, err := s.Get(ctx, "live/a", k.ID); !errors.Is(err, ErrKeyNotFound) {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "live/a", k); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "live/a", k.ID)
	if err != nil || got.Key != k.Key {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "live/b", k.ID); !errors.Is(err, ErrKeyNotFound) {
		t.Fatal("key visible under another stream")
	}
	if err := s.Put(ctx, "live/a", &Key{ID: "../x"}); err == nil {
		t.Fatal("bad id stored")
	}
}

// testClock is a settable clock for the rate limiter.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type failingStore struct{}

func (failingStore) Get(context.Context, string, string) (*Key, error) {
	return nil, errors.New("etcd unavailable")
}
func (failingStore) Put(context.Context, string, *Key) error { return errors.New("etcd unavailable") }

func TestHandler(t *testing.T) {
	const playKey = "play-secret"
	store := &MemKeyStore{}
	k, _ := NewKey()
	if err := store.Put(context.Background(), "live/a", k); err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	authorize := func(app, name, uri string, q url.Values) error {
		return authkey.Verify(uri, q.Get("auth_key"), playKey, clock.Now())
	}
	h, err := NewHandler(HandlerConfig{Store: store, Authorize: authorize, Rate: 1, Burst: 3, Logger: quietLog(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	signed := func(path string) string {
		return path + "?auth_key=" + authkey.Sign(path, playKey, clock.Now().Add(time.Hour), "r", "0")
	}
	path := KeyPath("live/a", k.ID)

	type req struct {
		method, target, remote string
		code                   int
	}
	for _, tc := range []struct {
		name string
		reqs []req
	}{
		{"key", []req{{"GET", signed(path), "10.0.0.1:1", 200}}},
		{"head", []req{{"HEAD", signed(path), "10.0.0.2:1", 200}}},
		{"no token", []req{{"GET", path, "10.0.0.3:1", 403}}},
		{"token for another path", []req{{"GET", signed("/live/a.flv"), "10.0.0.4:1", 404}, {"GET", path + "?" + strings.SplitN(signed("/live/a.flv"), "?", 2)[1], "10.0.0.4:1", 403}}},
		{"unknown key", []req{{"GET", signed(KeyPath("live/a", "nope")), "10.0.0.5:1", 404}}},
		{"other stream", []req{{"GET", signed(KeyPath("live/b", k.ID)), "10.0.0.6:1", 404}}},
		{"bad paths", []req{
			{"GET", "/keys/live/a", "10.0.0.7:1", 404},
			{"GET", "/keys/live/a/b/c", "10.0.0.7:1", 404},
			{"GET", "/keys/live//x", "10.0.0.7:1", 404},
		}},
		{"method", []req{{"POST", signed(path), "10.0.0.8:1", 405}}},
		{"rate limit per IP", []req{
			{"GET", signed(path), "10.0.0.9:1", 200},
			{"GET", signed(path), "10.0.0.9:2", 200},
			{"GET", path, "10.0.0.9:3", 403}, // refusals count too
			{"GET", signed(path), "10.0.0.9:4", 429},
			{"GET", signed(path), "10.0.0.10:1", 200}, // another client is not affected
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, r := range tc.reqs {
				rq := httptest.NewRequest(r.method, r.target, nil)
				rq.RemoteAddr = r.remote
				w := httptest.NewRecorder()
				h.ServeHTTP(w, rq)
				if w.Code != r.code {
					t.Fatalf("request %d %s %s: %d, want %d", i, r.method, r.target, w.Code, r.code)
				}
				if r.code == 200 {
					if w.Header().Get("Content-Type") != "application/octet-stream" || w.Header().Get("Cache-Control") != "no-store" {
						t.Errorf("headers %v", w.Header())
					}
					if r.method == "GET" && !bytes.Equal(w.Body.Bytes(), k.Key[:]) {
						t.Errorf("body %x", w.Body.Bytes())
					}
				}
				if r.code != 200 && bytes.Contains(w.Body.Bytes(), k.Key[:]) {
					t.Error("key bytes in an error answer")
				}
			}
		})
	}
	// The bucket refills with time.
	clock.Add(2 * time.Second)
	rq := httptest.NewRequest("GET", signed(path), nil)
	rq.RemoteAddr = "10.0.0.9:5"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, rq)
	if w.Code != 200 {
		t.Fatalf("after refill: %d", w.Code)
	}

	// A failing store answers 500 without details.
	h2, _ := NewHandler(HandlerConfig{Store: failingStore{}, Authorize: authorize, Logger: quietLog()})
	w = httptest.NewRecorder()
	h2.ServeHTTP(w, httptest.NewRequest("GET", signed(path), nil))
	if w.Code != 500 || strings.Contains(w.Body.String(), "etcd") {
		t.Fatalf("failing store: %d %q", w.Code, w.Body.String())
	}
}

func TestHandlerMaxClients(t *testing.T) {
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	h, _ := NewHandler(HandlerConfig{
		Store:     &MemKeyStore{},
		Authorize: func(string, string, string, url.Values) error { return nil },
		Rate:      10, Burst: 10, MaxClients: 4, Logger: quietLog(), Now: clock.Now,
	})
	do := func(ip string) int {
		rq := httptest.NewRequest("GET", "/keys/live/a/x", nil)
		rq.RemoteAddr = ip + ":1"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, rq)
		return w.Code
	}
	for i := range 4 {
		if c := do(fmt.Sprint("10.1.0.", i)); c != 404 {
			t.Fatalf("client %d: %d", i, c)
		}
	}
	if c := do("10.1.1.1"); c != 429 {
		t.Fatalf("fifth client while table full: %d, want 429", c)
	}
	clock.Add(2 * time.Second) // the first four are idle (bucket full) now
	if c := do("10.1.1.1"); c != 404 {
		t.Fatalf("after idle clients forgotten: %d", c)
	}
}

// TestHandlerOverHTTP serves the handler on 127.0.0.1 and fetches a key
// the way a player does.
func TestHandlerOverHTTP(t *testing.T) {
	store := &MemKeyStore{}
	k, _ := NewKey()
	_ = store.Put(context.Background(), "live/a", k)
	h, _ := NewHandler(HandlerConfig{Store: store, Authorize: func(app, name, uri string, q url.Values) error {
		if q.Get("token") != "ok" {
			return errors.New("bad token")
		}
		return nil
	}, Logger: quietLog()})
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(q string) (int, []byte) {
		resp, err := http.Get(srv.URL + KeyPath("live/a", k.ID) + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := get("?token=ok"); code != 200 || !bytes.Equal(b, k.Key[:]) {
		t.Fatalf("%d %x", code, b)
	}
	if code, _ := get("?token=no"); code != 403 {
		t.Fatalf("bad token: %d", code)
	}
}
