package cdnmix

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/bus"
)

// CORS on /dispatch/ and /qos: none by default, the configured origins
// echoed exactly, "*" only when configured, preflights answered.
func TestCORS(t *testing.T) {
	tests := []struct {
		name       string
		origins    []string
		method     string
		origin     string
		wantStatus int
		wantACAO   string
	}{
		{"default: same origin only", nil, "GET", "https://evil.example", 200, ""},
		{"default preflight refused", nil, "OPTIONS", "https://evil.example", 403, ""},
		{"listed origin echoed", []string{"https://Site.example"}, "GET", "https://site.example", 200, "https://site.example"},
		{"unlisted origin not reflected", []string{"https://site.example"}, "GET", "https://evil.example", 200, ""},
		{"prefix of a listed origin is not it", []string{"https://site.example"}, "GET", "https://site.example.evil", 200, ""},
		{"listed preflight", []string{"https://site.example"}, "OPTIONS", "https://site.example", 204, "https://site.example"},
		{"star", []string{"*"}, "GET", "https://any.example", 200, "*"},
		{"star preflight", []string{"*"}, "OPTIONS", "https://any.example", 204, "*"},
		{"no Origin header", []string{"*"}, "GET", "", 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newDispatchEnv(t, dispatchVendors())
			d, err := NewDispatcher(DispatcherConfig{Allocator: env.alloc, Now: func() time.Time { return testNow },
				CORSOrigins: tc.origins, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			q, err := NewQoSHandler(QoSConfig{Publisher: &beaconSink{}, Tokens: testTokens(t), CORSOrigins: tc.origins, Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{"/dispatch/live/demo.flv?format=json", "/dispatch/fallback.json", "/qos"} {
				r := httptest.NewRequest(tc.method, target, nil)
				if tc.origin != "" {
					r.Header.Set("Origin", tc.origin)
				}
				r.RemoteAddr = "192.0.2.1:1234"
				w := httptest.NewRecorder()
				want := tc.wantStatus
				if target == "/qos" {
					q.ServeHTTP(w, r)
					if tc.method == "GET" {
						want = http.StatusMethodNotAllowed // GET only with CMCD
					}
				} else {
					d.ServeHTTP(w, r)
				}
				if w.Code != want {
					t.Errorf("%s %s: status %d, want %d", tc.method, target, w.Code, want)
				}
				if got := w.Header().Get("Access-Control-Allow-Origin"); got != tc.wantACAO {
					t.Errorf("%s %s: Access-Control-Allow-Origin %q, want %q", tc.method, target, got, tc.wantACAO)
				}
				if tc.wantStatus == 204 && !strings.Contains(w.Header().Get("Access-Control-Allow-Methods"), "GET") {
					t.Errorf("%s: preflight methods %q", target, w.Header().Get("Access-Control-Allow-Methods"))
				}
			}
		})
	}
	for _, bad := range []string{"site.example", "https://site.example/path", "ftp://x", "https://u@site.example", "https://"} {
		if _, err := newCORSPolicy([]string{bad}); err == nil {
			t.Errorf("origin %q accepted", bad)
		}
	}
}

func TestParseCMCD(t *testing.T) {
	tests := []struct {
		in   string
		want CMCD
		ok   bool
	}{
		{`bl=2100,br=3200,bs,cid="live%2Fdemo",d=2000,mtp=25400,ot=v,sf=h,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=l,su,tb=6000`,
			CMCD{BufferLengthMs: 2100, BitrateKbps: 3200, StarvationMs: -1, Starved: true, Startup: true, ObjectType: "v",
				SessionID: "6e2fb550-c457-11e9-bb97-0800200c9a66", Stream: "live%2Fdemo", Version: 1}, true},
		{`bs=true,bsd=2500,sta=r,v=2`, CMCD{BufferLengthMs: -1, BitrateKbps: -1, StarvationMs: 2500, Starved: true, State: "r", Version: 2}, true},
		{`bs=false,su=false,br=800`, CMCD{BufferLengthMs: -1, BitrateKbps: 800, StarvationMs: -1, Version: 1}, true},
		{`com.example-myKey="a \"q\" \\ b",ot=av`, CMCD{BufferLengthMs: -1, BitrateKbps: -1, StarvationMs: -1, ObjectType: "av", Version: 1}, true},
		{`br=(3200 1600),bl=(4100;r="x"),bs=?0,su=?1,nor=("a,b)" "c"),e=t,sta=p,ts=1733222222000,v=2`,
			CMCD{BufferLengthMs: 4100, BitrateKbps: 3200, StarvationMs: -1, Startup: true, State: "p", Event: "t", Version: 2}, true},
		{`br=()`, CMCD{}, false},
		{`br=(1`, CMCD{}, false},
		{`nor=("a)`, CMCD{}, false},
		{`br=(1)x`, CMCD{}, false},
		{`br=1)`, CMCD{}, false},
		{``, CMCD{}, false},
		{`bl=-1`, CMCD{}, false},
		{`bl=NaN`, CMCD{}, false},
		{`br=1e300`, CMCD{}, false},
		{`bs=maybe`, CMCD{}, false},
		{`sid=unquoted`, CMCD{}, false},
		{`br="12"`, CMCD{}, false},
		{`sid="open`, CMCD{}, false},
		{`sid="x"junk`, CMCD{}, false},
		{`sid="\x"`, CMCD{}, false},
		{`bl=1,bl=2`, CMCD{}, false},
		{`b l=1`, CMCD{}, false},
		{`=1`, CMCD{}, false},
		{`ot=`, CMCD{}, false},
		{strings.Repeat("a,", 65), CMCD{}, false},
		{`sid="` + strings.Repeat("x", 1100) + `"`, CMCD{}, false},
		{strings.Repeat("x", 5000), CMCD{}, false},
	}
	for _, tc := range tests {
		got, err := ParseCMCD(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%.60q: err %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && got != tc.want {
			t.Errorf("%.60q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

// CMCD request, header and report modes reach the same beacons as JSON,
// under the token's session.
func TestQoSCMCD(t *testing.T) {
	keys := testTokens(t)
	sink := &beaconSink{}
	h, err := NewQoSHandler(QoSConfig{Publisher: sink, Tokens: keys, Now: func() time.Time { return testNow }, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	tok := signTok(t, keys, authkey.Session{Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom"})
	s, _ := keys.Verify(tok, testNow)
	base := bus.Beacon{Session: s.ID, Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom"}
	with := func(ev string, f func(*bus.Beacon)) bus.Beacon {
		b := base
		b.Event = ev
		if f != nil {
			f(&b)
		}
		return b
	}
	q := func(p string) string {
		return "/qos?CMCD=" + strings.NewReplacer(",", "%2C", "=", "%3D", `"`, "%22").Replace(p) + "&token=" + tok
	}
	tests := []struct {
		name, method, target, ctype, body string
		headers                           map[string]string
		want                              int
		published                         []bus.Beacon
	}{
		{"request mode, startup", "GET", q(`br=3200,ot=v,su,sid="x"`), "", "", nil, 204,
			[]bus.Beacon{with("start", func(b *bus.Beacon) { b.BitrateKbps = 3200 })}},
		{"request mode POST, heartbeat", "POST", q(`bl=4000,br=800,ot=v`), "", "", nil, 204,
			[]bus.Beacon{with("heartbeat", func(b *bus.Beacon) { b.BitrateKbps = 800 })}},
		{"v2 starvation with a duration: a stall", "POST", q(`bs,bsd=2400,v=2`), "", "", nil, 204,
			[]bus.Beacon{with("stall", func(b *bus.Beacon) { b.BufferEmptyMs = 2400 })}},
		{"v1 starvation: a stall without duration", "POST", q(`bs,ot=v`), "", "", nil, 204,
			[]bus.Beacon{with("stall", nil)}},
		{"fatal error", "POST", q(`sta=f,v=2`), "", "", nil, 204,
			[]bus.Beacon{with("error", func(b *bus.Beacon) { b.Error = "cmcd: fatal error" })}},
		{"header mode", "POST", "/qos?token=" + tok, "", "", map[string]string{"CMCD-Request": "bl=300", "CMCD-Status": "bs", "CMCD-Object": "br=500,ot=v"}, 204,
			[]bus.Beacon{with("stall", func(b *bus.Beacon) { b.BitrateKbps = 500 })}},
		{"report body", "POST", "/qos?token=" + tok, "application/cmcd", "su,br=900\n\nbl=1000,br=900\n", nil, 204,
			[]bus.Beacon{with("start", func(b *bus.Beacon) { b.BitrateKbps = 900 }), with("heartbeat", func(b *bus.Beacon) { b.BitrateKbps = 900 })}},
		{"no token", "GET", "/qos?CMCD=bl%3D100", "", "", nil, 401, nil},
		{"malformed payload", "GET", q(`bl=x`), "", "", nil, 400, nil},
		{"too many lines", "POST", "/qos?token=" + tok, "application/cmcd", strings.Repeat("bl=1\n", 101), nil, 400, nil},
		{"GET without CMCD", "GET", "/qos?token=" + tok, "", "", nil, 405, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			r.RemoteAddr = "198.51.100.9:4000"
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
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
				b.Time = time.Time{}
				if b != tc.published[i] {
					t.Errorf("published %+v\nwant %+v", b, tc.published[i])
				}
			}
		})
	}
}

// First-frame percentiles are milliseconds in JSON, named so; the old
// nanosecond fields are still read.
func TestFirstFrameJSONMilliseconds(t *testing.T) {
	ob := Observation{Users: 3, FirstFrameP50: 390 * time.Millisecond, FirstFrameP95: 1200 * time.Millisecond}
	b, err := json.Marshal(ob)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"first_frame_p50_ms":390`) || !strings.Contains(string(b), `"first_frame_p95_ms":1200`) ||
		strings.Contains(string(b), "390000000") {
		t.Fatalf("observation JSON %s", b)
	}
	var back Observation
	if err := json.Unmarshal(b, &back); err != nil || back != ob {
		t.Fatalf("round trip %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"users":1,"first_frame_p50":390000000}`), &back); err != nil || back.FirstFrameP50 != 390*time.Millisecond {
		t.Fatalf("old form: %+v, %v", back, err)
	}
	ms := MinuteStat{Minute: testNow, Users: 2, FirstFrameP50: 420 * time.Millisecond}
	b, err = json.Marshal([]MinuteStat{ms})
	if err != nil || !strings.Contains(string(b), `"first_frame_p50_ms":420`) || !strings.Contains(string(b), `"minute":"`) {
		t.Fatalf("minute JSON %s, %v", b, err)
	}
	var mback []MinuteStat
	if err := json.Unmarshal(b, &mback); err != nil || len(mback) != 1 || !mback[0].Minute.Equal(ms.Minute) || mback[0].FirstFrameP50 != ms.FirstFrameP50 {
		t.Fatalf("minute round trip %+v, %v", mback, err)
	}
}

// FuzzParseCMCD: any payload is refused or parsed into values within the
// bounds, and the beacon it maps to passes the beacon checks.
func FuzzParseCMCD(f *testing.F) {
	for _, s := range []string{`bl=2100,br=3200,bs,cid="x",d=2000,mtp=25400,ot=v,sf=h,sid="6e2f",st=l,su,tb=6000`,
		`bs=true,bsd=2500,sta=r,v=2`, `br=(3200 1600),bl=(4100;r="x"),bs=?0,nor=("a,b)" "c"),e=t`, `com.example-k="a \"b\" \\"`, `e=e,sta=f`, `bl=1,bl=2`, `sid="`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCMCD(s)
		if err != nil {
			return
		}
		if len(c.SessionID) > maxCMCDString || len(c.Stream) > maxCMCDString || c.BitrateKbps > maxBitrateKbps ||
			c.StarvationMs > maxBufferEmpty.Milliseconds() || c.BufferLengthMs > maxBufferEmpty.Milliseconds() {
			t.Fatalf("out of bounds: %+v", c)
		}
		b := c.Beacon()
		b.Session, b.Vendor, b.Stream = "s", "a", "live/demo"
		if err := checkBeacon(b); err != nil {
			t.Fatalf("%q maps to a bad beacon %+v: %v", s, b, err)
		}
	})
}

// FuzzQoSCMCDRequest: a CMCD report body (and query) never publishes a
// beacon outside the token's session, and never a malformed one.
func FuzzQoSCMCDRequest(f *testing.F) {
	keys := testTokens(f)
	tok := signTok(f, keys, authkey.Session{Stream: "live/demo", Vendor: "a", Expires: time.Unix(1<<40, 0)})
	f.Add("bs,bsd=3000", "su,br=900\nbl=100\n")
	f.Add("", strings.Repeat("bl=1\n", 120))
	f.Add("sid=\"", "\n\n\n")
	f.Fuzz(func(t *testing.T, query, body string) {
		sink := &beaconSink{}
		h, err := NewQoSHandler(QoSConfig{Publisher: sink, Tokens: keys, Now: func() time.Time { return testNow }, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", "/qos?token="+tok, strings.NewReader(body))
		r.URL.RawQuery += "&CMCD=" + url.QueryEscape(query)
		r.Header.Set("Content-Type", "application/cmcd")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		got := sink.take()
		if len(got) > maxBeaconBatch {
			t.Fatalf("%d beacons published", len(got))
		}
		for _, b := range got {
			if b.Vendor != "a" || b.Stream != "live/demo" || checkBeacon(b) != nil {
				t.Fatalf("published %+v", b)
			}
		}
	})
}
