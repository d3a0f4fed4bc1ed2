package cdnmix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/bus"
)

func testTokens(t testing.TB) *authkey.SessionKey {
	k, err := authkey.NewSessionKey([]byte("qos-test-key-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signTok(t testing.TB, k *authkey.SessionKey, s authkey.Session) string {
	if s.Expires.IsZero() {
		s.Expires = testNow.Add(time.Hour)
	}
	tok, err := k.Sign(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// beaconSink collects what a QoSHandler publishes.
type beaconSink struct {
	mu  sync.Mutex
	got []bus.Beacon
}

func (s *beaconSink) Publish(topic string, key, value []byte) error {
	var b bus.Beacon
	if err := json.Unmarshal(value, &b); err != nil {
		return err
	}
	s.mu.Lock()
	s.got = append(s.got, b)
	s.mu.Unlock()
	return nil
}

func (s *beaconSink) take() []bus.Beacon {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// POST /qos publishes only beacons with a valid session token, under the
// token's session, stream, vendor, region and ISP; everything else is
// counted by reason and answered with a refusal.
func TestQoSHandler(t *testing.T) {
	keys := testTokens(t)
	other, _ := authkey.NewSessionKey([]byte("another-key-0123456789"))
	sink := &beaconSink{}
	now := testNow
	h, err := NewQoSHandler(QoSConfig{Publisher: sink, Tokens: keys, KnownVendor: func(v string) bool { return v == "a" || v == "b" },
		SessionRate: 1, SessionBurst: 5, Now: func() time.Time { return now }, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	gdA := signTok(t, keys, authkey.Session{Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom"})
	sid := func(tok string) string {
		s, err := keys.Verify(tok, now)
		if err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	tests := []struct {
		name, method, body string
		want               int
		published          []bus.Beacon // Session "" means the token's
		result             BeaconResult
	}{
		{"valid token: the token's bucket, not the body's", "POST",
			`{"token":"` + gdA + `","session":"forged","stream":"live/x","event":"stall","buffer_empty_ms":3000,"region":"XX","isp":"YY","client":"1.2.3.4"}`, 204,
			[]bus.Beacon{{Session: sid(gdA), Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Event: "stall", BufferEmptyMs: 3000}}, BeaconAccepted},
		{"a batch", "POST", `[{"token":"` + gdA + `","event":"start"},{"token":"` + gdA + `","vendor":"a","event":"first_frame","first_frame_ms":700}]`, 204,
			[]bus.Beacon{{Session: sid(gdA), Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Event: "start"},
				{Session: sid(gdA), Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Event: "first_frame", FirstFrameMs: 700}}, BeaconAccepted},
		{"no token", "POST", `{"session":"s","vendor":"a","event":"stall","buffer_empty_ms":3000}`, 401, nil, BeaconNoToken},
		{"forged token", "POST", `{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","event":"start"}`, 401, nil, BeaconBadToken},
		{"token of another key", "POST", `{"token":"` + signTok(t, other, authkey.Session{Vendor: "a"}) + `","event":"start"}`, 401, nil, BeaconBadToken},
		{"expired token", "POST", `{"token":"` + signTok(t, keys, authkey.Session{Vendor: "a", Expires: now.Add(-time.Second)}) + `","event":"start"}`, 401, nil, BeaconBadToken},
		{"token over the size limit", "POST", `{"token":"` + strings.Repeat("A", 2000) + `","event":"start"}`, 401, nil, BeaconBadToken},
		{"body names another vendor", "POST", `{"token":"` + gdA + `","vendor":"b","event":"start"}`, 403, nil, BeaconUnknownVendor},
		{"vendor no longer configured", "POST", `{"token":"` + signTok(t, keys, authkey.Session{Vendor: "gone"}) + `","event":"start"}`, 403, nil, BeaconUnknownVendor},
		{"bad event with a token", "POST", `{"token":"` + gdA + `","event":"x"}`, 400, nil, -1},
		{"malformed", "POST", `{"session":`, 400, nil, -1},
		{"empty batch", "POST", `[]`, 400, nil, -1},
		{"too large", "POST", `[` + strings.Repeat(" ", 70<<10) + `]`, 413, nil, -1},
		{"GET", "GET", ``, 405, nil, -1},
		{"preflight, no origin allowed", "OPTIONS", ``, 403, nil, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Results()
			r := httptest.NewRequest(tc.method, "/qos", strings.NewReader(tc.body))
			r.RemoteAddr = "198.51.100.7:4000"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.want, w.Body)
			}
			got := sink.take()
			if len(got) != len(tc.published) {
				t.Fatalf("published %+v, want %+v", got, tc.published)
			}
			for i, b := range got {
				if !b.Time.Equal(now) {
					t.Errorf("time %v", b.Time)
				}
				b.Time = time.Time{}
				if b != tc.published[i] {
					t.Errorf("published %+v, want %+v", b, tc.published[i])
				}
			}
			if tc.result >= 0 && h.Results()[tc.result] <= before[tc.result] {
				t.Errorf("%v not counted: %v", tc.result, h.Results())
			}
		})
	}
}

// One session gets SessionBurst beacons at once and SessionRate after.
func TestQoSSessionRate(t *testing.T) {
	keys := testTokens(t)
	sink := &beaconSink{}
	now := testNow
	h, err := NewQoSHandler(QoSConfig{Publisher: sink, Tokens: keys, SessionRate: 0.5, SessionBurst: 10,
		Now: func() time.Time { return now }, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	tok := signTok(t, keys, authkey.Session{Vendor: "a", Expires: now.Add(24 * time.Hour)})
	post := func(n int) int {
		var parts []string
		for range n {
			parts = append(parts, `{"token":"`+tok+`","event":"heartbeat"}`)
		}
		r := httptest.NewRequest("POST", "/qos", strings.NewReader("["+strings.Join(parts, ",")+"]"))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	steps := []struct {
		advance   time.Duration
		n         int
		want      int
		published int
	}{
		{0, 100, 204, 10},            // the burst, the rest refused
		{0, 1, 429, 0},               // nothing left
		{4 * time.Second, 5, 204, 2}, // 0.5/s
		{time.Hour, 100, 204, 10},    // refilled to the burst, not beyond
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		if code := post(st.n); code != st.want {
			t.Fatalf("step %d: %d, want %d", i, code, st.want)
		}
		if got := len(sink.take()); got != st.published {
			t.Fatalf("step %d: published %d, want %d", i, got, st.published)
		}
	}
	if r := h.Results(); r[BeaconRateLimited] != 90+1+3+90 {
		t.Fatalf("results %v", r)
	}
}

// The rate state holds at most max sessions, whatever the number seen,
// and keeps the ones seen recently.
func TestSessionLimiterBounded(t *testing.T) {
	tests := []struct{ max, sessions int }{
		{10, 5}, {10, 1000}, {1000, 100_000},
	}
	for _, tc := range tests {
		l := newSessionLimiter(1, 1, tc.max)
		now := testNow
		for i := range tc.sessions {
			if !l.allow(fmt.Sprint(i), now) {
				t.Fatalf("max %d: new session %d refused", tc.max, i)
			}
			if n := l.len(); n > tc.max {
				t.Fatalf("max %d: %d sessions held", tc.max, n)
			}
		}
		// The last one is remembered: its burst is spent.
		if l.allow(fmt.Sprint(tc.sessions-1), now) {
			t.Errorf("max %d: the newest session was forgotten", tc.max)
		}
	}
}

// The aggregator keeps keys only for configured vendors, and folds
// regions and ISPs outside the configured ones into the any-value.
func TestAggregatorBound(t *testing.T) {
	known := map[string]bool{"a": true, "b": true}
	regions, isps := nameSet([]string{"GD", "SH"}), nameSet([]string{"telecom"})
	bound := func(k Key) (Key, bool) {
		if !known[k.Vendor] {
			return Key{}, false
		}
		if _, ok := regions[k.Bucket.Region]; !ok {
			k.Bucket.Region = ""
		}
		if _, ok := isps[k.Bucket.ISP]; !ok {
			k.Bucket.ISP = ""
		}
		return k, true
	}
	tests := []struct {
		name    string
		beacon  *bus.Beacon
		log     *bus.CDNLog
		wantKey Key
		wantErr error
	}{
		{"known beacon", &bus.Beacon{Session: "s", Vendor: "a", Region: "GD", ISP: "telecom", Event: "heartbeat"}, nil, Key{"a", Bucket{"GD", "telecom"}}, nil},
		{"unknown region and isp", &bus.Beacon{Session: "s", Vendor: "a", Region: "Atlantis", ISP: "pigeon", Event: "heartbeat"}, nil, Key{"a", Bucket{}}, nil},
		{"unknown isp", &bus.Beacon{Session: "s", Vendor: "b", Region: "SH", ISP: "pigeon", Event: "heartbeat"}, nil, Key{"b", Bucket{Region: "SH"}}, nil},
		{"unknown vendor beacon", &bus.Beacon{Session: "s", Vendor: "zz", Region: "GD", Event: "heartbeat"}, nil, Key{}, ErrUnknownVendor},
		{"known log", nil, &bus.CDNLog{Vendor: "a", Region: "SH", ISP: "telecom", Bytes: 1e6, Status: 200}, Key{"a", Bucket{"SH", "telecom"}}, nil},
		{"log by client ip, region outside", nil, &bus.CDNLog{Vendor: "a", ClientIP: "192.0.2.1", Bytes: 1e6, Status: 200}, Key{"a", Bucket{}}, nil},
		{"unknown vendor log", nil, &bus.CDNLog{Vendor: "zz", Bytes: 1e6, Status: 200}, Key{}, ErrUnknownVendor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			loc, _ := LoadCIDRCSV("testdata/geo.csv")
			a, err := NewAggregator(AggregatorConfig{Locator: loc, Bound: bound, Now: func() time.Time { return testNow }, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			if tc.beacon != nil {
				err = a.AddBeacon(*tc.beacon)
			} else {
				err = a.AddLog(*tc.log)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || a.Stats().Unknown != 1 || a.Stats().Keys != 0 {
					t.Fatalf("err %v, stats %+v", err, a.Stats())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			snap := a.Tick()
			if _, ok := snap[tc.wantKey]; !ok || len(snap) != 1 {
				t.Fatalf("keys %v, want %v", snap, tc.wantKey)
			}
		})
	}

	// A flood of 100k distinct values: at most vendors × (regions+1) × (ISPs+1) keys.
	a, _ := NewAggregator(AggregatorConfig{Bound: bound, Now: func() time.Time { return testNow }, Logger: quietLog})
	for i := range 100_000 {
		v := []string{"a", "b", fmt.Sprintf("v%d", i)}[i%3]
		a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: v, Region: fmt.Sprintf("r%d", i), ISP: fmt.Sprintf("i%d", i), Event: "heartbeat"})
		a.AddLog(bus.CDNLog{Vendor: v, Region: fmt.Sprintf("r%d", i), ISP: []string{"telecom", fmt.Sprint(i)}[i%2], Bytes: 1000, Status: 200})
	}
	if n := len(a.Tick()); n > 2*3*2 {
		t.Fatalf("%d keys after the flood", n)
	}
}

// The quality window holds at most MaxSessions sessions over all keys.
func TestAggregatorSessionCap(t *testing.T) {
	a, _ := NewAggregator(AggregatorConfig{MaxSessions: 100, Now: func() time.Time { return testNow }, Logger: quietLog})
	for i := range 1000 {
		a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: fmt.Sprintf("v%d", i%7), Event: "heartbeat"})
	}
	// One session's many beacons are one user.
	for range 50 {
		a.AddBeacon(bus.Beacon{Session: "0", Vendor: "v0", Event: "stall", BufferEmptyMs: 3000})
	}
	st := a.Stats()
	if st.Sessions != 100 || st.Overflow != 900 {
		t.Fatalf("%+v", st)
	}
	users := 0
	for _, ob := range a.Tick() {
		users += ob.Users
	}
	if users != 100 {
		t.Fatalf("%d users", users)
	}
}

func FuzzQoSBody(f *testing.F) {
	keys := testTokens(f)
	tok := signTok(f, keys, authkey.Session{Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Expires: time.Unix(1<<40, 0)})
	f.Add([]byte(`{"token":"` + tok + `","event":"stall","buffer_empty_ms":2500}`))
	f.Add([]byte(`[{"token":"` + tok + `","event":"first_frame","first_frame_ms":300}]`))
	f.Add([]byte(`[{"session":"s","vendor":"a","event":"stall"}]`))
	f.Add([]byte(`{"token":"` + strings.Repeat("A", 1500) + `"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sink := &beaconSink{}
		h, err := NewQoSHandler(QoSConfig{Publisher: sink, Tokens: keys, Now: func() time.Time { return testNow }, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", "/qos", strings.NewReader(string(b)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		for _, pb := range sink.take() {
			if pb.Session == "" || pb.Vendor != "a" || pb.Region != "GD" || pb.ISP != "telecom" || pb.Stream != "live/demo" {
				t.Fatalf("published %+v", pb)
			}
		}
		if w.Code == 204 && h.Results()[BeaconAccepted] == 0 && len(b) > 0 {
			t.Fatalf("204 without an accepted beacon: %s", b)
		}
		e := newAggEnv(t)
		e.a.HandleBeacon(context.Background(), bus.Message{Value: b})
	})
}

// A body trickled slower than BodyTimeout allows is cut off and counted.
func TestQoSSlowBody(t *testing.T) {
	h, err := NewQoSHandler(QoSConfig{Publisher: &beaconSink{}, Tokens: testTokens(t), BodyTimeout: 200 * time.Millisecond, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		// A well-formed body, given time, would be answered 401 (no
		// token) and not counted as rejected.
		for range 20 { // 2 s at most
			if _, err := pw.Write([]byte(" ")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Write([]byte(`{"event":"start"}`))
	}()
	req, _ := http.NewRequest("POST", srv.URL+"/qos", pr)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	pr.CloseWithError(io.EOF)
	if _, rej := h.Counts(); rej != 1 {
		t.Fatalf("rejected %d", rej)
	}
}

// New sessions per client network are limited in each window; sessions
// already sending go on.
func TestQoSNetworkLimit(t *testing.T) {
	keys := testTokens(t)
	sink := &beaconSink{}
	now := testNow
	h, err := NewQoSHandler(QoSConfig{Publisher: sink, Tokens: keys, SessionsPerNetwork: 3, NetworkWindow: time.Minute,
		Now: func() time.Time { return now }, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	toks := make([]string, 6)
	for i := range toks {
		toks[i] = signTok(t, keys, authkey.Session{Vendor: "a", Expires: now.Add(time.Hour)})
	}
	steps := []struct {
		name    string
		advance time.Duration
		session int
		remote  string
		want    int
	}{
		{"1st session of the /24", 0, 0, "198.51.100.1:1", 204},
		{"2nd, another address of the /24", 0, 1, "198.51.100.2:1", 204},
		{"3rd", 0, 2, "198.51.100.3:1", 204},
		{"4th: over", 0, 3, "198.51.100.4:1", 429},
		{"a known session goes on", 0, 0, "198.51.100.9:1", 204},
		{"another /24", 0, 4, "198.51.101.1:1", 204},
		{"IPv6 /48s count apart", 0, 5, "[2001:db8:1::1]:1", 204},
		{"the next window", time.Minute, 3, "198.51.100.4:1", 204},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		r := httptest.NewRequest("POST", "/qos", strings.NewReader(`{"token":"`+toks[st.session]+`","event":"heartbeat"}`))
		r.RemoteAddr = st.remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != st.want {
			t.Fatalf("%s: %d, want %d", st.name, w.Code, st.want)
		}
	}
	if n := h.Results()[BeaconNetworkLimited]; n != 1 {
		t.Fatalf("network_limited %d", n)
	}
	// The network state is bounded too.
	l := newNetworkLimiter(1, time.Minute, 100)
	for i := range 10_000 {
		l.admit(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), now)
		if l.len() > 100 {
			t.Fatalf("%d networks held", l.len())
		}
	}
}
