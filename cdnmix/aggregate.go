package cdnmix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// AggregatorConfig configures an Aggregator. Zero fields take the
// defaults in brackets.
type AggregatorConfig struct {
	// Locator fills region and ISP of log lines and beacons that carry
	// only a client IP; nil leaves them in the any-bucket.
	Locator Locator
	// BandwidthWindow is the sliding window of the current bandwidth
	// [10s]; log lines are kept for History [2m] so late lines still land
	// in their seconds.
	BandwidthWindow time.Duration
	History         time.Duration
	// QualityWindow is the sliding window of users and stalls [1m].
	QualityWindow time.Duration
	// StallMin is the buffer-empty time that makes a stall [2s].
	StallMin time.Duration
	// Tick is how often Run publishes a snapshot and feeds the forecast
	// [1s]; ForecastAhead is how far the Holt forecast looks [10s], with
	// HoltAlpha [0.5] and HoltBeta [0.3].
	Tick          time.Duration
	ForecastAhead time.Duration
	HoltAlpha     float64
	HoltBeta      float64
	// Minutes of per-minute quality history kept per key [60].
	Minutes int
	// MaxSessions bounds the sessions tracked over all keys [1,000,000];
	// beacons of new sessions past it are counted (overflow) and dropped.
	// A session leaves when it has sent nothing for the quality window.
	MaxSessions int
	// Bound maps the key of every input to the key it is aggregated
	// under, or refuses it: the configured vendors × regions × ISPs, a
	// value outside them folded into the any-value "" (see [Bounds]). Nil
	// keeps every key as it comes (tests, the simulator); [Mixer] always
	// sets one, so that no input creates keys, plan buckets or series.
	Bound func(Key) (Key, bool)
	// PolledTTL is how long a vendor's polled stats replace its log-line
	// bandwidth after the last successful poll [30s].
	PolledTTL time.Duration
	// Now is the clock [time.Now].
	Now    func() time.Time
	Logger *slog.Logger
}

// Aggregator turns CDN log lines and player beacons into per vendor ×
// region × ISP [Observation]s over sliding windows: bandwidth from the
// bytes of log lines, users and stalls from beacons, and a Holt forecast
// of bandwidth. It implements [Observer]; Snapshot returns the state of
// the last Tick. Malformed input is counted and dropped.
type Aggregator struct {
	cfg  AggregatorConfig
	log  *slog.Logger
	now  func() time.Time
	snap atomic.Pointer[map[Key]Observation]

	mu     sync.Mutex
	keys   map[Key]*keyAgg
	polled map[string]polledStats // vendor → last stats answer

	sessions int // tracked over all keys, under mu

	logs, beacons, badLogs, badBeacons, late, overflow, unknown atomic.Int64
}

// keyAgg is one vendor in one bucket.
type keyAgg struct {
	secs     []float64 // bytes per second, ring indexed by unix second
	top      int64     // newest second held
	holt     Holt
	sessions map[string]*session
	minutes  []MinuteStat // oldest first
	lastMin  int64        // unix minute of the last closed minute
	idle     int          // ticks without anything
}

type polledStats struct {
	at   time.Time
	mbps map[Bucket]float64
}

type session struct {
	seen, start, firstFrame, stall, err time.Time
	firstFrameMs                        int64
}

// MinuteStat is one minute of quality for one vendor in one bucket.
type MinuteStat struct {
	Minute        time.Time     `json:"minute"`
	Users         int           `json:"users"`
	StalledUsers  int           `json:"stalled_users"`
	StallRate     float64       `json:"stall_rate"`
	ZeroStallRate float64       `json:"zero_stall_rate"`
	FirstFrameP50 time.Duration `json:"-"` // JSON: first_frame_p50_ms (msjson.go)
	FirstFrameP95 time.Duration `json:"-"` // JSON: first_frame_p95_ms
	PullSuccess   float64       `json:"pull_success"`
	Mbps          float64       `json:"mbps"`
}

// AggregatorStats counts input. Unknown counts input naming a vendor
// that is not configured (dropped).
type AggregatorStats struct {
	Logs, Beacons, BadLogs, BadBeacons, Late, Overflow, Unknown int64
	Keys, Sessions                                              int
}

