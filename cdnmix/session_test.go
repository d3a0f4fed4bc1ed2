package cdnmix

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestFallbackSession: /qos/session gives a player that chose its vendor
// from fallback.json a token naming the stream, the vendor and its bucket;
// unknown streams and vendors get 404, a node without token signing 503.
func TestFallbackSession(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	if w := env.getSession("/qos/session?stream=live/demo&vendor=a"); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("without tokens: %d", w.Code)
	}
	keys := testTokens(t)
	env.d.cfg.Tokens = keys
	w := env.getSession("/qos/session?stream=live/demo&vendor=b")
	var ans struct {
		Token string `json:"qos_token"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %s (%v)", w.Code, w.Body, err)
	}
	s, err := keys.Verify(ans.Token, env.now)
	if err != nil || s.Stream != "live/demo" || s.Vendor != "b" || s.Region != "GD" || s.ISP != "telecom" || s.ID == "" {
		t.Fatalf("token %+v (%v)", s, err)
	}
	for _, q := range []string{"stream=live/other&vendor=a", "stream=live/demo&vendor=zz", "stream=live&vendor=a", "stream=live/demo", "stream=../x&vendor=a"} {
		if w := env.getSession("/qos/session?" + q); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", q, w.Code)
		}
	}
}

func (e *dispatchEnv) getSession(target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = "198.51.100.1:1234"
	e.d.serveSession(w, r)
	return w
}
