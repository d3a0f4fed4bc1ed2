package ingest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/livefuse/livefuse/netguard"
)

// ErrForbidden is returned for a client whose address may not publish or
// play (an IP list refused it); ingest answers RTMP with an error status
// and closes, RTSP with 403.
var ErrForbidden = errors.New("address not allowed")

// AddressGuard decides by a client's address whether it may publish or
// play app/name (the stream's own IP lists). The node wiring implements it
// over the registry. Errors wrap ErrForbidden and say why.
type AddressGuard interface {
	CheckPublish(app, name string, remote netip.Addr) error
	CheckPlay(app, name string, remote netip.Addr) error
}

// listenerAccess holds a listener's own IP lists (RTMPConfig.Access,
// RTSPConfig.Access), parsed on first use. The node validates them at
// start-up; a list that still fails to parse refuses everyone (fail
// closed) with the parse error as the reason.
type listenerAccess struct {
	once   sync.Once
	access *netguard.Access
	err    error
}

func (l *listenerAccess) get(name string, c netguard.AccessConfig) (*netguard.Access, error) {
	l.once.Do(func() { l.access, l.err = netguard.ParseAccess(name, c) })
	return l.access, l.err
}

// checkAddress applies the listener's lists, then the stream's (deps.Guard),
// for a publisher (publish true) or a player from remote.
func checkAddress(l *listenerAccess, name string, c netguard.AccessConfig, g AddressGuard, publish bool, app, stream string, remote net.Addr) error {
	ip := netguard.RemoteAddr(remote)
	a, err := l.get(name, c)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	if publish {
		err = a.CheckPublish(ip)
	} else {
		err = a.CheckPlay(ip)
	}
	if err == nil && g != nil {
		if publish {
			err = g.CheckPublish(app, stream, ip)
		} else {
			err = g.CheckPlay(app, stream, ip)
		}
	}
	if err != nil && !errors.Is(err, ErrForbidden) {
		err = fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return err
}

// checkAddress applies the RTMP listener's and the stream's IP lists.
func (s *RTMPServer) checkAddress(publish bool, app, name string, remote net.Addr) error {
	return checkAddress(&s.access, "listener rtmp", s.cfg.Access, s.deps.Guard, publish, app, name, remote)
}
