package cdnmix

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/oschwald/maxminddb-golang"
)

// MMDBLocator looks addresses up in a MaxMind DB file. Records are read
// with the flat custom fields
//
//	{"country": "CN", "region": "GD", "isp": "telecom"}
//
// and, for records without them, the GeoIP2 City layout (country.iso_code,
// subdivisions[0].iso_code) plus a top-level "isp" as in GeoIP2 ISP.
type MMDBLocator struct {
	r *maxminddb.Reader
}

type mmdbFlat struct {
	Country string `maxminddb:"country"`
	Region  string `maxminddb:"region"`
	ISP     string `maxminddb:"isp"`
}

type mmdbGeoIP2 struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Subdivisions []struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"subdivisions"`
	ISP string `maxminddb:"isp"`
}

// OpenMMDB memory-maps a MaxMind DB file. Close releases it.
func OpenMMDB(path string) (*MMDBLocator, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mmdb %s: %w", path, err)
	}
	return &MMDBLocator{r: r}, nil
}

// NewMMDB reads a MaxMind DB held in memory (the locator keeps b).
func NewMMDB(b []byte) (*MMDBLocator, error) {
	r, err := maxminddb.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("mmdb: %w", err)
	}
	return &MMDBLocator{r: r}, nil
}

// Close releases the database.
func (l *MMDBLocator) Close() error { return l.r.Close() }

// Locate implements Locator.
func (l *MMDBLocator) Locate(ip netip.Addr) (Location, bool) {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return Location{}, false
	}
	off, err := l.r.LookupOffset(net.IP(ip.AsSlice()))
	if err != nil || off == maxminddb.NotFound {
		return Location{}, false
	}
	var flat mmdbFlat
	err = l.r.Decode(off, &flat)
	if err == nil && (flat.Country != "" || flat.Region != "" || flat.ISP != "") {
		return Location{Country: flat.Country, Region: flat.Region, ISP: flat.ISP}, true
	}
	var te maxminddb.UnmarshalTypeError
	if err != nil && !errors.As(err, &te) {
		return Location{}, false
	}
	var g mmdbGeoIP2
	if err := l.r.Decode(off, &g); err != nil {
		return Location{}, false
	}
	loc := Location{Country: g.Country.ISOCode, ISP: g.ISP}
	if len(g.Subdivisions) > 0 {
		loc.Region = g.Subdivisions[0].ISOCode
	}
	return loc, loc != Location{}
}