// NewAggregator checks cfg.
func NewAggregator(cfg AggregatorConfig) (*Aggregator, error) {
	for _, d := range []time.Duration{cfg.BandwidthWindow, cfg.History, cfg.QualityWindow, cfg.StallMin, cfg.Tick, cfg.ForecastAhead, cfg.PolledTTL} {
		if d < 0 {
			return nil, errors.New("aggregator: durations must not be negative")
		}
	}
	if cfg.HoltAlpha < 0 || cfg.HoltAlpha > 1 || cfg.HoltBeta < 0 || cfg.HoltBeta > 1 || cfg.Minutes < 0 || cfg.MaxSessions < 0 {
		return nil, errors.New("aggregator: holt_alpha and holt_beta must be in [0, 1], minutes and max_sessions not negative")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.BandwidthWindow, 10*time.Second)
	def(&cfg.History, 2*time.Minute)
	def(&cfg.QualityWindow, time.Minute)
	def(&cfg.StallMin, 2*time.Second)
	def(&cfg.Tick, time.Second)
	def(&cfg.ForecastAhead, 10*time.Second)
	def(&cfg.PolledTTL, 30*time.Second)
	if cfg.BandwidthWindow < time.Second || cfg.History < cfg.BandwidthWindow {
		return nil, errors.New("aggregator: bandwidth_window must be at least 1s and history at least the window")
	}
	if cfg.HoltAlpha == 0 {
		cfg.HoltAlpha = 0.5
	}
	if cfg.HoltBeta == 0 {
		cfg.HoltBeta = 0.3
	}
	if cfg.Minutes == 0 {
		cfg.Minutes = 60
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 1_000_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Aggregator{cfg: cfg, log: cfg.Logger.With("unit", "cdnmix"), now: cfg.Now, keys: make(map[Key]*keyAgg),
		polled: make(map[string]polledStats)}
	empty := map[Key]Observation{}
	a.snap.Store(&empty)
	return a, nil
}

// Snapshot implements Observer.
func (a *Aggregator) Snapshot() map[Key]Observation { return *a.snap.Load() }

// Stats returns the input counters.
func (a *Aggregator) Stats() AggregatorStats {
	a.mu.Lock()
	n, ns := len(a.keys), a.sessions
	a.mu.Unlock()
	return AggregatorStats{a.logs.Load(), a.beacons.Load(), a.badLogs.Load(), a.badBeacons.Load(), a.late.Load(),
		a.overflow.Load(), a.unknown.Load(), n, ns}
}

// Errors for dropped input.
var (
	ErrMalformed = errors.New("malformed")
	ErrLate      = errors.New("too old or in the future")
	// ErrUnknownVendor: the input names a vendor that is not configured.
	ErrUnknownVendor = errors.New("vendor not configured")
)

// bound applies cfg.Bound to k, counting what it refuses.
func (a *Aggregator) bound(k Key) (Key, error) {
	if a.cfg.Bound == nil {
		return k, nil
	}
	nk, ok := a.cfg.Bound(k)
	if !ok {
		a.unknown.Add(1)
		return Key{}, fmt.Errorf("vendor %q: %w", k.Vendor, ErrUnknownVendor)
	}
	return nk, nil
}

// bucketOf returns the bucket of an event: its region and ISP, else the
// client IP's location.
func (a *Aggregator) bucketOf(region, isp, client string) Bucket {
	if region != "" || isp != "" || client == "" || a.cfg.Locator == nil {
		return Bucket{region, isp}
	}
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return Bucket{}
	}
	if loc, ok := a.cfg.Locator.Locate(ip.Unmap()); ok {
		return Bucket{loc.Region, loc.ISP}
	}
	return Bucket{}
}

// Limits on one log line.
const (
	maxLogDuration = 24 * time.Hour
	maxLogBytes    = 1 << 50
)

// AddLog adds one CDN log line. Bytes are spread evenly over the line's
// duration. A malformed line returns an error wrapping ErrMalformed, a
// line wholly outside the history ErrLate; both are counted.
func (a *Aggregator) AddLog(l bus.CDNLog) error {
	if err := checkLog(l); err != nil {
		a.badLogs.Add(1)
		return err
	}
	now := a.now()
	end := l.Time
	if end.IsZero() {
		end = now
	}
	dur := time.Duration(l.DurationMs) * time.Millisecond
	if end.After(now.Add(time.Minute)) || end.Before(now.Add(-a.cfg.History)) {
		a.late.Add(1)
		return ErrLate
	}
	a.logs.Add(1)
	if l.Bytes == 0 || l.Status >= 400 {
		return nil // a failed pull carries no load; quality comes from beacons
	}
	k, err := a.bound(Key{l.Vendor, a.bucketOf(l.Region, l.ISP, l.ClientIP)})
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ka := a.key(k)
	ka.addBytes(end.Add(-dur), end, float64(l.Bytes), now, a.ringLen())
	return nil
}

