package lms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/lms/api"
)

// Alerts is the alert engine: rules with numeric thresholds (config
// alerts.rules, GET/PUT /api/v1/alerts/rules) evaluated every
// alerts.interval against what the node observes, read through the small
// interfaces of AlertSources (the wiring implements them over origin,
// cdnmix, recording and transcode; lms imports none of them).
//
// Each rule yields observations: one per feed, stream, vendor × region ×
// ISP, unit or dependency, each with labels, a value and whether the
// condition holds. A condition that holds for the rule's for_s fires an
// alert; one that stops holding (or whose subject is gone) resolves it.
// Every transition is published on the bus (topic alerts, the JSON of
// api.Alert), queued for the webhooks unless a silence matches, and kept
// in memory: the firing alerts and the last alerts.history resolved ones.
//
// Evaluation runs on its own goroutine and reads snapshots the sources
// give (no media lock is held across it); sources that need the network
// (the store, the node registry, brokers) are probed on another goroutine
// every alerts.probe_interval and their last answer is what evaluation
// reads, so a slow store never delays it. Webhooks are sent from bounded
// queues by one goroutine per webhook: a slow receiver drops its own
// oldest work, never blocks evaluation.
type Alerts struct {
	cfg   AlertsConfig
	src   AlertSources
	log   *slog.Logger
	now   func() time.Time
	pub   atomic.Pointer[bus.Publisher]
	hooks []*webhook
	m     *alertMetrics

	probes atomic.Pointer[probeResults]

	mu       sync.Mutex
	rules    []api.AlertRule
	states   map[stateKey]*alertState
	history  []api.Alert // resolved, oldest first, at most cfg.History
	silences []api.Silence
	switches map[feedKey]switchSeen      // by stream and unit (feed "")
	restarts map[string]*restartSeen     // by stream
	wasLive  map[feedKey]bool            // feeds seen live
	store    *Collection[api.AlertRules] // rules set through the API (nil: memory only)
	evalGen  uint64
}

// AlertsTopic is the bus topic of alert transitions.
const AlertsTopic = "alerts"

// AlertsConfig is config section alerts. Every field has a default.
type AlertsConfig struct {
	// Interval is how often the rules are evaluated (default 500ms, at
	// least 100ms).
	Interval time.Duration `yaml:"interval"`
	// ProbeInterval is how often the sources that need the network are
	// read: the store (etcd), the node registry (unit_lost), the bus
	// brokers (Kafka), the recording store (S3). Default 2s.
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// History is how many resolved alerts are kept (default 500).
	History int `yaml:"history"`
	// Rules replace the default rule set (DefaultAlertRules) when given.
	Rules []api.AlertRule `yaml:"rules"`
	// Webhooks get every firing and resolved alert that no silence
	// matches: a POST with the alert's JSON, signed with the webhook's
	// secret (header X-Livefuse-Signature: sha256=<hex HMAC-SHA256 of the
	// body>), retried with backoff.
	Webhooks []AlertWebhook `yaml:"webhooks"`
	// WebhookQueue bounds each webhook's queue (default 256): when full,
	// the oldest waiting alert is dropped and counted.
	WebhookQueue int `yaml:"webhook_queue"`
	// WebhookRetries is how many times a failed delivery is retried
	// (default 5; backoff 500ms doubling up to 30s).
	WebhookRetries int `yaml:"webhook_retries"`
	// WebhookTimeout bounds one delivery attempt (default 5s).
	WebhookTimeout time.Duration `yaml:"webhook_timeout"`
}

// AlertWebhook is one webhook receiver. Secret is never logged.
type AlertWebhook struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
}

// DefaultAlertsConfig returns the defaults (rules: DefaultAlertRules).
func DefaultAlertsConfig() AlertsConfig {
	return AlertsConfig{Interval: 500 * time.Millisecond, ProbeInterval: 2 * time.Second, History: 500,
		Rules: DefaultAlertRules(), WebhookQueue: 256, WebhookRetries: 5, WebhookTimeout: 5 * time.Second}
}

