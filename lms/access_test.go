package lms

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/lms/api"
)

const (
	viewerToken   = "viewer-token-0123456789"
	operatorToken = "operator-token-0123456789"
)

// newRoleAPI is an API with three tokens (admin, operator ops, viewer
// watch) and its audit log in the test's store.
func newRoleAPI(t *testing.T) (*httptest.Server, *Server) {
	t.Helper()
	st := prefixStore(t)
	reg := startRegistry(t, st)
	cfg := DefaultConfig()
	cfg.APIToken = testToken
	cfg.Tokens = []APIToken{{Name: "ops", Token: operatorToken, Role: RoleOperator}, {Name: "watch", Token: viewerToken, Role: RoleViewer}}
	srv, err := NewServer(cfg, reg, &fakeLive{}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetAuditStore(st)
	done := make(chan struct{})
	go srv.auditLog.run(done)
	t.Cleanup(func() { close(done) })
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, srv
}

func TestRoles(t *testing.T) {
	ts, _ := newRoleAPI(t)
	if code, b := call(t, ts, "POST", "/api/v1/streams", testToken, `{"app":"live","name":"r1","publish_token":"tok"}`); code != http.StatusCreated {
		t.Fatalf("admin create: %d %s", code, b)
	}
	tests := []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"viewer reads", viewerToken, "GET", "/api/v1/streams", "", 200},
		{"viewer may not switch", viewerToken, "POST", "/api/v1/streams/live/r1/switch", `{"feed":"backup"}`, 403},
		{"viewer may not create", viewerToken, "POST", "/api/v1/streams", `{"name":"r2"}`, 403},
		{"operator switches", operatorToken, "POST", "/api/v1/streams/live/r1/switch", `{"feed":"backup"}`, 200},
		{"operator may not delete", operatorToken, "DELETE", "/api/v1/streams/live/r1", "", 403},
		{"operator may not patch", operatorToken, "PATCH", "/api/v1/streams/live/r1", `{"enabled":false}`, 403},
		{"operator may not change vendors", operatorToken, "PUT", "/api/v1/cdn/vendors/x", `{}`, 403},
		{"unknown token", "not-a-token-0123456789", "GET", "/api/v1/streams", "", 401},
		{"admin patches", testToken, "PATCH", "/api/v1/streams/live/r1", `{"record":true}`, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, b := call(t, ts, tc.method, tc.path, tc.token, tc.body); code != tc.want {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.want)
			}
		})
	}
}

func TestAuditLog(t *testing.T) {
	ts, _ := newRoleAPI(t)
	call(t, ts, "POST", "/api/v1/streams", testToken, `{"app":"live","name":"a1","publish_token":"tok"}`)
	call(t, ts, "POST", "/api/v1/streams/live/a1/switch", operatorToken, `{"feed":"main"}`)
	call(t, ts, "POST", "/api/v1/streams/live/a1/switch", viewerToken, `{"feed":"backup"}`) // refused by role
	call(t, ts, "POST", "/api/v1/streams/live/a1/switch", operatorToken, `{"feed":"sideways"}`)
	call(t, ts, "GET", "/api/v1/streams", viewerToken, "")
	// The writer is asynchronous: wait (bounded) for the entries.
	var l api.AuditList
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, b := call(t, ts, "GET", "/api/v1/audit", viewerToken, "")
		if code != 200 {
			t.Fatalf("audit: %d %s", code, b)
		}
		l = api.AuditList{}
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Entries) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(l.Entries) != 4 {
		t.Fatalf("audit has %d entries, want 4 (create, switch, switch refused by role, bad switch): %+v", len(l.Entries), l.Entries)
	}
	// Newest first.
	bad, denied, sw, cr := l.Entries[0], l.Entries[1], l.Entries[2], l.Entries[3]
	if denied.Actor != "watch" || denied.Status != http.StatusForbidden || denied.Outcome != "refused" {
		t.Errorf("entry of the viewer's switch %+v", denied)
	}
	if cr.Action != "create" || cr.Actor != "admin" || cr.Target != "live/a1" || cr.Outcome != "done" {
		t.Errorf("create entry %+v", cr)
	}
	if sw.Action != "switch" || sw.Actor != "ops" || sw.Role != RoleOperator || sw.Detail["feed"] != "main" || sw.Status != 200 {
		t.Errorf("switch entry %+v", sw)
	}
	if bad.Outcome != "refused" || bad.Status != http.StatusBadRequest || bad.Actor != "ops" {
		t.Errorf("refused entry %+v", bad)
	}
	for _, e := range l.Entries {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), "tok") && strings.Contains(string(b), `"tok"`) {
			t.Errorf("an audit entry holds a secret: %s", b)
		}
	}
	// Filters.
	code, b := call(t, ts, "GET", "/api/v1/audit?actor=ops&limit=1", viewerToken, "")
	l = api.AuditList{}
	if err := json.Unmarshal(b, &l); err != nil || code != 200 || len(l.Entries) != 1 || l.Entries[0].Actor != "ops" {
		t.Fatalf("filtered audit: %d %s", code, b)
	}
	if code, _ := call(t, ts, "GET", "/api/v1/audit?limit=5000", viewerToken, ""); code != 400 {
		t.Errorf("limit 5000: %d, want 400", code)
	}
}

func TestValidateTokens(t *testing.T) {
	for _, tc := range []struct {
		ts   []APIToken
		want string
	}{
		{[]APIToken{{Name: "ops", Token: operatorToken, Role: RoleOperator}}, ""},
		{[]APIToken{{Name: "admin", Token: operatorToken, Role: RoleAdmin}}, "used twice"},
		{[]APIToken{{Name: "x", Token: "short", Role: RoleViewer}}, "16"},
		{[]APIToken{{Name: "x", Token: operatorToken, Role: "root"}}, "role"},
		{[]APIToken{{Name: "x", Token: operatorToken, Role: RoleViewer}, {Name: "y", Token: operatorToken, Role: RoleViewer}}, "same token"},
	} {
		err := ValidateTokens(tc.ts)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.ts, err, tc.want)
		}
	}
}
