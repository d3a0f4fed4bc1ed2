package lms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/lms/api"
)

const testToken = "test-token-123"

// fakeLive reports live/onair as on air and records kicks.
type fakeLive struct {
	mu     sync.Mutex
	kicked []string
}

func (f *fakeLive) LiveStatus(app, name string) (LiveStatus, bool) {
	if app+"/"+name != "live/onair" {
		return LiveStatus{}, false
	}
	return LiveStatus{PublisherProtocol: "rtmp", PublisherRemote: "10.0.0.1:5000", VideoCodec: "h264",
		Width: 1280, Height: 720, FPS: 30, BitrateKbps: 2500, Readers: 3, StartedAt: time.Unix(1_700_000_000, 0).UTC()}, true
}

func (f *fakeLive) Kick(app, name string) error {
	if app+"/"+name != "live/onair" {
		return ErrNotLive
	}
	f.mu.Lock()
	f.kicked = append(f.kicked, app+"/"+name)
	f.mu.Unlock()
	return nil
}

// newTestAPI returns an httptest server over a real registry on the shared
// etcd, with a log buffer to check what was logged.
func newTestAPI(t *testing.T) (*httptest.Server, *Registry, *fakeLive, *syncBuffer) {
	t.Helper()
	reg := startRegistry(t, prefixStore(t))
	logs := &syncBuffer{}
	cfg := DefaultConfig()
	cfg.APIToken = testToken
	live := &fakeLive{}
	srv, err := NewServer(cfg, reg, live, newBufLogger(logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, reg, live, logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBufLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

// call sends one request and returns status and body.
func call(t *testing.T, ts *httptest.Server, method, path, token, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestAPI(t *testing.T) {
	ts, reg, live, logs := newTestAPI(t)
	const s1 = "/api/v1/streams/live/s1"
	// Steps run in order against one registry; each names its expectation.
	steps := []struct {
		name, method, path, token, body string
		want                            int
		wantErr                         string                   // substring of the JSON error
		check                           func(*testing.T, []byte) // extra checks of a 2xx body
	}{
		{name: "no token", method: "GET", path: "/api/v1/streams", want: 401, wantErr: "missing bearer token"},
		{name: "wrong token", method: "GET", path: "/api/v1/streams", token: "nope", want: 401, wantErr: "invalid bearer token"},
		{name: "no token unknown route", method: "GET", path: "/api/v2/x", want: 401},
		{name: "unknown route", method: "GET", path: "/api/v2/x", token: testToken, want: 404, wantErr: "no such API route"},
		{name: "wrong method", method: "PUT", path: "/api/v1/streams", token: testToken, want: 405, wantErr: "not allowed"},
		{name: "empty list", method: "GET", path: "/api/v1/streams", token: testToken, want: 200, check: func(t *testing.T, b []byte) {
			if string(bytes.TrimSpace(b)) != `{"streams":[]}` {
				t.Errorf("body %s", b)
			}
		}},
		{name: "create", method: "POST", path: "/api/v1/streams", token: testToken, want: 201,
			body: `{"name":"s1","play_key":"pk","source":"rtmp://up.example/live/x","profile":"hd"}`,
			check: func(t *testing.T, b []byte) {
				var s api.Stream
				mustUnmarshal(t, b, &s)
				if s.App != "live" || !s.Enabled || len(s.PublishToken) != 24 || s.PlayKey != "pk" || s.Profile != "hd" {
					t.Errorf("created %+v", s)
				}
			}},
		{name: "create again", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"s1"}`, want: 409, wantErr: "already exists"},
		{name: "create bad JSON", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":`, want: 400, wantErr: "invalid JSON"},
		{name: "create empty body", method: "POST", path: "/api/v1/streams", token: testToken, want: 400, wantErr: "empty body"},
		{name: "create unknown field", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"s2","colour":"red"}`, want: 400, wantErr: `unknown field "colour"`},
		{name: "create trailing data", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"s2"} {}`, want: 400, wantErr: "trailing data"},
		{name: "create bad name", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"a b"}`, want: 400, wantErr: "name:"},
		{name: "create bad source", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"s2","source":"ftp://x/y"}`, want: 400, wantErr: "source: scheme"},
		{name: "create disabled on air", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"onair","enabled":false,"publish_token":"pub-onair"}`, want: 201},
		{name: "get", method: "GET", path: s1, token: testToken, want: 200, check: func(t *testing.T, b []byte) {
			var in api.StreamInfo
			mustUnmarshal(t, b, &in)
			if in.Name != "s1" || in.PlayKey != "pk" || in.Live != nil {
				t.Errorf("got %+v", in)
			}
		}},
		{name: "get live", method: "GET", path: "/api/v1/streams/live/onair", token: testToken, want: 200, check: func(t *testing.T, b []byte) {
			var in api.StreamInfo
			mustUnmarshal(t, b, &in)
			if in.Live == nil || in.Live.Width != 1280 || in.Enabled {
				t.Errorf("got %+v live %+v", in, in.Live)
			}
		}},
		{name: "get missing", method: "GET", path: "/api/v1/streams/live/nope", token: testToken, want: 404, wantErr: "not found"},
		{name: "get bad name", method: "GET", path: "/api/v1/streams/live/.x", token: testToken, want: 400, wantErr: "must not start"},
		{name: "partial patch", method: "PATCH", path: s1, token: testToken, body: `{"enabled":false}`, want: 200, check: func(t *testing.T, b []byte) {
			var s api.Stream
			mustUnmarshal(t, b, &s)
			if s.Enabled || s.PlayKey != "pk" || s.Source != "rtmp://up.example/live/x" || s.Profile != "hd" || len(s.PublishToken) != 24 {
				t.Errorf("patch wiped other fields: %+v", s)
			}
		}},
		{name: "patch one invalid field", method: "PATCH", path: s1, token: testToken,
			body: `{"enabled":true,"record":true,"source":"http://bad/x"}`, want: 400, wantErr: "source:"},
		{name: "after invalid patch", method: "GET", path: s1, token: testToken, want: 200, check: func(t *testing.T, b []byte) {
			var s api.Stream
			mustUnmarshal(t, b, &s)
			if s.Enabled || s.Record || s.Source != "rtmp://up.example/live/x" {
				t.Errorf("invalid patch half-applied: %+v", s)
			}
		}},
		{name: "patch app refused", method: "PATCH", path: s1, token: testToken, body: `{"app":"other"}`, want: 400, wantErr: "unknown field"},
		{name: "patch wrong type", method: "PATCH", path: s1, token: testToken, body: `{"enabled":"yes"}`, want: 400, wantErr: "invalid JSON"},
		{name: "patch missing", method: "PATCH", path: "/api/v1/streams/live/nope", token: testToken, body: `{"record":true}`, want: 404},
		{name: "empty patch", method: "PATCH", path: s1, token: testToken, body: `{}`, want: 200},
		{name: "patch clears play key", method: "PATCH", path: s1, token: testToken, body: `{"play_key":"","record":true}`, want: 200, check: func(t *testing.T, b []byte) {
			var s api.Stream
			mustUnmarshal(t, b, &s)
			if s.PlayKey != "" || !s.Record || s.Profile != "hd" {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "patch ip lists", method: "PATCH", path: s1, token: testToken, body: `{"play_deny":["127.0.0.2","10.0.0.0/8"],"publish_allow":["192.0.2.0/24"]}`, want: 200},
		{name: "patch bad ip list", method: "PATCH", path: s1, token: testToken, body: `{"publish_deny":["10.0.0.0/33"]}`, want: 400, wantErr: "publish_deny: ip list entry 0"},
		{name: "get ip lists", method: "GET", path: s1, token: testToken, want: 200, check: func(t *testing.T, b []byte) {
			var s api.Stream
			mustUnmarshal(t, b, &s)
			if strings.Join(s.PlayDeny, ",") != "127.0.0.2,10.0.0.0/8" || strings.Join(s.PublishAllow, ",") != "192.0.2.0/24" || s.PublishDeny != nil {
				t.Errorf("lists %+v", s.IPLists)
			}
		}},
		{name: "create with a bad ip list", method: "POST", path: "/api/v1/streams", token: testToken, body: `{"name":"badlist","play_allow":["x"]}`, want: 400, wantErr: "play_allow"},
		{name: "kick on air", method: "POST", path: "/api/v1/streams/live/onair/kick", token: testToken, want: 204},
		{name: "kick not live", method: "POST", path: s1 + "/kick", token: testToken, want: 409, wantErr: "not live"},
		{name: "kick unknown", method: "POST", path: "/api/v1/streams/live/nope/kick", token: testToken, want: 404},
		{name: "list", method: "GET", path: "/api/v1/streams", token: testToken, want: 200, check: func(t *testing.T, b []byte) {
			var l api.StreamList
			mustUnmarshal(t, b, &l)
			if len(l.Streams) != 2 || l.Streams[0].Name != "onair" || l.Streams[0].Live == nil || l.Streams[1].Live != nil {
				t.Errorf("list %s", b)
			}
		}},
		{name: "delete", method: "DELETE", path: s1, token: testToken, want: 204},
		{name: "delete again", method: "DELETE", path: s1, token: testToken, want: 404, wantErr: "not found"},
		{name: "get deleted", method: "GET", path: s1, token: testToken, want: 404},
		{name: "healthz without token", method: "GET", path: "/healthz", want: 200},
		{name: "readyz", method: "GET", path: "/readyz", want: 200},
		{name: "metrics", method: "GET", path: "/metrics", want: 200, check: func(t *testing.T, b []byte) {
			for _, m := range []string{`livefuse_lms_api_requests_total{code="401",route="/api/"}`, "livefuse_lms_streams 1"} {
				if !bytes.Contains(b, []byte(m)) {
					t.Errorf("metrics miss %s", m)
				}
			}
		}},
	}
	for _, st := range steps {
		code, body := call(t, ts, st.method, st.path, st.token, st.body)
		if code != st.want {
			t.Errorf("%s: status %d, want %d (body %s)", st.name, code, st.want, body)
			continue
		}
		if code >= 400 {
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
				t.Errorf("%s: error body is not {\"error\": …}: %s", st.name, body)
			} else if !strings.Contains(eb.Error, st.wantErr) {
				t.Errorf("%s: error %q, want it to contain %q", st.name, eb.Error, st.wantErr)
			}
			continue
		}
		if st.check != nil {
			st.check(t, body)
		}
	}

	if len(live.kicked) != 1 {
		t.Errorf("kicks: %v", live.kicked)
	}
	if reg.Len() != 1 {
		t.Errorf("registry has %d streams, want 1", reg.Len())
	}
	out := logs.String()
	for _, want := range []string{"audit=create", "audit=patch", "audit=delete", "audit=kick", "stream=live/s1", "fields=enabled"} {
		if !strings.Contains(out, want) {
			t.Errorf("log misses %q", want)
		}
	}
	// Secrets never reach the log.
	for _, secret := range []string{testToken, "pub-onair", `"pk"`, "=pk "} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains secret %q", secret)
		}
	}
}

func TestAPIBodyLimit(t *testing.T) {
	ts, _, _, _ := newTestAPI(t)
	big := `{"name":"big","profile":"` + strings.Repeat("x", 2<<20) + `"}`
	code, body := call(t, ts, "POST", "/api/v1/streams", testToken, big)
	if code != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte("1 MiB")) {
		t.Errorf("got %d %s", code, body)
	}
}

func TestReadyz(t *testing.T) {
	reg := startRegistry(t, prefixStore(t))
	cfg := DefaultConfig()
	cfg.APIToken = testToken
	srv, err := NewServer(cfg, reg, &fakeLive{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	// The store away: the node still serves (its registry is in memory),
	// and says so apart.
	reg.ready = func(context.Context) error { return errors.New("down") }
	if code, body := call(t, ts, "GET", "/readyz", "", ""); code != 200 || !bytes.Contains(body, []byte(`"store":"unreachable"`)) {
		t.Errorf("store down: got %d %s", code, body)
	}
	// Draining: 503, whatever the store.
	srv.SetReadiness(func() error { return errors.New("node draining") })
	if code, body := call(t, ts, "GET", "/readyz", "", ""); code != 503 || !bytes.Contains(body, []byte(`node draining`)) {
		t.Errorf("draining: got %d %s", code, body)
	}
	srv.SetReadiness(func() error { return nil })
	reg.ready = func(context.Context) error { return nil }
	if code, body := call(t, ts, "GET", "/readyz", "", ""); code != 200 || !bytes.Contains(body, []byte(`"store":"ok"`)) {
		t.Errorf("ready: got %d %s", code, body)
	}
}

func TestAPIToken(t *testing.T) {
	reg := startRegistry(t, prefixStore(t))
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.APIAddr = "127.0.0.1:0"

	srv, err := NewServer(cfg, reg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.GeneratedToken()
	if len(tok) != 32 {
		t.Fatalf("generated token %q", tok)
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}

	// The second start reads the same token and does not report it again.
	srv2, err := NewServer(cfg, reg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv2.GeneratedToken() != "" {
		t.Error("token reported as generated twice")
	}
	if err := srv2.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()

	// The client works against the real listener with the file's token.
	c := api.NewClient("http://"+srv2.Addr().String(), tok)
	ctx := t.Context()
	created, err := c.CreateStream(ctx, api.CreateStreamRequest{Name: "c1", Source: "rtsp://cam/x"})
	if err != nil {
		t.Fatal(err)
	}
	enabled := false
	if _, err := c.PatchStream(ctx, "live", "c1", api.StreamPatch{Enabled: &enabled}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetStream(ctx, "live", "c1")
	if err != nil || got.Enabled || got.PublishToken != created.PublishToken {
		t.Errorf("GetStream = %+v, %v", got, err)
	}
	if l, err := c.ListStreams(ctx); err != nil || len(l) != 1 {
		t.Errorf("ListStreams = %v, %v", l, err)
	}
	var ae *api.Error
	if err := c.KickStream(ctx, "live", "c1"); !errors.As(err, &ae) || ae.Status != 409 {
		t.Errorf("KickStream offline = %v", err)
	}
	if err := c.DeleteStream(ctx, "live", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetStream(ctx, "live", "c1"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("GetStream after delete = %v", err)
	}
	bad := api.NewClient("http://"+srv2.Addr().String(), "wrong")
	if _, err := bad.ListStreams(ctx); !errors.As(err, &ae) || ae.Status != 401 {
		t.Errorf("wrong token = %v", err)
	}
}

func TestAPITokenNeedsSource(t *testing.T) {
	reg := startRegistry(t, prefixStore(t))
	if _, err := NewServer(DefaultConfig(), reg, nil, nil, nil); err == nil {
		t.Error("NewServer without api_token or data_dir succeeded")
	}
	cfg := DefaultConfig()
	cfg.APIToken = "has space"
	if _, err := NewServer(cfg, reg, nil, nil, nil); err == nil {
		t.Error("NewServer accepted an invalid api_token")
	}
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}
