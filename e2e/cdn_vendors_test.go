package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/cdnmix"
)

// Vendors changed through the control API are kept in the lms store: they
// survive a restart (with the signing keys), and reach every node.

// vendCKey and vendSeedKey are signing keys the log must never show.
const (
	vendCKey    = "ckey-e2e-secret-1"
	vendSeedKey = "bkey-e2e-seed-2"
)

const vendYAML = `streams:
  - {app: live, name: demo, publish_token: "pubtok"}
cdnmix:
  recompute: 500ms
  vendors:
    - {name: a, flv_base: "http://cdn-a.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
    - {name: b, flv_base: "http://cdn-b.example.com", signing: hmac_sha256, key: ` + vendSeedKey + `, commit_mbps: 1000, ceiling_mbps: 4000}
`

type vendView struct {
	Name        string  `json:"name"`
	FLVBase     string  `json:"flv_base"`
	Signing     string  `json:"signing"`
	Key         string  `json:"key"`
	KeySet      bool    `json:"key_set"`
	CommitMbps  float64 `json:"commit_mbps"`
	CeilingMbps float64 `json:"ceiling_mbps"`
	Enabled     bool    `json:"enabled"`
}

// vendList returns the vendors s serves, by name in order.
func vendList(t *testing.T, s *server) (map[string]vendView, []string) {
	t.Helper()
	var out struct {
		Vendors []vendView `json:"vendors"`
	}
	if code, err := s.api("GET", "/cdn/vendors", nil, &out); err != nil || code != 200 {
		t.Fatalf("GET /cdn/vendors: %d %v", code, err)
	}
	m := map[string]vendView{}
	var names []string
	for _, v := range out.Vendors {
		if v.Key != "" {
			t.Errorf("GET /cdn/vendors shows the key of %s", v.Name)
		}
		m[v.Name] = v
		names = append(names, v.Name)
	}
	return m, names
}

// vendCall sends a vendor API request and checks the status.
func vendCall(t *testing.T, s *server, method, path string, body any, want int) {
	t.Helper()
	code, err := s.api(method, path, body, nil)
	if err != nil || code != want {
		t.Fatalf("%s %s: %d %v, want %d", method, path, code, err, want)
	}
}

