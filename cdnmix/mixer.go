package cdnmix

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/bus"
)

// Config is the cdnmix section of livefuse.yaml. Every key has a default
// (see DefaultConfig); with no vendors, /dispatch/ answers 503.
type Config struct {
	Vendors []Vendor `yaml:"vendors"`
	// Geo is the IP database: a CIDR CSV ("cidr,country,region,isp") or a
	// MaxMind DB; without either every client is in the any-bucket.
	Geo GeoConfig `yaml:"geo"`
	// TrustedProxies are CIDRs or addresses allowed to set X-Forwarded-For.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Regions × ISPs are planned even before traffic is seen.
	Regions []string `yaml:"regions"`
	ISPs    []string `yaml:"isps"`
	// Recompute is the allocation period [2s].
	Recompute time.Duration `yaml:"recompute"`
	// MinChange damps ratios [0.05]; negative disables damping.
	MinChange float64 `yaml:"min_change"`
	// CeilingHeadroom is the fraction of a ceiling kept free [0.02].
	CeilingHeadroom float64 `yaml:"ceiling_headroom"`
	// Admission caps each plan's dispatches to the room below ceilings
	// [true]; ViewerMbps is one viewer's bandwidth until beacons tell [3];
	// FleetSize the dispatcher nodes sharing the vendors [1]: each admits
	// 1/FleetSize of the room, or, with the aggregation role dispatch, its
	// measured share of the fleet's dispatch requests (FleetSize then
	// counts until the nodes' counts show more).
	Admission  bool    `yaml:"admission"`
	ViewerMbps float64 `yaml:"viewer_mbps"`
	FleetSize  int     `yaml:"fleet_size"`
	// StallRule raises an alert (audit event cdn.stall_alert) or, with
	// blacklist: true, blacklists a vendor × region × ISP whose stall rate
	// stays over the threshold [threshold 0.1 for 3 min, alert only].
	// Set threshold: 0 to disable.
	StallRule StallRuleConfig `yaml:"stall_rule"`
	// CORSOrigins are the web page origins allowed to call /dispatch/,
	// /dispatch/fallback.json and /qos from a browser: "*" for any, or
	// scheme://host[:port] each [none: same origin only].
	CORSOrigins []string `yaml:"cors_origins"`
	// DispatchTTL of JSON answers [20s] and SignTTL of signed URLs [1h].
	DispatchTTL time.Duration `yaml:"dispatch_ttl"`
	SignTTL     time.Duration `yaml:"sign_ttl"`
	// SteeringTTL is the TTL of the HLS Content Steering manifest
	// (/dispatch/APP/NAME/steering.json, steering.go): how often players
	// ask again, so about how long a plan change takes to move them [10s].
	SteeringTTL time.Duration `yaml:"steering_ttl"`
	// Aggregation windows: bandwidth [10s], quality [1m], forecast horizon
	// [10s].
	BandwidthWindow time.Duration `yaml:"bandwidth_window"`
	QualityWindow   time.Duration `yaml:"quality_window"`
	ForecastAhead   time.Duration `yaml:"forecast_ahead"`
	// StatsInterval is how often vendors' stats_url are polled [10s].
	StatsInterval time.Duration `yaml:"stats_interval"`
	// QoS is POST /qos and the session tokens dispatch hands players.
	QoS QoSSettings `yaml:"qos"`
	// Group is the bus consumer group of this node's aggregator [cdnmix].
	// Every dispatcher node needs every event: in a fleet on Kafka either
	// give each node its own group (nodes in one group would split the
	// events; every node then reads everything), or use the two-stage
	// aggregation (Aggregation), which does not use Group.
	Group string `yaml:"group"`
	// Aggregation splits the aggregation over a fleet (roles stage_one
	// and dispatch on Kafka); by default a node aggregates in process.
	Aggregation AggregationConfig `yaml:"aggregation"`
}