// DefaultAlertRules is the rule set shipped: the war room's figures with
// thresholds for a 25-30 fps, 2 s GOP contribution feed.
func DefaultAlertRules() []api.AlertRule {
	return []api.AlertRule{
		{Name: "ingest-fps-low", Kind: api.AlertIngestFPS, Threshold: 15, ForSeconds: 5, Severity: api.SeverityWarning},
		{Name: "ingest-bitrate-low", Kind: api.AlertIngestBitrate, Threshold: 300, ForSeconds: 10, Severity: api.SeverityWarning},
		{Name: "keyframe-interval-high", Kind: api.AlertKeyframeInterval, Threshold: 5000, ForSeconds: 10, Severity: api.SeverityWarning},
		{Name: "feed-lost", Kind: api.AlertFeedLost, ForSeconds: 2, Severity: api.SeverityCritical},
		{Name: "no-hot-backup", Kind: api.AlertSingleFeed, ForSeconds: 60, Severity: api.SeverityWarning},
		{Name: "feed-switched", Kind: api.AlertSwitch, ForSeconds: 60, Severity: api.SeverityWarning},
		{Name: "stall-rate-high", Kind: api.AlertStallRate, Threshold: 5, ForSeconds: 120, MinUsers: 20, Severity: api.SeverityCritical},
		{Name: "vendor-near-ceiling", Kind: api.AlertVendorCeiling, Threshold: 90, ForSeconds: 60, Severity: api.SeverityWarning},
		{Name: "recording-spool-high", Kind: api.AlertSpool, Threshold: 80, ForSeconds: 30, Severity: api.SeverityWarning},
		{Name: "transcode-restarts", Kind: api.AlertTranscodeRestarts, Threshold: 2, ForSeconds: 300, Severity: api.SeverityWarning},
		{Name: "unit-lost", Kind: api.AlertUnitLost, ForSeconds: 10, Severity: api.SeverityCritical},
		{Name: "etcd-unreachable", Kind: api.AlertEtcd, ForSeconds: 10, Severity: api.SeverityCritical},
		{Name: "kafka-unreachable", Kind: api.AlertKafka, ForSeconds: 30, Severity: api.SeverityWarning},
		{Name: "s3-unreachable", Kind: api.AlertS3, ForSeconds: 60, Severity: api.SeverityWarning},
	}
}

// withDefaults fills zero fields and checks the rest.
func (c AlertsConfig) withDefaults() (AlertsConfig, error) {
	d := DefaultAlertsConfig()
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = d.ProbeInterval
	}
	if c.History <= 0 {
		c.History = d.History
	}
	if c.Rules == nil {
		c.Rules = d.Rules
	}
	if c.WebhookQueue <= 0 {
		c.WebhookQueue = d.WebhookQueue
	}
	if c.WebhookRetries < 0 {
		c.WebhookRetries = 0
	} else if c.WebhookRetries == 0 {
		c.WebhookRetries = d.WebhookRetries
	}
	if c.WebhookTimeout <= 0 {
		c.WebhookTimeout = d.WebhookTimeout
	}
	switch {
	case c.Interval < 100*time.Millisecond:
		return c, fmt.Errorf("alerts: interval %s: at least 100ms", c.Interval)
	case c.History > 100000:
		return c, errors.New("alerts: history: at most 100000")
	case c.WebhookQueue > 100000:
		return c, errors.New("alerts: webhook_queue: at most 100000")
	case c.WebhookRetries > 20:
		return c, errors.New("alerts: webhook_retries: at most 20")
	case len(c.Webhooks) > 16:
		return c, errors.New("alerts: at most 16 webhooks")
	}
	if err := api.ValidateAlertRules(c.Rules); err != nil {
		return c, fmt.Errorf("alerts: %w", err)
	}
	for i, w := range c.Webhooks {
		if err := validateWebhook(w); err != nil {
			return c, fmt.Errorf("alerts: webhooks[%d]: %w", i, err)
		}
	}
	return c, nil
}

// Validate checks c as NewAlerts does.
func (c AlertsConfig) Validate() error {
	_, err := c.withDefaults()
	return err
}

