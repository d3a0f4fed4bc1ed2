package cdnmix

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// waitAgg waits until cond holds on the aggregator's stats (bounded).
func (e *mixerEnv) waitAgg(t *testing.T, what string, cond func(AggregatorStats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(e.m.Aggregator().Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v", what, e.m.Aggregator().Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The 302 target carries the session token as qos_token, naming the
// stream, the vendor it points to and the client's region and ISP.
func TestMixerDispatchToken(t *testing.T) {
	e := newMixerEnv(t)
	tests := []struct {
		remote, region, isp string
	}{
		{gdClient, "GD", "telecom"},
		{shClient, "SH", "telecom"},
		{"[2001:db8:1::1]:5000", "SH", "unicom"},
		{"192.0.2.99:5000", "BJ", "unicom"},
		{"127.0.0.2:5000", "", ""},
	}
	for _, tc := range tests {
		w := e.do(e.h, "GET", "/dispatch/live/demo.flv", "", tc.remote)
		u, err := url.Parse(w.Header().Get("Location"))
		if w.Code != http.StatusFound || err != nil {
			t.Fatalf("%s: %d %v", tc.remote, w.Code, err)
		}
		s, err := e.m.qos.cfg.Tokens.Verify(u.Query().Get("qos_token"), time.Now())
		if err != nil {
			t.Fatalf("%s: %v (%s)", tc.remote, err, u)
		}
		host := map[string]string{"a": "a.example.com", "b": "b.example.com"}[s.Vendor]
		if s.Stream != "live/demo" || host != u.Host || s.Region != tc.region || s.ISP != tc.isp ||
			s.Expires.Sub(time.Now()) < 5*time.Hour {
			t.Errorf("%s: token %+v for %s", tc.remote, s, u)
		}
		// Vendor a signs its URLs: the signature is still there.
		if s.Vendor == "a" && u.Query().Get("signature") == "" {
			t.Errorf("signature lost: %s", u)
		}
	}
}

// Forged stall beacons (no token) are counted apart and leave the plan
// alone; a valid session sending many stall beacons is one stalled user.
func TestMixerForgedBeaconsDoNotSteer(t *testing.T) {
	e := newMixerEnv(t)
	ratio := func() float64 {
		bp, _ := e.m.Allocator().Recompute(time.Now()).Bucket(Bucket{"GD", "telecom"})
		for _, c := range bp.Candidates {
			if c.Vendor == "a" {
				return c.Ratio
			}
		}
		return -1
	}
	if r := ratio(); r != 0.5 {
		t.Fatalf("a in GD starts at %v", r)
	}
	var forged []string
	for i := range 50 {
		s := fmt.Sprintf(`"session":"f%d","vendor":"a","region":"GD","isp":"telecom"`, i)
		forged = append(forged, `{`+s+`,"event":"start"}`, `{`+s+`,"event":"stall","buffer_empty_ms":5000}`)
	}
	if w := e.do(e.h, "POST", "/qos", "["+strings.Join(forged, ",")+"]", gdClient); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged: %d", w.Code)
	}
	// One real session, many stall beacons.
	tok := e.qosToken(t, gdClient, "a")
	for range 10 {
		body := `[` + strings.Repeat(`{"token":"`+tok+`","event":"stall","buffer_empty_ms":5000},`, 9) + `{"token":"` + tok + `","event":"heartbeat"}]`
		e.do(e.h, "POST", "/qos", body, gdClient)
	}
	e.waitAgg(t, "the session's beacons", func(s AggregatorStats) bool { return s.Beacons >= 30 })
	time.Sleep(50 * time.Millisecond)
	e.m.Aggregator().Tick()
	ob := e.m.Aggregator().Snapshot()[gdKey]
	if ob.Users != 1 || ob.StalledUsers != 1 {
		t.Fatalf("GD/a: %+v", ob)
	}
	if r := ratio(); r != 0.5 {
		t.Fatalf("a in GD moved to %v", r)
	}
	res := e.m.qos.Results()
	if res[BeaconNoToken] != 100 || res[BeaconAccepted] != 30 || res[BeaconRateLimited] != 70 {
		t.Fatalf("results %v", res)
	}
}

// A flood of beacons and log lines naming 100k values adds no plan
// bucket and no metric series.
func TestMixerCardinalityFlood(t *testing.T) {
	e := newMixerEnv(t)
	buckets := len(e.m.Allocator().Plan().Buckets())
	series := func() int {
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "cdnmix_stall_rate" {
				return len(mf.GetMetric())
			}
		}
		return 0
	}
	tok := e.qosToken(t, gdClient, "a")
	for i := range 100_000 {
		switch i % 3 {
		case 0:
			e.m.Aggregator().AddLog(busLog(fmt.Sprintf("v%d", i), fmt.Sprintf("r%d", i), fmt.Sprintf("i%d", i)))
		case 1:
			e.m.Aggregator().AddLog(busLog("b", fmt.Sprintf("r%d", i), fmt.Sprintf("i%d", i)))
		}
	}
	for i := range 1000 {
		body := fmt.Sprintf(`{"token":%q,"vendor":"v%d","region":"r%d","isp":"i%d","event":"heartbeat"}`, tok, i, i, i)
		e.do(e.h, "POST", "/qos", body, gdClient)
		e.do(e.h, "POST", "/qos", fmt.Sprintf(`{"session":"s%d","vendor":"v%d","region":"r%d","isp":"i%d","event":"heartbeat"}`, i, i, i, i), gdClient)
	}
	e.m.Aggregator().Tick()
	p := e.m.Allocator().Recompute(time.Now())
	if n := len(p.Buckets()); n != buckets {
		t.Fatalf("plan buckets %d -> %d", buckets, n)
	}
	// vendors × (regions+1) × (ISPs+1), regions and ISPs of the config and the geo table.
	if n, max := e.m.Aggregator().Stats().Keys, 2*4*4; n > max {
		t.Fatalf("%d aggregator keys (bound %d)", n, max)
	}
	if n := series(); n > 2*4*4 {
		t.Fatalf("%d stall rate series", n)
	}
}

func busLog(vendor, region, isp string) bus.CDNLog {
	return bus.CDNLog{Vendor: vendor, Region: region, ISP: isp, Bytes: 1000, Status: 200}
}
