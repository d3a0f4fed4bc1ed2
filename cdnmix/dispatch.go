package cdnmix

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

// DispatcherConfig configures a Dispatcher. Zero fields take the defaults
// in brackets.
type DispatcherConfig struct {
	// Allocator supplies the plans (required).
	Allocator *Allocator
	// Locator maps client addresses to buckets; nil puts every client in
	// the any-bucket.
	Locator Locator
	// TrustedProxies: X-Forwarded-For is read only when the connection
	// comes from one of these, and then the rightmost address that is not
	// itself trusted is the client.
	TrustedProxies []netip.Prefix
	// StreamExists answers 404 for unknown streams; nil lets all through.
	StreamExists func(app, name string) bool
	// TTL of a JSON answer, sent as "ttl" and Cache-Control max-age [20s].
	TTL time.Duration
	// SignTTL is how long a signed vendor URL stays valid [1h].
	SignTTL time.Duration
	// SteeringTTL is the TTL of the content steering manifest [10s].
	SteeringTTL time.Duration
	// Prefix is the path the handler is mounted under ["/dispatch/"].
	Prefix string
	// Tokens signs the session token each answer gives the player for
	// POST /qos (see [QoSHandler]); nil gives none.
	Tokens *authkey.SessionKey
	// TokenTTL is how long a session token is accepted [6h].
	TokenTTL time.Duration
	// CORSOrigins are the page origins allowed to call the dispatcher from
	// a browser ("*" for any; scheme://host[:port] each) [none: same
	// origin only].
	CORSOrigins []string
	// Now is the clock [time.Now].
	Now    func() time.Time
	Logger *slog.Logger
}

// Dispatcher is the public dispatch handler:
//
//	GET {prefix}{app}/{name}.flv         302 to a signed vendor FLV URL
//	GET {prefix}{app}/{name}/index.m3u8  302 to a signed vendor HLS URL
//	... ?format=json                     200 {"stream", "ttl", "qos_token", "candidates": [{"vendor", "url", "qos_token"}]}
//	GET {prefix}fallback.json            vendors, static ratios, domains, version
//	GET {prefix}{app}/{name}/steered.m3u8, .../steering.json  HLS Content Steering (steering.go)
//	OPTIONS ...                          CORS preflight (DispatcherConfig.CORSOrigins)
//
// Each answer opens a player session: with Tokens set, the 302 target
// carries the session token as its qos_token query parameter, and the JSON
// answer gives one per candidate (same session, that candidate's vendor),
// the chosen one's also at the top. The token names the stream, vendor and
// the client's region and ISP as located here; the player sends it with
// each beacon, and /qos takes all of those from it.
//
// The JSON candidates are the chosen vendor first, then the other live
// vendors of the bucket by score, so an SDK can fail over by itself. Unknown
// streams get 404; a bucket with no live vendor gets 503.
type Dispatcher struct {
	cfg     DispatcherConfig
	media   http.Handler // the origin's handler, for steered playlists; set before serving
	cors    corsPolicy
	log     *slog.Logger
	bufs    sync.Pool
	ttlSecs []byte

	// Read-only header values shared by all responses.
	hdrNoStore, hdrJSON, hdrMaxAge, hdrFallbackAge []string

	dispatched, notFound, unavailable atomic.Uint64
}

// DispatchStats counts answers since start.
type DispatchStats struct {
	Dispatched, NotFound, Unavailable uint64
}

