package lms

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/netguard"
)

// LiveSource is what the control API needs from the node's media side. The
// node wiring implements it over the origin.
type LiveSource interface {
	// LiveStatus reports app/name when it is on air.
	LiveStatus(app, name string) (LiveStatus, bool)
	// Kick disconnects the publishers of app/name; ErrNotLive when none.
	Kick(app, name string) error
}

const (
	maxBody        = 1 << 20 // request bodies
	requestTimeout = 10 * time.Second
	tokenFile      = "api-token"
)

// Server is the control API: /api/v1/... (bearer token), /metrics,
// /healthz and /readyz.
type Server struct {
	cfg       Config
	reg       *Registry
	live      LiveSource
	log       *slog.Logger
	tokens    []tokenEntry // api_token (admin) and lms.tokens
	auditLog  *auditLog
	generated string
	handler   http.Handler
	apiMux    *http.ServeMux
	requests  *prometheus.CounterVec
	closing   atomic.Bool
	readiness atomic.Pointer[func() error]
	auto      autonomy
	draining  atomic.Bool

	mu   sync.Mutex
	ln   net.Listener
	srv  *http.Server
	tls  bool
	done chan struct{}
}

// NewServer builds the control API over reg. live may be nil (every stream
// then reports offline). promReg is served on /metrics and gets the API's
// own metrics; nil means a private registry.
//
// The bearer token is cfg.APIToken, else the content of DataDir/api-token,
// else a new random token written there with mode 0600; GeneratedToken then
// returns it so the caller can print it once. The token is never logged.
func NewServer(cfg Config, reg *Registry, live LiveSource, log *slog.Logger, promReg *prometheus.Registry) (*Server, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tok, generated, err := loadAPIToken(cfg)
	if err != nil {
		return nil, err
	}
	if live == nil {
		live = offline{}
	}
	if promReg == nil {
		promReg = prometheus.NewRegistry()
	}
	if err := ValidateTokens(cfg.Tokens); err != nil {
		return nil, fmt.Errorf("lms: %w", err)
	}
	s := &Server{cfg: cfg, reg: reg, live: live, log: log,
		tokens:   []tokenEntry{{sum: sha256.Sum256([]byte(tok)), who: principal{"admin", RoleAdmin}}},
		auditLog: newAuditLog(nil, cfg.AuditRetention, log)}
	for _, t := range cfg.Tokens {
		s.tokens = append(s.tokens, tokenEntry{sum: sha256.Sum256([]byte(t.Token)), who: principal{t.Name, t.Role}})
	}
	if generated {
		s.generated = tok
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livefuse_lms_api_requests_total",
		Help: "Control API requests by route and status code.",
	}, []string{"route", "code"})
	if err := promReg.Register(s.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("lms metrics: %w", err)
		}
		s.requests = are.ExistingCollector.(*prometheus.CounterVec)
	}
	if err := promReg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livefuse_lms_streams",
		Help: "Streams in the registry.",
	}, func() float64 { return float64(reg.Len()) })); err != nil {
		log.Warn("lms: streams gauge not registered", "err", err)
	}
	s.handler = s.routes(promReg)
	return s, nil
}

