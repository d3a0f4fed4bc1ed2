package ingest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/netguard"
)

// RTSPConfig configures the RTSP server.
type RTSPConfig struct {
	// Addr is the RTSP (TCP) listen address.
	Addr string `yaml:"addr"`
	// UDPRTPAddr and UDPRTCPAddr are the UDP listen addresses for RTP and
	// RTCP (even port, and the one after it). Both empty: TCP only.
	UDPRTPAddr  string `yaml:"udp_rtp_addr"`
	UDPRTCPAddr string `yaml:"udp_rtcp_addr"`
	// UDPReadBuffer is the receive buffer of each UDP socket, in bytes
	// (default 4 MiB; negative: the system's default, about 200 KiB on
	// Linux). RTP over UDP has no retransmission: what overflows the
	// buffer while the server is busy is lost. The system caps it at
	// net.core.rmem_max; raise that to get all of it.
	UDPReadBuffer int `yaml:"udp_read_buffer"`
	// ReadTimeout bounds how long a publisher may send nothing, and how
	// long a connection may take to send a complete request.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// Limits caps the connections the listener holds: max_conns in total
	// (default 2000), max_conns_per_ip from one remote address (default
	// 256). Connections over a cap are closed at accept (netguard logs
	// them). 0 takes the default, a negative value turns the cap off.
	netguard.Limits `yaml:",inline"`
	// SetupTimeout is the time from the accept to RECORD (default 10s;
	// negative: none).
	SetupTimeout time.Duration `yaml:"setup_timeout"`
	// MinPublishRate is the fewest bytes a second a publisher sending RTP
	// over TCP must send, measured over MinPublishRateWindow (defaults
	// 512 and 30s; negative: none). UDP publishers are bound by
	// ReadTimeout alone.
	MinPublishRate       int           `yaml:"min_publish_rate"`
	MinPublishRateWindow time.Duration `yaml:"min_publish_rate_window"`
	// Access holds the listener's IP lists (publish; RTSP has no players).
	Access netguard.AccessConfig `yaml:"access"`
}

// DefaultRTSPConfig returns the configuration used when the file sets none.
func DefaultRTSPConfig() RTSPConfig {
	return RTSPConfig{
		Addr:          ":8554",
		UDPRTPAddr:    ":8000",
		UDPRTCPAddr:   ":8001",
		ReadTimeout:   10 * time.Second,
		UDPReadBuffer: 4 << 20,
		Limits:        netguard.Limits{MaxConns: 2000, MaxConnsPerIP: 256},
		SetupTimeout:  10 * time.Second,

		MinPublishRate:       rtmpDefaultMinRate,
		MinPublishRateWindow: rtmpDefaultMinRateWindow,
	}
}

// RTSPServer accepts publishers over RTSP: ANNOUNCE and RECORD at
// rtsp://HOST:8554/APP/NAME?token=T[&feed=backup], with RTP over TCP
// (interleaved) or UDP. It carries H.264 and AAC; every session becomes one
// feed of the Sink. It does not serve players.
type RTSPServer struct {
	cfg  RTSPConfig
	deps Deps
	log  *slog.Logger

	srv *gortsplib.Server
	ln  *rtspGuardListener

	access listenerAccess

	mu      sync.Mutex
	started bool
	closed  bool
}

// NewRTSPServer builds a server; Start makes it listen.
func NewRTSPServer(cfg RTSPConfig, deps Deps, log *slog.Logger) *RTSPServer {
	d := DefaultRTSPConfig()
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = d.ReadTimeout
	}
	cfg.MaxConns = limitDefault(cfg.MaxConns, d.MaxConns)
	cfg.MaxConnsPerIP = limitDefault(cfg.MaxConnsPerIP, d.MaxConnsPerIP)
	cfg.SetupTimeout = limitDefault(cfg.SetupTimeout, d.SetupTimeout)
	cfg.UDPReadBuffer = limitDefault(cfg.UDPReadBuffer, d.UDPReadBuffer)
	cfg.MinPublishRate = limitDefault(cfg.MinPublishRate, d.MinPublishRate)
	cfg.MinPublishRateWindow = limitDefault(cfg.MinPublishRateWindow, d.MinPublishRateWindow)
	if cfg.MinPublishRateWindow == 0 {
		cfg.MinPublishRate = 0
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RTSPServer{cfg: cfg, deps: deps, log: log.With("proto", "rtsp")}
}