// QoSSettings is the qos part of the cdnmix config. Each dispatch answer
// hands the player a signed session token (qos_token) naming its stream,
// vendor, region and ISP; /qos uses a beacon only with a valid one, at a
// limited rate per session, and takes the vendor and bucket from it.
type QoSSettings struct {
	// TokenKey signs and checks the session tokens: a secret of at least
	// 16 bytes, never logged. Nodes that dispatch and take beacons for the
	// same players need the same key. Empty: `livefuse serve` keeps one in
	// DATA_DIR/qos-token.key (made when absent).
	TokenKey string `yaml:"token_key"`
	// TokenTTL is how long a token is accepted after its dispatch [6h].
	TokenTTL time.Duration `yaml:"token_ttl"`
	// SessionRate is the beacons per second a session may send on average
	// and SessionBurst how many at once [0.5, 30].
	SessionRate  float64 `yaml:"session_rate"`
	SessionBurst int     `yaml:"session_burst"`
	// RateSessions bounds the sessions whose rate is tracked [100000]
	// (when full, the half seen least recently is forgotten).
	RateSessions int `yaml:"rate_sessions"`
	// SessionsPerNetwork bounds the new sessions whose beacons one client
	// network (IPv4 /24, IPv6 /48) may start per quality window [100]; -1
	// removes the limit.
	SessionsPerNetwork int `yaml:"sessions_per_network"`
	// QualitySessions bounds the sessions the quality window holds over
	// all vendors and buckets [1000000]; new ones past it are dropped.
	QualitySessions int `yaml:"quality_sessions"`
	// MaxBody bounds a POST /qos body in bytes [65536] and BodyTimeout
	// the time to read it [10s].
	MaxBody     int64         `yaml:"max_body"`
	BodyTimeout time.Duration `yaml:"body_timeout"`
}

