package lms

import (
	"bytes"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReadyzDraining: once the node drains, /readyz answers 503
// "draining" (load balancers stop sending players) while /healthz stays
// 200 (the node is alive and must not be restarted) and the API answers.
func TestReadyzDraining(t *testing.T) {
	reg := startRegistry(t, prefixStore(t))
	cfg := DefaultConfig()
	cfg.APIToken = testToken
	srv, err := NewServer(cfg, reg, &fakeLive{}, newBufLogger(&syncBuffer{}), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	if code, body := call(t, ts, "GET", "/readyz", "", ""); code != 200 {
		t.Fatalf("before the drain: /readyz %d %s", code, body)
	}
	srv.Drain()
	if code, body := call(t, ts, "GET", "/readyz", "", ""); code != 503 || !bytes.Contains(body, []byte("draining")) {
		t.Errorf("draining: /readyz %d %s, want 503 draining", code, body)
	}
	if code, body := call(t, ts, "GET", "/healthz", "", ""); code != 200 {
		t.Errorf("draining: /healthz %d %s, want 200", code, body)
	}
	if code, body := call(t, ts, "GET", "/api/v1/streams", testToken, ""); code != 200 {
		t.Errorf("draining: API %d %s, want 200", code, body)
	}
}
