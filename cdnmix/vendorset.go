package cdnmix

import (
	"encoding/json"
	"hash/fnv"
	"maps"
	"net/url"
	"slices"
)

// compiledVendor is a validated vendor with its URL prefixes worked out.
type compiledVendor struct {
	Vendor
	idx                  int    // position in the vendor set
	flvPrefix, hlsPrefix string // "scheme://host/path", no trailing slash
}

// pool returns the capacity pool a bucket in region draws from.
func (v *compiledVendor) pool(region string) poolKey {
	if _, ok := v.Regions[region]; ok && region != "" {
		return poolKey{vendor: v.idx, region: region}
	}
	return poolKey{vendor: v.idx}
}

func (v *compiledVendor) limits(region string) Limits {
	if l, ok := v.Regions[region]; ok && region != "" {
		return l
	}
	return Limits{v.CommitMbps, v.CeilingMbps}
}

// vendorSet is one immutable vendor list. Plans point to the set they were
// built from, so a dispatch always sees vendors and ratios that agree.
type vendorSet struct {
	list     []*compiledVendor
	byName   map[string]int
	version  uint64
	fallback []byte // fallback.json body
	// regions and isps are the ones vendors name (limits, coverage): they
	// are planned, so they are aggregated too.
	regions, isps map[string]struct{}
}

func compileVendors(vs []Vendor) (*vendorSet, error) {
	if err := ValidateVendors(vs); err != nil {
		return nil, err
	}
	set := &vendorSet{byName: make(map[string]int, len(vs)), regions: map[string]struct{}{}, isps: map[string]struct{}{}}
	for i, v := range vs {
		cv := &compiledVendor{Vendor: v.clone(), idx: i}
		flv, hls := v.FLVBase, v.HLSBase
		if flv == "" {
			flv = hls
		}
		if hls == "" {
			hls = flv
		}
		o, p, _ := splitBase(flv) // validated above
		cv.flvPrefix = o + p
		o, p, _ = splitBase(hls)
		cv.hlsPrefix = o + p
		set.list = append(set.list, cv)
		set.byName[v.Name] = i
		for r := range v.Regions {
			set.regions[r] = struct{}{}
		}
		for _, r := range v.Coverage.Regions {
			set.regions[r] = struct{}{}
		}
		for _, isp := range v.Coverage.ISPs {
			set.isps[isp] = struct{}{}
		}
	}
	set.fallback, set.version = buildFallback(set)
	return set, nil
}

func (v Vendor) clone() Vendor {
	v.Regions = maps.Clone(v.Regions)
	v.Coverage.Regions = slices.Clone(v.Coverage.Regions)
	v.Coverage.ISPs = slices.Clone(v.Coverage.ISPs)
	return v
}

// Fallback is the body of GET /dispatch/fallback.json: what an SDK needs
// to pick a vendor by itself when the dispatcher is unreachable. It holds
// no keys, so its URLs are unsigned; vendors that require signatures need
// the SDK's own token.
type Fallback struct {
	// Version is a hash of the rest of the document: it changes when the
	// vendors do and is the same on every dispatcher node.
	Version uint64           `json:"version"`
	Vendors []FallbackVendor `json:"vendors"`
}

// FallbackVendor is one enabled vendor in the fallback document.
type FallbackVendor struct {
	Name     string   `json:"name"`
	FLVBase  string   `json:"flv_base"`
	HLSBase  string   `json:"hls_base"`
	Domains  []string `json:"domains"`
	Ratio    float64  `json:"ratio"` // static share, from commits (ceilings if no commit)
	Coverage Coverage `json:"coverage"`
}

func buildFallback(set *vendorSet) ([]byte, uint64) {
	var fb Fallback
	var commits, ceilings float64
	for _, v := range set.list {
		if !v.Enabled {
			continue
		}
		c, x := v.totals()
		commits += c
		ceilings += x
	}
	for _, v := range set.list {
		if !v.Enabled {
			continue
		}
		c, x := v.totals()
		ratio := 0.0
		switch {
		case commits > 0:
			ratio = c / commits
		case ceilings > 0:
			ratio = x / ceilings
		}
		fv := FallbackVendor{Name: v.Name, FLVBase: v.flvPrefix, HLSBase: v.hlsPrefix,
			Ratio: ratio, Coverage: v.Coverage}
		for _, base := range []string{v.flvPrefix, v.hlsPrefix} {
			if u, err := url.Parse(base); err == nil && !slices.Contains(fv.Domains, u.Hostname()) {
				fv.Domains = append(fv.Domains, u.Hostname())
			}
		}
		fb.Vendors = append(fb.Vendors, fv)
	}
	if fb.Vendors == nil {
		fb.Vendors = []FallbackVendor{}
	}
	body, _ := json.Marshal(fb.Vendors) // plain data: cannot fail
	h := fnv.New64a()
	h.Write(body)
	// Keep it within JavaScript's exact integer range.
	fb.Version = h.Sum64() & (1<<53 - 1)
	out, _ := json.Marshal(fb)
	return out, fb.Version
}

// totals returns the vendor's commit and ceiling over all its pools.
func (v *compiledVendor) totals() (commit, ceiling float64) {
	commit, ceiling = v.CommitMbps, v.CeilingMbps
	for _, l := range v.Regions {
		commit += l.CommitMbps
		ceiling += l.CeilingMbps
	}
	return commit, ceiling
}
