package cdnmix

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

const (
	keyA = "secret-a"
	keyB = "secret-b"
)

// dispatchVendors: a signs type A, b HMAC, c nothing; sh serves only SH.
func dispatchVendors() []Vendor {
	a := vendor("a", 600, 2000)
	a.Signing, a.Key = SchemeAuthKey, keyA
	b := vendor("b", 300, 2000)
	b.Signing, b.Key = SchemeHMAC, keyB
	b.HLSBase = "https://hls-b.example.com/edge"
	c := vendor("c", 100, 2000)
	sh := vendor("sh", 100, 2000)
	sh.Coverage.Regions = []string{"SH"}
	return []Vendor{a, b, c, sh}
}

type dispatchEnv struct {
	alloc *Allocator
	d     *Dispatcher
	now   time.Time
}

func newDispatchEnv(t testing.TB, vs []Vendor) *dispatchEnv {
	t.Helper()
	loc, err := LoadCIDRCSV("testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	env := &dispatchEnv{now: testNow}
	clock := func() time.Time { return env.now }
	env.alloc, err = NewAllocator(AllocatorConfig{Vendors: vs, Logger: quietLog, Now: clock,
		Buckets: []Bucket{{"GD", "telecom"}, {"SH", "telecom"}}})
	if err != nil {
		t.Fatal(err)
	}
	env.d, err = NewDispatcher(DispatcherConfig{
		Allocator:      env.alloc,
		Locator:        loc,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
		StreamExists:   func(app, name string) bool { return app == "live" && name == "demo" },
		Now:            clock,
		Logger:         quietLog,
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (e *dispatchEnv) get(target, remote string, xff ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remote
	for _, x := range xff {
		r.Header.Add("X-Forwarded-For", x)
	}
	w := httptest.NewRecorder()
	e.d.ServeHTTP(w, r)
	return w
}

// verify checks a vendor URL's signature the way the vendor would.
func verify(t *testing.T, raw string, now time.Time) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	switch u.Host {
	case "a.example.com":
		if err := authkey.Verify(u.Path, q.Get("auth_key"), keyA, now); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	case "b.example.com", "hls-b.example.com":
		if err := VerifyHMAC(u.Path, q.Get("expires"), q.Get("signature"), keyB, now); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	default:
		if u.RawQuery != "" {
			t.Errorf("%s: unsigned vendor with a query", raw)
		}
	}
	return strings.TrimSuffix(u.Host, ".example.com")
}

func TestDispatchStatus(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	tests := []struct {
		name, method, target string
		want                 int
	}{
		{"flv", "GET", "/dispatch/live/demo.flv", http.StatusFound},
		{"hls", "GET", "/dispatch/live/demo/index.m3u8", http.StatusFound},
		{"head", "HEAD", "/dispatch/live/demo.flv", http.StatusFound},
		{"json", "GET", "/dispatch/live/demo.flv?format=json", http.StatusOK},
		{"unknown stream", "GET", "/dispatch/live/nope.flv", http.StatusNotFound},
		{"unknown app", "GET", "/dispatch/vod/demo.flv", http.StatusNotFound},
		{"no app", "GET", "/dispatch/demo.flv", http.StatusNotFound},
		{"bad extension", "GET", "/dispatch/live/demo.mp4", http.StatusNotFound},
		{"dot dot", "GET", "/dispatch/live/../demo.flv", http.StatusNotFound},
		{"outside prefix", "GET", "/other/live/demo.flv", http.StatusNotFound},
		{"post", "POST", "/dispatch/live/demo.flv", http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(tc.method, "http://x"+tc.target, nil)
		r.RemoteAddr = "198.51.100.1:1234"
		w := httptest.NewRecorder()
		env.d.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, w.Code, tc.want)
		}
	}
	if s := env.d.Stats(); s.NotFound != 6 || s.Dispatched != 4 {
		t.Errorf("stats %+v", s)
	}
}

func TestDispatch302Signed(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	seen := map[string]int{}
	for range 100 {
		for _, target := range []string{"/dispatch/live/demo.flv", "/dispatch/live/demo/index.m3u8"} {
			w := env.get(target, "198.51.100.1:1234")
			if w.Code != http.StatusFound || w.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("%s: %d %v", target, w.Code, w.Header())
			}
			loc := w.Header().Get("Location")
			host := verify(t, loc, env.now)
			seen[host]++
			if strings.HasSuffix(target, ".flv") != strings.HasSuffix(loc[:strings.IndexByte(loc+"?", '?')], "/live/demo.flv") {
				t.Fatalf("%s → %s", target, loc)
			}
		}
	}
	if seen["a"] == 0 || seen["b"]+seen["hls-b"] == 0 || seen["c"] == 0 {
		t.Fatalf("vendors seen %v", seen)
	}
	if seen["sh"] != 0 {
		t.Fatalf("SH-only vendor served a GD client %d times", seen["sh"])
	}
	// Expired after SignTTL.
	loc := env.get("/dispatch/live/demo.flv", "198.51.100.1:1234").Header().Get("Location")
	u, _ := url.Parse(loc)
	later := env.now.Add(time.Hour + time.Second)
	if q := u.Query(); q.Has("auth_key") {
		if authkey.Verify(u.Path, q.Get("auth_key"), keyA, later) == nil {
			t.Error("type A URL valid after sign TTL")
		}
	} else if q.Has("signature") && VerifyHMAC(u.Path, q.Get("expires"), q.Get("signature"), keyB, later) == nil {
		t.Error("HMAC URL valid after sign TTL")
	}
}

// Ratios hold within 1% over 10,000 dispatches through the handler.
func TestDispatchRatios(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	bp := env.alloc.Plan().Lookup(Bucket{"GD", "telecom"})
	want := map[string]float64{}
	for _, c := range bp.Candidates {
		want[c.Vendor] = c.Ratio
	}
	got := map[string]int{}
	const n = 10_000
	for range n {
		w := env.get("/dispatch/live/demo.flv", "198.51.100.1:1234")
		u, _ := url.Parse(w.Header().Get("Location"))
		got[strings.TrimSuffix(u.Host, ".example.com")]++
	}
	for v, r := range want {
		if share := float64(got[v]) / n; math.Abs(share-r) > 0.01 {
			t.Errorf("%s: %.4f of dispatches, ratio %.4f", v, share, r)
		}
	}
}

type dispatchJSON struct {
	Stream     string `json:"stream"`
	TTL        int    `json:"ttl"`
	Candidates []struct {
		Vendor string `json:"vendor"`
		URL    string `json:"url"`
	} `json:"candidates"`
}

func TestDispatchJSON(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	bp := env.alloc.Plan().Lookup(Bucket{"GD", "telecom"})
	firsts := map[string]int{}
	for range 50 {
		w := env.get("/dispatch/live/demo/index.m3u8?x=1&format=json", "198.51.100.1:1234")
		if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "max-age=20" ||
			w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d %v", w.Code, w.Header())
		}
		var got dispatchJSON
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("%v: %s", err, w.Body)
		}
		if got.Stream != "live/demo" || got.TTL != 20 || len(got.Candidates) != 3 {
			t.Fatalf("%+v", got)
		}
		firsts[got.Candidates[0].Vendor]++
		// After the chosen one, the others in score order.
		var rest []string
		for _, c := range bp.Live() {
			if c.Vendor != got.Candidates[0].Vendor {
				rest = append(rest, c.Vendor)
			}
		}
		for i, c := range got.Candidates {
			if host := verify(t, c.URL, env.now); !strings.HasSuffix(c.URL, "/live/demo/index.m3u8") && !strings.Contains(c.URL, "/live/demo/index.m3u8?") || host == "sh" {
				t.Fatalf("candidate %d: %+v", i, c)
			}
			if i > 0 && c.Vendor != rest[i-1] {
				t.Fatalf("order: got %+v, want chosen then %v", got.Candidates, rest)
			}
		}
	}
	if len(firsts) < 2 {
		t.Fatalf("chosen vendor never varies: %v", firsts)
	}
}

