package cdnmix

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
)

// Location is where an address is: ISO country code, region (province) and
// ISP, as named in the IP database. Region and ISP names must match the ones
// used in vendor coverage and limits.
type Location struct {
	Country, Region, ISP string
}

// Locator maps a client address to its location.
type Locator interface {
	Locate(ip netip.Addr) (Location, bool)
}

// CIDRLocator is a longest-prefix-match table loaded from CSV lines
// "cidr,country,region,isp" (IPv4 and IPv6; blank lines and lines starting
// with '#' are skipped; fields are trimmed). It is immutable after loading.
type CIDRLocator struct {
	v4, v6 prefixTable
}

type prefixTable struct {
	bits []int // prefix lengths present, longest first
	m    map[netip.Prefix]Location
}

func (t *prefixTable) lookup(a netip.Addr) (Location, bool) {
	for _, b := range t.bits {
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if l, ok := t.m[p]; ok {
			return l, true
		}
	}
	return Location{}, false
}

// Limits on a CIDR CSV, so a bad file fails fast.
const (
	maxCSVLine    = 1024
	maxCSVEntries = 4 << 20
)

// LoadCIDRCSV reads a CIDR CSV file.
func LoadCIDRCSV(path string) (*CIDRLocator, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geo csv: %w", err)
	}
	defer f.Close()
	l, err := ParseCIDRCSV(f)
	if err != nil {
		return nil, fmt.Errorf("geo csv %s: %w", path, err)
	}
	return l, nil
}

// ParseCIDRCSV reads CIDR CSV lines from r. A duplicate prefix is an error.
func ParseCIDRCSV(r io.Reader) (*CIDRLocator, error) {
	l := &CIDRLocator{
		v4: prefixTable{m: make(map[netip.Prefix]Location)},
		v6: prefixTable{m: make(map[netip.Prefix]Location)},
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxCSVLine)
	// Names repeat across lines; share one string per distinct name.
	intern := make(map[string]string)
	in := func(b []byte) string {
		b = bytes.TrimSpace(b)
		if s, ok := intern[string(b)]; ok {
			return s
		}
		s := string(b)
		intern[s] = s
		return s
	}
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || b[0] == '#' {
			continue
		}
		f := bytes.Split(b, []byte{','})
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: want 4 fields cidr,country,region,isp, got %d", line, len(f))
		}
		p, err := netip.ParsePrefix(string(bytes.TrimSpace(f[0])))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("line %d: zoned address not allowed", line)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("line %d: %s: write IPv4-mapped prefixes as IPv4", line, p)
		}
		p = p.Masked()
		t := &l.v6
		if p.Addr().Is4() {
			t = &l.v4
		}
		if _, dup := t.m[p]; dup {
			return nil, fmt.Errorf("line %d: prefix %s listed twice", line, p)
		}
		if len(l.v4.m)+len(l.v6.m) >= maxCSVEntries {
			return nil, fmt.Errorf("line %d: more than %d prefixes", line, maxCSVEntries)
		}
		t.m[p] = Location{Country: in(f[1]), Region: in(f[2]), ISP: in(f[3])}
		if !slices.Contains(t.bits, p.Bits()) {
			t.bits = append(t.bits, p.Bits())
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxCSVLine)
		}
		return nil, err
	}
	for _, t := range []*prefixTable{&l.v4, &l.v6} {
		slices.Sort(t.bits)
		slices.Reverse(t.bits)
	}
	return l, nil
}

// Locate implements Locator. IPv4-mapped IPv6 addresses are looked up as
// IPv4.
func (l *CIDRLocator) Locate(ip netip.Addr) (Location, bool) {
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return l.v4.lookup(ip)
	}
	if ip.Is6() {
		return l.v6.lookup(ip)
	}
	return Location{}, false
}

// Len returns the number of prefixes.
func (l *CIDRLocator) Len() int { return len(l.v4.m) + len(l.v6.m) }

// String describes the table for logs.
func (l *CIDRLocator) String() string {
	return fmt.Sprintf("cidr locator: %d IPv4 and %d IPv6 prefixes", len(l.v4.m), len(l.v6.m))
}

// Names returns the distinct regions and ISPs of the table, sorted: the
// values it can locate a client in, which the aggregator keeps as its own
// buckets (see [Mixer]).
func (l *CIDRLocator) Names() (regions, isps []string) {
	rs, is := map[string]struct{}{}, map[string]struct{}{}
	for _, t := range []*prefixTable{&l.v4, &l.v6} {
		for _, loc := range t.m {
			if loc.Region != "" {
				rs[loc.Region] = struct{}{}
			}
			if loc.ISP != "" {
				is[loc.ISP] = struct{}{}
			}
		}
	}
	return slices.Sorted(maps.Keys(rs)), slices.Sorted(maps.Keys(is))
}
