package main

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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/web"
)

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
	lms.EventsConfig `yaml:",inline"`
}

func defaultConsoleConfig() ConsoleConfig {
	return ConsoleConfig{Enabled: true, Thresholds: api.ConsoleThresholds{MinFPS: 15, MinBitrateKbps: 300},
		UnitReportPeriod: 2 * time.Second, EventsConfig: lms.DefaultEventsConfig()}
}

// validate checks the section.
func (c ConsoleConfig) validate() error {
	if err := c.EventsConfig.Validate(); err != nil {
		return fmt.Errorf("config: console: %w", err)
	}
	if c.UnitReportPeriod < 100*time.Millisecond || c.UnitReportPeriod > time.Minute {
		return fmt.Errorf("config: console: unit_report_period %s: want 100ms to 1m", c.UnitReportPeriod)
	}
	t := c.Thresholds
	if t.MinFPS < 0 || t.MinBitrateKbps < 0 || math.IsNaN(t.MinFPS) || math.IsNaN(t.MinBitrateKbps) {
		return fmt.Errorf("config: console: thresholds must not be negative")
	}
	return nil
}

// maxConsoleRows bounds the streams and audience views.
const maxConsoleRows = 2000

// consoleAuditKeep is how many recent audit entries the audit view pushes.
const consoleAuditKeep = 50

// console builds the views the console pushes, from the parts of the
// node that lms must not import.
type console struct {
	cfg  ConsoleConfig
	unit string
	reg  *lms.Registry
	hub  *origin.Hub
	live liveSource
	cm   *cdnMix
	// alerts and plans feed their views; alerts' enabled ingest rules
	// also set the cards' thresholds.
	alerts *lms.Alerts
	plans  *lms.Plans
	log    *slog.Logger

	// Other units' reports, read from the store by runUnits when the
	// streams view asks (each tick, while a console is open), so that a
	// slow store never holds the view.
	unitsAsk chan struct{}
	unitsAt  time.Time // sampler's goroutine only
	unitsMu  sync.Mutex
	units    map[string][]lms.UnitStatus

	// figures holds each local feed's figures as last shown, refreshed
	// once a second (sampler's goroutine only): a window's rates move a
	// little on every sample, and 200 streams would otherwise all change
	// on every tick. A change of state shows at the next tick.
	figures map[string]shownFigures
	sampleN int64

	auditMu sync.Mutex
	audit   []api.AuditEntry // newest first
}

