package cdnmix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/bus"
)

// maxBeaconBatch is the most beacons one POST /qos may carry.
const maxBeaconBatch = 100

// ParseBeacons decodes a POST /qos body: one beacon object or an array of
// up to 100, each checked (session, vendor, event, ranges). Unknown fields
// are ignored.
func ParseBeacons(b []byte) ([]bus.Beacon, error) {
	if one, ok := decodeBeaconFast(b); ok {
		if err := checkBeacon(one); err != nil {
			return nil, err
		}
		return []bus.Beacon{one}, nil
	}
	out, err := decodeBatch[bus.Beacon](b)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if err := checkBeacon(out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeBatch decodes a POST /qos body: one JSON object or an array of 1
// to maxBeaconBatch (the body itself is capped by the handler).
func decodeBatch[T any](b []byte) ([]T, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("beacon: empty body: %w", ErrMalformed)
	}
	if b[0] != '[' {
		var one T
		if err := json.Unmarshal(b, &one); err != nil {
			return nil, fmt.Errorf("beacon: %w: %w", err, ErrMalformed)
		}
		return []T{one}, nil
	}
	var out []T
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("beacon: %w: %w", err, ErrMalformed)
	}
	if len(out) == 0 || len(out) > maxBeaconBatch {
		return nil, fmt.Errorf("beacon: batch of %d (1-%d): %w", len(out), maxBeaconBatch, ErrMalformed)
	}
	return out, nil
}

// DecodeCDNLog decodes and checks one cdn.logs message.
func DecodeCDNLog(b []byte) (bus.CDNLog, error) {
	var l bus.CDNLog
	if err := json.Unmarshal(b, &l); err != nil {
		return bus.CDNLog{}, fmt.Errorf("log line: %w: %w", err, ErrMalformed)
	}
	if err := checkLog(l); err != nil {
		return bus.CDNLog{}, err
	}
	return l, nil
}

// AccessLogFormat is the nginx log_format that [ParseAccessLog] reads:
//
//	log_format cdnmix '$time_iso8601 $remote_addr $status $bytes_sent $request_time $uri';
const AccessLogFormat = `$time_iso8601 $remote_addr $status $bytes_sent $request_time $uri`

// ParseAccessLog parses one access log line in [AccessLogFormat] from
// vendor's edge into a CDN log event; the stream is taken from a
// /APP/NAME.flv or /APP/NAME/... URI.
func ParseAccessLog(vendor string, line []byte) (bus.CDNLog, error) {
	f := strings.Fields(string(line))
	if len(f) != 6 {
		return bus.CDNLog{}, fmt.Errorf("access log: %d fields, want 6: %w", len(f), ErrMalformed)
	}
	at, err := time.Parse(time.RFC3339, f[0])
	if err != nil {
		return bus.CDNLog{}, fmt.Errorf("access log: time: %w", ErrMalformed)
	}
	ip, err := netip.ParseAddr(f[1])
	if err != nil {
		return bus.CDNLog{}, fmt.Errorf("access log: client: %w", ErrMalformed)
	}
	status, err := strconv.Atoi(f[2])
	if err != nil {
		return bus.CDNLog{}, fmt.Errorf("access log: status: %w", ErrMalformed)
	}
	n, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return bus.CDNLog{}, fmt.Errorf("access log: bytes: %w", ErrMalformed)
	}
	secs, err := strconv.ParseFloat(f[4], 64)
	if err != nil || !(secs >= 0) || secs > maxLogDuration.Seconds() {
		return bus.CDNLog{}, fmt.Errorf("access log: request_time: %w", ErrMalformed)
	}
	l := bus.CDNLog{Vendor: vendor, Time: at, Bytes: n, DurationMs: int64(secs * 1000), Status: status,
		ClientIP: ip.String(), Stream: streamOfURI(f[5])}
	if err := checkLog(l); err != nil {
		return bus.CDNLog{}, err
	}
	return l, nil
}

