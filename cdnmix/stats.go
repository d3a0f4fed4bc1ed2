package cdnmix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"time"
)

// VendorStats is the answer of a vendor's stats URL, either a total or a
// breakdown by region and ISP (an empty field is any):
//
//	{"mbps": 1234.5}
//	{"buckets": [{"region": "GD", "isp": "telecom", "mbps": 800}, {"mbps": 434.5}]}
type VendorStats struct {
	Mbps    *float64      `json:"mbps,omitempty"`
	Buckets []BucketStats `json:"buckets,omitempty"`
}

// BucketStats is one bucket of a VendorStats breakdown.
type BucketStats struct {
	Region string  `json:"region"`
	ISP    string  `json:"isp"`
	Mbps   float64 `json:"mbps"`
}

const (
	maxStatsBody    = 1 << 20
	maxStatsBuckets = 10_000
	maxStatsMbps    = 1e12
)

// ParseVendorStats decodes and checks a stats answer into Mbps per bucket.
func ParseVendorStats(b []byte) (map[Bucket]float64, error) {
	var vs VendorStats
	if err := json.Unmarshal(b, &vs); err != nil {
		return nil, fmt.Errorf("vendor stats: %w: %w", err, ErrMalformed)
	}
	if (vs.Mbps == nil) == (len(vs.Buckets) == 0) {
		return nil, fmt.Errorf("vendor stats: want mbps or buckets: %w", ErrMalformed)
	}
	ok := func(x float64) bool { return x >= 0 && x <= maxStatsMbps && !math.IsNaN(x) }
	out := make(map[Bucket]float64, max(1, len(vs.Buckets)))
	if vs.Mbps != nil {
		if !ok(*vs.Mbps) {
			return nil, fmt.Errorf("vendor stats: mbps %g: %w", *vs.Mbps, ErrMalformed)
		}
		out[Bucket{}] = *vs.Mbps
		return out, nil
	}
	if len(vs.Buckets) > maxStatsBuckets {
		return nil, fmt.Errorf("vendor stats: %d buckets: %w", len(vs.Buckets), ErrMalformed)
	}
	for _, bs := range vs.Buckets {
		if !ok(bs.Mbps) || len(bs.Region) > 64 || len(bs.ISP) > 64 {
			return nil, fmt.Errorf("vendor stats: bucket %s: %w", Bucket{bs.Region, bs.ISP}, ErrMalformed)
		}
		out[Bucket{bs.Region, bs.ISP}] += bs.Mbps
	}
	return out, nil
}

func splitStatsURL(s string) (*url.URL, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, "", fmt.Errorf("%q: want an http or https URL", s)
	}
	return u, u.Host, nil
}

// pollStats polls every vendor's stats URL each interval until ctx ends.
func (m *Mixer) pollStats(ctx context.Context, interval time.Duration) {
	client := &http.Client{Timeout: min(interval, 5*time.Second)}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, v := range m.alloc.Vendors() {
			if v.StatsURL == "" || !v.Enabled {
				continue
			}
			mbps, err := fetchStats(ctx, client, v.StatsURL)
			if err != nil {
				if ctx.Err() == nil {
					m.log.Warn("vendor stats", "vendor", v.Name, "err", err)
				}
				continue
			}
			m.agg.SetPolled(v.Name, mbps)
			if m.fleet != nil {
				m.fleet.SetPolled(v.Name, mbps)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func fetchStats(ctx context.Context, c *http.Client, u string) (map[Bucket]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxStatsBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(b) > maxStatsBody {
		return nil, errors.New("vendor stats: answer too large")
	}
	return ParseVendorStats(b)
}
