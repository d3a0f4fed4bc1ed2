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

	// Limits caps the connections the listener holds: max_conns in total,
	// max_conns_per_ip from one remote address. Connections over a cap
	// are closed at accept (netguard logs them). In the limit fields
	// below, 0 takes the default and a negative value turns the limit off.
	netguard.Limits `yaml:",inline"`
	// PreAuthMaxMessageSize is the largest message a connection may send
	// before it is authorized to publish or play (connect, createStream,
	// publish, play are a few hundred bytes, with long tokens a few KiB).
	PreAuthMaxMessageSize int `yaml:"preauth_max_message_size"`
	// SetupTimeout is the time from the end of the handshake to an
	// accepted publish or play.
	SetupTimeout time.Duration `yaml:"setup_timeout"`
	// MinPublishRate is the fewest bytes a second a publisher must send,
	// measured over MinPublishRateWindow.
	MinPublishRate int `yaml:"min_publish_rate"`
	// MinPublishRateWindow is the window MinPublishRate is measured over.
	MinPublishRateWindow time.Duration `yaml:"min_publish_rate_window"`
	// BufferBudget bounds, in bytes, what all ingest connections of the
	// node together hold in incomplete messages: RTMP publishers and
	// players, RTMP pulls, RTSP requests. Connections not yet authorized
	// may take half of it.
	BufferBudget int64 `yaml:"buffer_budget"`
	// Access holds the listener's IP lists for publish and play (the
	// RTMPS listener too); relays between units are not held to them.
	Access netguard.AccessConfig `yaml:"access"`
}

// Defaults of the RTMP limits (see RTMPConfig).
const (
	rtmpDefaultMaxConns       = 10000
	rtmpDefaultMaxConnsPerIP  = 256
	rtmpDefaultPreAuthMessage = 8 << 10
	rtmpDefaultSetupTimeout   = 10 * time.Second
	rtmpDefaultMinRate        = 512
	rtmpDefaultMinRateWindow  = 30 * time.Second
	defaultBufferBudget       = 512 << 20
)

// DefaultRTMPConfig returns the defaults: ":1935", 8 MiB messages,
// 4096-byte chunks; 10000 connections, 256 per address; 8 KiB messages and
// 10 s to publish or play before authorization; publishers at 512 bytes/s
// at least over 30 s; a buffer budget of 512 MiB.
func DefaultRTMPConfig() RTMPConfig {
	return RTMPConfig{
		Addr: ":1935", MaxMessageSize: 8 << 20, ChunkSize: 4096,
		Limits:                netguard.Limits{MaxConns: rtmpDefaultMaxConns, MaxConnsPerIP: rtmpDefaultMaxConnsPerIP},
		PreAuthMaxMessageSize: rtmpDefaultPreAuthMessage,
		SetupTimeout:          rtmpDefaultSetupTimeout,
		MinPublishRate:        rtmpDefaultMinRate,
		MinPublishRateWindow:  rtmpDefaultMinRateWindow,
		BufferBudget:          defaultBufferBudget,
	}
}

// NewBudget returns the node's ingest buffer budget from BufferBudget
// (0: the default, negative: nil, no bound), for Deps.Budget.
func (c RTMPConfig) NewBudget() *Budget { return NewBudget(c.normalize().BufferBudget) }

// limitDefault returns def for 0, 0 (off) for a negative v, else v.
func limitDefault[T int | int64 | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
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
	c.MaxConns = limitDefault(c.MaxConns, d.MaxConns)
	c.MaxConnsPerIP = limitDefault(c.MaxConnsPerIP, d.MaxConnsPerIP)
	c.PreAuthMaxMessageSize = min(limitDefault(c.PreAuthMaxMessageSize, d.PreAuthMaxMessageSize), c.MaxMessageSize)
	if c.PreAuthMaxMessageSize == 0 {
		c.PreAuthMaxMessageSize = c.MaxMessageSize
	}
	c.SetupTimeout = limitDefault(c.SetupTimeout, d.SetupTimeout)
	c.MinPublishRate = limitDefault(c.MinPublishRate, d.MinPublishRate)
	c.MinPublishRateWindow = limitDefault(c.MinPublishRateWindow, d.MinPublishRateWindow)
	if c.MinPublishRateWindow == 0 {
		c.MinPublishRate = 0
	}
	c.BufferBudget = limitDefault(c.BufferBudget, d.BufferBudget)
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

	access  listenerAccess
	limiter *netguard.Limiter // connection caps, shared by the RTMP and RTMPS listeners

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
	cfg = cfg.normalize()
	if deps.Budget == nil {
		deps.Budget = NewBudget(cfg.BufferBudget)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &RTMPServer{
		cfg:              cfg,
		deps:             deps,
		log:              log,
		limiter:          netguard.NewLimiter(cfg.Limits),
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
	tcp, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rtmp server listen %s: %w", s.cfg.Addr, err)
	}
	ln := s.guard(tcp)
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
	c.rc.limit(s.connLimits(), s.log, c.remote)
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

// guard wraps a listener with the connection caps of the configuration.
func (s *RTMPServer) guard(ln net.Listener) net.Listener {
	return netguard.NewListener(ln, s.limiter, s.log, "rtmp")
}

// connLimits are the per-connection bounds of the configuration.
func (s *RTMPServer) connLimits() rtmpConnLimits {
	return rtmpConnLimits{
		preAuthMaxMessage: s.cfg.PreAuthMaxMessageSize,
		setupTimeout:      s.cfg.SetupTimeout,
		minRate:           s.cfg.MinPublishRate,
		rateWindow:        s.cfg.MinPublishRateWindow,
		budget:            s.deps.Budget,
	}
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
