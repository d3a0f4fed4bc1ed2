package lms

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/lms/api"
)

// The console's view shaping that needs no media or CDN type: its config,
// the thresholds that colour a card, the rounding of figures to what a
// card shows, and the holding of a feed's figures between refreshes. The
// node wiring reads origin and the CDN mixer and shapes the views with
// these.

// ConsoleConfig is the console section of livefuse.yaml: the war-room
// page at / and /console/ on the control API listener (loopback unless
// lms.api_addr says otherwise) and its push channel, /api/v1/events.
type ConsoleConfig struct {
	// Enabled serves the page and the event stream (default true).
	Enabled bool `yaml:"enabled"`
	// Thresholds colour the feed cards: red under min_fps or
	// min_bitrate_kbps.
	Thresholds api.ConsoleThresholds `yaml:"thresholds"`
	// UnitReportPeriod is how often every unit writes its switchers'
	// state to the store, which is how a console sees the other units
	// (its own unit it reads directly). Shorter shows other units'
	// changes sooner and writes more to etcd: about 0.5 KB per live stream
	// and report, kept for the store's hour of history (at 200 streams,
	// 2 s is about 0.2 GB an hour per unit; 500 ms, which brings other
	// units' cards under 1 s, four times that).
	UnitReportPeriod time.Duration `yaml:"unit_report_period"`
	// The push channel's bounds: max_clients, tick, heartbeat,
	// write_timeout.
	EventsConfig `yaml:",inline"`
}

// DefaultConsoleConfig returns the defaults: enabled, cards red under
// 15 fps or 300 kbit/s, units reporting every 2 s, DefaultEventsConfig.
func DefaultConsoleConfig() ConsoleConfig {
	return ConsoleConfig{Enabled: true, Thresholds: api.ConsoleThresholds{MinFPS: 15, MinBitrateKbps: 300},
		UnitReportPeriod: 2 * time.Second, EventsConfig: DefaultEventsConfig()}
}

// Validate checks the section.
func (c ConsoleConfig) Validate() error {
	if err := c.EventsConfig.Validate(); err != nil {
		return err
	}
	if c.UnitReportPeriod < 100*time.Millisecond || c.UnitReportPeriod > time.Minute {
		return fmt.Errorf("unit_report_period %s: want 100ms to 1m", c.UnitReportPeriod)
	}
	t := c.Thresholds
	if t.MinFPS < 0 || t.MinBitrateKbps < 0 || math.IsNaN(t.MinFPS) || math.IsNaN(t.MinBitrateKbps) {
		return fmt.Errorf("thresholds must not be negative")
	}
	return nil
}

// CardThresholds is what colours a card: the first enabled rule of each
// ingest kind that covers every stream (so a card turns red where the
// alert would fire), else t, the console's own config.
func CardThresholds(t api.ConsoleThresholds, rules []api.AlertRule) api.ConsoleThresholds {
	var fps, kbps bool
	for _, r := range rules {
		if r.Disabled || r.Stream != "" {
			continue
		}
		switch {
		case r.Kind == api.AlertIngestFPS && !fps:
			t.MinFPS, fps = r.Threshold, true
		case r.Kind == api.AlertIngestBitrate && !kbps:
			t.MinBitrateKbps, kbps = r.Threshold, true
		}
	}
	return t
}

// shownFigures are a feed's figures as the console last showed them.
type shownFigures struct {
	state        string
	fps, kbps    float64
	at           time.Time
	seenAtSample int64
}

// figuresRefresh is how often a feed's figures are refreshed on its card.
const figuresRefresh = time.Second

// FeedFigures holds each feed's figures as last shown, refreshed once a
// second: a window's rates move a little on every sample, and 200 streams
// would otherwise all change on every tick. A change of state shows at
// once. One goroutine (the sampler's) uses it: Begin a sample, Hold each
// feed, then Sweep.
type FeedFigures struct {
	shown  map[string]shownFigures
	sample int64
}

// Begin starts a sample.
func (h *FeedFigures) Begin() { h.sample++ }

// Sweep forgets the feeds not seen since Begin (they are gone).
func (h *FeedFigures) Sweep() {
	for k, f := range h.shown {
		if f.seenAtSample != h.sample {
			delete(h.shown, k)
		}
	}
}

// Hold keeps f's figures as last shown while its state is the same and
// they are younger than figuresRefresh. First sightings are spread over
// the second by key, so that streams refresh on different ticks.
func (h *FeedFigures) Hold(stream string, f *api.FeedStatus) {
	now := time.Now()
	if h.shown == nil {
		h.shown = map[string]shownFigures{}
	}
	key := stream + "|" + f.Feed
	old, ok := h.shown[key]
	if ok && old.state == f.State && now.Sub(old.at) < figuresRefresh {
		f.FPS, f.BitrateKbps = old.fps, old.kbps
		old.seenAtSample = h.sample
		h.shown[key] = old
		return
	}
	at := now
	if !ok {
		var x uint32
		for i := 0; i < len(key); i++ {
			x = x*31 + uint32(key[i])
		}
		at = now.Add(-time.Duration(x%1000) * time.Millisecond)
	}
	h.shown[key] = shownFigures{state: f.State, fps: f.FPS, kbps: f.BitrateKbps, at: at, seenAtSample: h.sample}
}

