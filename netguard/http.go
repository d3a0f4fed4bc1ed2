package netguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// HTTPConfig bounds what one HTTP listener gives a client, before and
// between requests. Zero fields take the defaults of the listener
// (MediaHTTPDefaults, APIHTTPDefaults).
type HTTPConfig struct {
	// ReadHeaderTimeout is how long a client may take to send a
	// request's headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout is how long a client may take to send a whole request,
	// body included (1-byte-per-second bodies end here). A request without
	// a body is not held to it once its headers are read: its response
	// (a live HTTP-FLV stream, a blocking LL-HLS playlist) may take longer.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds one response (0: none). The media listener has
	// none: HTTP-FLV players keep per-write deadlines (origin max_lag).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// Limits caps connections in total and per remote address.
	Limits Limits `yaml:",inline"`
	// TLS, when set, makes the listener HTTPS (HTTP/2 offered by ALPN).
	TLS TLSConfig `yaml:"tls"`
}

// MediaHTTPDefaults are the media listener's (HTTP-FLV, HLS, keys,
// dispatch, beacons). The per-address cap is high because a CDN edge or a
// carrier NAT puts thousands of players behind one address.
func MediaHTTPDefaults() HTTPConfig {
	return HTTPConfig{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		Limits:            Limits{MaxConns: 20000, MaxConnsPerIP: 4000},
	}
}

// APIHTTPDefaults are the control API's.
func APIHTTPDefaults() HTTPConfig {
	return HTTPConfig{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		Limits:            Limits{MaxConns: 1024, MaxConnsPerIP: 256},
	}
}

// WithDefaults fills zero fields from d (the caps too: a cap is turned off
// with -1).
func (c HTTPConfig) WithDefaults(d HTTPConfig) HTTPConfig {
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.Limits.MaxConns == 0 {
		c.Limits.MaxConns = d.Limits.MaxConns
	}
	if c.Limits.MaxConnsPerIP == 0 {
		c.Limits.MaxConnsPerIP = d.Limits.MaxConnsPerIP
	}
	return c
}

// Validate checks the config.
func (c HTTPConfig) Validate() error {
	if c.MaxHeaderBytes > 1<<20 {
		return fmt.Errorf("max_header_bytes %d: at most %d", c.MaxHeaderBytes, 1<<20)
	}
	if c.WriteTimeout < 0 {
		return errors.New("write_timeout must not be negative")
	}
	return c.TLS.Validate()
}

// HTTPListener is a guarded HTTP listener: connection caps at accept,
// timeouts and header limits in the server, TLS with a reloading
// certificate when configured.
type HTTPListener struct {
	// Server serves on Listener; set Handler before Serve.
	Server   *http.Server
	Listener *Listener
	// Certs is the certificate source (nil without TLS).
	Certs *CertSource
}

// NewHTTPListener listens on addr and builds the server for handler. name
// names the listener in logs ("http", "api"). c must have its defaults.
func NewHTTPListener(addr, name string, c HTTPConfig, handler http.Handler, log *slog.Logger) (*HTTPListener, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var certs *CertSource
	if c.TLS.Enabled() {
		var err error
		if certs, err = NewCertSource(c.TLS, log.With("listener", name)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	lim := c.Limits
	if lim.MaxConns < 0 {
		lim.MaxConns = 0
	}
	if lim.MaxConnsPerIP < 0 {
		lim.MaxConnsPerIP = 0
	}
	gl := NewListener(ln, NewLimiter(lim), log, name)
	srv := &http.Server{
		Handler:           bodyDeadline(handler),
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      max(c.WriteTimeout, 0),
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("listener", name).Handler(), slog.LevelDebug),
	}
	if certs != nil {
		// HTTP/2 where the client offers it, HTTP/1.1 otherwise.
		srv.TLSConfig = certs.ServerConfig("h2", "http/1.1")
	}
	return &HTTPListener{Server: srv, Listener: gl, Certs: certs}, nil
}

// Addr is the listen address.
func (l *HTTPListener) Addr() net.Addr { return l.Listener.Addr() }

// TLS reports whether the listener speaks HTTPS.
func (l *HTTPListener) TLS() bool { return l.Certs != nil }

// Serve serves until the server is shut down; it returns nil then.
func (l *HTTPListener) Serve() error {
	var err error
	if l.Certs != nil {
		err = l.Server.ServeTLS(l.Listener, "", "")
	} else {
		err = l.Server.Serve(l.Listener)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// bodyDeadline lifts the server's read deadline (ReadTimeout) from
// requests without a body once their headers are in: a long response
// (HTTP-FLV on HTTP/2, a blocking LL-HLS playlist) must not be cut, and
// in HTTP/1 the server reads nothing more from the client until the
// response ends (then IdleTimeout applies). Requests with a body keep the
// deadline, so a slow body ends at ReadTimeout.
func bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		}
		next.ServeHTTP(w, r)
	})
}