// streamOfURI returns "app/name" of /app/name.flv or /app/name/x, or "".
func streamOfURI(uri string) string {
	app, rest, ok := strings.Cut(strings.TrimPrefix(uri, "/"), "/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	name = strings.TrimSuffix(name, ".flv")
	if !validName(app) || !validName(name) {
		return ""
	}
	return app + "/" + name
}

// QoSConfig configures a QoSHandler. Zero fields take the defaults in
// brackets.
type QoSConfig struct {
	// Publisher receives the beacons, on qos.beacons (required).
	Publisher bus.Publisher
	// Tokens checks the session token of each beacon (its "token" field,
	// the qos_token a dispatch answer gave the player). Only beacons with
	// a valid token are published, with session, stream, vendor, region
	// and ISP taken from the token. Nil: no beacon is published.
	Tokens *authkey.SessionKey
	// KnownVendor refuses tokens naming a vendor that is no longer
	// configured; nil accepts every vendor a token names.
	KnownVendor func(string) bool
	// SessionRate is the beacons per second one session may send on
	// average and SessionBurst how many at once [0.5/s, 30]; past them its
	// beacons are counted (rate_limited) and dropped.
	SessionRate  float64
	SessionBurst int
	// MaxSessions bounds the sessions whose rate is tracked [100,000]:
	// when full, the half seen least recently is forgotten.
	MaxSessions int
	// SessionsPerNetwork bounds the new sessions one client network (an
	// IPv4 /24, an IPv6 /48) may start sending beacons in NetworkWindow
	// [100 per 1m; -1: no limit], so that tokens minted by dispatching
	// again and again from one place are few votes. Past it, beacons of
	// new sessions are counted (network_limited) and dropped; real players
	// behind a big NAT lose only a sample, as quality is a ratio.
	SessionsPerNetwork int
	NetworkWindow      time.Duration
	// TrustedProxies may set X-Forwarded-For, as for the dispatcher.
	TrustedProxies []netip.Prefix
	// MaxBody bounds a request body [64 KiB].
	MaxBody int64
	// BodyTimeout bounds the time to read a request body [10s], so a
	// trickled body is cut off; the server's ReadTimeout wins when shorter.
	BodyTimeout time.Duration
	// CORSOrigins are the page origins allowed to post beacons from a
	// browser ("*" for any; scheme://host[:port] each) [none: same origin
	// only].
	CORSOrigins []string
	// Now is the clock [time.Now].
	Now    func() time.Time
	Logger *slog.Logger
}

// BeaconResult says what became of one beacon posted to /qos.
type BeaconResult int

// Beacon results, as counted by QoSHandler.
const (
	BeaconAccepted       BeaconResult = iota // valid token: published, may steer
	BeaconNoToken                            // no token: counted, never steers
	BeaconBadToken                           // token forged, damaged or expired
	BeaconUnknownVendor                      // token names a vendor not configured, or the body another vendor
	BeaconRateLimited                        // the session sent more than its rate
	BeaconNetworkLimited                     // a new session from a network past SessionsPerNetwork
	beaconResults
)

var beaconResultNames = [beaconResults]string{"accepted", "no_token", "bad_token", "unknown_vendor", "rate_limited", "network_limited"}

func (r BeaconResult) String() string {
	if r >= 0 && r < beaconResults {
		return beaconResultNames[r]
	}
	return "unknown"
}

// QoSHandler is POST /qos: players post beacons (one JSON object or an
// array of up to 100), each carrying the session token its dispatch
// answer gave (field "token"). A beacon with a valid token is stamped with
// the server's time and published on qos.beacons under the token's
// session, stream, vendor, region and ISP (what the body says of them is
// ignored), at most SessionRate per second per session. Every other beacon
// is counted by its reason and dropped: it never reaches the aggregator,
// so it cannot move the plan.
//
// Answers: 204 when at least one beacon was accepted; else 401 (no valid
// token), 403 (unknown vendor) or 429 (rate), in that order of precedence;
// 400 for a malformed body and 413 for one over MaxBody, both counted as
// rejected requests. OPTIONS answers a CORS preflight from the origins in
// CORSOrigins, so web players on those origins can post.
//
// CMCD (CTA-5004) is taken too, each payload mapped onto one beacon by
// [CMCD.Beacon] and counted like the JSON ones, with the session token in
// the query (token=, or qos_token=): request mode as GET or POST
// /qos?CMCD=<payload>&token=T (the query a stock player such as hls.js
// puts on its requests), header mode (CMCD-Request, -Object, -Status,
// -Session), and event/report mode as a POST body of Content-Type
// application/cmcd (or text/cmcd), one payload a line, up to 100 lines.
type QoSHandler struct {
	cfg     QoSConfig
	cors    corsPolicy
	log     *slog.Logger
	limiter *sessionLimiter
	nets    *networkLimiter // nil: no limit

	rejected atomic.Int64
	results  [beaconResults]atomic.Int64
	lastLog  atomic.Int64 // unix nanos of the last refusal logged
}

// NewQoSHandler checks cfg.
func NewQoSHandler(cfg QoSConfig) (*QoSHandler, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("qos: publisher is required")
	}
	if cfg.MaxBody < 0 || cfg.SessionRate < 0 || cfg.SessionBurst < 0 || cfg.MaxSessions < 0 || cfg.BodyTimeout < 0 {
		return nil, errors.New("qos: max_body, body_timeout, session_rate, session_burst and max_sessions must not be negative")
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 10 * time.Second
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.SessionRate == 0 {
		cfg.SessionRate = 0.5
	}
	if cfg.SessionBurst == 0 {
		cfg.SessionBurst = 30
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 100_000
	}
	if cfg.SessionsPerNetwork == 0 {
		cfg.SessionsPerNetwork = 100
	}
	if cfg.NetworkWindow <= 0 {
		cfg.NetworkWindow = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tp := make([]netip.Prefix, len(cfg.TrustedProxies))
	for i, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, errors.New("qos: invalid trusted proxy prefix")
		}
		tp[i] = p.Masked()
	}
	cfg.TrustedProxies = tp
	cors, err := newCORSPolicy(cfg.CORSOrigins)
	if err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	h := &QoSHandler{cfg: cfg, cors: cors, log: cfg.Logger.With("unit", "cdnmix"),
		limiter: newSessionLimiter(cfg.SessionRate, cfg.SessionBurst, cfg.MaxSessions)}
	if cfg.SessionsPerNetwork > 0 {
		h.nets = newNetworkLimiter(cfg.SessionsPerNetwork, cfg.NetworkWindow, cfg.MaxSessions)
	}
	return h, nil
}

