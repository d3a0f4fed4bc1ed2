package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
)

const token = "ctl-test-token"

// onAir reports live/cam as on air.
type onAir struct{}

func (onAir) LiveStatus(app, name string) (lms.LiveStatus, bool) {
	if app != "live" || name != "cam" {
		return lms.LiveStatus{}, false
	}
	return lms.LiveStatus{PublisherProtocol: "rtsp", PublisherRemote: "10.1.1.1:40000", VideoCodec: "h264",
		Width: 1920, Height: 1080, FPS: 25, AudioCodec: "aac", SampleRate: 48000, Channels: 2,
		BitrateKbps: 4000, Readers: 7, UptimeSeconds: 90}, true
}

func (onAir) Kick(app, name string) error {
	if app != "live" || name != "cam" {
		return lms.ErrNotLive
	}
	return nil
}

// newAPI runs the real control API (embedded etcd in a temp dir) in httptest.
func newAPI(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(newAPIHandler(t))
	t.Cleanup(ts.Close)
	return ts.URL
}

// newAPIHandler is the real control API's handler on a fresh store.
func newAPIHandler(t *testing.T) http.Handler {
	t.Helper()
	cfg := lms.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.APIToken = token
	st, err := lms.OpenStore(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := lms.NewRegistry(st, nil)
	if err := reg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	srv, err := lms.NewServer(cfg, reg, onAir{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv.Handler()
}

// TestCAFile: an https:// API with a private certificate is refused
// unless --ca-file (or LIVEFUSE_CA_FILE) names its CA.
func TestCAFile(t *testing.T) {
	ts := httptest.NewTLSServer(newAPIHandler(t))
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    int
		wantErr string
	}{
		{"system roots only", []string{"streams", "list"}, nil, 1, "certificate"},
		{"flag", []string{"--ca-file", ca, "streams", "list"}, nil, 0, ""},
		{"environment", []string{"streams", "list"}, map[string]string{"LIVEFUSE_CA_FILE": ca}, 0, ""},
		{"missing file", []string{"--ca-file", ca + ".none", "streams", "list"}, nil, 2, "ca file"},
		{"no certificate in it", []string{"--ca-file", notPEM, "streams", "list"}, nil, 2, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"LIVEFUSE_API": ts.URL, "LIVEFUSE_TOKEN": token}
			for k, v := range tt.env {
				env[k] = v
			}
			var out, errb bytes.Buffer
			got := run(tt.args, func(k string) string { return env[k] }, &out, &errb)
			if got != tt.want || !strings.Contains(errb.String(), tt.wantErr) {
				t.Fatalf("exit %d (stderr %q), want %d with %q", got, errb.String(), tt.want, tt.wantErr)
			}
		})
	}
}

