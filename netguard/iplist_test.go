package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParseIPList(t *testing.T) {
	many := make([]string, MaxListEntries+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
	}
	tests := []struct {
		name    string
		entries []string
		wantErr string
		n       int
	}{
		{"empty", nil, "", 0},
		{"address and prefixes", []string{"192.0.2.7", "10.0.0.0/8", "2001:db8::/32", " 198.51.100.0/24 "}, "", 4},
		{"mapped prefix", []string{"::ffff:10.0.0.0/104"}, "", 1},
		{"mapped prefix too short", []string{"::ffff:0:0/90"}, "96 bits", 0},
		{"garbage", []string{"10.0.0.0/8", "not-an-ip"}, "entry 1", 0},
		{"bad bits", []string{"10.0.0.0/33"}, "entry 0", 0},
		{"empty entry", []string{""}, "empty", 0},
		{"zone", []string{"fe80::1%eth0"}, "not an address", 0},
		{"long entry", []string{strings.Repeat("1", 100)}, "at most", 0},
		{"too many", many, "at most 256", 0},
		{"at the bound", many[:MaxListEntries], "", MaxListEntries},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseIPList(tt.entries)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Len() != tt.n {
				t.Fatalf("len %d, want %d", l.Len(), tt.n)
			}
		})
	}
}

func TestRulesCheck(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny []string
		ip          string
		denied      string // "" = allowed; else a part of the reason
	}{
		{"no lists", nil, nil, "203.0.113.9", ""},
		{"denied address", nil, []string{"127.0.0.2"}, "127.0.0.2", "deny list (127.0.0.2/32)"},
		{"other address passes deny", nil, []string{"127.0.0.2"}, "127.0.0.1", ""},
		{"denied prefix", nil, []string{"10.0.0.0/8"}, "10.9.8.7", "deny list (10.0.0.0/8)"},
		{"allowed", []string{"10.0.0.0/8"}, nil, "10.1.2.3", ""},
		{"not on allow", []string{"10.0.0.0/8"}, nil, "192.0.2.1", "not on the test allow list"},
		{"deny wins over allow", []string{"10.0.0.0/8"}, []string{"10.0.0.5"}, "10.0.0.5", "deny list"},
		{"mapped client matches v4 list", nil, []string{"127.0.0.0/8"}, "::ffff:127.0.0.2", "deny list"},
		{"v6", []string{"2001:db8::/32"}, nil, "2001:db8::1", ""},
		{"v6 not on allow", []string{"2001:db8::/32"}, nil, "2001:db9::1", "not on"},
		{"v4 list does not match v6", nil, []string{"0.0.0.0/0"}, "::1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRules(tt.allow, tt.deny)
			if err != nil {
				t.Fatal(err)
			}
			err = r.Check(netip.MustParseAddr(tt.ip), "test")
			if tt.denied == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tt.denied) {
				t.Fatalf("err %v, want a denial naming %q", err, tt.denied)
			}
		})
	}
}

func TestAccess(t *testing.T) {
	a, err := ParseAccess("listener rtmp", AccessConfig{PublishAllow: []string{"127.0.0.1"}, PlayDeny: []string{"127.0.0.2"}})
	if err != nil {
		t.Fatal(err)
	}
	one, two := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for _, c := range []struct {
		name   string
		err    error
		denied bool
	}{
		{"publish from allowed", a.CheckPublish(one), false},
		{"publish from other", a.CheckPublish(two), true},
		{"play from other", a.CheckPlay(one), false},
		{"play from denied", a.CheckPlay(two), true},
	} {
		if got := c.err != nil; got != c.denied {
			t.Errorf("%s: denied=%v (%v), want %v", c.name, got, c.err, c.denied)
		}
	}
	if err := a.CheckPlay(two); !strings.Contains(err.Error(), "listener rtmp play deny list") {
		t.Errorf("reason %q does not name the list", err)
	}
	var none *Access
	if none.CheckPlay(two) != nil || none.CheckPublish(two) != nil {
		t.Error("a nil Access refused")
	}
	if _, err := ParseAccess("x", AccessConfig{PlayDeny: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "x play deny") {
		t.Errorf("bad list: err %v", err)
	}
}

func FuzzParseIPList(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "::ffff:1.2.3.4/120", "fe80::1%eth0", "1.2.3.4", "", "/", "::/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseIPList(strings.Split(s, ","))
		if err != nil {
			return
		}
		for _, p := range l.prefixes {
			if !p.IsValid() || p.Addr().Is4In6() {
				t.Fatalf("%q gave prefix %v", s, p)
			}
		}
	})
}
