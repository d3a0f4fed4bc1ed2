package cdnmix

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// geoCases are lookups every test database answers the same way.
var geoCases = []struct {
	ip   string
	want Location
	ok   bool
}{
	{"198.51.100.1", Location{"CN", "GD", "telecom"}, true},
	{"198.51.100.129", Location{"CN", "GD", "unicom"}, true}, // /25 beats /24
	{"198.51.100.200", Location{"CN", "BJ", "mobile"}, true}, // /32 beats /25
	{"::ffff:198.51.100.1", Location{"CN", "GD", "telecom"}, true},
	{"203.0.113.77", Location{"CN", "SH", "telecom"}, true},
	{"2001:db8::1", Location{"CN", "GD", "telecom"}, true},
	{"2001:db8:1::5", Location{"CN", "SH", "unicom"}, true}, // /48 beats /32
	{"8.8.8.8", Location{}, false},
	{"2001:db9::1", Location{}, false},
}

func TestCIDRLocator(t *testing.T) {
	l, err := LoadCIDRCSV("testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range geoCases {
		got, ok := l.Locate(netip.MustParseAddr(tc.ip))
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: got %v %v, want %v %v", tc.ip, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseCIDRCSVErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"fields", "1.2.3.0/24,CN,GD\n", "line 1: want 4 fields"},
		{"prefix", "# c\n1.2.3/24,CN,GD,t\n", "line 2:"},
		{"dup", "1.2.3.0/24,CN,GD,t\n1.2.3.9/24,CN,GD,t\n", "listed twice"},
		{"mapped", "::ffff:1.2.3.0/120,CN,GD,t\n", "IPv4-mapped"},
		{"long line", strings.Repeat("x", 2000) + "\n", "longer than"},
	}
	for _, tc := range tests {
		_, err := ParseCIDRCSV(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseCIDRCSV(f *testing.F) {
	seed, err := os.ReadFile("testdata/geo.csv")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("1.2.3.4/32,,,\n::/0,a,b,c\n"))
	f.Add([]byte("0.0.0.0/0,CN,GD,t\r\n\n# x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseCIDRCSV(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, ip := range []string{"1.2.3.4", "::1", "198.51.100.1"} {
			l.Locate(netip.MustParseAddr(ip))
		}
	})
}

// writeTestMMDB builds a MaxMind DB from testdata/geo.csv (flat custom
// fields) plus one GeoIP2-City-shaped record, so no binary is committed.
func writeTestMMDB(t testing.TB) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "livefuse-test",
		IncludeReservedNetworks: true,
		RecordSize:              24,
	})
	if err != nil {
		t.Fatal(err)
	}
	csv, err := os.ReadFile("testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	// Insert shorter prefixes first: later inserts overwrite the subnets
	// they cover, which gives longest-prefix-match semantics.
	type row struct {
		n   *net.IPNet
		loc []string
	}
	var rows []row
	for _, line := range strings.Split(string(csv), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ",")
		_, n, err := net.ParseCIDR(f[0])
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row{n, f[1:]})
	}
	for bits := 0; bits <= 128; bits++ {
		for _, r := range rows {
			if ones, _ := r.n.Mask.Size(); ones != bits {
				continue
			}
			rec := mmdbtype.Map{
				"country": mmdbtype.String(r.loc[0]),
				"region":  mmdbtype.String(r.loc[1]),
				"isp":     mmdbtype.String(r.loc[2]),
			}
			if err := tree.Insert(r.n, rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, n, _ := net.ParseCIDR("100.64.0.0/10")
	geoip2 := mmdbtype.Map{
		"country":      mmdbtype.Map{"iso_code": mmdbtype.String("CN")},
		"subdivisions": mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String("SC")}},
		"isp":          mmdbtype.String("mobile"),
	}
	if err := tree.Insert(n, geoip2); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "geo.mmdb")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(out); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMMDBLocator(t *testing.T) {
	l, err := OpenMMDB(writeTestMMDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := append(geoCases[:len(geoCases):len(geoCases)], struct {
		ip   string
		want Location
		ok   bool
	}{"100.64.1.2", Location{"CN", "SC", "mobile"}, true})
	for _, tc := range cases {
		got, ok := l.Locate(netip.MustParseAddr(tc.ip))
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: got %v %v, want %v %v", tc.ip, got, ok, tc.want, tc.ok)
		}
	}
	if _, err := NewMMDB([]byte("not a database")); err == nil {
		t.Error("garbage accepted")
	}
}