// GeoConfig names the IP database.
type GeoConfig struct {
	CIDRFile string `yaml:"cidr_file"`
	MMDBFile string `yaml:"mmdb_file"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Recompute: 2 * time.Second, MinChange: 0.05, CeilingHeadroom: 0.02,
		Admission: true, ViewerMbps: 3, FleetSize: 1,
		StallRule:   StallRuleConfig{Threshold: 0.1, Minutes: 3, MinUsers: 20, TTL: 10 * time.Minute},
		DispatchTTL: 20 * time.Second, SignTTL: time.Hour, SteeringTTL: 10 * time.Second,
		BandwidthWindow: 10 * time.Second, QualityWindow: time.Minute, ForecastAhead: 10 * time.Second,
		StatsInterval: 10 * time.Second,
		QoS: QoSSettings{TokenTTL: 6 * time.Hour, SessionRate: 0.5, SessionBurst: 30, RateSessions: 100_000, SessionsPerNetwork: 100,
			QualitySessions: 1_000_000, MaxBody: 64 << 10, BodyTimeout: 10 * time.Second},
		Group: "cdnmix",
		Aggregation: AggregationConfig{StageOneGroup: "cdnmix-stage-one", PartialsTopic: "cdnmix.partials",
			Tick: time.Second, PartialTTL: 30 * time.Second, AdmissionDelay: 3 * time.Second},
	}
}

// Option adjusts a Mixer.
type Option func(*options)

type options struct {
	streamExists func(app, name string) bool
	vendors      VendorStore
	blacklist    BlacklistStore
	now          func() time.Time
	tokenKey     []byte
}

// WithTokenKey gives the session token key when the config has none (the
// node's key file); without either, New makes a random key for this
// process, so tokens die with it and no other node accepts them.
func WithTokenKey(key []byte) Option { return func(o *options) { o.tokenKey = key } }

// WithStreamExists makes /dispatch/ answer 404 for streams f does not know.
func WithStreamExists(f func(app, name string) bool) Option {
	return func(o *options) { o.streamExists = f }
}

// WithVendorStore keeps the vendors in vs, shared by every node (an lms
// collection): the control API writes there, and the node's watch calls
// [Mixer.SyncVendors]. The config's vendors do not go there by
// themselves: seed the store (see [StoreVendors]) and call SyncVendors.
func WithVendorStore(vs VendorStore) Option { return func(o *options) { o.vendors = vs } }

// WithBlacklistStore keeps the manual blacklist in bs, shared by every
// node: the control API writes there, and the node's watch calls
// [Mixer.SyncBlacklist]. Entries hold absolute Until times, so every node
// ends them at the same moment. The stall rule's entries are not stored:
// each node's rule judges its own observations and keeps its entries.
func WithBlacklistStore(bs BlacklistStore) Option { return func(o *options) { o.blacklist = bs } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Mixer is cdnmix assembled for a node: the aggregator fed from the bus,
// the allocator, the dispatch and QoS handlers and the control API.
type Mixer struct {
	cfg   Config
	log   *slog.Logger
	bus   bus.Bus
	opts  options
	agg   *Aggregator
	alloc *Allocator
	disp  *Dispatcher
	qos   *QoSHandler
	geo   Locator
	close func() error

	aggn   aggregation
	obs    Observer   // the allocator's: agg, or fleet on a dispatch node
	stage1 *StageOne  // on a stage_one node
	fleet  *FleetView // on a dispatch node

	// regions and isps are the configured ones and those of the IP
	// database: with the vendors', the values aggregated (see bound).
	regions, isps map[string]struct{}

	vendors   VendorStore
	blacklist BlacklistStore
	vmu       sync.Mutex // serializes applying the stored vendors
	bmu       sync.Mutex // serializes applying the stored blacklist
}

// New builds a Mixer from cfg. b carries beacons and log lines (the
// in-process bus or Kafka); reg, if not nil, gets the cdnmix metrics.
func New(cfg Config, b bus.Bus, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Mixer, error) {
	if b == nil {
		return nil, errors.New("cdnmix: a bus is required")
	}
	if log == nil {
		log = slog.Default()
	}
	m := &Mixer{cfg: cfg, log: log.With("unit", "cdnmix"), bus: b, close: func() error { return nil }}
	for _, o := range opts {
		o(&m.opts)
	}
	if m.opts.now == nil {
		m.opts.now = time.Now
	}
	if cfg.Group == "" {
		m.cfg.Group = "cdnmix"
	}
	switch {
	case cfg.Geo.CIDRFile != "" && cfg.Geo.MMDBFile != "":
		return nil, errors.New("cdnmix: geo: set cidr_file or mmdb_file, not both")
	case cfg.Geo.CIDRFile != "":
		l, err := LoadCIDRCSV(cfg.Geo.CIDRFile)
		if err != nil {
			return nil, fmt.Errorf("cdnmix: %w", err)
		}
		m.geo = l
	case cfg.Geo.MMDBFile != "":
		l, err := OpenMMDB(cfg.Geo.MMDBFile)
		if err != nil {
			return nil, fmt.Errorf("cdnmix: %w", err)
		}
		m.geo, m.close = l, l.Close
	}
	proxies, err := parsePrefixes(cfg.TrustedProxies)
	if err != nil {
		m.close()
		return nil, fmt.Errorf("cdnmix: trusted_proxies: %w", err)
	}
	fail := func(err error) (*Mixer, error) {
		m.close()
		return nil, fmt.Errorf("cdnmix: %w", err)
	}
	if cfg.StatsInterval < 0 {
		return fail(errors.New("stats_interval must not be negative"))
	}
	if cfg.StatsInterval == 0 {
		m.cfg.StatsInterval = 10 * time.Second
	}
	m.regions, m.isps = nameSet(cfg.Regions), nameSet(cfg.ISPs)
	if n, ok := m.geo.(interface {
		Names() (regions, isps []string)
	}); ok {
		rs, is := n.Names()
		for _, r := range rs {
			m.regions[r] = struct{}{}
		}
		for _, i := range is {
			m.isps[i] = struct{}{}
		}
	}
	tokens, err := m.tokenKey()
	if err != nil {
		return fail(err)
	}
	aggCfg := AggregatorConfig{Locator: m.geo, BandwidthWindow: cfg.BandwidthWindow,
		QualityWindow: cfg.QualityWindow, ForecastAhead: cfg.ForecastAhead, PolledTTL: 3 * m.cfg.StatsInterval,
		MaxSessions: cfg.QoS.QualitySessions, Bound: m.bound, Now: m.opts.now, Logger: log}
	m.agg, err = NewAggregator(aggCfg)
	if err != nil {
		return fail(err)
	}
	m.obs = m.agg
	if err := m.setupAggregation(aggCfg); err != nil {
		return fail(err)
	}
	var buckets []Bucket
	for _, r := range cfg.Regions {
		buckets = append(buckets, Bucket{Region: r})
		for _, i := range cfg.ISPs {
			buckets = append(buckets, Bucket{r, i})
		}
	}
	for _, i := range cfg.ISPs {
		buckets = append(buckets, Bucket{ISP: i})
	}
	acfg := AllocatorConfig{Vendors: cfg.Vendors, Buckets: buckets, Observer: m.obs, Interval: cfg.Recompute,
		MinChange: cfg.MinChange, CeilingHeadroom: cfg.CeilingHeadroom, Admission: cfg.Admission,
		DefaultViewerMbps: cfg.ViewerMbps, FleetSize: cfg.FleetSize, Now: m.opts.now, Logger: log}
	if m.fleet != nil {
		acfg.Share = m.fleet.Share
		acfg.PendingWindow, acfg.PendingDelay, acfg.Stale = m.agg.cfg.BandwidthWindow, m.aggn.AdmissionDelay, m.fleet.Stale
		acfg.ViewerMbpsHold = m.agg.cfg.QualityWindow
	}
	if cfg.StallRule.Threshold > 0 {
		rule := cfg.StallRule
		rule.OnAlert = m.alert
		acfg.StallRule = &rule
	}
	m.alloc, err = NewAllocator(acfg)
	if err != nil {
		return fail(err)
	}
	m.vendors, m.blacklist = m.opts.vendors, m.opts.blacklist
	if m.vendors == nil {
		m.vendors = newMemStore(StoreVendors(cfg.Vendors))
	}
	if m.blacklist == nil {
		m.blacklist = newMemStore[BlacklistEntry](nil)
	}
	m.disp, err = NewDispatcher(DispatcherConfig{Allocator: m.alloc, Locator: m.geo, TrustedProxies: proxies,
		StreamExists: m.opts.streamExists, TTL: cfg.DispatchTTL, SignTTL: cfg.SignTTL, SteeringTTL: cfg.SteeringTTL, Tokens: tokens,
		TokenTTL: cfg.QoS.TokenTTL, CORSOrigins: cfg.CORSOrigins, Now: m.opts.now, Logger: log})
	if err != nil {
		return fail(err)
	}
	m.qos, err = NewQoSHandler(QoSConfig{Publisher: b, Tokens: tokens, KnownVendor: m.knownVendor,
		SessionRate: cfg.QoS.SessionRate, SessionBurst: cfg.QoS.SessionBurst, MaxSessions: cfg.QoS.RateSessions,
		SessionsPerNetwork: cfg.QoS.SessionsPerNetwork, NetworkWindow: m.agg.cfg.QualityWindow,
		MaxBody: cfg.QoS.MaxBody, BodyTimeout: cfg.QoS.BodyTimeout, TrustedProxies: proxies, CORSOrigins: cfg.CORSOrigins,
		Now: m.opts.now, Logger: log})
	if err != nil {
		return fail(err)
	}
	if reg != nil {
		if err := reg.Register(&collector{m: m}); err != nil {
			return fail(fmt.Errorf("metrics: %w", err))
		}
	}
	return m, nil
}

// tokenKey returns the session token key: the config's, WithTokenKey's,
// or a random one for this process.
func (m *Mixer) tokenKey() (*authkey.SessionKey, error) {
	key := []byte(m.cfg.QoS.TokenKey)
	if len(key) == 0 {
		key = m.opts.tokenKey
	}
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key)
		m.log.Warn("qos: no token_key; session tokens are signed with a key of this process only (set cdnmix.qos.token_key to share one across nodes and restarts)")
	}
	k, err := authkey.NewSessionKey(key)
	if err != nil {
		return nil, fmt.Errorf("qos.token_key: %w", err)
	}
	return k, nil
}

func nameSet(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names)+1)
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// knownVendor reports whether vendor is in the current vendor list.
func (m *Mixer) knownVendor(vendor string) bool {
	_, ok := m.alloc.vset.Load().byName[vendor]
	return ok
}

// bound is the aggregator's Bound: a key is kept only for a configured
// vendor, and a region or ISP that is neither configured (regions, isps),
// named by a vendor nor in the CIDR IP database becomes "" (any): the
// bucket Plan.Lookup serves such clients from. So keys, plan buckets and
// the cdnmix_stall_rate series are at most vendors × (regions+1) × (ISPs+1)
// whatever the beacons and log lines name.
func (m *Mixer) bound(k Key) (Key, bool) {
	vs := m.alloc.vset.Load()
	if _, ok := vs.byName[k.Vendor]; !ok {
		return Key{}, false
	}
	if r := k.Bucket.Region; r != "" {
		_, a := m.regions[r]
		_, b := vs.regions[r]
		if !a && !b {
			k.Bucket.Region = ""
		}
	}
	if i := k.Bucket.ISP; i != "" {
		_, a := m.isps[i]
		_, b := vs.isps[i]
		if !a && !b {
			k.Bucket.ISP = ""
		}
	}
	return k, true
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// alert publishes a stall rule alert as an audit event.
func (m *Mixer) alert(a Alert) {
	m.log.Warn("stall rule", "vendor", a.Vendor, "bucket", Bucket{a.Region, a.ISP}.String(),
		"stall_rate", a.StallRate, "users", a.Users, "minutes", a.Minutes, "blacklisted", a.Blacklisted)
	detail, _ := json.Marshal(a)
	if err := bus.Emit(m.bus, bus.AuditEvent{Actor: "cdnmix", Action: "cdn.stall_alert", Target: a.Vendor,
		Time: a.At, Detail: detail}); err != nil {
		m.log.Warn("stall alert not published", "err", err)
	}
}

// Run aggregates from the bus and recomputes the plan until ctx ends.
func (m *Mixer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if !m.aggn.fleet() {
		wg.Go(func() { m.agg.Run(ctx, m.bus, m.cfg.Group) })
	}
	if m.stage1 != nil {
		wg.Go(func() { m.stage1.Run(ctx, m.bus.(bus.PartitionConsumer), m.aggn.StageOneGroup) })
	}
	if m.fleet != nil {
		wg.Go(func() { m.fleet.Run(ctx, m.bus.(bus.Tailer)) })
	}
	wg.Go(func() { m.alloc.Run(ctx) })
	wg.Go(func() { m.pollStats(ctx, m.cfg.StatsInterval) })
	wg.Wait()
	return nil
}

// SetBlacklist replaces the manual blacklist entries with es and
// recomputes the plan; the stall rule's entries stay. Each entry ends at
// its Until (zero: until removed); entries that have ended already are
// dropped. With a store, the next SyncBlacklist puts the stored ones back.
func (m *Mixer) SetBlacklist(es []BlacklistEntry) error {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	if err := m.alloc.SetBlacklist(es); err != nil {
		return fmt.Errorf("cdnmix: %w", err)
	}
	return nil
}

// ManualBlacklist returns the active manual entries, sorted by vendor,
// region and ISP.
func (m *Mixer) ManualBlacklist() []BlacklistEntry { return m.alloc.ManualBlacklist() }

// Close releases the IP database.
func (m *Mixer) Close() error { return m.close() }

// Handler serves the public paths: /dispatch/ and /qos.
func (m *Mixer) Handler() http.Handler { return m.Wrap(http.NotFoundHandler()) }

// Wrap returns a handler that serves /dispatch/ and /qos and passes every
// other request to next (the media handler of the same port).
func (m *Mixer) Wrap(next http.Handler) http.Handler {
	m.disp.media = next // the origin's playlists for steered ones (steering.go)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/dispatch/"):
			if m.aggn.fleet() && !m.aggn.dispatch {
				// A stage-one worker sees no fleet-wide figures.
				http.Error(w, "not a dispatcher node", http.StatusServiceUnavailable)
				return
			}
			m.disp.ServeHTTP(w, r)
		case p == "/qos":
			m.qos.ServeHTTP(w, r)
		case p == "/qos/session":
			m.disp.serveSession(w, r) // session.go
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// Allocator, Aggregator and Dispatcher give access to the parts.
func (m *Mixer) Allocator() *Allocator { return m.alloc }

// Aggregator returns the aggregator.
func (m *Mixer) Aggregator() *Aggregator { return m.agg }

// Observations returns the last-minute figures the allocator plans from:
// the fleet's on a dispatch node of a fleet, else this node's aggregates.
func (m *Mixer) Observations() map[Key]Observation { return m.obs.Snapshot() }

// Dispatcher returns the dispatch handler.
func (m *Mixer) Dispatcher() *Dispatcher { return m.disp }

// collector exports cdnmix metrics at scrape time.
type collector struct{ m *Mixer }

var (
	descDispatch  = prometheus.NewDesc("cdnmix_dispatches_total", "Dispatch answers by result.", []string{"result"}, nil)
	descPoolMbps  = prometheus.NewDesc("cdnmix_pool_mbps", "Observed bandwidth of a vendor capacity pool.", []string{"vendor", "region"}, nil)
	descPoolFc    = prometheus.NewDesc("cdnmix_pool_forecast_mbps", "Forecast bandwidth of a vendor capacity pool.", []string{"vendor", "region"}, nil)
	descPoolCom   = prometheus.NewDesc("cdnmix_pool_commit_mbps", "Committed bandwidth of a vendor capacity pool.", []string{"vendor", "region"}, nil)
	descPoolCeil  = prometheus.NewDesc("cdnmix_pool_ceiling_mbps", "Ceiling bandwidth of a vendor capacity pool.", []string{"vendor", "region"}, nil)
	descBeacons   = prometheus.NewDesc("cdnmix_qos_requests_total", "POST /qos results (beacons accepted, requests rejected).", []string{"result"}, nil)
	descQoSResult = prometheus.NewDesc("cdnmix_qos_beacons_total", "Beacons posted to /qos by result: accepted (valid session token), no_token, bad_token, unknown_vendor, rate_limited; only accepted ones steer.", []string{"result"}, nil)
	descQoSRate   = prometheus.NewDesc("cdnmix_qos_rate_sessions", "Sessions whose beacon rate /qos tracks.", nil, nil)
	descQualSess  = prometheus.NewDesc("cdnmix_quality_sessions", "Sessions in the aggregator's quality window.", nil, nil)
	descAggInput  = prometheus.NewDesc("cdnmix_aggregator_input_total", "Aggregator input by kind (bad and late ones are dropped).", []string{"kind"}, nil)
	descShare     = prometheus.NewDesc("cdnmix_admission_share", "This dispatch node's share of the fleet's dispatch requests: the share of each pool's room it admits per plan (1/fleet_size without the two-stage aggregation).", nil, nil)
	descStage1    = prometheus.NewDesc("cdnmix_stage_one_records_total", "Records a stage-one worker took from its partitions, by result: applied, or duplicate (a redelivery within one ownership, skipped).", []string{"result"}, nil)
	descStage1P   = prometheus.NewDesc("cdnmix_stage_one_partitions", "Partitions of cdn.logs and qos.beacons this stage-one worker owns.", nil, nil)
	descFleetSrc  = prometheus.NewDesc("cdnmix_fleet_partials", "Partitions whose partials this dispatch node sums.", nil, nil)
	descStallRate = prometheus.NewDesc("cdnmix_stall_rate", "1-minute user stall rate per vendor, region, ISP.", []string{"vendor", "region", "isp"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDispatch, descPoolMbps, descPoolFc, descPoolCom, descPoolCeil, descBeacons,
		descQoSResult, descQoSRate, descQualSess, descAggInput, descStallRate, descShare, descStage1, descStage1P, descFleetSrc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.disp.Stats()
	counter := func(d *prometheus.Desc, v int64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	counter(descDispatch, int64(st.Dispatched), "dispatched")
	counter(descDispatch, int64(st.NotFound), "not_found")
	counter(descDispatch, int64(st.Unavailable), "unavailable")
	for _, p := range c.m.alloc.Plan().Pools {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, p.Vendor, p.Region)
		}
		g(descPoolMbps, p.Mbps)
		g(descPoolFc, p.ForecastMbps)
		g(descPoolCom, p.CommitMbps)
		g(descPoolCeil, p.CeilingMbps)
	}
	acc, rej := c.m.qos.Counts()
	counter(descBeacons, acc, "accepted")
	counter(descBeacons, rej, "rejected")
	for r, n := range c.m.qos.Results() {
		counter(descQoSResult, n, r.String())
	}
	ch <- prometheus.MustNewConstMetric(descQoSRate, prometheus.GaugeValue, float64(c.m.qos.TrackedSessions()))
	share := 1 / float64(max(1, c.m.cfg.FleetSize))
	if c.m.fleet != nil {
		share = c.m.fleet.Share()
	}
	ch <- prometheus.MustNewConstMetric(descShare, prometheus.GaugeValue, share)
	if c.m.stage1 != nil {
		s1 := c.m.stage1.Stats()
		counter(descStage1, s1.Records, "applied")
		counter(descStage1, s1.Duplicates, "duplicate")
		ch <- prometheus.MustNewConstMetric(descStage1P, prometheus.GaugeValue, float64(s1.Partitions))
	}
	if c.m.fleet != nil {
		ch <- prometheus.MustNewConstMetric(descFleetSrc, prometheus.GaugeValue, float64(c.m.fleet.Stats().Sources))
	}
	as := c.m.agg.Stats()
	ch <- prometheus.MustNewConstMetric(descQualSess, prometheus.GaugeValue, float64(as.Sessions))
	counter(descAggInput, as.Logs, "logs")
	counter(descAggInput, as.Beacons, "beacons")
	counter(descAggInput, as.BadLogs, "bad_logs")
	counter(descAggInput, as.BadBeacons, "bad_beacons")
	counter(descAggInput, as.Late, "late")
	counter(descAggInput, as.Unknown, "unknown_vendor")
	counter(descAggInput, as.Overflow, "overflow")
	for k, ob := range c.m.obs.Snapshot() {
		if ob.Users > 0 {
			ch <- prometheus.MustNewConstMetric(descStallRate, prometheus.GaugeValue, ob.StallRate, k.Vendor, k.Bucket.Region, k.Bucket.ISP)
		}
	}
}
