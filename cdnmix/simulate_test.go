package cdnmix

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadWave(t *testing.T) Scenario {
	t.Helper()
	s, err := LoadScenario("testdata/entrance-wave.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func step(res Result, at time.Duration) int {
	i, ok := slices.BinarySearch(res.Times, at)
	if !ok {
		panic("no step at " + at.String())
	}
	return i
}

// checkCeilings: no capacity pool ever above its ceiling.
func checkCeilings(t *testing.T, res Result) {
	t.Helper()
	for ti := range res.Times {
		for pi, p := range res.Pools {
			if got := res.PoolMbps[ti][pi]; got > p.Limits.CeilingMbps {
				t.Fatalf("t=%v: %s/%s at %.0f Mbps over its ceiling %.0f", res.Times[ti], p.Vendor, p.Region, got, p.Limits.CeilingMbps)
			}
		}
	}
}

func TestSimulateEntranceWave(t *testing.T) {
	s := loadWave(t)
	var out bytes.Buffer
	res, err := Simulate(s, &out)
	if err != nil {
		t.Fatal(err)
	}
	vi := func(name string) int { return slices.Index(res.Vendors, name) }

	t.Run("no vendor over its ceiling", func(t *testing.T) { checkCeilings(t, res) })

	// Commits fill before any vendor goes over its commit: whenever a
	// vendor already over its commit got new viewers in a bucket, every
	// vendor serving that bucket had its commit (nearly) full. "Nearly" is
	// one recompute period of the wave: the allocator acts on loads up to
	// one period old, and during the wave a period adds about a tenth of a
	// commit.
	t.Run("commits fill first", func(t *testing.T) {
		const full = 0.85
		for ti := 1; ti < len(res.Times); ti++ {
			for bi, b := range res.Buckets {
				for v := range res.Vendors {
					p := res.PoolOf[v][bi]
					if res.Dispatched[ti][v][bi] == 0 || res.PoolMbps[ti-1][p] <= res.Pools[p].Limits.CommitMbps*1.02 {
						continue
					}
					for u := range res.Vendors {
						if !s.Vendors[u].Coverage.Covers(b) {
							continue
						}
						q := res.PoolOf[u][bi]
						if f := res.PoolMbps[ti-1][q] / res.Pools[q].Limits.CommitMbps; f < full {
							t.Fatalf("t=%v %v: %s over commit got viewers while %s was at %.2f of its commit",
								res.Times[ti], b, res.Vendors[v], res.Vendors[u], f)
						}
					}
				}
			}
		}
		// And the commits are used: all full once the wave is in.
		end := step(res, 40*time.Second)
		for pi, p := range res.Pools {
			if res.PoolMbps[end][pi] < p.Limits.CommitMbps {
				t.Errorf("%s/%s below its commit after the wave: %.0f < %.0f", p.Vendor, p.Region, res.PoolMbps[end][pi], p.Limits.CommitMbps)
			}
		}
	})

	t.Run("degraded vendor loses share in its province only", func(t *testing.T) {
		before, end := step(res, 119*time.Second), len(res.Times)-1
		b := vi("b")
		for bi, bk := range res.Buckets {
			was, now := res.Share(before, b, bi), res.Share(end, b, bi)
			if bk.Region == "GD" {
				if now > 0.7*was {
					t.Errorf("%v: b's share %.3f → %.3f, want a clear drop", bk, was, now)
				}
			} else if now < was-0.01 {
				t.Errorf("%v: b's share %.3f → %.3f outside the degraded province", bk, was, now)
			}
		}
	})

	t.Run("csv", func(t *testing.T) {
		rows, err := csv.NewReader(&out).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		perStep := len(res.Vendors)*len(res.Buckets) + len(res.Pools)
		if len(rows) != 1+perStep*len(res.Times) {
			t.Fatalf("%d rows, want %d", len(rows), 1+perStep*len(res.Times))
		}
		if got := strings.Join(rows[0], ","); got != "time_s,vendor,bucket,mbps,commit_mbps,ceiling_mbps" {
			t.Fatalf("header %s", got)
		}
		if got := strings.Join(rows[1], ","); got != "0,a,GD/telecom,0.0,1.2e+06,2.4e+06" {
			t.Fatalf("first row %s", got)
		}
		if !slices.ContainsFunc(rows, func(r []string) bool { return r[1] == "c" && r[2] == "pool:GD" && r[5] == "300000" }) {
			t.Fatal("no regional pool row")
		}
	})

	t.Run("svg", func(t *testing.T) {
		var svg bytes.Buffer
		if err := res.WriteSVG(&svg); err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(&svg)
		polylines := 0
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("not well-formed: %v", err)
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
				polylines++
			}
		}
		if polylines != len(res.Vendors)+1 {
			t.Fatalf("%d polylines, want one per vendor and the demand", polylines)
		}
	})
}

// More demand than all ceilings: vendors stop at their ceilings and the
// rest waits, unserved.
func TestSimulateOverload(t *testing.T) {
	s := loadWave(t)
	for i := range s.Audience {
		s.Audience[i].Viewers *= 1.4
	}
	s.Events = nil
	res, err := Simulate(s, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checkCeilings(t, res)
	if res.Unserved[len(res.Times)-1] == 0 {
		t.Fatal("overload fully served")
	}
	for pi, p := range res.Pools {
		if f := res.PoolMbps[len(res.Times)-1][pi] / p.Limits.CeilingMbps; f < 0.9 {
			t.Errorf("%s/%s only at %.2f of its ceiling while viewers wait", p.Vendor, p.Region, f)
		}
	}
}

func TestParseScenarioErrors(t *testing.T) {
	base := `
duration: 10s
bitrate_mbps: 2
vendors: [{name: a, flv_base: "http://a", commit_mbps: 1, ceiling_mbps: 2}]
buckets: [{region: GD, isp: t, share: 1}]
audience: [{at: 0s, viewers: 10}]
`
	if _, err := ParseScenario([]byte(base)); err != nil {
		t.Fatalf("base: %v", err)
	}
	tests := []struct{ name, extra, want string }{
		{"no duration", "duration: 0s\n", "duration"},
		{"bad bitrate", "bitrate_mbps: 0\n", "bitrate_mbps"},
		{"recompute below step", "step: 2s\nrecompute: 1s\n", "recompute"},
		{"bad vendor", `vendors: [{name: a}]` + "\n", `vendor "a"`},
		{"bad share", "buckets: [{region: GD, share: 0}]\n", "share"},
		{"audience order", "audience: [{at: 5s, viewers: 1}, {at: 1s, viewers: 2}]\n", "increasing"},
		{"unknown event vendor", "events: [{at: 1s, vendor: z}]\n", "unknown vendor"},
		{"too many steps", "step: 1ms\nrecompute: 1s\nduration: 1000h\n", "steps"},
		{"not yaml", "vendors: {", "yaml"},
		{"unknown field", "bitrate: 3\n", "not found"},
	}
	// YAML forbids a key twice: an extra line replaces the base line with
	// the same key.
	merge := func(extra string) string {
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(base), "\n") {
			key, _, _ := strings.Cut(line, ":")
			if !strings.Contains(extra, key+":") || strings.HasPrefix(extra, "vendors: {") {
				out = append(out, line)
			}
		}
		return strings.Join(out, "\n") + "\n" + extra
	}
	for _, tc := range tests {
		_, err := ParseScenario([]byte(merge(tc.extra)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}
