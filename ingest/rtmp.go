package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/yutopp/go-rtmp"

	"github.com/livefuse/livefuse/netguard"
)

// RTMPConfig configures the RTMP server.
type RTMPConfig struct {
	// Addr is the listen address.
	Addr string `yaml:"addr"`
	// MaxMessageSize is the largest RTMP message a peer may send, in bytes;
	// a chunk header announcing a longer one closes the connection.
	MaxMessageSize int `yaml:"max_message_size"`
	// ChunkSize is the chunk size the server sends with (it tells every
	// peer with a Set Chunk Size message). Kept within [128, 65536].
	ChunkSize int `yaml:"chunk_size"`
	// RelaySecret lets other units relay feeds here (?relay=SECRET in
	// place of the publish token). Empty: relays are refused. Set by the
	// node from its units configuration.
	RelaySecret string `yaml:"-"`
	// Access holds the listener's IP lists for publish and play (the
	// RTMPS listener too); relays between units are not held to them.
	Access netguard.AccessConfig `yaml:"access"`
}

// DefaultRTMPConfig returns the defaults: ":1935", 8 MiB messages, 4096-byte chunks.
func DefaultRTMPConfig() RTMPConfig {
	return RTMPConfig{Addr: ":1935", MaxMessageSize: 8 << 20, ChunkSize: 4096}
}

func (c RTMPConfig) normalize() RTMPConfig {
	d := DefaultRTMPConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = d.MaxMessageSize
	}
	c.MaxMessageSize = min(c.MaxMessageSize, rtmpMaxPayload)
	if c.ChunkSize <= 0 {
		c.ChunkSize = d.ChunkSize
	}
	c.ChunkSize = min(max(c.ChunkSize, rtmpDefaultChunkSize), 64<<10)
	return c
}

// Timeouts of the RTMP server.
const (
	rtmpHandshakeTimeout = 10 * time.Second // accept to the end of the handshake
	rtmpIdleTimeout      = 30 * time.Second // silence from a publisher (players may stay silent)
	rtmpWriteTimeout     = 10 * time.Second // one blocked socket write
)

// RTMPServer accepts RTMP publishers (handing their feeds to Deps.Sink) and
// RTMP players (reading from Deps.Play). go-rtmp runs the protocol; the
// server checks every chunk before go-rtmp reads it and writes the play
// output itself.
type RTMPServer struct {
	cfg  RTMPConfig
	deps Deps
	log  *slog.Logger

	access listenerAccess

	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	writeTimeout     time.Duration

	ctx    context.Context // cancelled by Close; players derive from it
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	ln     net.Listener
	srv    *rtmp.Server
	conns  map[*rtmpConn]struct{}
	tls    []rtmpTLS // RTMPS listeners (rtmps.go)
	closed bool
	wg     sync.WaitGroup
}

// NewRTMPServer returns a server; Start begins listening. deps.Sink and
// deps.Auth are required; with deps.Play nil, play requests are refused.
func NewRTMPServer(cfg RTMPConfig, deps Deps, log *slog.Logger) *RTMPServer {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &RTMPServer{
		cfg:              cfg.normalize(),
		deps:             deps,
		log:              log,
		handshakeTimeout: rtmpHandshakeTimeout,
		idleTimeout:      rtmpIdleTimeout,
		writeTimeout:     rtmpWriteTimeout,
		ctx:              ctx,
		cancel:           cancel,
		done:             make(chan struct{}),
		conns:            make(map[*rtmpConn]struct{}),
	}
}

// Start listens on cfg.Addr and serves in the background. It returns
// listen errors.
func (s *RTMPServer) Start() error {
	if s.deps.Sink == nil || s.deps.Auth == nil {
		return errors.New("rtmp server: deps.Sink and deps.Auth are required")
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rtmp server listen %s: %w", s.cfg.Addr, err)
	}
	if err := s.serve(ln); err != nil {
		ln.Close()
		return err
	}
	s.log.Info("rtmp server listening", "addr", ln.Addr().String())
	return nil
}

// serve runs the server on ln (tests pass in-memory listeners).
func (s *RTMPServer) serve(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("rtmp server: closed")
	}
	if s.ln != nil {
		return errors.New("rtmp server: already started")
	}
	s.ln = ln
	s.srv = rtmp.NewServer(&rtmp.ServerConfig{OnConnect: s.onConnect})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(&rtmpListener{Listener: ln, done: s.done, log: s.log})
	}()
	return nil
}

// Addr returns the listen address (nil before Start).
func (s *RTMPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, closes every connection (publishers' FeedWriters
// are closed, players' readers too) and waits until they are gone.
func (s *RTMPServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	s.cancel()
	srv, ln := s.srv, s.ln
	s.closeTLS()
	conns := make([]*rtmpConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	if srv != nil {
		_ = srv.Close()
	}
	if ln != nil {
		_ = ln.Close()
	}
	for _, c := range conns {
		c.setReason(slog.LevelInfo, "server closing")
		_ = c.rc.nc.Close()
	}
	s.wg.Wait()
	return nil
}

// onConnect is go-rtmp's hook for each accepted socket; it runs on the
// connection's goroutine.
func (s *RTMPServer) onConnect(nc net.Conn) (_ io.ReadWriteCloser, _ *rtmp.ConnConfig) {
	c := newRTMPConn(s, nc)
	_ = nc.SetDeadline(time.Now().Add(s.handshakeTimeout))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.setReason(slog.LevelInfo, "server closing")
		_ = nc.Close()
	} else {
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		c.tracked = true
		s.mu.Unlock()
	}
	return c.rc, c.connConfig()
}

func (s *RTMPServer) remove(c *rtmpConn) {
	if !c.tracked {
		return
	}
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// rtmpListener retries failed Accepts with a backoff (go-rtmp's Serve loop
// retries at once, which would spin on EMFILE) and fails only once the
// server is closing.
type rtmpListener struct {
	net.Listener
	done <-chan struct{}
	log  *slog.Logger
}

func (l *rtmpListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		select {
		case <-l.done:
			return nil, err
		default:
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.log.Warn("rtmp accept failed", "error", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-l.done:
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}