func checkLog(l bus.CDNLog) error {
	switch {
	case !validName(l.Vendor):
		return fmt.Errorf("log line: vendor %q: %w", l.Vendor, ErrMalformed)
	case l.Bytes < 0 || l.Bytes > maxLogBytes:
		return fmt.Errorf("log line: bytes %d: %w", l.Bytes, ErrMalformed)
	case l.DurationMs < 0 || time.Duration(l.DurationMs) > maxLogDuration/time.Millisecond:
		return fmt.Errorf("log line: duration_ms %d: %w", l.DurationMs, ErrMalformed)
	case l.Status < 0 || l.Status > 999:
		return fmt.Errorf("log line: status %d: %w", l.Status, ErrMalformed)
	case len(l.Region) > 64 || len(l.ISP) > 64:
		return fmt.Errorf("log line: region or isp too long: %w", ErrMalformed)
	}
	return nil
}

func (a *Aggregator) ringLen() int { return int(a.cfg.History / time.Second) }

func (a *Aggregator) key(k Key) *keyAgg {
	ka := a.keys[k]
	if ka == nil {
		ka = &keyAgg{secs: make([]float64, a.ringLen()), holt: Holt{Alpha: a.cfg.HoltAlpha, Beta: a.cfg.HoltBeta},
			sessions: make(map[string]*session), lastMin: a.now().Unix() / 60}
		a.keys[k] = ka
	}
	return ka
}

// advance moves the ring's newest second to sec, clearing what it passes.
func (ka *keyAgg) advance(sec int64) {
	n := int64(len(ka.secs))
	if ka.top == 0 || sec-ka.top >= n {
		clear(ka.secs)
		ka.top = sec
		return
	}
	for s := ka.top + 1; s <= sec; s++ {
		ka.secs[s%n] = 0
	}
	ka.top = max(ka.top, sec)
}

// addBytes spreads bytes over [from, to], keeping what falls in the ring.
func (ka *keyAgg) addBytes(from, to time.Time, bytes float64, now time.Time, ringLen int) {
	ka.advance(now.Unix())
	n := int64(ringLen)
	oldest := ka.top - n + 1
	if !to.After(from) {
		if s := to.Unix(); s >= oldest && s <= ka.top {
			ka.secs[s%n] += bytes
		}
		return
	}
	span := to.Sub(from).Seconds()
	for s := max(from.Unix(), oldest); s <= min(to.Unix(), ka.top); s++ {
		lo := later(from, time.Unix(s, 0))
		hi := time.Unix(s+1, 0)
		if to.Before(hi) {
			hi = to
		}
		if hi.After(lo) {
			ka.secs[s%n] += bytes * hi.Sub(lo).Seconds() / span
		}
	}
}

// mbps is the mean bandwidth over the window of whole seconds before now.
func (ka *keyAgg) mbps(now time.Time, window int) float64 {
	ka.advance(now.Unix())
	n := int64(len(ka.secs))
	sum := 0.0
	for s := ka.top - int64(window); s < ka.top; s++ {
		sum += ka.secs[(s%n+n)%n]
	}
	return sum * 8 / float64(window) / 1e6
}

// Limits on one beacon.
const (
	maxBufferEmpty = time.Hour
	maxFirstFrame  = 10 * time.Minute
	maxSessionLen  = 128
	maxBitrateKbps = 1_000_000
)

