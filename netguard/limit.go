// Package netguard holds what every listener of a node puts in front of its
// protocol, before a byte is parsed: caps on connections in total and per
// remote address. The protocol servers (ingest's RTMP and RTSP, the media
// and API HTTP listeners) wrap their net.Listener with it, so one rule and
// one refusal log serve them all.
package netguard

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits caps the connections one listener holds at once. Zero means no cap.
type Limits struct {
	// MaxConns is the cap on connections in total.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerIP is the cap on connections from one remote address.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
}

// RefusedError says why a connection was refused.
type RefusedError struct {
	Remote string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("connection from %s refused: %s", e.Remote, e.Reason)
}

// Limiter counts open connections in total and per remote address. It is
// safe for concurrent use; the zero value is not usable, use NewLimiter.
type Limiter struct {
	limits  Limits
	refused atomic.Uint64

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

// NewLimiter returns a limiter for limits.
func NewLimiter(limits Limits) *Limiter {
	return &Limiter{limits: limits, perIP: make(map[netip.Addr]int)}
}

// RemoteAddr returns the IP of addr (unmapped from IPv4-in-IPv6), or the
// zero Addr when addr carries none.
func RemoteAddr(addr net.Addr) netip.Addr {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	if addr == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Acquire takes a slot for a connection from remote. On success the caller
// must call release exactly once when the connection ends (further calls do
// nothing); on refusal err is a *RefusedError.
func (l *Limiter) Acquire(remote net.Addr) (release func(), err error) {
	ip := RemoteAddr(remote)
	l.mu.Lock()
	switch {
	case l.limits.MaxConns > 0 && l.total >= l.limits.MaxConns:
		l.mu.Unlock()
		l.refused.Add(1)
		return nil, &RefusedError{Remote: ip.String(), Reason: fmt.Sprintf("listener at its cap of %d connections", l.limits.MaxConns)}
	case l.limits.MaxConnsPerIP > 0 && l.perIP[ip] >= l.limits.MaxConnsPerIP:
		l.mu.Unlock()
		l.refused.Add(1)
		return nil, &RefusedError{Remote: ip.String(), Reason: fmt.Sprintf("address at its cap of %d connections", l.limits.MaxConnsPerIP)}
	}
	l.total++
	l.perIP[ip]++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.total--
			if n := l.perIP[ip] - 1; n > 0 {
				l.perIP[ip] = n
			} else {
				delete(l.perIP, ip)
			}
			l.mu.Unlock()
		})
	}, nil
}

// Open returns the number of connections holding a slot.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Refused returns how many connections were refused since the start.
func (l *Limiter) Refused() uint64 { return l.refused.Load() }

// refusalLogEvery is how often one listener logs refusals: an attacker
// opening thousands of connections must not fill the log.
const refusalLogEvery = 5 * time.Second

// Listener is a net.Listener whose Accept closes, logs and counts the
// connections its Limiter refuses, and returns the others wrapped so that
// their Close gives the slot back.
type Listener struct {
	net.Listener
	lim  *Limiter
	log  *slog.Logger
	name string

	logMu      sync.Mutex
	lastLog    time.Time
	suppressed int
}

// NewListener wraps ln. name says which listener this is in the log
// ("rtmp", "rtsp", "http", "api").
func NewListener(ln net.Listener, lim *Limiter, log *slog.Logger, name string) *Listener {
	if log == nil {
		log = slog.Default()
	}
	return &Listener{Listener: ln, lim: lim, log: log, name: name}
}

// Limiter returns the listener's limiter.
func (l *Listener) Limiter() *Limiter { return l.lim }

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := l.lim.Acquire(c.RemoteAddr())
		if err != nil {
			_ = c.Close()
			l.logRefusal(err)
			continue
		}
		return &conn{Conn: c, release: release}, nil
	}
}

func (l *Listener) logRefusal(err error) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	now := time.Now()
	if now.Sub(l.lastLog) < refusalLogEvery {
		l.suppressed++
		return
	}
	l.log.Warn("connection refused", "listener", l.name, "reason", err.Error(), "suppressed", l.suppressed, "refused_total", l.lim.Refused())
	l.lastLog, l.suppressed = now, 0
}

// conn gives its slot back on Close.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Unwrap returns the accepted connection (for TLS or TCP-specific calls).
func (c *conn) Unwrap() net.Conn { return c.Conn }