// loadAPIToken resolves the bearer token (see NewServer).
func loadAPIToken(cfg Config) (tok string, generated bool, err error) {
	if cfg.APIToken != "" {
		if err := api.ValidateToken(cfg.APIToken); err != nil {
			return "", false, fmt.Errorf("lms: api_token: %w", err)
		}
		return cfg.APIToken, false, nil
	}
	if cfg.DataDir == "" {
		return "", false, errors.New("lms: api_token or data_dir is required")
	}
	path := filepath.Join(cfg.DataDir, tokenFile)
	for range 2 {
		b, err := os.ReadFile(path)
		if err == nil {
			tok := strings.TrimSpace(string(b))
			if err := api.ValidateToken(tok); err != nil {
				return "", false, fmt.Errorf("lms: %s: %w", path, err)
			}
			return tok, false, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", false, fmt.Errorf("lms: read api token: %w", err)
		}
		tok, err := newSecret()
		if err != nil {
			return "", false, err
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return "", false, fmt.Errorf("lms: api token: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue // another process wrote it first: read theirs
		}
		if err != nil {
			return "", false, fmt.Errorf("lms: write api token: %w", err)
		}
		_, err = f.WriteString(tok + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return "", false, fmt.Errorf("lms: write api token: %w", err)
		}
		return tok, true, nil
	}
	return "", false, fmt.Errorf("lms: api token %s: unreadable", path)
}

// newSecret returns 32 random hex digits.
func newSecret() (string, error) {
	a, err := NewToken()
	if err != nil {
		return "", err
	}
	b, err := NewToken()
	if err != nil {
		return "", err
	}
	return (a + b)[:32], nil
}

// GeneratedToken returns the API token when NewServer generated it (print it
// once for the operator), else "".
func (s *Server) GeneratedToken() string { return s.generated }

// Handler returns the HTTP handler (for tests and for mounting elsewhere).
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on cfg.APIAddr and serves in the background.
func (s *Server) Start() error {
	hl, err := netguard.NewHTTPListener(s.cfg.APIAddr, "api", s.cfg.API, s.handler, s.log)
	if err != nil {
		return fmt.Errorf("lms api: listen %s: %w", s.cfg.APIAddr, err)
	}
	hl.Server.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	done := make(chan struct{})
	s.mu.Lock()
	s.ln, s.srv, s.done, s.tls = hl.Listener, hl.Server, done, hl.TLS()
	s.mu.Unlock()
	go func() {
		defer close(done)
		if err := hl.Serve(); err != nil {
			s.log.Error("lms api stopped", "err", err)
		}
	}()
	go s.probeStore(done)
	go s.auditLog.run(done)
	s.log.Info("lms: control API listening", "addr", hl.Addr().String(), "tls", hl.TLS())
	return nil
}

// URL returns the API's base URL ("https://127.0.0.1:9090"; "" before Start).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	if s.tls {
		return "https://" + s.ln.Addr().String()
	}
	return "http://" + s.ln.Addr().String()
}

// Addr returns the listening address (nil before Start).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops the server, letting requests in flight finish for up to 5 s.
func (s *Server) Close() {
	s.closing.Store(true)
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	<-done
}

// SetReadiness makes /readyz answer 503 while fn returns an error (a
// draining node).
func (s *Server) SetReadiness(fn func() error) { s.readiness.Store(&fn) }

// Handle mounts h on the authenticated API mux under pattern (a
// net/http ServeMux pattern such as "GET /api/v1/cdn/vendors"), for routes
// of other parts of the node (CDN mixer, profiles, recordings) that lms
// must not import. Call it before Start.
func (s *Server) Handle(pattern string, h http.Handler) { s.apiMux.Handle(pattern, h) }

func (s *Server) routes(promReg *prometheus.Registry) http.Handler {
	apiMux := http.NewServeMux()
	s.apiMux = apiMux
	apiMux.HandleFunc("GET /api/v1/streams", s.handleList)
	apiMux.HandleFunc("POST /api/v1/streams", s.handleCreate)
	apiMux.HandleFunc("GET /api/v1/streams/{app}/{name}", s.handleGet)
	apiMux.HandleFunc("PATCH /api/v1/streams/{app}/{name}", s.handlePatch)
	apiMux.HandleFunc("DELETE /api/v1/streams/{app}/{name}", s.handleDelete)
	apiMux.HandleFunc("POST /api/v1/streams/{app}/{name}/kick", s.handleKick)
	apiMux.HandleFunc("POST /api/v1/streams/{app}/{name}/switch", s.handleSwitch)
	apiMux.HandleFunc("GET /api/v1/audit", s.handleAudit)
	// JSON answers for wrong methods and unknown paths.
	apiMux.Handle("/api/v1/streams", methodNotAllowed("GET, POST"))
	apiMux.Handle("/api/v1/streams/{app}/{name}", methodNotAllowed("GET, PATCH, DELETE"))
	apiMux.Handle("/api/v1/streams/{app}/{name}/kick", methodNotAllowed("POST"))
	apiMux.Handle("/api/v1/streams/{app}/{name}/switch", methodNotAllowed("POST"))
	apiMux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API route")
	})

	mux := http.NewServeMux()
	mux.Handle("/api/", s.audited(s.authenticate(s.markStale(apiMux))))
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{Registry: promReg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if s.closing.Load() {
			writeError(w, http.StatusServiceUnavailable, "shutting down")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// /readyz says whether this node takes new players and publishers: a
	// draining node answers 503 so that load balancers send them
	// elsewhere. The store is reported apart ("store"): a node cut off
	// from etcd serves on with its last known registry.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			writeError(w, http.StatusServiceUnavailable, "draining")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		store := "ok"
		if err := s.reg.Ready(ctx); err != nil {
			store = "unreachable"
		}
		if fn := s.readiness.Load(); fn != nil {
			if err := (*fn)(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error(), "store": store})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "store": store})
	})
	return s.count(mux)
}