// RoundUnit rounds the figures to what a card shows (frame rate to
// whole frames, tenths under 10; bitrate to whole kbit/s and three
// significant digits; RTT to milliseconds; the last packet's age to whole
// seconds, 0 under one), so that the view changes when a card would, not
// on every sample: with 200 streams some figure moves on every tick
// otherwise, and the whole view goes out four times a second.
func RoundUnit(u UnitStatus) UnitStatus {
	feeds := make([]api.FeedStatus, len(u.Feeds))
	for i, f := range u.Feeds {
		if f.FPS >= 10 {
			f.FPS = math.Round(f.FPS)
		} else {
			f.FPS = math.Round(f.FPS*10) / 10
		}
		f.BitrateKbps = roundSig(math.Round(f.BitrateKbps), 3)
		f.RTTMillis = math.Round(f.RTTMillis)
		f.LastPacketAgeMillis = f.LastPacketAgeMillis / 1000 * 1000
		feeds[i] = f
	}
	u.Feeds = feeds
	return u
}

// roundSig rounds v to n significant digits.
func roundSig(v float64, n int) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	p := math.Pow(10, float64(n)-math.Ceil(math.Log10(math.Abs(v))))
	return math.Round(v*p) / p
}

// Round2 rounds f to hundredths, as the CDN view shows rates.
func Round2(f float64) float64 { return math.Round(f*100) / 100 }

// consoleAuditKeep is how many recent audit entries the audit view pushes.
const consoleAuditKeep = 50

// RecentAudit keeps this node's newest audit entries for the console's
// audit view, taken from the audit events on their way to the bus.
type RecentAudit struct {
	mu      sync.Mutex
	entries []api.AuditEntry // newest first
}

// Observe records the entry carried by value when topic is the audit
// topic; anything else, or an event it cannot read, is ignored.
func (r *RecentAudit) Observe(topic string, value []byte) {
	if topic != bus.TopicAudit {
		return
	}
	var ev bus.AuditEvent
	var e api.AuditEntry
	if json.Unmarshal(value, &ev) == nil && json.Unmarshal(ev.Detail, &e) == nil {
		r.mu.Lock()
		r.entries = append([]api.AuditEntry{e}, r.entries[:min(len(r.entries), consoleAuditKeep-1)]...)
		r.mu.Unlock()
	}
}

// View is the audit view: the latest entries, newest first.
func (r *RecentAudit) View() api.ConsoleAudit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return api.ConsoleAudit{Entries: slices.Clone(r.entries)}
}

// MaxConsoleRows bounds the streams, CDN shares and audience views.
const MaxConsoleRows = 2000

// AudienceView shapes the audience view from one row per province × ISP
// × vendor with users (StallRate as measured; ZeroStallRate is filled
// here): rates to four decimals, worst first, at most MaxConsoleRows.
func AudienceView(rows []api.AudienceRow) api.ConsoleAudience {
	for i := range rows {
		r := &rows[i]
		r.ZeroStallRate = math.Round((1-r.StallRate)*10000) / 10000
		r.StallRate = math.Round(r.StallRate*10000) / 10000
	}
	slices.SortFunc(rows, func(a, b api.AudienceRow) int {
		return cmp.Or(cmp.Compare(b.StallRate, a.StallRate), cmp.Compare(b.Users, a.Users),
			cmp.Compare(a.Region, b.Region), cmp.Compare(a.ISP, b.ISP), cmp.Compare(a.Vendor, b.Vendor))
	})
	if len(rows) > MaxConsoleRows {
		rows = rows[:MaxConsoleRows]
	}
	return api.ConsoleAudience{Rows: rows}
}

// UnitReports keeps the units' reports (Registry.Units) for the streams
// view: the sampler asks for a refresh and reads the last reports at
// once, and Run reads the store on its own goroutine, so that a slow
// store never holds the view.
type UnitReports struct {
	reg *Registry
	log *slog.Logger
	ask chan struct{}
	at  time.Time // Latest's caller only

	mu    sync.Mutex
	units map[string][]UnitStatus
}

// NewUnitReports returns the reports of reg's units; Run reads them.
func NewUnitReports(reg *Registry, log *slog.Logger) *UnitReports {
	return &UnitReports{reg: reg, log: log, ask: make(chan struct{}, 1)}
}

// Run reads the units' reports each time Latest asks, until ctx ends.
func (u *UnitReports) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.ask:
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		units, err := u.reg.Units(rctx)
		cancel()
		if err != nil {
			u.log.Debug("console: unit reports unavailable", "err", err)
			continue
		}
		u.mu.Lock()
		u.units = units
		u.mu.Unlock()
	}
}

// Latest returns the reports last read, by stream, and asks Run for
// fresh ones when it last asked longer than every ago. One goroutine (the
// sampler's) calls it.
func (u *UnitReports) Latest(every time.Duration) map[string][]UnitStatus {
	if now := time.Now(); now.Sub(u.at) >= every {
		u.at = now
		select {
		case u.ask <- struct{}{}:
		default:
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.units
}