// thresholds is what colours a card. One function, so that the alert
// rules can take over from the console's own config in one place.
func (c *console) thresholds() api.ConsoleThresholds {
	t := c.cfg.Thresholds
	if c.alerts == nil {
		return t
	}
	// The first enabled rule of each ingest kind that covers every stream
	// colours the cards, so a card turns red where the alert would fire.
	var fps, kbps bool
	for _, r := range c.alerts.Rules() {
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

// sources returns the topics the console pushes.
func (c *console) sources() []lms.ConsoleSource {
	src := []lms.ConsoleSource{
		{Topic: "streams", Snapshot: func() any { return c.streams() }},
		{Topic: "cdn", Snapshot: func() any { return c.cdn() }},
		{Topic: "audience", Snapshot: func() any { return c.audience() }},
		{Topic: "audit", Snapshot: func() any { return c.auditView() }},
	}
	if c.alerts != nil {
		src = append(src, lms.ConsoleSource{Topic: "alerts", Snapshot: func() any { return c.alerts.List() }})
	}
	if c.plans != nil {
		src = append(src, lms.ConsoleSource{Topic: "plans", Snapshot: func() any { return c.plans.List() }})
	}
	return src
}

// mountConsole starts the push channel and mounts it and the page on the
// control API; the returned function stops it (call it before api.Close,
// so that open event streams end first).
func mountConsole(ctx context.Context, c *console, srv *lms.Server, promReg prometheus.Registerer) (func(), error) {
	ev, err := lms.NewEvents(c.cfg.EventsConfig, c.sources(), c.log, promReg)
	if err != nil {
		return nil, err
	}
	srv.MountConsole(ev, web.ConsoleHandler())
	ctx, cancel := context.WithCancel(ctx)
	c.unitsAsk = make(chan struct{}, 1)
	go c.runUnits(ctx)
	go ev.Run()
	return func() { ev.Close(); cancel() }, nil
}

// runUnits reads the units' reports each time the streams view asks.
func (c *console) runUnits(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.unitsAsk:
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		u, err := c.reg.Units(rctx)
		cancel()
		if err != nil {
			c.log.Debug("console: unit reports unavailable", "err", err)
			continue
		}
		c.unitsMu.Lock()
		c.units = u
		c.unitsMu.Unlock()
	}
}

// streams is the streams view: every registered stream, with this unit's
// switcher read directly and the other units' from their reports. It is
// keyed by stream: a page gets the streams that changed, not all.
func (c *console) streams() any {
	now := time.Now()
	if c.unitsAsk != nil && now.Sub(c.unitsAt) >= min(c.cfg.Tick, c.cfg.UnitReportPeriod/2) {
		c.unitsAt = now
		select {
		case c.unitsAsk <- struct{}{}:
		default:
		}
	}
	c.unitsMu.Lock()
	units := c.units
	c.unitsMu.Unlock()
	c.sampleN++
	defer func() {
		for k, f := range c.figures {
			if f.seenAtSample != c.sampleN {
				delete(c.figures, k) // the feed is gone
			}
		}
	}()
	local := map[string]origin.Status{}
	for _, st := range c.hub.List() {
		local[st.App+"/"+st.Name] = st
	}
	view := lms.ConsoleKeyed{Head: api.ConsoleStreamsHead{Unit: c.unit, Thresholds: c.thresholds()}}
	for _, s := range c.reg.List() {
		if len(view.Items) == maxConsoleRows {
			break
		}
		path := s.Path()
		cs := api.ConsoleStream{Stream: path, Enabled: s.Enabled, Policy: cmp.Or(s.FeedPolicy, api.FeedAuto),
			Encryption: s.Encryption, Record: s.Record, Profile: s.Profile, Units: []api.ConsoleUnit{}}
		if st, ok := local[path]; ok {
			cs.Units = append(cs.Units, c.localUnit(s, st))
		}
		for _, u := range units[path] {
			if u.Unit == c.unit {
				continue // read directly above
			}
			cs.Units = append(cs.Units, api.ConsoleUnit{UnitStatus: roundUnit(u)})
		}
		slices.SortFunc(cs.Units, func(a, b api.ConsoleUnit) int { return cmp.Compare(a.Unit, b.Unit) })
		view.Items = append(view.Items, lms.ConsoleItem{Key: path, Value: cs})
	}
	return view
}

// localUnit is this unit's part of a stream's card.
func (c *console) localUnit(s lms.Stream, st origin.Status) api.ConsoleUnit {
	u := toUnitStatus(st.Switch)
	u.Unit = c.unit
	u = roundUnit(u)
	for i := range u.Feeds {
		c.holdFigures(s.Path(), &u.Feeds[i])
	}
	cu := api.ConsoleUnit{UnitStatus: u, Local: true, Viewers: st.ReadersByProtocol}
	if ts := c.live.tc.status(s.App, s.Name); ts != nil {
		cu.Transcode = &api.ConsoleTranscode{Profile: ts.Profile, State: ts.State, Reason: ts.Reason,
			Restarts: ts.Restarts, LastExit: ts.LastExit}
	}
	if rs := c.live.rec.status(s.App, s.Name); rs != nil {
		cu.Recording = &api.ConsoleRecording{State: rs.State, Segments: rs.Segments, Pending: rs.Pending, Error: rs.Error}
	}
	for _, r := range c.live.tc.renditions(s.App, s.Name) {
		cu.Renditions = append(cu.Renditions, api.ConsoleRendition{Name: r.Name, Stream: r.Stream, Height: r.Height,
			BitrateKbps: math.Round(r.BitrateKbps), Readers: r.Readers})
	}
	return cu
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

// holdFigures keeps f's figures as last shown while its state is the same
// and they are younger than figuresRefresh. First sightings are spread
// over the second by key, so that streams refresh on different ticks.
func (c *console) holdFigures(stream string, f *api.FeedStatus) {
	now := time.Now()
	if c.figures == nil {
		c.figures = map[string]shownFigures{}
	}
	key := stream + "|" + f.Feed
	old, ok := c.figures[key]
	if ok && old.state == f.State && now.Sub(old.at) < figuresRefresh {
		f.FPS, f.BitrateKbps = old.fps, old.kbps
		old.seenAtSample = c.sampleN
		c.figures[key] = old
		return
	}
	at := now
	if !ok {
		var h uint32
		for i := 0; i < len(key); i++ {
			h = h*31 + uint32(key[i])
		}
		at = now.Add(-time.Duration(h%1000) * time.Millisecond)
	}
	c.figures[key] = shownFigures{state: f.State, fps: f.FPS, kbps: f.BitrateKbps, at: at, seenAtSample: c.sampleN}
}

// roundUnit rounds the figures to what a card shows (frame rate to
// whole frames, tenths under 10; bitrate to whole kbit/s and three
// significant digits; RTT
// to milliseconds; the last packet's age to whole seconds, 0 under one),
// so that the view changes when a card would, not on every sample: with
// 200 streams some figure moves on every tick otherwise, and the whole
// view goes out four times a second.
func roundUnit(u lms.UnitStatus) lms.UnitStatus {
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

// cdn is the CDN view: pools, dispatch shares, blacklist.
func (c *console) cdn() any {
	view := api.ConsoleCDN{Pools: []api.ConsolePool{}, Shares: []api.ConsoleShare{}, Blacklist: []api.ConsoleBlacklist{}}
	if c.cm == nil {
		return view
	}
	alloc := c.cm.m.Allocator()
	if p := alloc.Plan(); p != nil {
		view.At = p.At.UTC()
		for _, ps := range p.Pools {
			view.Pools = append(view.Pools, api.ConsolePool{Vendor: ps.Vendor, Region: ps.Region,
				Mbps: round2(ps.Mbps), ForecastMbps: round2(ps.ForecastMbps), CommitMbps: ps.CommitMbps,
				CeilingMbps: ps.CeilingMbps, State: ps.State.String()})
		}
		for _, b := range p.Buckets() {
			if len(view.Shares) == maxConsoleRows {
				break
			}
			bp, _ := p.Bucket(b)
			sh := api.ConsoleShare{Region: b.Region, ISP: b.ISP, Ratios: map[string]float64{}}
			for _, cd := range bp.Candidates {
				sh.Ratios[cd.Vendor] = math.Round(cd.Ratio*1000) / 1000
			}
			view.Shares = append(view.Shares, sh)
		}
	}
	manual := map[cdnmix.Key]bool{}
	for _, e := range alloc.ManualBlacklist() {
		manual[cdnmix.Key{Vendor: e.Vendor, Bucket: cdnmix.Bucket{Region: e.Region, ISP: e.ISP}}] = true
	}
	for _, e := range alloc.Blacklist() {
		k := cdnmix.Key{Vendor: e.Vendor, Bucket: cdnmix.Bucket{Region: e.Region, ISP: e.ISP}}
		view.Blacklist = append(view.Blacklist, api.ConsoleBlacklist{Vendor: e.Vendor, Region: e.Region, ISP: e.ISP,
			Until: e.Until.UTC(), Reason: e.Reason, Auto: !manual[k]})
	}
	return view
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// audience is the audience view: last-minute quality by province × ISP
// × vendor, worst first. A dispatch node of a fleet shows the fleet's
// figures, any other node its own aggregates.
func (c *console) audience() any {
	view := api.ConsoleAudience{Rows: []api.AudienceRow{}}
	if c.cm == nil {
		return view
	}
	var obs map[cdnmix.Key]cdnmix.Observation
	if f := c.cm.m.FleetView(); f != nil {
		obs = f.Snapshot()
	} else {
		obs = c.cm.m.Aggregator().Snapshot()
	}
	for k, o := range obs {
		if o.Users <= 0 {
			continue
		}
		view.Rows = append(view.Rows, api.AudienceRow{Region: k.Bucket.Region, ISP: k.Bucket.ISP, Vendor: k.Vendor,
			Users: o.Users, StalledUsers: o.StalledUsers, StallRate: math.Round(o.StallRate*10000) / 10000,
			ZeroStallRate: math.Round((1-o.StallRate)*10000) / 10000})
	}
	slices.SortFunc(view.Rows, func(a, b api.AudienceRow) int {
		return cmp.Or(cmp.Compare(b.StallRate, a.StallRate), cmp.Compare(b.Users, a.Users),
			cmp.Compare(a.Region, b.Region), cmp.Compare(a.ISP, b.ISP), cmp.Compare(a.Vendor, b.Vendor))
	})
	if len(view.Rows) > maxConsoleRows {
		view.Rows = view.Rows[:maxConsoleRows]
	}
	return view
}

// auditView is the latest audit entries of this node.
func (c *console) auditView() any {
	c.auditMu.Lock()
	defer c.auditMu.Unlock()
	return api.ConsoleAudit{Entries: slices.Clone(c.audit)}
}

// auditTee is the audit publisher: every entry goes on to the bus and
// into the console's recent list.
type auditTee struct {
	next bus.Publisher
	c    *console
}

func (a auditTee) Publish(topic string, key, value []byte) error {
	if topic == bus.TopicAudit {
		var ev bus.AuditEvent
		var e api.AuditEntry
		if json.Unmarshal(value, &ev) == nil && json.Unmarshal(ev.Detail, &e) == nil {
			a.c.auditMu.Lock()
			a.c.audit = append([]api.AuditEntry{e}, a.c.audit[:min(len(a.c.audit), consoleAuditKeep-1)]...)
			a.c.auditMu.Unlock()
		}
	}
	return a.next.Publish(topic, key, value)
}