// Drain makes /readyz answer 503 "draining" from now on: the node is
// being taken out of service (its media keeps serving).
func (s *Server) Drain() { s.draining.Store(true) }

func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed (allowed: "+allow+")")
	})
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// count counts requests by matched route pattern (never the raw path, so
// the label set stays bounded) and status code.
func (s *Server) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "other"
		}
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	})
}

// authenticate checks "Authorization: Bearer TOKEN" in constant time.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		who, found := identify(s.tokens, strings.TrimSpace(tok))
		if !ok || !strings.EqualFold(scheme, "Bearer") || !found {
			w.Header().Set("WWW-Authenticate", `Bearer realm="livefuse"`)
			msg := "missing bearer token"
			if h != "" {
				msg = "invalid bearer token"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		noteCaller(r, who)
		if err := permitted(who.role, r.Method, r.URL.Path); err != nil {
			s.log.Info("api: refused by role", "actor", who.name, "role", who.role, "method", r.Method,
				"path", r.URL.Path, "remote", r.RemoteAddr, "reason", "role")
			writeError(w, http.StatusForbidden, fmt.Sprintf("role %s may not %s %s", who.role, r.Method, r.URL.Path))
			return
		}
		next.ServeHTTP(w, r.WithContext(withCaller(r.Context(), who)))
	})
}

// SetAuditStore keeps the audit log in st (else it is only logged).
func (s *Server) SetAuditStore(st *Store) { s.auditLog.st = st }

func writeJSON(w http.ResponseWriter, status int, v any) { WriteJSON(w, status, v) }

func writeError(w http.ResponseWriter, status int, msg string) { WriteError(w, status, msg) }

// decodeJSON reads one JSON object of at most maxBody bytes into v, refusing
// unknown fields and trailing data. On failure it answers and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "request body larger than 1 MiB")
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "invalid JSON: empty body")
	default:
		writeError(w, http.StatusBadRequest, "invalid JSON: "+strings.TrimPrefix(err.Error(), "json: "))
	}
	return false
}

// pathStream reads and checks {app} and {name}; on failure it answers 400.
func pathStream(w http.ResponseWriter, r *http.Request) (app, name string, ok bool) {
	app, name = r.PathValue("app"), r.PathValue("name")
	if err := api.ValidateName(app); err != nil {
		writeError(w, http.StatusBadRequest, "invalid stream: app: "+err.Error())
		return "", "", false
	}
	if err := api.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, "invalid stream: name: "+err.Error())
		return "", "", false
	}
	return app, name, true
}