// Start binds the listeners and starts serving.
func (s *RTSPServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("rtsp server: already started or closed")
	}
	if s.cfg.Addr == "" {
		return errors.New("rtsp server: no listen address")
	}
	h := &rtspHandler{s: s}
	srv := &gortsplib.Server{
		Handler:        h,
		RTSPAddress:    s.cfg.Addr,
		UDPRTPAddress:  s.cfg.UDPRTPAddr,
		UDPRTCPAddress: s.cfg.UDPRTCPAddr,
		// 0: the system's default (gortsplib's meaning too).
		UDPReadBufferSize: s.cfg.UDPReadBuffer,
		ReadTimeout:       s.cfg.ReadTimeout,
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			s.ln = newRTSPGuardListener(netguard.NewListener(ln, netguard.NewLimiter(s.cfg.Limits), s.log, "rtsp"), s.cfg.ReadTimeout)
			s.ln.setupTimeout, s.ln.budget = s.cfg.SetupTimeout, s.deps.Budget
			return s.ln, nil
		},
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("rtsp server on %s: %w", s.cfg.Addr, err)
	}
	s.srv, s.started = srv, true
	s.log.Info("rtsp server listening", "addr", s.ln.Addr().String(),
		"udp_rtp", s.cfg.UDPRTPAddr, "udp_rtcp", s.cfg.UDPRTCPAddr)
	return nil
}

// Addr returns the bound RTSP (TCP) address, nil before Start.
func (s *RTSPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops listening, ends every session (closing its feed) and waits
// for them.
func (s *RTSPServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	return nil
}

// rtspPublisher is one accepted ANNOUNCE: the feed it claimed and the
// converter feeding it.
type rtspPublisher struct {
	stream, feed, remote string
	w                    FeedWriter
	conv                 *rtspConverter
	tracks               *rtspTracks
	done                 chan struct{}
	once                 sync.Once
}

func (p *rtspPublisher) close() {
	p.once.Do(func() {
		close(p.done)
		if p.conv != nil {
			p.conv.close()
		}
		p.w.Close()
	})
}

// rtspHandler implements the gortsplib server callbacks (kept off
// RTSPServer's exported method set).
type rtspHandler struct{ s *RTSPServer }

func rtspRemote(c *gortsplib.ServerConn) string {
	if c == nil {
		return ""
	}
	return c.NetConn().RemoteAddr().String()
}

func rtspRefuse(code base.StatusCode, msg string) *base.Response {
	return &base.Response{StatusCode: code, StatusMessage: msg}
}

// OnConnOpen is called when a TCP connection is accepted.
func (h *rtspHandler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	h.s.log.Debug("rtsp connection opened", "remote", rtspRemote(ctx.Conn))
}

// OnConnClose logs why a connection ended.
func (h *rtspHandler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	remote := rtspRemote(ctx.Conn)
	var terminated liberrors.ErrServerTerminated
	var torn liberrors.ErrServerSessionTornDown
	var lerr *limitError
	switch err := ctx.Error; {
	case errors.As(err, &lerr):
		h.s.log.Warn("rtsp connection refused", "remote", remote, "reason", lerr.reason, "limit", lerr.limit)
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &terminated), errors.As(err, &torn):
		h.s.log.Debug("rtsp connection closed", "remote", remote, "reason", err)
	default:
		h.s.log.Info("rtsp connection closed", "remote", remote, "reason", err)
	}
}

// OnRequest marks the connection as alive for the idle guard.
func (h *rtspHandler) OnRequest(c *gortsplib.ServerConn, _ *base.Request) {
	if g, ok := c.NetConn().(*rtspGuardConn); ok {
		g.requestSeen()
	}
}

// OnResponse restarts the idle guard once an answer went out, so slow
// handling never counts against the client.
func (h *rtspHandler) OnResponse(c *gortsplib.ServerConn, _ *base.Response) {
	if g, ok := c.NetConn().(*rtspGuardConn); ok {
		g.requestSeen()
	}
}

// OnSessionClose ends the feed of a publisher.
func (h *rtspHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	p, ok := ctx.Session.UserData().(*rtspPublisher)
	if !ok || p == nil {
		return
	}
	var torn liberrors.ErrServerSessionTornDown
	if errors.As(ctx.Error, &torn) {
		p.w.Unpublish()
	}
	p.close()
	h.s.log.Info("rtsp publish ended", "stream", p.stream, "feed", p.feed, "remote", p.remote, "reason", ctx.Error)
}

