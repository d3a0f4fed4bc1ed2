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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// maxBeaconBatch is the most beacons one POST /qos may carry.
const maxBeaconBatch = 100

// ParseBeacons decodes a POST /qos body: one beacon object or an array of
// up to 100, each checked (session, vendor, event, ranges). Unknown fields
// are ignored.
func ParseBeacons(b []byte) ([]bus.Beacon, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("beacon: empty body: %w", ErrMalformed)
	}
	var out []bus.Beacon
	if b[0] == '[' {
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, fmt.Errorf("beacon: %v: %w", err, ErrMalformed)
		}
		if len(out) == 0 || len(out) > maxBeaconBatch {
			return nil, fmt.Errorf("beacon: batch of %d (1-%d): %w", len(out), maxBeaconBatch, ErrMalformed)
		}
	} else {
		var one bus.Beacon
		if err := json.Unmarshal(b, &one); err != nil {
			return nil, fmt.Errorf("beacon: %v: %w", err, ErrMalformed)
		}
		out = []bus.Beacon{one}
	}
	for i := range out {
		if err := checkBeacon(out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DecodeCDNLog decodes and checks one cdn.logs message.
func DecodeCDNLog(b []byte) (bus.CDNLog, error) {
	var l bus.CDNLog
	if err := json.Unmarshal(b, &l); err != nil {
		return bus.CDNLog{}, fmt.Errorf("log line: %v: %w", err, ErrMalformed)
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

// QoSConfig configures a QoSHandler.
type QoSConfig struct {
	// Publisher receives the beacons, on qos.beacons (required).
	Publisher bus.Publisher
	// Locator sets region and ISP from the client address; without one
	// the player's own values are kept.
	Locator Locator
	// TrustedProxies may set X-Forwarded-For, as for the dispatcher.
	TrustedProxies []netip.Prefix
	// MaxBody bounds a request body [64 KiB].
	MaxBody int64
	// Now is the clock [time.Now].
	Now    func() time.Time
	Logger *slog.Logger
}

// QoSHandler is POST /qos: players post beacons (one JSON object or an
// array), which are stamped with the server's time and the client's
// address and location and published on qos.beacons. It answers 204, 400
// for a malformed body (counted) and 413 for one too large. OPTIONS
// answers a CORS preflight, so web players on other origins can post.
type QoSHandler struct {
	cfg                QoSConfig
	log                *slog.Logger
	accepted, rejected atomic.Int64
}

// NewQoSHandler checks cfg.
func NewQoSHandler(cfg QoSConfig) (*QoSHandler, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("qos: publisher is required")
	}
	if cfg.MaxBody < 0 {
		return nil, errors.New("qos: max_body must not be negative")
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 10
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
	return &QoSHandler{cfg: cfg, log: cfg.Logger.With("unit", "cdnmix")}, nil
}

// Counts returns the beacons accepted and the requests rejected.
func (h *QoSHandler) Counts() (accepted, rejected int64) { return h.accepted.Load(), h.rejected.Load() }

// ServeHTTP implements http.Handler.
func (h *QoSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		hdr.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		hdr.Set("Access-Control-Allow-Headers", "Content-Type")
		hdr.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		hdr.Set("Allow", "POST, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBody+1))
	if err != nil {
		h.rejected.Add(1)
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if int64(len(body)) > h.cfg.MaxBody {
		h.rejected.Add(1)
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	beacons, err := ParseBeacons(body)
	if err != nil {
		h.rejected.Add(1)
		h.log.Debug("bad beacon", "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := h.cfg.Now().UTC()
	client := clientAddr(r, h.cfg.TrustedProxies)
	var loc Location
	located := false
	if h.cfg.Locator != nil && client.IsValid() {
		loc, located = h.cfg.Locator.Locate(client)
	}
	for _, b := range beacons {
		b.Time = now
		if client.IsValid() {
			b.Client = client.String()
		}
		if h.cfg.Locator != nil {
			b.Region, b.ISP = "", ""
			if located {
				b.Region, b.ISP = loc.Region, loc.ISP
			}
		}
		if err := bus.Emit(h.cfg.Publisher, b); err != nil {
			h.log.Warn("beacon dropped", "err", err)
			continue
		}
		h.accepted.Add(1)
	}
	w.WriteHeader(http.StatusNoContent)
}
