package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The run-time collections (vendors, blacklist, profiles) live in lms, one
// record per item with compare-and-swap writes: two nodes on one store
// writing them at once lose nothing, and each applies what the other
// wrote.

// twoNodes starts node a with the embedded etcd and node b on a's etcd,
// both with extra in their config.
func twoNodes(t *testing.T, extra string) (a, b *server) {
	t.Helper()
	a, b = newUnit(t), newUnit(t)
	etcdPort := freePort(t)
	a.configure(fmt.Sprintf("unit: a\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {listen: \"127.0.0.1:%d\"}}\n", a.apiPort, apiToken, etcdPort) + extra)
	b.configure(fmt.Sprintf("unit: b\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {endpoints: [\"127.0.0.1:%d\"]}}\n", b.apiPort, apiToken, etcdPort) + extra)
	a.start()
	t.Cleanup(a.stop)
	b.start()
	t.Cleanup(b.stop)
	return a, b
}

const collYAML = `streams:
  - {app: live, name: demo, publish_token: "pubtok"}
cdnmix:
  recompute: 500ms
  vendors:
    - {name: a, flv_base: "http://cdn-a.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
    - {name: shared, flv_base: "http://cdn-shared.example.com", commit_mbps: 1, ceiling_mbps: 2}
`

// Both nodes write 100 vendors and 100 blacklist entries each, at once,
// some of the vendor writes to one vendor both nodes change: afterwards
// both list exactly the union, in the same order.
func TestCollectionsNoLostUpdate(t *testing.T) {
	parallel(t)
	a, b := twoNodes(t, collYAML)
	vendWait(t, a, 5*time.Second, "a", "shared")
	vendWait(t, b, 5*time.Second, "a", "shared")

	const writes, workers = 100, 4
	wantVendors := []string{"a", "shared"}
	wantEntries := map[string]bool{}
	for n := range 2 {
		for j := range writes {
			wantVendors = append(wantVendors, fmt.Sprintf("n%d-%03d", n, j))
			wantEntries[fmt.Sprintf("a/r%d-%03d/", n, j)] = true
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4*writes)
	sharedCommits := map[float64]bool{}
	for n, s := range []*server{a, b} {
		for w := range workers {
			wg.Go(func() {
				for j := w; j < writes; j += workers {
					name := fmt.Sprintf("n%d-%03d", n, j)
					if code, err := s.api("PUT", "/cdn/vendors/"+name, map[string]any{
						"flv_base": "http://" + name + ".example.com", "commit_mbps": 1, "ceiling_mbps": 2}, nil); err != nil || code != http.StatusCreated {
						errs <- fmt.Sprintf("node %d PUT vendor %s: %d %v", n, name, code, err)
					}
					if code, err := s.api("POST", "/cdn/blacklist", map[string]any{
						"vendor": "a", "region": fmt.Sprintf("r%d-%03d", n, j), "reason": "e2e"}, nil); err != nil || code != http.StatusCreated {
						errs <- fmt.Sprintf("node %d POST blacklist %d: %d %v", n, j, code, err)
					}
					if j%10 == 0 {
						commit := float64(100*n + j + 1)
						if code, err := s.api("PUT", "/cdn/vendors/shared", map[string]any{
							"flv_base": "http://cdn-shared.example.com", "commit_mbps": commit, "ceiling_mbps": 10000}, nil); err != nil || code != http.StatusOK {
							errs <- fmt.Sprintf("node %d PUT vendor shared: %d %v", n, code, err)
						}
					}
				}
			})
		}
	}
	for n := range 2 {
		for j := 0; j < writes; j += 10 {
			sharedCommits[float64(100*n+j+1)] = true
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}

	slices.Sort(wantVendors[2:])
	var orders [2][]string
	for i, s := range []*server{a, b} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			m, names := vendList(t, s)
			sorted := slices.Sorted(slices.Values(names))
			want := slices.Sorted(slices.Values(wantVendors))
			entries := blacklistKeys(t, s)
			if slices.Equal(sorted, want) && len(entries) == len(wantEntries) && allIn(entries, wantEntries) {
				orders[i] = names
				if c := m["shared"].CommitMbps; !sharedCommits[c] {
					t.Errorf("node %d: shared vendor's commit %v is none of the values written", i, c)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d after 10 s: %d vendors (want %d), %d blacklist entries (want %d); missing vendors %v",
					i, len(names), len(wantVendors), len(entries), len(wantEntries), missing(want, sorted))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !slices.Equal(orders[0], orders[1]) {
		t.Errorf("the nodes order the vendors differently:\n%v\n%v", orders[0], orders[1])
	}
	if orders[0][0] != "a" || orders[0][1] != "shared" {
		t.Errorf("the seeded vendors are no longer first: %v", orders[0][:2])
	}
}

// blacklistKeys returns the blacklist entries s lists, as vendor/region/isp.
func blacklistKeys(t *testing.T, s *server) []string {
	t.Helper()
	var out struct {
		Entries []struct{ Vendor, Region, ISP string } `json:"entries"`
	}
	if code, err := s.api("GET", "/cdn/blacklist", nil, &out); err != nil || code != 200 {
		t.Fatalf("GET /cdn/blacklist: %d %v", code, err)
	}
	var keys []string
	for _, e := range out.Entries {
		keys = append(keys, e.Vendor+"/"+e.Region+"/"+e.ISP)
	}
	return keys
}

func allIn(keys []string, want map[string]bool) bool {
	for _, k := range keys {
		if !want[k] {
			return false
		}
	}
	return true
}

func missing(want, got []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	if len(out) > 10 {
		out = append(out[:10], "…")
	}
	return out
}

// A profile created, changed and deleted through node a reaches node b.
func TestCollectionsProfilesReachEveryNode(t *testing.T) {
	parallel(t)
	a, b := twoNodes(t, collYAML)
	profile := func(kbps int) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"name":"p1","renditions":[{"name":"small","width":320,"height":180,"video_kbps":%d,"preset":"ultrafast"}]}`, kbps))
	}
	get := func(s *server) (int, int) {
		var p struct {
			Renditions []struct {
				VideoKbps int `json:"video_kbps"`
			} `json:"renditions"`
		}
		code, err := s.api("GET", "/profiles/p1", nil, &p)
		if err != nil {
			t.Fatal(err)
		}
		if code != 200 || len(p.Renditions) == 0 {
			return code, 0
		}
		return code, p.Renditions[0].VideoKbps
	}
	waitB := func(what string, wantCode, wantKbps int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, kbps := get(b)
			if code == wantCode && kbps == wantKbps {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: node b answers %d with %d kbps, want %d with %d", what, code, kbps, wantCode, wantKbps)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if code, err := a.api("POST", "/profiles", profile(300), nil); err != nil || code != http.StatusCreated {
		t.Fatalf("POST profile on a: %d %v", code, err)
	}
	waitB("created", 200, 300)
	if code, err := a.api("PUT", "/profiles/p1", profile(500), nil); err != nil || code != http.StatusOK {
		t.Fatalf("PUT profile on a: %d %v", code, err)
	}
	waitB("changed", 200, 500)
	// Node b refuses to create it again: the store has it.
	var e struct{ Error string }
	if code, _ := b.api("POST", "/profiles", profile(700), &e); code != http.StatusConflict || !strings.Contains(e.Error, "exists") {
		t.Errorf("POST of an existing profile on b: %d %q", code, e.Error)
	}
	if code, err := a.api("DELETE", "/profiles/p1", nil, nil); err != nil || code != http.StatusNoContent {
		t.Fatalf("DELETE profile on a: %d %v", code, err)
	}
	waitB("deleted", 404, 0)
}