func TestDispatchUnavailable(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	for _, v := range []string{"a", "b", "c"} {
		if err := env.alloc.AddBlacklist(BlacklistEntry{Vendor: v, Region: "GD"}); err != nil {
			t.Fatal(err)
		}
	}
	if w := env.get("/dispatch/live/demo.flv", "198.51.100.1:1"); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("GD: %d", w.Code)
	}
	// Blacklisting moves new dispatches at once; SH is unaffected.
	w := env.get("/dispatch/live/demo.flv", "203.0.113.7:1")
	if w.Code != http.StatusFound {
		t.Fatalf("SH: %d", w.Code)
	}
}

func TestClientAddr(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	tests := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"no proxy", "198.51.100.1:5", nil, "198.51.100.1"},
		{"forged XFF from untrusted is ignored", "198.51.100.1:5", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted proxy", "127.0.0.1:5", []string{"203.0.113.9"}, "203.0.113.9"},
		{"rightmost untrusted hop", "127.0.0.1:5", []string{"1.1.1.1, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"},
		{"client-supplied left part ignored", "127.0.0.1:5", []string{"6.6.6.6", "203.0.113.9"}, "203.0.113.9"},
		{"all trusted: leftmost", "127.0.0.1:5", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{"garbage stops the walk", "127.0.0.1:5", []string{"203.0.113.9, junk, 10.0.0.2"}, "10.0.0.2"},
		{"trusted proxy without XFF", "127.0.0.1:5", nil, "127.0.0.1"},
		{"mapped v4", "[::ffff:198.51.100.1]:5", nil, "198.51.100.1"},
		{"ipv6", "[2001:db8::1]:5", nil, "2001:db8::1"},
		{"unparsable remote", "@", []string{"203.0.113.9"}, "invalid IP"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/dispatch/live/demo.flv", nil)
		r.RemoteAddr = tc.remote
		for _, x := range tc.xff {
			r.Header.Add("X-Forwarded-For", x)
		}
		if got := env.d.clientAddr(r).String(); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
	// End to end: a forged header from an untrusted GD client keeps it in
	// GD (never sent to the SH-only vendor); the same header through a
	// trusted proxy puts it in SH.
	for range 20 {
		if host := verify(t, env.get("/dispatch/live/demo.flv", "198.51.100.1:5", "203.0.113.9").Header().Get("Location"), env.now); host == "sh" {
			t.Fatal("forged X-Forwarded-For was used")
		}
	}
	shSeen := false
	for range 20 {
		if verify(t, env.get("/dispatch/live/demo.flv", "127.0.0.1:5", "203.0.113.9").Header().Get("Location"), env.now) == "sh" {
			shSeen = true
		}
	}
	if !shSeen {
		t.Fatal("trusted proxy's X-Forwarded-For not used")
	}
}

func TestFallbackJSON(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	w := env.get("/dispatch/fallback.json", "198.51.100.1:5")
	if w.Code != http.StatusOK {
		t.Fatal(w.Code)
	}
	var fb Fallback
	if err := json.Unmarshal(w.Body.Bytes(), &fb); err != nil {
		t.Fatal(err)
	}
	if fb.Version == 0 || len(fb.Vendors) != 4 || strings.Contains(w.Body.String(), keyA) {
		t.Fatalf("%s", w.Body)
	}
	// Static ratios: each enabled vendor's commit over the sum of commits.
	wantRatio := map[string]float64{"a": 600.0 / 1100, "b": 300.0 / 1100, "c": 100.0 / 1100, "sh": 100.0 / 1100}
	for _, v := range fb.Vendors {
		if math.Abs(v.Ratio-wantRatio[v.Name]) > 1e-9 {
			t.Errorf("%s ratio %v, want %v", v.Name, v.Ratio, wantRatio[v.Name])
		}
	}
	if b := fb.Vendors[1]; b.HLSBase != "https://hls-b.example.com/edge" || strings.Join(b.Domains, ",") != "b.example.com,hls-b.example.com" {
		t.Errorf("b: %+v", b)
	}
	etag := w.Header().Get("Etag")
	r := httptest.NewRequest("GET", "/dispatch/fallback.json", nil)
	r.Header.Set("If-None-Match", etag)
	w2 := httptest.NewRecorder()
	env.d.ServeHTTP(w2, r)
	if w2.Code != http.StatusNotModified {
		t.Fatalf("conditional get: %d", w2.Code)
	}
	// Same vendors → same version (on every node); a change → new version.
	if again, _ := compileVendors(dispatchVendors()); again.version != fb.Version {
		t.Error("version not stable")
	}
	vs := dispatchVendors()
	vs[2].CommitMbps = 200
	if err := env.alloc.SetVendors(vs); err != nil {
		t.Fatal(err)
	}
	if w := env.get("/dispatch/fallback.json", "198.51.100.1:5"); w.Header().Get("Etag") == etag {
		t.Error("version unchanged after a vendor change")
	}
}

func FuzzParseDispatchPath(f *testing.F) {
	for _, s := range []string{"live/demo.flv", "live/demo/index.m3u8", "fallback.json", "a/b/c.flv", "/.flv", "live/.x.flv", "live/x/index.m3u8/index.m3u8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		app, name, format, ok := parseDispatchPath(p)
		if !ok {
			return
		}
		if !validName(app) || !validName(name) {
			t.Fatalf("%q: invalid names accepted: %q %q", p, app, name)
		}
		if got := strings.TrimPrefix(streamSuffix(format, app, name), "/"); got != p {
			t.Fatalf("%q parsed as %q %q %v, rebuilds as %q", p, app, name, format, got)
		}
	})
}