func TestRun(t *testing.T) {
	url := newAPI(t)
	env := map[string]string{"LIVEFUSE_API": url, "LIVEFUSE_TOKEN": token}
	getenv := func(k string) string { return env[k] }
	var published api.Stream

	steps := []struct {
		name       string
		args       []string
		want       int
		wantOut    []string // substrings of stdout
		wantErr    string   // substring of stderr
		checkOut   func(*testing.T, string)
		noEnvToken bool
	}{
		{name: "no args", args: nil, want: 2, wantErr: "usage:"},
		{name: "unknown command", args: []string{"streams", "frob"}, want: 2, wantErr: `unknown streams command "frob"`},
		{name: "create", args: []string{"streams", "create", "demo", "--source", "rtmp://up/live/x", "--profile", "hd"}, want: 0,
			checkOut: func(t *testing.T, out string) {
				if err := json.Unmarshal([]byte(out), &published); err != nil {
					t.Fatalf("create output is not JSON: %v\n%s", err, out)
				}
				if published.App != "live" || published.Name != "demo" || !published.Enabled || len(published.PublishToken) != 24 {
					t.Errorf("created %+v", published)
				}
			}},
		{name: "create with app flag and token", args: []string{"streams", "create", "--app", "events", "gala", "--token", "pub1", "--disabled"}, want: 0,
			wantOut: []string{`"app": "events"`, `"publish_token": "pub1"`, `"enabled": false`}},
		{name: "create on air", args: []string{"streams", "create", "cam"}, want: 0},
		{name: "create duplicate", args: []string{"streams", "create", "demo"}, want: 1, wantErr: "livectl: stream already exists"},
		{name: "create invalid", args: []string{"streams", "create", "bad.", "--source", "http://x/y"}, want: 1, wantErr: "source: scheme"},
		{name: "get", args: []string{"streams", "get", "demo"}, want: 0, wantOut: []string{`"name": "demo"`, `"live": null`}},
		{name: "get app/name", args: []string{"streams", "get", "events/gala"}, want: 0, wantOut: []string{`"publish_token": "pub1"`}},
		{name: "get missing", args: []string{"streams", "get", "nope"}, want: 1, wantErr: "stream not found"},
		{name: "get two names", args: []string{"streams", "get", "a", "b"}, want: 2, wantErr: "exactly one NAME"},
		{name: "patch", args: []string{"streams", "patch", "demo", "--enabled=false", "--record"}, want: 0,
			wantOut: []string{`"enabled": false`, `"record": true`, `"profile": "hd"`, `"source": "rtmp://up/live/x"`}},
		{name: "patch ip lists", args: []string{"streams", "patch", "demo", "--play-deny", "127.0.0.2, 10.0.0.0/8", "--publish-allow", "192.0.2.0/24"}, want: 0,
			wantOut: []string{`"play_deny": [`, `"10.0.0.0/8"`, `"publish_allow": [`}},
		{name: "patch ip list cleared", args: []string{"streams", "patch", "demo", "--play-deny="}, want: 0,
			checkOut: func(t *testing.T, out string) {
				if strings.Contains(out, "play_deny") || !strings.Contains(out, "publish_allow") {
					t.Errorf("after clearing play_deny:\n%s", out)
				}
			}},
		{name: "patch bad ip list", args: []string{"streams", "patch", "demo", "--publish-deny", "not-an-ip"}, want: 1, wantErr: "publish_deny"},
		{name: "patch nothing", args: []string{"streams", "patch", "demo"}, want: 2, wantErr: "at least one field"},
		{name: "patch bad bool", args: []string{"streams", "patch", "demo", "--enabled=maybe"}, want: 2},
		{name: "list", args: []string{"streams", "list"}, want: 0, checkOut: func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 4 || !strings.HasPrefix(lines[0], "APP") {
				t.Fatalf("table:\n%s", out)
			}
			for _, want := range []string{"h264 1920x1080@25", "aac 48000/2", "4000", "rtsp 10.1.1.1:40000", "yes 1m30s"} {
				if !strings.Contains(lines[2], want) {
					t.Errorf("live row misses %q: %s", want, lines[2])
				}
			}
			if strings.Contains(out, published.PublishToken) || strings.Contains(out, "pub1") {
				t.Error("list shows a publish token")
			}
		}},
		{name: "record off", args: []string{"streams", "record", "demo", "off"}, want: 0, wantOut: []string{"live/demo: record off"}},
		{name: "record on", args: []string{"streams", "record", "demo", "on"}, want: 0, wantOut: []string{"live/demo: record on"}},
		{name: "record bad", args: []string{"streams", "record", "demo", "maybe"}, want: 2, wantErr: "streams record needs NAME and on or off"},
		{name: "switch backup", args: []string{"streams", "switch", "demo", "backup"}, want: 0, wantOut: []string{"live/demo: feed policy backup"}},
		{name: "switch bad", args: []string{"streams", "switch", "demo", "left"}, want: 2, wantErr: "main, backup, auto"},
		{name: "kick on air", args: []string{"streams", "kick", "cam"}, want: 0, wantOut: []string{"kicked live/cam"}},
		{name: "kick not live", args: []string{"streams", "kick", "demo"}, want: 1, wantErr: "stream is not live"},
		{name: "create with lists", args: []string{"streams", "create", "listed", "--publish-deny", "127.0.0.2"}, want: 0,
			wantOut: []string{`"publish_deny": [`}},
		{name: "delete", args: []string{"streams", "delete", "events/gala"}, want: 0, wantOut: []string{"deleted events/gala"}},
		{name: "delete again", args: []string{"streams", "delete", "events/gala"}, want: 1, wantErr: "stream not found"},
		{name: "no token", args: []string{"streams", "list"}, noEnvToken: true, want: 1, wantErr: "missing bearer token"},
		{name: "token flag", args: []string{"--token", token, "streams", "list"}, noEnvToken: true, want: 0},
		{name: "wrong token flag", args: []string{"--token", "wrong", "streams", "list"}, want: 1, wantErr: "invalid bearer token"},
		{name: "api flag", args: []string{"--api", "http://127.0.0.1:1", "streams", "list"}, want: 1, wantErr: "livectl: GET /api/v1/streams"},
	}
	for _, st := range steps {
		ge := getenv
		if st.noEnvToken {
			ge = func(k string) string {
				if k == "LIVEFUSE_TOKEN" {
					return ""
				}
				return env[k]
			}
		}
		var stdout, stderr bytes.Buffer
		code := run(st.args, ge, &stdout, &stderr)
		if code != st.want {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", st.name, code, st.want, stdout.String(), stderr.String())
			continue
		}
		for _, w := range st.wantOut {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("%s: stdout misses %q:\n%s", st.name, w, stdout.String())
			}
		}
		if !strings.Contains(stderr.String(), st.wantErr) {
			t.Errorf("%s: stderr %q, want it to contain %q", st.name, stderr.String(), st.wantErr)
		}
		if st.checkOut != nil {
			st.checkOut(t, stdout.String())
		}
	}
}

func TestFormatReaders(t *testing.T) {
	for _, tc := range []struct {
		lv   api.LiveStatus
		want string
	}{
		{api.LiveStatus{}, "0"},
		{api.LiveStatus{Readers: 4, ReadersByProtocol: map[string]int{"flv": 2, "rtmp": 1, "hls": 1}, InternalReaders: 3}, "4 (flv 2, rtmp 1, hls 1; +3 internal)"},
		{api.LiveStatus{Readers: 1, ReadersByProtocol: map[string]int{"hls": 1}}, "1 (hls 1)"},
		{api.LiveStatus{InternalReaders: 2}, "0 (+2 internal)"},
	} {
		if got := formatReaders(&tc.lv); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.lv, got, tc.want)
		}
	}
}
