package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// Manual blacklist entries are kept in the lms store (one blob,
// cdnmix/blacklist): posted to one node, they steer every node's
// dispatcher, survive a restart, and a removal on any node reaches the
// others.

// blDispatch asks s for n JSON dispatches as a client at xff (the harness
// connects from 127.0.0.1, a trusted proxy) and returns how often each
// vendor came first and how often it was listed at all.
func blDispatch(t *testing.T, s *server, xff string, n int) (first, listed map[string]int, err error) {
	t.Helper()
	first, listed = map[string]int{}, map[string]int{}
	for range n {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/dispatch/live/demo.flv?format=json", s.http), nil)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		var out struct {
			Candidates []struct {
				Vendor string `json:"vendor"`
			} `json:"candidates"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("dispatch as %s: %d: %w", xff, resp.StatusCode, err)
		}
		if resp.StatusCode != http.StatusOK || len(out.Candidates) == 0 {
			return nil, nil, fmt.Errorf("dispatch as %s: %d %+v", xff, resp.StatusCode, out)
		}
		first[out.Candidates[0].Vendor]++
		for _, c := range out.Candidates {
			listed[c.Vendor]++
		}
	}
	return first, listed, nil
}

// blOff reports nil when s never lists vendor for a client at xff.
func blOff(t *testing.T, s *server, xff, vendor string) error {
	first, listed, err := blDispatch(t, s, xff, 10)
	if err != nil {
		return err
	}
	if listed[vendor] > 0 {
		return fmt.Errorf("%s listed %d times in 10 answers (first %d)", vendor, listed[vendor], first[vendor])
	}
	return nil
}

// blFirst reports nil when s lists vendor first at least once in 10
// answers for a client at xff (the two vendors share a bucket 50/50).
func blFirst(t *testing.T, s *server, xff, vendor string) error {
	first, _, err := blDispatch(t, s, xff, 10)
	if err != nil {
		return err
	}
	if first[vendor] == 0 {
		return fmt.Errorf("%s never first in 10 answers: %v", vendor, first)
	}
	return nil
}

type blEntry struct {
	Vendor string    `json:"vendor"`
	Region string    `json:"region"`
	ISP    string    `json:"isp"`
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
}

func blList(t *testing.T, s *server) []blEntry {
	t.Helper()
	var out struct {
		Entries []blEntry `json:"entries"`
	}
	if code, err := s.api("GET", "/cdn/blacklist", nil, &out); err != nil || code != http.StatusOK {
		t.Fatalf("GET /cdn/blacklist: %d %v", code, err)
	}
	return out.Entries
}

// Two nodes on one store (1 runs the embedded etcd, 2 uses it), vendors a
// and b 50/50 in every bucket. a blacklisted for GD/telecom on node 1
// leaves node 2's answers for a GD/telecom client within 5 s (and only
// those: SH keeps a); node 2 restarted still has it, with the same end
// time; removed on node 2, a is back on node 1.
func TestCDNBlacklistReachesEveryNode(t *testing.T) {
	parallel(t)
	geo, err := filepath.Abs("../cdnmix/testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	const gd, sh = "198.51.100.7", "203.0.113.9" // GD/telecom, SH/telecom in geo.csv
	n1, n2 := newUnit(t), newUnit(t)
	etcdPort := freePort(t)
	n1.configure(fmt.Sprintf("unit: a\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {listen: \"127.0.0.1:%d\"}}\n", n1.apiPort, apiToken, etcdPort) + cdnVendorsYAML(geo, ""))
	n2.configure(fmt.Sprintf("unit: b\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {endpoints: [\"127.0.0.1:%d\"]}}\n", n2.apiPort, apiToken, etcdPort) + cdnVendorsYAML(geo, ""))
	n1.start()
	t.Cleanup(n1.stop)
	n2.start()
	t.Cleanup(n2.stop)

	// Both vendors serve GD/telecom on both nodes.
	for i, s := range []*server{n1, n2} {
		cdnPoll(t, 5*time.Second, fmt.Sprintf("node %d dispatches to a in GD", i+1), func() error { return blFirst(t, s, gd, "a") })
	}

	start := time.Now()
	var posted blEntry
	if code, err := n1.api("POST", "/cdn/blacklist", map[string]any{"vendor": "a", "region": "GD", "isp": "telecom",
		"ttl": "10m", "reason": "e2e"}, &posted); err != nil || code != http.StatusCreated {
		t.Fatalf("POST /cdn/blacklist on node 1: %d %v", code, err)
	}
	if err := blOff(t, n1, gd, "a"); err != nil {
		t.Fatalf("node 1 right after the POST: %v", err)
	}
	cdnPoll(t, 5*time.Second, "node 2 drops a for GD/telecom", func() error { return blOff(t, n2, gd, "a") })
	t.Logf("blacklist reached node 2 in %v", time.Since(start).Round(time.Millisecond))
	if err := blFirst(t, n2, sh, "a"); err != nil {
		t.Errorf("node 2 for SH (not blacklisted): %v", err)
	}

	// Restart node 2: the entry comes from the store, with node 1's end time.
	n2.stop()
	n2.start()
	if err := blOff(t, n2, gd, "a"); err != nil {
		t.Fatalf("node 2 after its restart: %v", err)
	}
	if got := blList(t, n2); len(got) != 1 || got[0].Vendor != "a" || got[0].Region != "GD" || got[0].ISP != "telecom" ||
		!got[0].Until.Equal(posted.Until) || got[0].Reason != "e2e" {
		t.Fatalf("node 2's blacklist after its restart: %+v, want %+v", got, posted)
	}

	// Removed on node 2: node 1 lists a again.
	if code, err := n2.api("DELETE", "/cdn/blacklist?vendor=a&region=GD&isp=telecom", nil, nil); err != nil || code != http.StatusNoContent {
		t.Fatalf("DELETE /cdn/blacklist on node 2: %d %v", code, err)
	}
	cdnPoll(t, 5*time.Second, "node 1 lists a for GD/telecom again", func() error { return blFirst(t, n1, gd, "a") })
	if got := blList(t, n1); len(got) != 0 {
		t.Errorf("node 1's blacklist after the DELETE on node 2: %+v", got)
	}
}