// AddBeacon adds one player beacon. Time is when it was received (the
// server's clock), zero meaning now.
func (a *Aggregator) AddBeacon(b bus.Beacon) error {
	if err := checkBeacon(b); err != nil {
		a.badBeacons.Add(1)
		return err
	}
	now := a.now()
	at := b.Time
	if at.IsZero() {
		at = now
	}
	if at.After(now.Add(time.Minute)) || at.Before(now.Add(-a.cfg.QualityWindow)) {
		a.late.Add(1)
		return ErrLate
	}
	k, err := a.bound(Key{b.Vendor, a.bucketOf(b.Region, b.ISP, b.Client)})
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ka := a.key(k)
	s := ka.sessions[b.Session]
	if s == nil {
		if a.sessions >= a.cfg.MaxSessions {
			a.overflow.Add(1)
			return fmt.Errorf("beacon: %d sessions tracked: %w", a.sessions, ErrMalformed)
		}
		s = &session{}
		ka.sessions[b.Session] = s
		a.sessions++
	}
	a.beacons.Add(1)
	s.seen = later(s.seen, at)
	switch b.Event {
	case bus.BeaconStart:
		s.start = later(s.start, at)
	case bus.BeaconFirstFrame:
		s.firstFrame = later(s.firstFrame, at)
		s.firstFrameMs = b.FirstFrameMs
	case bus.BeaconStall, bus.BeaconHeartbeat:
		if time.Duration(b.BufferEmptyMs)*time.Millisecond >= a.cfg.StallMin {
			s.stall = later(s.stall, at)
		}
	case bus.BeaconError:
		s.err = later(s.err, at)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func checkBeacon(b bus.Beacon) error {
	switch {
	case b.Session == "" || len(b.Session) > maxSessionLen:
		return fmt.Errorf("beacon: session must be 1-%d bytes: %w", maxSessionLen, ErrMalformed)
	case !validName(b.Vendor):
		return fmt.Errorf("beacon: vendor %q: %w", b.Vendor, ErrMalformed)
	case len(b.Stream) > 257 || len(b.Region) > 64 || len(b.ISP) > 64 || len(b.Error) > 1024:
		return fmt.Errorf("beacon: field too long: %w", ErrMalformed)
	case b.BufferEmptyMs < 0 || time.Duration(b.BufferEmptyMs) > maxBufferEmpty/time.Millisecond:
		return fmt.Errorf("beacon: buffer_empty_ms %d: %w", b.BufferEmptyMs, ErrMalformed)
	case b.FirstFrameMs < 0 || time.Duration(b.FirstFrameMs) > maxFirstFrame/time.Millisecond:
		return fmt.Errorf("beacon: first_frame_ms %d: %w", b.FirstFrameMs, ErrMalformed)
	case b.BitrateKbps < 0 || b.BitrateKbps > maxBitrateKbps:
		return fmt.Errorf("beacon: bitrate_kbps %d: %w", b.BitrateKbps, ErrMalformed)
	}
	switch b.Event {
	case bus.BeaconStart, bus.BeaconFirstFrame, bus.BeaconStall, bus.BeaconHeartbeat, bus.BeaconError, bus.BeaconBitrate:
		return nil
	}
	return fmt.Errorf("beacon: event %q: %w", b.Event, ErrMalformed)
}

// quality computes the quality window's figures for one key at now. With
// part set, it also fills the additive figures of a stage-one partial.
func (a *Aggregator) quality(ka *keyAgg, now time.Time, part *Partial) MinuteStat {
	from := now.Add(-a.cfg.QualityWindow)
	var st MinuteStat
	var ff []int64
	attempts, ok := 0, 0
	for _, s := range ka.sessions {
		if s.seen.Before(from) {
			continue
		}
		st.Users++
		if !s.stall.Before(from) {
			st.StalledUsers++
		}
		if !s.firstFrame.Before(from) {
			ff = append(ff, s.firstFrameMs)
		}
		// A pull attempt: a start, a first frame or an error in the window.
		if !s.start.Before(from) || !s.firstFrame.Before(from) || !s.err.Before(from) {
			attempts++
			if !s.firstFrame.IsZero() && !s.firstFrame.Before(s.start) && s.firstFrame.After(s.err) {
				ok++
			}
		}
	}
	if st.Users > 0 {
		st.StallRate = float64(st.StalledUsers) / float64(st.Users)
		st.ZeroStallRate = 1 - st.StallRate
	}
	if part != nil {
		part.Users, part.Stalled, part.Attempts, part.OK = st.Users, st.StalledUsers, attempts, ok
		part.FirstFrame = ffHistogram(ff)
	}
	st.PullSuccess = 1
	if attempts > 0 {
		st.PullSuccess = float64(ok) / float64(attempts)
	}
	if len(ff) > 0 {
		slices.Sort(ff)
		st.FirstFrameP50 = time.Duration(percentile(ff, 0.50)) * time.Millisecond
		st.FirstFrameP95 = time.Duration(percentile(ff, 0.95)) * time.Millisecond
	}
	return st
}

// percentile of sorted values, nearest rank.
func percentile(sorted []int64, p float64) int64 {
	i := int(float64(len(sorted))*p+0.9999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// SetPolled records a vendor's polled bandwidth per bucket. Until it is
// older than PolledTTL, it is the vendor's bandwidth: buckets it does not
// name have none, whatever the log lines say.
func (a *Aggregator) SetPolled(vendor string, mbps map[Bucket]float64) {
	if a.cfg.Bound != nil {
		bounded := make(map[Bucket]float64, len(mbps))
		for b, v := range mbps {
			k, err := a.bound(Key{vendor, b})
			if err != nil {
				return
			}
			bounded[k.Bucket] += v
		}
		mbps = bounded
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.polled[vendor] = polledStats{at: a.now(), mbps: mbps}
	for b := range mbps {
		a.key(Key{vendor, b})
	}
}

// Tick feeds the forecasts, closes finished minutes, drops idle keys and
// sessions, and publishes a new snapshot; Run calls it every Tick.
func (a *Aggregator) Tick() map[Key]Observation { return a.tick(nil) }

// TickPartials is Tick for a stage-one worker: it also returns the
// additive figures of every key that has any (see [Partial]).
func (a *Aggregator) TickPartials() []Partial {
	parts := []Partial{}
	a.tick(&parts)
	return parts
}

func (a *Aggregator) tick(parts *[]Partial) map[Key]Observation {
	now := a.now()
	window := int(a.cfg.BandwidthWindow / time.Second)
	ahead := float64(a.cfg.ForecastAhead) / float64(a.cfg.Tick)
	a.mu.Lock()
	for v, p := range a.polled {
		if now.Sub(p.at) > a.cfg.PolledTTL {
			delete(a.polled, v)
		}
	}
	snap := make(map[Key]Observation, len(a.keys))
	for k, ka := range a.keys {
		mbps := ka.mbps(now, window)
		if p, ok := a.polled[k.Vendor]; ok {
			mbps = p.mbps[k.Bucket]
		}
		ka.holt.Update(mbps)
		var part *Partial
		if parts != nil {
			part = &Partial{Vendor: k.Vendor, Region: k.Bucket.Region, ISP: k.Bucket.ISP}
		}
		q := a.quality(ka, now, part)
		if part != nil && (mbps > 0 || part.Users > 0 || part.Attempts > 0) {
			part.Mbps = mbps
			*parts = append(*parts, *part)
		}
		from := now.Add(-a.cfg.QualityWindow)
		for id, s := range ka.sessions {
			if s.seen.Before(from) {
				delete(ka.sessions, id)
				a.sessions--
			}
		}
		if minute := now.Unix() / 60; minute > ka.lastMin {
			q.Minute = time.Unix((minute-1)*60, 0).UTC() // the minute that just ended
			q.Mbps = mbps
			ka.minutes = append(ka.minutes, q)
			if len(ka.minutes) > a.cfg.Minutes {
				ka.minutes = slices.Delete(ka.minutes, 0, len(ka.minutes)-a.cfg.Minutes)
			}
			ka.lastMin = minute
		}
		if mbps == 0 && len(ka.sessions) == 0 {
			ka.idle++
			if ka.idle > a.ringLen()+len(ka.minutes)*60 {
				delete(a.keys, k)
				continue
			}
		} else {
			ka.idle = 0
		}
		snap[k] = Observation{
			Mbps: mbps, ForecastMbps: max(0, ka.holt.Forecast(ahead)),
			Users: q.Users, StalledUsers: q.StalledUsers, StallRate: q.StallRate,
			FirstFrameP50: q.FirstFrameP50, FirstFrameP95: q.FirstFrameP95, PullSuccess: q.PullSuccess,
		}
	}
	a.mu.Unlock()
	a.snap.Store(&snap)
	return snap
}

// Minutes returns the per-minute history of one key, oldest first.
func (a *Aggregator) Minutes(k Key) []MinuteStat {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ka := a.keys[k]; ka != nil {
		return slices.Clone(ka.minutes)
	}
	return nil
}

// HandleLog is a [bus.Handler] for cdn.logs.
func (a *Aggregator) HandleLog(_ context.Context, m bus.Message) error {
	l, err := DecodeCDNLog(m.Value)
	if err != nil {
		a.badLogs.Add(1)
		return err
	}
	return a.AddLog(l)
}

// HandleBeacon is a [bus.Handler] for qos.beacons.
func (a *Aggregator) HandleBeacon(_ context.Context, m bus.Message) error {
	bs, err := ParseBeacons(m.Value)
	if err != nil {
		a.badBeacons.Add(1)
		return err
	}
	var errs []error
	for _, b := range bs {
		if err := a.AddBeacon(b); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run subscribes to cdn.logs and qos.beacons in group and ticks until ctx
// ends.
func (a *Aggregator) Run(ctx context.Context, sub bus.Subscriber, group string) error {
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := sub.Subscribe(ctx, bus.TopicCDNLogs, group, a.HandleLog); err != nil {
			a.log.Error("subscribe", "topic", bus.TopicCDNLogs, "err", err)
		}
	})
	wg.Go(func() {
		if err := sub.Subscribe(ctx, bus.TopicQoSBeacons, group, a.HandleBeacon); err != nil {
			a.log.Error("subscribe", "topic", bus.TopicQoSBeacons, "err", err)
		}
	})
	t := time.NewTicker(a.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			a.Tick()
		}
	}
}