// StreamHealth is one stream's switcher at this unit, for the alert
// engine: its feeds (api.FeedStatus: state, fps, bitrate, keyframe
// interval...) and its switch count.
type StreamHealth struct {
	Stream     string // app/name
	Unit       string
	Feeds      []api.FeedStatus
	Switches   int64
	LastReason string
}

// QualityStat is one vendor × region × ISP's one-minute audience figures.
type QualityStat struct {
	Vendor, Region, ISP string
	Users               int
	StallRate           float64 // stalled users / users, 0..1
}

// VendorLoad is a vendor's bandwidth against its ceiling (Region empty:
// the vendor overall).
type VendorLoad struct {
	Vendor, Region string
	Mbps           float64
	CeilingMbps    float64
}

// The sources the alert engine reads; each is declared here, by its
// consumer, and implemented by the node wiring.
type (
	// StreamHealthSource gives the streams live at this unit.
	StreamHealthSource interface{ StreamHealth() []StreamHealth }
	// QualitySource gives the one-minute stall rates (cdnmix aggregates).
	QualitySource interface{ Quality() []QualityStat }
	// VendorLoadSource gives the vendors' bandwidth and ceilings.
	VendorLoadSource interface{ VendorLoad() []VendorLoad }
	// SpoolSource gives the recording spool's use and bound in bytes.
	SpoolSource interface{ Spool() (used, max int64) }
	// RestartSource gives each stream's transcode restarts so far.
	RestartSource interface{ TranscodeRestarts() map[string]int64 }
	// UnitSource gives the units expected and those with a live node.
	UnitSource interface {
		Units(ctx context.Context) (expected, alive []string, err error)
	}
)

// AlertProbe checks one dependency (kind: api.AlertEtcd, AlertKafka or
// AlertS3); Check returns nil when it is reachable.
type AlertProbe struct {
	Kind  string
	Check func(ctx context.Context) error
}

// AlertSources is what the engine reads; nil sources are skipped (the
// rules of their kinds never fire).
type AlertSources struct {
	Unit     string // this unit, for labels
	Streams  StreamHealthSource
	Quality  QualitySource
	Vendors  VendorLoadSource
	Spool    SpoolSource
	Restarts RestartSource
	Units    UnitSource
	Probes   []AlertProbe
}

// probeResults is the last answer of the slow sources.
type probeResults struct {
	at        time.Time
	expected  []string
	alive     map[string]bool
	unitsOK   bool
	failed    map[string]string // probe kind → error text
	haveProbe map[string]bool
}

// alertState is one rule × labels whose condition holds (pending) or
// whose alert fires.
type alertState struct {
	since  time.Time // condition true since
	firing bool
	alert  api.Alert
	gen    uint64 // last evaluation that saw it
}

type switchSeen struct {
	count int64
	at    time.Time // last increase (zero: none seen)
	gen   uint64
}

type restartSeen struct {
	last   int64
	events []time.Time // one per restart counted, bounded
	gen    uint64
}

const maxRestartEvents = 256

// maxAlertStates bounds the pending and firing states (a rule over every
// feed of every stream is bounded by the streams a node serves; this is
// the backstop).
const maxAlertStates = 20000

// NewAlerts builds the engine. Call Run to evaluate.
func NewAlerts(cfg AlertsConfig, src AlertSources, log *slog.Logger) (*Alerts, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Alerts{cfg: cfg, src: src, log: log, now: time.Now, m: newAlertMetrics(),
		rules: slices.Clone(cfg.Rules), states: map[stateKey]*alertState{},
		switches: map[feedKey]switchSeen{}, restarts: map[string]*restartSeen{}, wasLive: map[feedKey]bool{}}
	for _, w := range cfg.Webhooks {
		a.hooks = append(a.hooks, newWebhook(w, cfg, a.m, log))
	}
	return a, nil
}

// SetPublisher publishes every transition on the bus (topic alerts).
func (a *Alerts) SetPublisher(p bus.Publisher) {
	if p != nil {
		a.pub.Store(&p)
	}
}

// Run evaluates the rules every interval, probes the slow sources and
// sends webhooks until ctx ends.
func (a *Alerts) Run(ctx context.Context) {
	defer a.closeStore()
	var wg sync.WaitGroup
	for _, h := range a.hooks {
		wg.Go(func() { h.run(ctx) })
	}
	wg.Go(func() { a.runProbes(ctx) })
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			a.Evaluate()
		}
	}
}