// fail answers a registry error with the right status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "stream not found")
	case errors.Is(err, ErrExists):
		writeError(w, http.StatusConflict, "stream already exists")
	case errors.Is(err, ErrNotLive):
		writeError(w, http.StatusConflict, "stream is not live")
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, "conflicting concurrent writes to this stream; retry")
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Error("lms api: store timeout", "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store did not answer in time")
	default:
		s.log.Error("lms api: request failed", "remote", r.RemoteAddr, "method", r.Method, "route", r.Pattern, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// audit names the change r makes (action, stream, detail as key/value
// pairs, never secret values) for its audit entry, which the audited
// middleware logs, stores and publishes once r is answered.
func (s *Server) audit(r *http.Request, action, stream string, args ...any) {
	noteAudit(r, action, stream, args...)
}

func (s *Server) info(st Stream, units map[string][]UnitStatus) api.StreamInfo {
	in := api.StreamInfo{Stream: st, Units: units[st.Path()]}
	if ls, ok := s.live.LiveStatus(st.App, st.Name); ok {
		in.Live = &ls
	}
	return in
}

// units reads the units' reports; on a store error the answer just lacks them.
func (s *Server) units(r *http.Request) map[string][]UnitStatus {
	u, err := s.reg.Units(r.Context())
	if err != nil {
		s.log.Warn("lms api: unit reports unavailable", "err", err)
	}
	return u
}

func (s *Server) handleSwitch(w http.ResponseWriter, r *http.Request) {
	app, name, ok := pathStream(w, r)
	if !ok {
		return
	}
	var req api.SwitchRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := api.ValidateFeedPolicy(req.Feed); err != nil || req.Feed == "" {
		writeError(w, http.StatusBadRequest, `feed: want "auto", "main" or "backup"`)
		return
	}
	// An emergency switch must not wait on a store without quorum: known
	// unreachable, or silent for switchStoreWait, it applies to this unit
	// alone (see autonomy.go).
	if !s.storeReachable() && s.switchLocally(w, r, app, name, req.Feed) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), switchStoreWait)
	defer cancel()
	st, err := s.reg.Update(clientv3.WithRequireLeader(ctx), app, name, func(st *Stream) error {
		st.FeedPolicy = req.Feed
		return nil
	})
	if storeUnavailable(err) && r.Context().Err() == nil && s.switchLocally(w, r, app, name, req.Feed) {
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, "switch", app+"/"+name, "feed", req.Feed)
	writeJSON(w, http.StatusOK, s.info(st, s.units(r)))
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	streams := s.reg.List()
	out := api.StreamList{Streams: make([]api.StreamInfo, 0, len(streams))}
	units := s.units(r)
	for _, st := range streams {
		out.Streams = append(out.Streams, s.info(st, units))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	app, name, ok := pathStream(w, r)
	if !ok {
		return
	}
	st, ok := s.reg.Get(app, name)
	if !ok {
		writeError(w, http.StatusNotFound, "stream not found")
		return
	}
	writeJSON(w, http.StatusOK, s.info(st, s.units(r)))
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req api.CreateStreamRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	st := Stream{
		App: req.App, Name: req.Name, PublishToken: req.PublishToken, PlayKey: req.PlayKey,
		Enabled: true, Source: req.Source, Record: req.Record, Profile: req.Profile,
		IPLists: req.IPLists,
	}
	if st.App == "" {
		st.App = api.DefaultApp
	}
	if req.Enabled != nil {
		st.Enabled = *req.Enabled
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	st, err := s.reg.Create(ctx, st)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, "create", st.Path())
	w.Header().Set("Location", "/api/v1/streams/"+st.Path())
	writeJSON(w, http.StatusCreated, st)
}

func (s *Server) handlePatch(w http.ResponseWriter, r *http.Request) {
	app, name, ok := pathStream(w, r)
	if !ok {
		return
	}
	var p api.StreamPatch
	if !decodeJSON(w, r, &p) {
		return
	}
	if _, fields := p.Apply(Stream{}); len(fields) == 0 {
		// Nothing to change: answer the current state without a write.
		st, ok := s.reg.Get(app, name)
		if !ok {
			writeError(w, http.StatusNotFound, "stream not found")
			return
		}
		writeJSON(w, http.StatusOK, st)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	var fields []string
	st, err := s.reg.Update(ctx, app, name, func(st *Stream) error {
		*st, fields = p.Apply(*st)
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, "patch", st.Path(), "fields", strings.Join(fields, ","))
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	app, name, ok := pathStream(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	if err := s.reg.Delete(ctx, app, name); err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, "delete", app+"/"+name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleKick(w http.ResponseWriter, r *http.Request) {
	app, name, ok := pathStream(w, r)
	if !ok {
		return
	}
	err := s.live.Kick(app, name)
	if errors.Is(err, ErrNotLive) {
		if _, ok := s.reg.Get(app, name); !ok {
			err = ErrNotFound
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r, "kick", app+"/"+name)
	w.WriteHeader(http.StatusNoContent)
}

// offline is the LiveSource of a control plane without media: nothing is live.
type offline struct{}

func (offline) LiveStatus(string, string) (LiveStatus, bool) { return LiveStatus{}, false }
func (offline) Kick(string, string) error                    { return ErrNotLive }
