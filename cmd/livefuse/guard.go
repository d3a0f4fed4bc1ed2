package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/netguard"
	"github.com/livefuse/livefuse/origin"
)

// RTMPSConfig is the RTMPS ingest listener: the RTMP server inside TLS.
// It is on when a certificate is configured.
type RTMPSConfig struct {
	// Addr is the listen address.
	Addr string `yaml:"addr"`
	// TLS names the certificate and key (reloaded when they change).
	TLS netguard.TLSConfig `yaml:",inline"`
}

// streamGuard applies the streams' IP lists (lms stream fields
// publish_allow, publish_deny, play_allow, play_deny). It is the
// ingest.AddressGuard of the RTMP and RTSP servers and, with the media
// listener's own lists, the origin's CheckAddress. Parsed lists are cached
// per stream and parsed again when the stream's lists change.
type streamGuard struct {
	reg *lms.Registry

	mu    sync.Mutex
	cache map[string]guardEntry
}

type guardEntry struct {
	lists  lms.IPLists
	access *netguard.Access
	err    error
}

var _ ingest.AddressGuard = (*streamGuard)(nil)

func newStreamGuard(reg *lms.Registry) *streamGuard {
	return &streamGuard{reg: reg, cache: map[string]guardEntry{}}
}

// access returns the parsed lists of app/name (a rendition uses its
// stream's); nil when it has none or is not registered.
func (g *streamGuard) access(app, name string) (*netguard.Access, error) {
	s, ok := g.reg.Get(app, name)
	if !ok {
		s, ok = renditionParent(g.reg, app, name)
	}
	if !ok || s.IPLists.Empty() {
		return nil, nil
	}
	key := s.Path()
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.cache[key]; ok && sameLists(e.lists, s.IPLists) {
		return e.access, e.err
	}
	a, err := netguard.ParseAccess("stream "+key, s.IPLists.Access())
	if len(g.cache) > 4096 {
		clear(g.cache) // streams come and go; the cache only saves parsing
	}
	g.cache[key] = guardEntry{lists: s.IPLists, access: a, err: err}
	return a, err
}

func sameLists(a, b lms.IPLists) bool {
	return slices.Equal(a.PublishAllow, b.PublishAllow) && slices.Equal(a.PublishDeny, b.PublishDeny) &&
		slices.Equal(a.PlayAllow, b.PlayAllow) && slices.Equal(a.PlayDeny, b.PlayDeny)
}

// CheckPublish implements ingest.AddressGuard.
func (g *streamGuard) CheckPublish(app, name string, remote netip.Addr) error {
	a, err := g.access(app, name)
	if err != nil {
		return fmt.Errorf("%w: %w", ingest.ErrForbidden, err) // the registry validates lists: fail closed
	}
	if err := a.CheckPublish(remote); err != nil {
		return fmt.Errorf("%w: %w", ingest.ErrForbidden, err)
	}
	return nil
}

// CheckPlay implements ingest.AddressGuard.
func (g *streamGuard) CheckPlay(app, name string, remote netip.Addr) error {
	a, err := g.access(app, name)
	if err != nil {
		return fmt.Errorf("%w: %w", ingest.ErrForbidden, err)
	}
	if err := a.CheckPlay(remote); err != nil {
		return fmt.Errorf("%w: %w", ingest.ErrForbidden, err)
	}
	return nil
}

// playCheck combines the media listener's play lists with the stream's,
// for the origin's play router, the encrypted outputs and key delivery.
func playCheck(listener *netguard.Access, g *streamGuard) func(app, name string, remote netip.Addr) error {
	return func(app, name string, remote netip.Addr) error {
		if err := listener.CheckPlay(remote); err != nil {
			return err
		}
		return g.CheckPlay(app, name, remote)
	}
}

// validateAccess parses every listener's lists at start-up, so a typo is a
// config error and not a refusal of everyone.
func (c *Config) validateAccess() error {
	for _, l := range []struct {
		name string
		cfg  netguard.AccessConfig
	}{{"rtmp", c.RTMP.Access}, {"rtsp", c.RTSP.Access}, {"http", c.HTTP.Access}} {
		if _, err := netguard.ParseAccess(l.name+".access", l.cfg); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	if len(c.HTTP.Access.PublishAllow)+len(c.HTTP.Access.PublishDeny) > 0 {
		return fmt.Errorf("config: http.access: publish lists do not apply to the media listener (use rtmp.access, rtsp.access)")
	}
	if len(c.RTSP.Access.PlayAllow)+len(c.RTSP.Access.PlayDeny) > 0 {
		return fmt.Errorf("config: rtsp.access: play lists do not apply to the RTSP listener (it takes publishers only)")
	}
	if err := c.HTTP.HTTPConfig.Validate(); err != nil {
		return fmt.Errorf("config: http: %w", err)
	}
	if err := c.LMS.API.Validate(); err != nil {
		return fmt.Errorf("config: lms.api: %w", err)
	}
	if err := c.RTMPS.TLS.Validate(); err != nil {
		return fmt.Errorf("config: rtmps: %w", err)
	}
	for i, s := range c.Streams {
		if err := s.IPLists.Validate(); err != nil {
			return fmt.Errorf("config: streams[%d]: %w", i, err)
		}
	}
	return nil
}

// dropDeniedPublishers kicks app/name's publishers when a change of the
// stream's lists denies the address of one of its encoders (RTMP, RTSP;
// relays and pulls are not held to the lists). Kick drops every publisher
// of the stream: the allowed ones reconnect, the denied one is refused.
func dropDeniedPublishers(hub *origin.Hub, g *streamGuard, app, name string, log *slog.Logger) {
	st, ok := hub.Status(app, name)
	if !ok {
		return
	}
	for _, f := range st.Switch.Feeds {
		if f.Protocol != "rtmp" && f.Protocol != "rtsp" {
			continue
		}
		ap, err := netip.ParseAddrPort(f.Remote)
		if err != nil {
			continue
		}
		if err := g.CheckPublish(app, name, ap.Addr().Unmap()); err != nil {
			if hub.Kick(app, name) == nil {
				log.Info("publisher dropped: address now denied", "stream", app+"/"+name, "feed", f.Feed, "remote", f.Remote, "reason", err.Error())
			}
			return
		}
	}
}