func (a *Alerts) runProbes(ctx context.Context) {
	a.Probe(ctx)
	t := time.NewTicker(a.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.Probe(ctx)
		}
	}
}

// Probe reads the slow sources once (each bounded by the probe interval).
func (a *Alerts) Probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(a.cfg.ProbeInterval, time.Second))
	defer cancel()
	res := &probeResults{at: a.now(), failed: map[string]string{}, haveProbe: map[string]bool{}}
	if a.src.Units != nil {
		exp, alive, err := a.src.Units.Units(ctx)
		if err == nil {
			res.unitsOK, res.expected, res.alive = true, exp, map[string]bool{}
			for _, u := range alive {
				res.alive[u] = true
			}
		}
	}
	for _, p := range a.src.Probes {
		res.haveProbe[p.Kind] = true
		if err := p.Check(ctx); err != nil {
			res.failed[p.Kind] = err.Error()
		}
	}
	a.probes.Store(res)
}

// observation is one subject of one rule at one evaluation.
type observation struct {
	labels  api.AlertLabels
	value   float64
	holds   bool
	summary func() string // built only for alerts that fire (evaluation stays cheap)
	now     bool          // fires at once when it holds (switch, restarts: for_s is their window)
}

// snapshot is what one evaluation reads from the sources.
type snapshot struct {
	streams  []StreamHealth
	quality  []QualityStat
	vendors  []VendorLoad
	spoolOK  bool
	spool    [2]int64
	restarts map[string]int64
	probes   *probeResults
}

func (a *Alerts) read(kinds map[string]bool) snapshot {
	var s snapshot
	need := func(ks ...string) bool {
		for _, k := range ks {
			if kinds[k] {
				return true
			}
		}
		return false
	}
	if a.src.Streams != nil && need(api.AlertIngestFPS, api.AlertIngestBitrate, api.AlertKeyframeInterval,
		api.AlertFeedLost, api.AlertSingleFeed, api.AlertSwitch) {
		s.streams = a.src.Streams.StreamHealth()
	}
	if a.src.Quality != nil && need(api.AlertStallRate) {
		s.quality = a.src.Quality.Quality()
	}
	if a.src.Vendors != nil && need(api.AlertVendorCeiling) {
		s.vendors = a.src.Vendors.VendorLoad()
	}
	if a.src.Spool != nil && need(api.AlertSpool) {
		s.spool[0], s.spool[1] = a.src.Spool.Spool()
		s.spoolOK = true
	}
	if a.src.Restarts != nil && need(api.AlertTranscodeRestarts) {
		s.restarts = a.src.Restarts.TranscodeRestarts()
	}
	s.probes = a.probes.Load()
	return s
}

// Evaluate runs every rule once.
func (a *Alerts) Evaluate() {
	start := time.Now()
	a.mu.Lock()
	kinds := map[string]bool{}
	for _, r := range a.rules {
		if !r.Disabled {
			kinds[r.Kind] = true
		}
	}
	a.mu.Unlock()
	snap := a.read(kinds) // outside the lock: sources take their own
	a.mu.Lock()
	now := a.now()
	a.evalGen++
	gen := a.evalGen
	a.track(snap, now, gen)
	var out []api.Alert
	for _, r := range a.rules {
		if r.Disabled {
			continue
		}
		a.observe(r, snap, now, func(o observation) {
			if al, changed := a.apply(r, o, now, gen); changed {
				out = append(out, al)
			}
		})
	}
	// Subjects not observed this time (a stream that ended, a rule that
	// saw nothing): their conditions no longer hold.
	for key, st := range a.states {
		if st.gen == gen {
			continue
		}
		if st.firing {
			out = append(out, a.resolveLocked(st, now))
		}
		delete(a.states, key)
	}
	a.mu.Unlock()
	for _, al := range out {
		a.notify(al)
	}
	a.m.evalSeconds.Store(uint64(time.Since(start).Nanoseconds()))
}