// NewDispatcher checks cfg and returns the handler.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Allocator == nil {
		return nil, errors.New("dispatcher: allocator is required")
	}
	if cfg.TTL < 0 || cfg.SignTTL < 0 || cfg.TokenTTL < 0 {
		return nil, errors.New("dispatcher: ttl, sign_ttl and token_ttl must not be negative")
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 6 * time.Hour
	}
	if cfg.TTL == 0 {
		cfg.TTL = 20 * time.Second
	}
	if cfg.SignTTL == 0 {
		cfg.SignTTL = time.Hour
	}
	if cfg.SteeringTTL <= 0 {
		cfg.SteeringTTL = 10 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/dispatch/"
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, errors.New("dispatcher: prefix must start and end with '/'")
	}
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, errors.New("dispatcher: invalid trusted proxy prefix")
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cors, err := newCORSPolicy(cfg.CORSOrigins)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	secs := strconv.Itoa(int(cfg.TTL / time.Second))
	d := &Dispatcher{
		cfg:            cfg,
		cors:           cors,
		log:            cfg.Logger.With("unit", "cdnmix"),
		ttlSecs:        []byte(secs),
		hdrNoStore:     []string{"no-store"},
		hdrJSON:        []string{"application/json"},
		hdrMaxAge:      []string{"max-age=" + secs},
		hdrFallbackAge: []string{"max-age=60"},
	}
	d.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	d.cfg.TrustedProxies = make([]netip.Prefix, len(cfg.TrustedProxies))
	for i, p := range cfg.TrustedProxies {
		d.cfg.TrustedProxies[i] = p.Masked()
	}
	return d, nil
}

// Stats returns the answer counters.
func (d *Dispatcher) Stats() DispatchStats {
	return DispatchStats{d.dispatched.Load(), d.notFound.Load(), d.unavailable.Load()}
}

// ServeHTTP implements http.Handler.
func (d *Dispatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		d.cors.preflight(w, r, "GET, HEAD, OPTIONS", "")
		return
	}
	d.cors.allow(w.Header(), r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, d.cfg.Prefix)
	if !ok {
		d.notFound.Add(1)
		http.NotFound(w, r)
		return
	}
	if p == "fallback.json" {
		d.serveFallback(w, r)
		return
	}
	if d.serveSteering(w, r, p) {
		return
	}
	app, name, format, ok := parseDispatchPath(p)
	if !ok || d.cfg.StreamExists != nil && !d.cfg.StreamExists(app, name) {
		d.notFound.Add(1)
		http.NotFound(w, r)
		return
	}

	var bucket Bucket // where the client is, as located (the token says so)
	if d.cfg.Locator != nil {
		if client := d.clientAddr(r); client.IsValid() {
			if loc, ok := d.cfg.Locator.Locate(client); ok {
				bucket = Bucket{loc.Region, loc.ISP}
			}
		}
	}
	plan := d.cfg.Allocator.Plan()
	bp := plan.Lookup(bucket)
	chosen := -1
	if bp != nil {
		chosen = bp.pick(1)
	}
	if chosen < 0 {
		d.unavailable.Add(1)
		d.log.Debug("no vendor", "stream", app+"/"+name, "bucket", bucket.String())
		w.Header()["Retry-After"] = []string{"5"}
		http.Error(w, "no CDN vendor available", http.StatusServiceUnavailable)
		return
	}
	d.dispatched.Add(1)
	now := d.cfg.Now()
	exp := now.Add(d.cfg.SignTTL)
	vendors := plan.vendors.list
	h := w.Header()
	sess := d.session(app, name, bucket)

	if !wantsJSON(r.URL.RawQuery) {
		loc := signedURL(vendors[chosen], format, app, name, exp)
		if tok := d.token(sess, vendors[chosen].Name); tok != "" {
			sep := "?"
			if strings.IndexByte(loc, '?') >= 0 {
				sep = "&"
			}
			loc += sep + "qos_token=" + tok
		}
		h["Location"] = []string{loc}
		h["Cache-Control"] = d.hdrNoStore
		w.WriteHeader(http.StatusFound)
		return
	}

	bufp := d.bufs.Get().(*[]byte)
	b := (*bufp)[:0]
	// app and name passed validName: nothing to escape.
	b = append(b, `{"stream":"`...)
	b = append(b, app...)
	b = append(b, '/')
	b = append(b, name...)
	b = append(b, `","ttl":`...)
	b = append(b, d.ttlSecs...)
	tok := d.token(sess, vendors[chosen].Name)
	if tok != "" {
		b = append(b, `,"qos_token":`...)
		b = appendJSONString(b, tok)
	}
	b = append(b, `,"candidates":[`...)
	b = appendCandidate(b, vendors[chosen], format, app, name, exp, tok)
	for _, c := range bp.Live() {
		if c.index != chosen {
			b = append(b, ',')
			b = appendCandidate(b, vendors[c.index], format, app, name, exp, d.token(sess, vendors[c.index].Name))
		}
	}
	b = append(b, "]}\n"...)
	h["Content-Type"] = d.hdrJSON
	h["Cache-Control"] = d.hdrMaxAge
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	*bufp = b
	d.bufs.Put(bufp)
}