// OnAnnounce authorizes a publisher, checks its codecs and claims the feed.
func (h *rtspHandler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	s := h.s
	remote := rtspRemote(ctx.Conn)
	app, name, q, err := ParseStreamPath(ctx.Path + "?" + ctx.Query)
	if err != nil {
		s.log.Info("rtsp publish refused", "remote", remote, "reason", err)
		return rtspRefuse(base.StatusBadRequest, "Bad Stream Path"), fmt.Errorf("rtsp announce: %w", err)
	}
	stream := app + "/" + name
	log := s.log.With("stream", stream, "remote", remote)
	feed, err := FeedFromQuery(q)
	if err != nil {
		log.Info("rtsp publish refused", "reason", err)
		return rtspRefuse(base.StatusBadRequest, "Bad Feed"), fmt.Errorf("rtsp announce %s: %w", stream, err)
	}
	log = log.With("feed", feed)
	if s.deps.Auth == nil {
		log.Error("rtsp publish refused", "reason", "no authorizer configured")
		return rtspRefuse(base.StatusInternalServerError, ""), errors.New("rtsp announce: no authorizer")
	}
	if err := checkAddress(&s.access, "listener rtsp", s.cfg.Access, s.deps.Guard, true, app, name, ctx.Conn.NetConn().RemoteAddr()); err != nil {
		log.Warn("rtsp publish refused", "reason", err)
		return rtspRefuse(base.StatusForbidden, "Forbidden: address not allowed"), fmt.Errorf("rtsp announce %s: %w", stream, err)
	}
	if err := s.deps.Auth.AuthorizePublish(app, name, q.Get("token")); err != nil {
		log.Warn("rtsp publish refused", "reason", err)
		if errors.Is(err, ErrNotFound) {
			return rtspRefuse(base.StatusNotFound, ""), fmt.Errorf("rtsp announce %s: %w", stream, err)
		}
		return rtspRefuse(base.StatusUnauthorized, ""), fmt.Errorf("rtsp announce %s: %w", stream, ErrUnauthorized)
	}
	tracks, err := rtspPickTracks(ctx.Description, ctx.Request.Body, true)
	if err != nil {
		log.Warn("rtsp publish refused", "reason", err)
		return rtspRefuse(base.StatusUnsupportedMediaType, "Unsupported Media (H.264 and AAC only)"),
			fmt.Errorf("rtsp announce %s: %w", stream, err)
	}
	w, err := s.deps.Sink.Publish(app, name, feed, av.Source{Protocol: "rtsp", Remote: remote, RTT: tcpRTT(ctx.Conn.NetConn())})
	if err != nil {
		log.Warn("rtsp publish refused", "reason", err)
		switch {
		case errors.Is(err, ErrBusy):
			return rtspRefuse(409, "Conflict: feed already has a publisher"), fmt.Errorf("rtsp announce %s: %w", stream, err)
		case errors.Is(err, ErrNotFound):
			return rtspRefuse(base.StatusNotFound, ""), fmt.Errorf("rtsp announce %s: %w", stream, err)
		case errors.Is(err, ErrUnauthorized):
			return rtspRefuse(base.StatusUnauthorized, ""), fmt.Errorf("rtsp announce %s: %w", stream, err)
		}
		return rtspRefuse(base.StatusServiceUnavailable, ""), fmt.Errorf("rtsp announce %s: %w", stream, err)
	}
	p := &rtspPublisher{stream: stream, feed: feed, remote: remote, w: w, tracks: tracks, done: make(chan struct{})}
	session := ctx.Session
	p.conv, err = newRTSPConverter(tracks, session.PacketPTS2, w.WritePacket, log)
	if err != nil {
		w.Close()
		log.Warn("rtsp publish refused", "reason", err)
		return rtspRefuse(base.StatusUnsupportedMediaType, ""), fmt.Errorf("rtsp announce %s: %w", stream, err)
	}
	session.SetUserData(p)
	// the origin may drop the publisher (kick, stream disabled)
	go func() {
		select {
		case <-w.Done():
			log.Info("rtsp publisher dropped by the origin")
			session.Close()
		case <-p.done:
		}
	}()
	log.Info("rtsp publish announced", "video", tracks.video != nil, "audio", tracks.audio != nil)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSetup accepts the transports of an announced session; playing is not
// served.
func (h *rtspHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if _, ok := ctx.Session.UserData().(*rtspPublisher); !ok || ctx.Session.State() != gortsplib.ServerSessionStatePreRecord {
		return rtspRefuse(base.StatusNotImplemented, "Not Implemented (publish only)"), nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, nil, nil
}

// OnRecord starts converting the session's RTP packets.
func (h *rtspHandler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	p, ok := ctx.Session.UserData().(*rtspPublisher)
	if !ok {
		return rtspRefuse(base.StatusBadRequest, ""), errors.New("rtsp record without announce")
	}
	conv := p.conv
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		conv.handleRTP(medi, pkt)
	})
	transport := ""
	t := ctx.Session.SetuppedTransport()
	if t != nil {
		transport = t.String()
	}
	if g, ok := ctx.Conn.NetConn().(*rtspGuardConn); ok {
		if t != nil && *t == gortsplib.TransportTCP {
			g.setMinRate(int64(h.s.cfg.MinPublishRate), h.s.cfg.MinPublishRateWindow)
		}
		g.setRecording(true)
	}
	h.s.log.Info("rtsp publish started", "stream", p.stream, "feed", p.feed, "remote", p.remote, "transport", transport)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnPacketsLost counts RTP loss (UDP) without flooding the log.
func (h *rtspHandler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	if p, ok := ctx.Session.UserData().(*rtspPublisher); ok {
		h.s.log.Debug("rtsp packets lost", "stream", p.stream, "feed", p.feed, "lost", ctx.Lost)
	}
}

// OnDecodeError logs undecodable RTP/RTCP packets.
func (h *rtspHandler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	if p, ok := ctx.Session.UserData().(*rtspPublisher); ok {
		h.s.log.Debug("rtsp decode error", "stream", p.stream, "feed", p.feed, "err", ctx.Error)
	}
}

// OnStreamWriteError is required to keep gortsplib from logging through
// the standard logger; publishers are never written to.
func (h *rtspHandler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	h.s.log.Debug("rtsp write error", "err", ctx.Error)
}