// track follows the counters that rules compare between evaluations:
// switches, restarts, feeds seen live. Entries of subjects gone are
// dropped.
func (a *Alerts) track(s snapshot, now time.Time, gen uint64) {
	for _, sh := range s.streams {
		k := feedKey{sh.Stream, sh.Unit, ""}
		sw, ok := a.switches[k]
		// The first switch (nothing shown → a feed) is the stream starting.
		if ok && sw.count > 0 && sh.Switches > sw.count {
			sw.at = now
		}
		sw.count, sw.gen = sh.Switches, gen
		a.switches[k] = sw
		for _, f := range sh.Feeds {
			fk := feedKey{sh.Stream, sh.Unit, f.Feed}
			if f.State == "live" {
				a.wasLive[fk] = true
			} else if f.State == "offline" && f.LastPacketAgeMillis == 0 {
				delete(a.wasLive, fk) // never published since the stream began
			}
		}
	}
	for k, sw := range a.switches {
		if sw.gen != gen {
			delete(a.switches, k)
		}
	}
	if len(a.wasLive) > 0 {
		for fk := range a.wasLive {
			if _, ok := a.switches[feedKey{fk.stream, fk.unit, ""}]; !ok {
				delete(a.wasLive, fk) // its stream is gone
			}
		}
	}
	if s.restarts != nil {
		for stream, n := range s.restarts {
			rs := a.restarts[stream]
			if rs == nil {
				rs = &restartSeen{last: n}
				a.restarts[stream] = rs
			}
			for i := rs.last; i < n && i-rs.last < maxRestartEvents; i++ {
				rs.events = append(rs.events, now)
			}
			if len(rs.events) > maxRestartEvents {
				rs.events = rs.events[len(rs.events)-maxRestartEvents:]
			}
			rs.last, rs.gen = n, gen
		}
		for k, rs := range a.restarts {
			if rs.gen != gen {
				delete(a.restarts, k)
			}
		}
	}
}

