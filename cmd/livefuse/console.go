package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/web"
)

// ConsoleConfig is the console section of livefuse.yaml (lms.ConsoleConfig).
type ConsoleConfig struct {
	lms.ConsoleConfig `yaml:",inline"`
}

func defaultConsoleConfig() ConsoleConfig { return ConsoleConfig{lms.DefaultConsoleConfig()} }

func (c ConsoleConfig) validate() error {
	if err := c.ConsoleConfig.Validate(); err != nil {
		return fmt.Errorf("config: console: %w", err)
	}
	return nil
}

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

	// units has the other units' reports (set by mountConsole).
	units *lms.UnitReports

	// figures holds each local feed's figures as last shown (sampler's
	// goroutine only).
	figures lms.FeedFigures

	audit lms.RecentAudit
}

// thresholds is what colours a card: the alert rules take over from the
// console's own config (lms.CardThresholds).
func (c *console) thresholds() api.ConsoleThresholds {
	if c.alerts == nil {
		return c.cfg.Thresholds
	}
	return lms.CardThresholds(c.cfg.Thresholds, c.alerts.Rules())
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
	c.units = lms.NewUnitReports(c.reg, c.log)
	go c.units.Run(ctx)
	go ev.Run()
	return func() { ev.Close(); cancel() }, nil
}

// streams is the streams view: every registered stream, with this unit's
// switcher read directly and the other units' from their reports. It is
// keyed by stream: a page gets the streams that changed, not all.
func (c *console) streams() any {
	var units map[string][]lms.UnitStatus
	if c.units != nil {
		units = c.units.Latest(min(c.cfg.Tick, c.cfg.UnitReportPeriod/2))
	}
	c.figures.Begin()
	defer c.figures.Sweep()
	local := map[string]origin.Status{}
	for _, st := range c.hub.List() {
		local[st.App+"/"+st.Name] = st
	}
	view := lms.ConsoleKeyed{Head: api.ConsoleStreamsHead{Unit: c.unit, Thresholds: c.thresholds()}}
	for _, s := range c.reg.List() {
		if len(view.Items) == lms.MaxConsoleRows {
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
			cs.Units = append(cs.Units, api.ConsoleUnit{UnitStatus: lms.RoundUnit(u)})
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
	u = lms.RoundUnit(u)
	for i := range u.Feeds {
		c.figures.Hold(s.Path(), &u.Feeds[i])
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
				Mbps: lms.Round2(ps.Mbps), ForecastMbps: lms.Round2(ps.ForecastMbps), CommitMbps: ps.CommitMbps,
				CeilingMbps: ps.CeilingMbps, State: ps.State.String()})
		}
		for _, b := range p.Buckets() {
			if len(view.Shares) == lms.MaxConsoleRows {
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

// audience is the audience view: last-minute quality by province × ISP
// × vendor, worst first (lms.AudienceView). A dispatch node of a fleet shows the fleet's
// figures, any other node its own aggregates.
func (c *console) audience() any {
	rows := []api.AudienceRow{}
	if c.cm == nil {
		return lms.AudienceView(rows)
	}
	for k, o := range c.cm.m.Observations() {
		if o.Users > 0 {
			rows = append(rows, api.AudienceRow{Region: k.Bucket.Region, ISP: k.Bucket.ISP, Vendor: k.Vendor,
				Users: o.Users, StalledUsers: o.StalledUsers, StallRate: o.StallRate})
		}
	}
	return lms.AudienceView(rows)
}

// auditView is the latest audit entries of this node.
func (c *console) auditView() any { return c.audit.View() }

// auditTee is the audit publisher: every entry goes on to the bus and
// into the console's recent list.
type auditTee struct {
	next bus.Publisher
	c    *console
}

func (a auditTee) Publish(topic string, key, value []byte) error {
	a.c.audit.Observe(topic, value)
	return a.next.Publish(topic, key, value)
}
