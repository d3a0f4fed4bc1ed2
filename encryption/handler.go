package encryption

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HandlerConfig configures the key delivery Handler.
type HandlerConfig struct {
	// Store holds the keys. Required.
	Store KeyStore
	// Authorize checks the player's play token for app/name; uri is the
	// request path (for auth_key signing) and q its query. Required.
	Authorize func(app, name, uri string, q url.Values) error
	// Rate and Burst set the token bucket of each client IP: Rate requests
	// per second on average, Burst at once. Defaults 5 and 20.
	Rate  float64
	Burst int
	// MaxClients bounds the client IPs tracked at once (default 65536);
	// past it, new clients get 429 until idle ones are forgotten.
	MaxClients int
	// CORSOrigin is sent as Access-Control-Allow-Origin so that browser
	// players on other origins can fetch keys (the token is in the query,
	// not a cookie). Default "*"; "-" sends none.
	CORSOrigin string
	// Logger gets refusals (never key bytes). Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests. Nil means time.Now.
	Now func() time.Time
}

// Handler delivers content keys to players at /keys/{app}/{name}/{id}: the
// 16 raw key bytes, after the play token check, rate limited per client IP.
//
// Answers: 200 with the key (application/octet-stream, Cache-Control:
// no-store), 403 when Authorize refuses, 404 for an unknown key or a path
// of another shape, 405 for methods other than GET and HEAD, 429 past the
// rate limit, 500 when the store fails.
type Handler struct {
	store      KeyStore
	authorize  func(app, name, uri string, q url.Values) error
	cors       string
	log        *slog.Logger
	now        func() time.Time
	limit      *rateLimiter
	retryAfter string
}

// NewHandler returns a key delivery Handler.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("key handler: no store")
	}
	if cfg.Authorize == nil {
		return nil, errors.New("key handler: no authorize func")
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 5
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 20
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 1 << 16
	}
	switch cfg.CORSOrigin {
	case "":
		cfg.CORSOrigin = "*"
	case "-":
		cfg.CORSOrigin = ""
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{
		store:      cfg.Store,
		authorize:  cfg.Authorize,
		cors:       cfg.CORSOrigin,
		log:        cfg.Logger,
		now:        cfg.Now,
		limit:      newRateLimiter(cfg.Rate, cfg.Burst, cfg.MaxClients),
		retryAfter: strconv.Itoa(max(1, int(1/cfg.Rate+0.999))),
	}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cors != "" {
		w.Header().Set("Access-Control-Allow-Origin", h.cors)
	}
	ip := clientIP(r.RemoteAddr)
	if !h.limit.allow(ip, h.now()) {
		w.Header().Set("Retry-After", h.retryAfter)
		http.Error(w, "too many key requests", http.StatusTooManyRequests)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	app, name, id, ok := parseKeyPath(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	stream := app + "/" + name
	if err := h.authorize(app, name, r.URL.Path, r.URL.Query()); err != nil {
		h.log.Info("key request refused", "stream", stream, "remote", ip, "key_id", id, "reason", err.Error())
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	k, err := h.store.Get(r.Context(), stream, id)
	switch {
	case errors.Is(err, ErrKeyNotFound):
		http.NotFound(w, r)
		return
	case err != nil:
		h.log.Error("key store", "stream", stream, "key_id", id, "err", err)
		http.Error(w, "key store unavailable", http.StatusInternalServerError)
		return
	case k == nil:
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", "16")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(k.Key[:])
	}
}

// parseKeyPath splits /keys/{app}/{name}/{id}.
func parseKeyPath(p string) (app, name, id string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/keys/")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return "", "", "", false
	}
	for _, s := range parts[:2] {
		if s == "" || s == "." || s == ".." || len(s) > 256 {
			return "", "", "", false
		}
	}
	if !ValidKeyID(parts[2]) {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// clientIP returns the host part of a RemoteAddr. Requests through a
// reverse proxy all share the proxy's address; the limit then applies to
// the proxy, which is the safe side.
func clientIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// rateLimiter is a token bucket per client IP.
type rateLimiter struct {
	rate       float64
	burst      float64
	maxClients int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, maxClients int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), maxClients: maxClients, buckets: map[string]*bucket{}}
}

// allow takes one token from ip's bucket.
func (l *rateLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[ip]
	if !ok {
		if len(l.buckets) >= l.maxClients {
			l.sweep(now)
			if len(l.buckets) >= l.maxClients {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the clients whose bucket has refilled (they are idle), at
// most once a second so that a full table costs one pass per second.
func (l *rateLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Second && !l.lastSweep.IsZero() {
		return
	}
	l.lastSweep = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for ip, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, ip)
		}
	}
}