// vendWait waits until s serves the vendor names want, in order.
func vendWait(t *testing.T, s *server, within time.Duration, want ...string) map[string]vendView {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m, names := vendList(t, s)
		if slices.Equal(names, want) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("vendors %v after %v, want %v", names, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vendNoKeysLogged checks the log of s never shows a signing key.
func vendNoKeysLogged(t *testing.T, s *server) {
	t.Helper()
	for _, k := range []string{vendCKey, vendSeedKey} {
		if strings.Contains(s.logs(), k) {
			t.Errorf("the log shows signing key %q", k)
		}
	}
}

func TestCDNVendorsSurviveRestart(t *testing.T) {
	parallel(t)
	s := startServer(t, vendYAML)

	// The config seeds the store.
	m := vendWait(t, s, time.Second, "a", "b")
	if !m["b"].KeySet {
		t.Errorf("seeded b has no key: %+v", m["b"])
	}

	// Add c with a key, change b without sending its key (it keeps it) and
	// disable it, remove a.
	vendCall(t, s, "PUT", "/cdn/vendors/c", map[string]any{"flv_base": "http://cdn-c.example.com",
		"signing": "hmac_sha256", "key": vendCKey, "commit_mbps": 500, "ceiling_mbps": 2000}, http.StatusCreated)
	vendCall(t, s, "PUT", "/cdn/vendors/b", map[string]any{"flv_base": "http://cdn-b.example.com",
		"signing": "hmac_sha256", "commit_mbps": 10, "ceiling_mbps": 20, "enabled": false}, http.StatusOK)
	vendCall(t, s, "DELETE", "/cdn/vendors/a", nil, http.StatusOK)
	vendWait(t, s, time.Second, "b", "c")

	s.stop()
	s.start()

	// The store wins over the config: a stays deleted, b keeps its change
	// and key, c is back with its key.
	m = vendWait(t, s, time.Second, "b", "c")
	if b := m["b"]; b.CommitMbps != 10 || b.CeilingMbps != 20 || b.Enabled || !b.KeySet {
		t.Errorf("b after the restart: %+v", b)
	}
	if c := m["c"]; c.CommitMbps != 500 || c.CeilingMbps != 2000 || !c.Enabled || !c.KeySet || c.Signing != "hmac_sha256" {
		t.Errorf("c after the restart: %+v", c)
	}

	// c's key is the one sent: its dispatch URLs verify with it.
	var loc *url.URL
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := (&http.Transport{}).RoundTrip(mustRequest(t, fmt.Sprintf("http://127.0.0.1:%d/dispatch/live/demo.flv", s.http)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusFound {
			if loc, err = url.Parse(resp.Header.Get("Location")); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dispatch after the restart: %d", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if loc.Host != "cdn-c.example.com" || loc.Path != "/live/demo.flv" {
		t.Fatalf("dispatched to %s, want c (b is disabled)", loc)
	}
	q := loc.Query()
	if err := cdnmix.VerifyHMAC(loc.Path, q.Get("expires"), q.Get("signature"), vendCKey, time.Now()); err != nil {
		t.Errorf("dispatch URL %s does not verify with c's key: %v", loc, err)
	}

	// An emptied list stays empty: the config does not seed it again.
	vendCall(t, s, "DELETE", "/cdn/vendors/b", nil, http.StatusOK)
	vendCall(t, s, "DELETE", "/cdn/vendors/c", nil, http.StatusOK)
	s.stop()
	s.start()
	vendWait(t, s, time.Second)
	vendNoKeysLogged(t, s)
}

func mustRequest(t *testing.T, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Two nodes on one store (a runs the embedded etcd, b uses it): b's config
// vendors do not replace the stored ones, and a change through either
// node's API is applied by the other.
func TestCDNVendorsReachEveryNode(t *testing.T) {
	parallel(t)
	a, b := newUnit(t), newUnit(t)
	etcdPort := freePort(t)
	a.configure(fmt.Sprintf("unit: a\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {listen: \"127.0.0.1:%d\"}}\n", a.apiPort, apiToken, etcdPort) + vendYAML)
	b.configure(fmt.Sprintf("unit: b\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {endpoints: [\"127.0.0.1:%d\"]}}\n", b.apiPort, apiToken, etcdPort) + `cdnmix:
  vendors:
    - {name: z, flv_base: "http://cdn-z.example.com", commit_mbps: 1, ceiling_mbps: 2}
`)
	a.start()
	t.Cleanup(a.stop)
	b.start()
	t.Cleanup(b.stop)

	vendWait(t, a, time.Second, "a", "b")
	vendWait(t, b, time.Second, "a", "b")

	vendCall(t, b, "PUT", "/cdn/vendors/c", map[string]any{"flv_base": "http://cdn-c.example.com",
		"signing": "hmac_sha256", "key": vendCKey, "commit_mbps": 500, "ceiling_mbps": 2000}, http.StatusCreated)
	if c := vendWait(t, a, 5*time.Second, "a", "b", "c")["c"]; !c.KeySet || c.CommitMbps != 500 {
		t.Errorf("c on node a: %+v", c)
	}
	vendCall(t, a, "DELETE", "/cdn/vendors/a", nil, http.StatusOK)
	vendWait(t, b, 5*time.Second, "b", "c")
	vendCall(t, a, "PUT", "/cdn/vendors", map[string]any{"vendors": []map[string]any{
		{"name": "d", "flv_base": "http://cdn-d.example.com", "commit_mbps": 1, "ceiling_mbps": 2},
		{"name": "c", "flv_base": "http://cdn-c.example.com", "signing": "hmac_sha256", "commit_mbps": 5, "ceiling_mbps": 6},
	}}, http.StatusOK)
	if c := vendWait(t, b, 5*time.Second, "d", "c")["c"]; !c.KeySet || c.CommitMbps != 5 {
		t.Errorf("c on node b after a PUT of the list without its key: %+v", c)
	}
	vendNoKeysLogged(t, a)
	vendNoKeysLogged(t, b)
}