// Counts returns the beacons accepted and the requests rejected (400, 413).
func (h *QoSHandler) Counts() (accepted, rejected int64) {
	return h.results[BeaconAccepted].Load(), h.rejected.Load()
}

// Results returns the beacons counted by result.
func (h *QoSHandler) Results() map[BeaconResult]int64 {
	out := make(map[BeaconResult]int64, beaconResults)
	for r := range beaconResults {
		out[r] = h.results[r].Load()
	}
	return out
}

// TrackedSessions returns the sessions whose rate is tracked.
func (h *QoSHandler) TrackedSessions() int { return h.limiter.len() }

// wireBeacon is a beacon as a player posts it.
type wireBeacon struct {
	bus.Beacon
	Token string `json:"token,omitempty"`
}

// parseWireBeacons decodes a POST /qos body: one object or an array of 1
// to maxBeaconBatch. Fields are checked once the token is (check).
func parseWireBeacons(b []byte) ([]wireBeacon, error) {
	out, err := decodeBatch[wireBeacon](b)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if len(out[i].Token) > authkey.MaxSessionToken {
			out[i].Token = "x" // a bad token, not a bad body
		}
	}
	return out, nil
}

// isCMCD reports whether a /qos request carries CMCD rather than JSON.
func isCMCD(r *http.Request) bool {
	if strings.Contains(r.URL.RawQuery, "CMCD=") {
		return true
	}
	for _, k := range cmcdHeaders {
		if r.Header.Get(k) != "" {
			return true
		}
	}
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/cmcd") || strings.HasPrefix(ct, "text/cmcd")
}

var cmcdHeaders = [...]string{"CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session"}

// parseCMCDRequest reads the CMCD payloads of a /qos request (query,
// headers, or body lines) and maps each onto a beacon with the query's
// session token.
func parseCMCDRequest(r *http.Request, body []byte) ([]wireBeacon, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("cmcd: query: %w: %w", err, ErrMalformed)
	}
	payloads := q["CMCD"]
	var hs []string
	for _, k := range cmcdHeaders {
		if v := r.Header.Get(k); v != "" {
			hs = append(hs, v)
		}
	}
	if len(hs) > 0 {
		payloads = append(payloads, strings.Join(hs, ","))
	}
	if len(bytes.TrimSpace(body)) > 0 {
		for line := range strings.Lines(string(body)) {
			if line = strings.TrimSpace(line); line != "" {
				if len(payloads) == maxBeaconBatch {
					return nil, fmt.Errorf("cmcd: more than %d payloads: %w", maxBeaconBatch, ErrMalformed)
				}
				payloads = append(payloads, line)
			}
		}
	}
	if len(payloads) == 0 || len(payloads) > maxBeaconBatch {
		return nil, fmt.Errorf("cmcd: %d payloads (1-%d): %w", len(payloads), maxBeaconBatch, ErrMalformed)
	}
	tok := q.Get("token")
	if tok == "" {
		tok = q.Get("qos_token")
	}
	if len(tok) > authkey.MaxSessionToken {
		tok = "x" // a bad token, not a bad request
	}
	out := make([]wireBeacon, 0, len(payloads))
	for _, p := range payloads {
		c, err := ParseCMCD(p)
		if err != nil {
			return nil, err
		}
		out = append(out, wireBeacon{Beacon: c.Beacon(), Token: tok})
	}
	return out, nil
}