func appendCandidate(b []byte, v *compiledVendor, f Format, app, name string, exp time.Time, token string) []byte {
	b = append(b, `{"vendor":`...)
	b = appendJSONString(b, v.Name)
	b = append(b, `,"url":`...)
	b = appendJSONString(b, signedURL(v, f, app, name, exp))
	if token != "" {
		b = append(b, `,"qos_token":`...)
		b = appendJSONString(b, token)
	}
	return append(b, '}')
}

// token signs sess for vendor, or returns "" without a key, or when the
// session does not fit in a token (a region or ISP name from the IP
// database over authkey.MaxSessionField: then it is signed without them).
func (d *Dispatcher) token(sess authkey.Session, vendor string) string {
	if d.cfg.Tokens == nil {
		return ""
	}
	sess.Vendor = vendor
	tok, err := d.cfg.Tokens.Sign(sess)
	if err != nil {
		sess.Region, sess.ISP = "", ""
		if tok, err = d.cfg.Tokens.Sign(sess); err != nil {
			d.log.Warn("no qos token", "stream", sess.Stream, "vendor", vendor, "err", err)
			return ""
		}
	}
	return tok
}

func signedURL(v *compiledVendor, f Format, app, name string, exp time.Time) string {
	prefix := v.flvPrefix
	if f == FormatHLS {
		prefix = v.hlsPrefix
	}
	raw := prefix + streamSuffix(f, app, name)
	if v.Signing != SchemeAuthKey && v.Signing != SchemeHMAC {
		return raw
	}
	return SignURL(v.Signing, v.Key, raw, exp, strconv.FormatUint(rand.Uint64(), 36))
}

func (d *Dispatcher) serveFallback(w http.ResponseWriter, r *http.Request) {
	vs := d.cfg.Allocator.Plan().vendors
	etag := `"` + strconv.FormatUint(vs.version, 10) + `"`
	h := w.Header()
	h["Etag"] = []string{etag}
	h["Cache-Control"] = d.hdrFallbackAge
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = d.hdrJSON
	w.WriteHeader(http.StatusOK)
	w.Write(vs.fallback)
}

// parseDispatchPath parses "app/name.flv" or "app/name/index.m3u8".
func parseDispatchPath(p string) (app, name string, f Format, ok bool) {
	app, rest, ok := strings.Cut(p, "/")
	if !ok || !validName(app) {
		return "", "", 0, false
	}
	if n, cut := strings.CutSuffix(rest, "/index.m3u8"); cut {
		name, f = n, FormatHLS
	} else if n, cut := strings.CutSuffix(rest, ".flv"); cut {
		name, f = n, FormatFLV
	} else {
		return "", "", 0, false
	}
	if !validName(name) {
		return "", "", 0, false
	}
	return app, name, f, true
}

// wantsJSON reports whether the raw query has format=json.
func wantsJSON(q string) bool {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if kv == "format=json" {
			return true
		}
	}
	return false
}

// clientAddr returns the client address: the connection's, or, when the
// connection comes from a trusted proxy, the rightmost X-Forwarded-For
// hop that is not itself trusted. A malformed hop ends the walk at the
// last good one to its right.
func (d *Dispatcher) clientAddr(r *http.Request) netip.Addr {
	return clientAddr(r, d.cfg.TrustedProxies)
}

// clientAddr implements Dispatcher.clientAddr for any list of trusted
// (masked) prefixes.
func clientAddr(r *http.Request, trustedProxies []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if len(trustedProxies) == 0 || !trusted(trustedProxies, addr) {
		return addr
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		list := xff[i]
		for list != "" {
			hop := list
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				hop, list = list[j+1:], list[:j]
			} else {
				list = ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil {
				return addr
			}
			addr = a.Unmap()
			if !trusted(trustedProxies, addr) {
				return addr
			}
		}
	}
	return addr
}

func trusted(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
