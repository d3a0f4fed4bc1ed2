package ingest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/livefuse/livefuse/netguard"
)

// fakeGuard denies one address for one stream.
type fakeGuard struct {
	stream string
	deny   netip.Addr
}

func (g fakeGuard) check(app, name string, ip netip.Addr) error {
	if app+"/"+name == g.stream && ip == g.deny {
		return fmt.Errorf("%w: %s is on the stream's deny list", ErrForbidden, ip)
	}
	return nil
}
func (g fakeGuard) CheckPublish(app, name string, ip netip.Addr) error { return g.check(app, name, ip) }
func (g fakeGuard) CheckPlay(app, name string, ip netip.Addr) error    { return g.check(app, name, ip) }

func TestCheckAddress(t *testing.T) {
	cfg := netguard.AccessConfig{PublishAllow: []string{"127.0.0.0/8"}, PlayDeny: []string{"127.0.0.3"}}
	guard := fakeGuard{stream: "live/cam", deny: netip.MustParseAddr("127.0.0.2")}
	addr := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s+":5000"); return a }
	tests := []struct {
		name    string
		cfg     netguard.AccessConfig
		guard   AddressGuard
		publish bool
		stream  string
		remote  string
		refused bool
	}{
		{"publish allowed", cfg, guard, true, "cam", "127.0.0.1", false},
		{"publish not on listener allow", cfg, guard, true, "cam", "192.0.2.1", true},
		{"publish denied by stream", cfg, guard, true, "cam", "127.0.0.2", true},
		{"other stream", cfg, guard, true, "other", "127.0.0.2", false},
		{"play denied by listener", cfg, guard, false, "other", "127.0.0.3", true},
		{"play from outside the publish allow list", cfg, guard, false, "other", "192.0.2.1", false},
		{"no guard", cfg, nil, false, "cam", "127.0.0.2", false},
		{"bad listener list refuses all", netguard.AccessConfig{PlayDeny: []string{"x"}}, nil, false, "cam", "127.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l listenerAccess
			err := checkAddress(&l, "listener rtmp", tt.cfg, tt.guard, tt.publish, "live", tt.stream, addr(tt.remote))
			if (err != nil) != tt.refused {
				t.Fatalf("err %v, refused want %v", err, tt.refused)
			}
			if err != nil && !errors.Is(err, ErrForbidden) {
				t.Fatalf("err %v does not wrap ErrForbidden", err)
			}
		})
	}
}
