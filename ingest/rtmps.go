package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/livefuse/livefuse/netguard"
	"github.com/yutopp/go-rtmp"
)

// rtmpTLS is one RTMPS listener of an RTMPServer.
type rtmpTLS struct {
	ln  net.Listener
	srv *rtmp.Server
}

// StartTLS adds an RTMPS listener on addr: RTMP inside TLS (rtmps://),
// served by the same server as the plain listener (publish and play, the
// same authorization, IP lists and limits). The TLS handshake happens
// within the RTMP handshake timeout. conf supplies the certificate (a
// reloading netguard.CertSource in the node).
func (s *RTMPServer) StartTLS(addr string, conf *tls.Config) (net.Addr, error) {
	if s.deps.Sink == nil || s.deps.Auth == nil {
		return nil, errors.New("rtmps server: deps.Sink and deps.Auth are required")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rtmps server listen %s: %w", addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ln.Close()
		return nil, errors.New("rtmps server: closed")
	}
	srv := rtmp.NewServer(&rtmp.ServerConfig{OnConnect: s.onConnect})
	s.tls = append(s.tls, rtmpTLS{ln: ln, srv: srv})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(tls.NewListener(&rtmpListener{Listener: s.guardTLS(ln), done: s.done, log: s.log}, conf))
	}()
	s.log.Info("rtmps server listening", "addr", ln.Addr().String())
	return ln.Addr(), nil
}

// guardTLS gives the RTMPS listener the plain listener's connection caps:
// both count against one limiter, so TLS adds no connections to the cap.
func (s *RTMPServer) guardTLS(ln net.Listener) net.Listener {
	return netguard.NewListener(ln, s.limiter, s.log, "rtmps")
}

// closeTLS closes the RTMPS listeners; s.mu is held.
func (s *RTMPServer) closeTLS() {
	for _, t := range s.tls {
		_ = t.srv.Close()
		_ = t.ln.Close()
	}
}