// authorize checks one beacon's token at now and, when it is valid, puts
// the token's session, stream, vendor, region and ISP in the beacon.
func (h *QoSHandler) authorize(w *wireBeacon, now time.Time) (BeaconResult, error) {
	if w.Token == "" {
		return BeaconNoToken, authkey.ErrSessionMissing
	}
	if h.cfg.Tokens == nil {
		return BeaconBadToken, errors.New("no session key configured")
	}
	s, err := h.cfg.Tokens.Verify(w.Token, now)
	if err != nil {
		return BeaconBadToken, err
	}
	if w.Vendor != "" && w.Vendor != s.Vendor {
		return BeaconUnknownVendor, fmt.Errorf("body names vendor %q, token %q", w.Vendor, s.Vendor)
	}
	if h.cfg.KnownVendor != nil && !h.cfg.KnownVendor(s.Vendor) {
		return BeaconUnknownVendor, fmt.Errorf("vendor %q not configured", s.Vendor)
	}
	w.Session, w.Stream, w.Vendor, w.Region, w.ISP = s.ID, s.Stream, s.Vendor, s.Region, s.ISP
	w.Client = "" // the bucket is the token's, never looked up again
	return BeaconAccepted, nil
}

// ServeHTTP implements http.Handler.
func (h *QoSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	if r.Method == http.MethodOptions {
		h.cors.preflight(w, r, "GET, POST, OPTIONS", "Content-Type, CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session")
		return
	}
	h.cors.allow(hdr, r)
	cmcd := isCMCD(r)
	switch {
	case r.Method == http.MethodPost:
	case r.Method == http.MethodGet && cmcd:
	default:
		hdr.Set("Allow", "POST, OPTIONS (GET with CMCD)")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// At most MaxBody+1 bytes are read, whatever Content-Length says,
	// within BodyTimeout or the server's own ReadTimeout, whichever is
	// shorter (a deadline set here replaces the server's, so it must not
	// lengthen it).
	timeout := h.cfg.BodyTimeout
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.ReadTimeout > 0 {
		timeout = min(timeout, srv.ReadTimeout)
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBody+1))
	if err != nil {
		h.rejected.Add(1)
		h.refused(r, "read body", err)
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if int64(len(body)) > h.cfg.MaxBody {
		h.rejected.Add(1)
		h.refused(r, "body too large", nil)
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	var beacons []wireBeacon
	if cmcd {
		beacons, err = parseCMCDRequest(r, body)
	} else {
		beacons, err = parseWireBeacons(body)
	}
	if err != nil {
		h.rejected.Add(1)
		h.refused(r, "malformed beacon", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := h.cfg.Now().UTC()
	network := clientNetwork(clientAddr(r, h.cfg.TrustedProxies))
	var seen [beaconResults]int
	var firstErr error
	for i := range beacons {
		b := &beacons[i]
		res, err := h.authorize(b, now)
		if res == BeaconAccepted {
			b.Time = now
			if err = checkBeacon(b.Beacon); err != nil {
				h.rejected.Add(1)
				h.refused(r, "malformed beacon", err)
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			switch {
			case h.nets != nil && !h.limiter.known(b.Session) && !h.nets.admit(network, now):
				res, err = BeaconNetworkLimited, fmt.Errorf("network %s over its new sessions", network)
			case !h.limiter.allow(b.Session, now):
				res, err = BeaconRateLimited, errors.New("session over its beacon rate")
			}
		}
		if res == BeaconAccepted {
			if err := bus.Emit(h.cfg.Publisher, b.Beacon); err != nil {
				h.log.Warn("beacon dropped", "err", err)
				continue
			}
		} else if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", res, err)
		}
		seen[res]++
		h.results[res].Add(1)
	}
	switch {
	case seen[BeaconAccepted] > 0:
		w.WriteHeader(http.StatusNoContent)
		return
	case seen[BeaconNoToken]+seen[BeaconBadToken] > 0:
		h.refused(r, "beacon without a valid session token", firstErr)
		http.Error(w, "beacons need the qos_token of a dispatch answer", http.StatusUnauthorized)
	case seen[BeaconUnknownVendor] > 0:
		h.refused(r, "beacon for an unknown vendor", firstErr)
		http.Error(w, "vendor not configured", http.StatusForbidden)
	case seen[BeaconRateLimited]+seen[BeaconNetworkLimited] > 0:
		h.refused(r, "session over its beacon rate, or network over its new sessions", firstErr)
		hdr.Set("Retry-After", "10")
		http.Error(w, "too many beacons for this session", http.StatusTooManyRequests)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// refused logs a refusal, at most one every 5 s (a flood is counted by
// the metrics, not written to the log line by line).
func (h *QoSHandler) refused(r *http.Request, reason string, err error) {
	now := time.Now().UnixNano()
	last := h.lastLog.Load()
	if now-last < int64(5*time.Second) || !h.lastLog.CompareAndSwap(last, now) {
		return
	}
	args := []any{"reason", reason, "remote", r.RemoteAddr}
	if err != nil {
		args = append(args, "err", err)
	}
	h.log.Info("qos beacon refused", args...)
}

// sessionLimiter is a token bucket per session, for at most max sessions:
// two generations of at most max/2 each; when the current one is full it
// becomes the old one and the old one is dropped, so a session that has
// not posted for a whole generation is forgotten (and starts again with a
// full burst). Memory is bounded by max entries whatever the input.
type sessionLimiter struct {
	rate, burst float64
	half        int

	mu       sync.Mutex
	cur, old map[string]limitState
}

type limitState struct {
	tokens float64
	last   int64 // unix nanos
}

func newSessionLimiter(rate float64, burst, maxSessions int) *sessionLimiter {
	half := max(maxSessions/2, 1)
	return &sessionLimiter{rate: rate, burst: float64(burst), half: half,
		cur: make(map[string]limitState), old: make(map[string]limitState)}
}

// allow takes one beacon from id's bucket at now.
func (l *sessionLimiter) allow(id string, now time.Time) bool {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.cur[id]
	if !ok {
		if st, ok = l.old[id]; ok {
			delete(l.old, id)
		} else {
			st = limitState{tokens: l.burst, last: t}
		}
		if len(l.cur) >= l.half {
			l.old, l.cur = l.cur, make(map[string]limitState, l.half)
		}
	}
	if t > st.last {
		st.tokens = min(l.burst, st.tokens+float64(t-st.last)/1e9*l.rate)
		st.last = t
	}
	ok = st.tokens >= 1
	if ok {
		st.tokens--
	}
	l.cur[id] = st
	return ok
}

// known reports whether id is tracked.
func (l *sessionLimiter) known(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, a := l.cur[id]
	_, b := l.old[id]
	return a || b
}

func (l *sessionLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.cur) + len(l.old)
}

// clientNetwork is the network a client address is counted in: its /24
// (IPv4) or /48 (IPv6); the zero prefix for no address.
func clientNetwork(a netip.Addr) netip.Prefix {
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// networkLimiter counts the new sessions of each client network in fixed
// windows, for at most max networks (two generations, as sessionLimiter).
type networkLimiter struct {
	per    int
	window int64 // nanoseconds
	half   int

	mu       sync.Mutex
	cur, old map[netip.Prefix]netCount
}

type netCount struct {
	start int64 // unix nanos of the window's start
	n     int
}

func newNetworkLimiter(per int, window time.Duration, maxNetworks int) *networkLimiter {
	half := max(maxNetworks/2, 1)
	return &networkLimiter{per: per, window: int64(window), half: half,
		cur: make(map[netip.Prefix]netCount), old: make(map[netip.Prefix]netCount)}
}

// admit counts one new session of network p at now, unless p has had
// per of them in its window already.
func (l *networkLimiter) admit(p netip.Prefix, now time.Time) bool {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.cur[p]
	if !ok {
		if c, ok = l.old[p]; ok {
			delete(l.old, p)
		}
		if len(l.cur) >= l.half {
			l.old, l.cur = l.cur, make(map[netip.Prefix]netCount, l.half)
		}
	}
	if !ok || t-c.start >= l.window || t < c.start {
		c = netCount{start: t}
	}
	if c.n >= l.per {
		l.cur[p] = c
		return false
	}
	c.n++
	l.cur[p] = c
	return true
}

func (l *networkLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.cur) + len(l.old)
}