// observe returns rule r's observations in snapshot s.
func (a *Alerts) observe(r api.AlertRule, s snapshot, now time.Time, emit func(observation)) {
	feedRule := func(value func(f api.FeedStatus) (float64, bool), unit, what string, below bool) {
		for _, sh := range s.streams {
			if r.Stream != "" && r.Stream != sh.Stream {
				continue
			}
			for _, f := range sh.Feeds {
				if f.State != "live" && (!below || !a.wasLive[feedKey{sh.Stream, sh.Unit, f.Feed}]) {
					// A feed never live says nothing; one that was and is
					// lost now keeps an under-rule's alert firing (its
					// figures fall to 0) until it is back at rate or the
					// stream ends, so an encoder restart does not resolve
					// it.
					continue
				}
				v, ok := value(f)
				if !ok {
					continue
				}
				holds := v > r.Threshold
				cmp := "over"
				if below {
					holds, cmp = v < r.Threshold, "under"
				}
				emit(observation{labels: api.AlertLabels{Stream: sh.Stream, Feed: f.Feed, Unit: sh.Unit},
					value: v, holds: holds,
					summary: func() string {
						return fmt.Sprintf("%s %s at unit %s: %s %.4g %s, %s %.4g", sh.Stream, f.Feed, sh.Unit, what, v, unit, cmp, r.Threshold)
					}})
			}
		}
	}
	switch r.Kind {
	case api.AlertIngestFPS:
		feedRule(func(f api.FeedStatus) (float64, bool) { return f.FPS, true }, "fps", "frame rate", true)
	case api.AlertIngestBitrate:
		feedRule(func(f api.FeedStatus) (float64, bool) { return f.BitrateKbps, true }, "kbit/s", "bitrate", true)
	case api.AlertKeyframeInterval:
		feedRule(func(f api.FeedStatus) (float64, bool) {
			return f.KeyframeIntervalMillis, f.KeyframeIntervalMillis > 0
		}, "ms", "keyframe interval", false)
	case api.AlertFeedLost:
		for _, sh := range s.streams {
			if r.Stream != "" && r.Stream != sh.Stream {
				continue
			}
			for _, f := range sh.Feeds {
				if !a.wasLive[feedKey{sh.Stream, sh.Unit, f.Feed}] {
					continue
				}
				lost := f.State != "live"
				emit(observation{labels: api.AlertLabels{Stream: sh.Stream, Feed: f.Feed, Unit: sh.Unit},
					value: float64(f.LastPacketAgeMillis) / 1000, holds: lost,
					summary: func() string {
						return fmt.Sprintf("%s %s at unit %s lost (%s): no media for %.1f s", sh.Stream, f.Feed, sh.Unit, f.State,
							float64(f.LastPacketAgeMillis)/1000)
					}})
			}
		}
	case api.AlertSingleFeed:
		for _, sh := range s.streams {
			if r.Stream != "" && r.Stream != sh.Stream {
				continue
			}
			live, which := 0, ""
			for _, f := range sh.Feeds {
				if f.State == "live" {
					live++
					which = f.Feed
				}
			}
			emit(observation{labels: api.AlertLabels{Stream: sh.Stream, Unit: sh.Unit}, value: float64(live),
				holds: live == 1,
				summary: func() string {
					return fmt.Sprintf("%s at unit %s runs on one feed (%s): no hot backup", sh.Stream, sh.Unit, which)
				}})
		}
	case api.AlertSwitch:
		for _, sh := range s.streams {
			if r.Stream != "" && r.Stream != sh.Stream {
				continue
			}
			sw := a.switches[feedKey{sh.Stream, sh.Unit, ""}]
			holds := !sw.at.IsZero() && now.Sub(sw.at) < r.For()
			emit(observation{labels: api.AlertLabels{Stream: sh.Stream, Unit: sh.Unit}, value: float64(sh.Switches),
				holds: holds, now: true,
				summary: func() string { return fmt.Sprintf("%s at unit %s switched: %s", sh.Stream, sh.Unit, sh.LastReason) }})
		}
	case api.AlertStallRate:
		for _, q := range s.quality {
			if q.Users < max(r.MinUsers, 1) {
				continue
			}
			v := q.StallRate * 100
			emit(observation{labels: api.AlertLabels{Vendor: q.Vendor, Region: q.Region, ISP: q.ISP},
				value: v, holds: v > r.Threshold,
				summary: func() string {
					return fmt.Sprintf("vendor %s in %s/%s: one-minute stall rate %.1f%% of %d users, over %.4g%%",
						q.Vendor, orAny(q.Region), orAny(q.ISP), v, q.Users, r.Threshold)
				}})
		}
	case api.AlertVendorCeiling:
		for _, v := range s.vendors {
			if v.CeilingMbps <= 0 {
				continue
			}
			pct := v.Mbps / v.CeilingMbps * 100
			where := "overall"
			if v.Region != "" {
				where = "in " + v.Region
			}
			emit(observation{labels: api.AlertLabels{Vendor: v.Vendor, Region: v.Region}, value: pct,
				holds: pct > r.Threshold,
				summary: func() string {
					return fmt.Sprintf("vendor %s %s at %.1f%% of its ceiling (%.0f of %.0f Mbps), over %.4g%%",
						v.Vendor, where, pct, v.Mbps, v.CeilingMbps, r.Threshold)
				}})
		}
	case api.AlertSpool:
		if s.spoolOK && s.spool[1] > 0 {
			pct := float64(s.spool[0]) / float64(s.spool[1]) * 100
			emit(observation{labels: api.AlertLabels{Unit: a.src.Unit}, value: pct, holds: pct > r.Threshold,
				summary: func() string {
					return fmt.Sprintf("recording spool at unit %s %.1f%% full (%d of %d bytes), over %.4g%%",
						a.src.Unit, pct, s.spool[0], s.spool[1], r.Threshold)
				}})
		}
	case api.AlertTranscodeRestarts:
		for stream, rs := range a.restarts {
			if r.Stream != "" && r.Stream != stream {
				continue
			}
			n := 0
			for _, at := range rs.events {
				if now.Sub(at) < r.For() || r.ForSeconds == 0 {
					n++
				}
			}
			emit(observation{labels: api.AlertLabels{Stream: stream, Unit: a.src.Unit}, value: float64(n),
				holds: n > int(r.Threshold) && n > 0, now: true,
				summary: func() string {
					return fmt.Sprintf("%s at unit %s: %d transcode restarts within %s, over %.4g", stream, a.src.Unit, n, r.For(), r.Threshold)
				}})
		}
	case api.AlertUnitLost:
		if p := s.probes; p != nil && p.unitsOK {
			for _, u := range p.expected {
				emit(observation{labels: api.AlertLabels{Unit: u}, value: b2f(!p.alive[u]), holds: !p.alive[u],
					summary: func() string { return fmt.Sprintf("unit %s lost: no live node of the unit in the registry", u) }})
			}
		}
	case api.AlertEtcd, api.AlertKafka, api.AlertS3:
		if p := s.probes; p != nil && p.haveProbe[r.Kind] {
			msg, failed := p.failed[r.Kind]
			dep := strings.TrimSuffix(r.Kind, "_unreachable")
			emit(observation{labels: api.AlertLabels{Unit: a.src.Unit}, value: b2f(failed), holds: failed,
				summary: func() string { return fmt.Sprintf("%s unreachable from unit %s: %s", dep, a.src.Unit, msg) }})
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func orAny(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

// stateKey identifies a rule's subject; feedKey a feed (or, with feed "",
// a stream) at a unit.
type (
	stateKey struct {
		rule   string
		labels api.AlertLabels
	}
	feedKey struct{ stream, unit, feed string }
)

// apply moves the state of o under rule r; it returns the alert and true
// on a transition.
func (a *Alerts) apply(r api.AlertRule, o observation, now time.Time, gen uint64) (api.Alert, bool) {
	key := stateKey{r.Name, o.labels}
	st := a.states[key]
	if !o.holds {
		if st == nil {
			return api.Alert{}, false
		}
		delete(a.states, key)
		if st.firing {
			return a.resolveLocked(st, now), true
		}
		return api.Alert{}, false
	}
	if st == nil {
		if len(a.states) >= maxAlertStates {
			a.m.overflow.Add(1)
			return api.Alert{}, false
		}
		st = &alertState{since: now}
		a.states[key] = st
	}
	st.gen = gen
	if st.firing {
		st.alert.Value, st.alert.Summary = o.value, o.summary()
		return api.Alert{}, false
	}
	if !o.now && now.Sub(st.since) < r.For() {
		return api.Alert{}, false
	}
	sev := r.Severity
	if sev == "" {
		sev = api.SeverityWarning
	}
	st.firing = true
	st.alert = api.Alert{ID: newAlertID(), Rule: r.Name, Kind: r.Kind, Severity: sev, State: api.AlertFiring,
		Summary: o.summary(), Labels: o.labels, Value: o.value, Threshold: r.Threshold, StartedAt: now.UTC()}
	a.silenceLocked(&st.alert, now)
	a.log.Warn("alert firing", "rule", r.Name, "id", st.alert.ID, "summary", st.alert.Summary)
	return st.alert, true
}

// resolveLocked marks st's alert resolved and keeps it in the history.
func (a *Alerts) resolveLocked(st *alertState, now time.Time) api.Alert {
	t := now.UTC()
	al := st.alert
	al.State, al.ResolvedAt = api.AlertResolved, &t
	a.silenceLocked(&al, now)
	a.history = append(a.history, al)
	if n := len(a.history) - a.cfg.History; n > 0 {
		a.history = slices.Delete(a.history, 0, n)
	}
	st.firing = false
	a.log.Info("alert resolved", "rule", al.Rule, "id", al.ID, "summary", al.Summary)
	return al
}

// silenceLocked sets al.SilencedUntil from the silences in force.
func (a *Alerts) silenceLocked(al *api.Alert, now time.Time) {
	al.SilencedUntil = nil
	a.silences = slices.DeleteFunc(a.silences, func(s api.Silence) bool { return !now.Before(s.Until) })
	for _, s := range a.silences {
		if (s.Rule == "" || s.Rule == al.Rule) && s.Labels.Matches(al.Labels) {
			if al.SilencedUntil == nil || s.Until.After(*al.SilencedUntil) {
				u := s.Until
				al.SilencedUntil = &u
			}
		}
	}
}

// notify publishes a transition and queues it for the webhooks (unless
// silenced). It never blocks.
func (a *Alerts) notify(al api.Alert) {
	a.m.transitions.Add(1)
	body, err := json.Marshal(al)
	if err != nil {
		return
	}
	if p := a.pub.Load(); p != nil {
		if err := (*p).Publish(AlertsTopic, []byte(al.Rule), body); err != nil {
			a.log.Warn("alert not published", "rule", al.Rule, "id", al.ID, "err", err)
		}
	}
	if al.SilencedUntil != nil {
		return
	}
	for _, h := range a.hooks {
		h.enqueue(body)
	}
}

func newAlertID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// List returns the firing alerts (newest first) then the resolved ones
// (newest first): a snapshot the caller may keep.
func (a *Alerts) List() []api.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]api.Alert, 0, len(a.states)+len(a.history))
	for _, st := range a.states {
		if st.firing {
			out = append(out, st.alert)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.After(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
	for i := len(a.history) - 1; i >= 0; i-- {
		out = append(out, a.history[i])
	}
	return out
}

// Rules returns the rules in force.
func (a *Alerts) Rules() []api.AlertRule {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.rules)
}

// SetRules replaces the rules. Alerts of rules removed, or whose kind or
// threshold changed, resolve at once; the others carry on.
func (a *Alerts) SetRules(rs []api.AlertRule) error {
	if err := api.ValidateAlertRules(rs); err != nil {
		return err
	}
	byName := map[string]api.AlertRule{}
	for _, r := range rs {
		byName[r.Name] = r
	}
	a.mu.Lock()
	now := a.now()
	var out []api.Alert
	for key, st := range a.states {
		old := a.ruleLocked(key.rule)
		if nr, ok := byName[key.rule]; ok && !nr.Disabled && old != nil && old.Kind == nr.Kind && old.Threshold == nr.Threshold {
			continue
		}
		if st.firing {
			out = append(out, a.resolveLocked(st, now))
		}
		delete(a.states, key)
	}
	a.rules = slices.Clone(rs)
	a.mu.Unlock()
	for _, al := range out {
		a.notify(al)
	}
	return nil
}

func (a *Alerts) ruleLocked(name string) *api.AlertRule {
	for i := range a.rules {
		if a.rules[i].Name == name {
			return &a.rules[i]
		}
	}
	return nil
}

// Ack records that who acknowledged alert id.
func (a *Alerts) Ack(id, who string) (api.Alert, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.now().UTC()
	for _, st := range a.states {
		if st.firing && st.alert.ID == id {
			st.alert.AckedBy, st.alert.AckedAt = who, &t
			return st.alert, nil
		}
	}
	for i := range a.history {
		if a.history[i].ID == id {
			a.history[i].AckedBy, a.history[i].AckedAt = who, &t
			return a.history[i], nil
		}
	}
	return api.Alert{}, fmt.Errorf("alert %s: %w", id, ErrNotFound)
}

// maxSilences bounds the silences in force.
const maxSilences = 1000

// Silence adds a silence; alerts it matches are not sent to webhooks
// until it ends (they are still listed and published on the bus).
func (a *Alerts) Silence(s api.Silence, who string) (api.Silence, error) {
	if err := s.Validate(); err != nil {
		return api.Silence{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.silences = slices.DeleteFunc(a.silences, func(x api.Silence) bool { return !now.Before(x.Until) })
	if len(a.silences) >= maxSilences {
		return api.Silence{}, fmt.Errorf("%w: %d silences in force already", ErrInvalid, maxSilences)
	}
	s.ID, s.CreatedBy = newAlertID(), who
	s.Until = now.Add(time.Duration(s.DurationS * float64(time.Second))).UTC()
	a.silences = append(a.silences, s)
	for _, st := range a.states {
		if st.firing {
			a.silenceLocked(&st.alert, now)
		}
	}
	return s, nil
}

// Silences returns the silences in force.
func (a *Alerts) Silences() []api.Silence {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.silences = slices.DeleteFunc(a.silences, func(x api.Silence) bool { return !now.Before(x.Until) })
	return slices.Clone(a.silences)
}
