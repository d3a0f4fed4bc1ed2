package cdnmix

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// Roles of a node in the two-stage aggregation (AggregationConfig.Roles).
const (
	// RoleLocal: this node aggregates every event itself (one node, or a
	// fleet where every node has its own group): the default.
	RoleLocal = "local"
	// RoleStageOne: this node owns partitions of cdn.logs and qos.beacons
	// in the stage-one group and publishes their partials.
	RoleStageOne = "stage_one"
	// RoleDispatch: this node sums every partial into fleet-wide
	// observations, plans from them and dispatches; its admission share
	// follows its share of the fleet's dispatches.
	RoleDispatch = "dispatch"
)

// AggregationConfig is cdnmix.aggregation: how the observations are made.
//
// By default (no roles) the node aggregates in process, as one node does.
// A fleet on Kafka splits it in two stages. Stage one (role stage_one):
// the members of one consumer group own the partitions of cdn.logs and
// qos.beacons (beacons are keyed by session, so a session stays on one
// partition and its users add up across partitions); each partition has
// its own aggregator, and every tick its owner publishes the partition's
// additive figures per vendor × region × ISP (bandwidth, users, stalled
// users, pull attempts, first frame histogram) to the compacted partials
// topic, keyed by the partition. Stage two (role dispatch): every
// dispatcher node reads all partials, keeps the newest per partition and
// sums them, so every node plans from fleet-wide figures.
//
// Redelivery cannot count twice: a partial is the whole state of its
// partition and replaces the previous one. A new owner (after a worker
// dies, or a restart before a commit) starts from the committed
// checkpoint, which is the oldest record its state still needs (the
// longer of the two windows back), rebuilds the same state from the same
// records, and publishes under the same key only once it has caught up.
type AggregationConfig struct {
	// Roles of this node: [] or [local] (default), or any of stage_one
	// and dispatch (both need the Kafka bus).
	Roles []string `yaml:"roles"`
	// StageOneGroup is the consumer group of the stage-one workers
	// [cdnmix-stage-one].
	StageOneGroup string `yaml:"stage_one_group"`
	// PartialsTopic carries the partials and the dispatch counts
	// [cdnmix.partials]; created compacted.
	PartialsTopic string `yaml:"partials_topic"`
	// Tick is how often partials and dispatch counts are published and
	// summed [1s].
	Tick time.Duration `yaml:"tick"`
	// PartialTTL is how long a partition's partial counts after its last
	// update [30s]: longer than a takeover after a worker dies.
	PartialTTL time.Duration `yaml:"partial_ttl"`
	// AdmissionDelay is how long a viewer a dispatch node admitted takes
	// to show in the fleet-wide figures (log shipping, both stages'
	// ticks) [3s]: until then, and while the bandwidth window takes it in,
	// the node counts it against its admission room itself.
	AdmissionDelay time.Duration `yaml:"admission_delay"`
	// NodeID names this node in the partials and dispatch counts [host
	// name, process id and a random suffix].
	NodeID string `yaml:"node_id"`
}

// aggregation is the checked AggregationConfig.
type aggregation struct {
	AggregationConfig
	stageOne, dispatch bool
}

func (c AggregationConfig) check() (aggregation, error) {
	a := aggregation{AggregationConfig: c}
	for _, r := range c.Roles {
		switch r {
		case RoleLocal:
			if len(c.Roles) > 1 {
				return a, errors.New("aggregation: role local goes alone")
			}
		case RoleStageOne:
			a.stageOne = true
		case RoleDispatch:
			a.dispatch = true
		default:
			return a, fmt.Errorf("aggregation: role %q: want local, stage_one or dispatch", r)
		}
	}
	if c.Tick < 0 || c.PartialTTL < 0 || c.AdmissionDelay < 0 {
		return a, errors.New("aggregation: tick, partial_ttl and admission_delay must not be negative")
	}
	if a.AdmissionDelay == 0 {
		a.AdmissionDelay = 3 * time.Second
	}
	if a.StageOneGroup == "" {
		a.StageOneGroup = "cdnmix-stage-one"
	}
	if a.PartialsTopic == "" {
		a.PartialsTopic = "cdnmix.partials"
	}
	if a.Tick == 0 {
		a.Tick = time.Second
	}
	if a.PartialTTL == 0 {
		a.PartialTTL = 30 * time.Second
	}
	if a.PartialTTL < 2*a.Tick {
		return a, errors.New("aggregation: partial_ttl must be at least two ticks")
	}
	if a.NodeID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		rand.Read(b)
		a.NodeID = host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b)
	}
	return a, nil
}

// fleet reports whether the two-stage aggregation is on.
func (a aggregation) fleet() bool { return a.stageOne || a.dispatch }

// Partial is one vendor × region × ISP of one partition: its additive
// figures, so that partials of different partitions sum to the fleet's.
type Partial struct {
	Vendor   string  `json:"v"`
	Region   string  `json:"r,omitempty"`
	ISP      string  `json:"i,omitempty"`
	Mbps     float64 `json:"mbps,omitempty"`
	Users    int     `json:"users,omitempty"`
	Stalled  int     `json:"stalled,omitempty"`
	Attempts int     `json:"attempts,omitempty"`
	OK       int     `json:"ok,omitempty"`
	// FirstFrame counts first frame times by bucket (see ffBucket).
	FirstFrame map[int]int `json:"ff,omitempty"`
}

// First frame histogram buckets: bucket i holds times up to 2^(i/8) ms,
// so a percentile read from it is at most 9 % high.
const ffBuckets = 160

func ffBucket(ms int64) int {
	if ms <= 1 {
		return 0
	}
	return min(int(math.Ceil(8*math.Log2(float64(ms)))), ffBuckets-1)
}

func ffBound(i int) time.Duration {
	return time.Duration(math.Round(math.Exp2(float64(i)/8))) * time.Millisecond
}

func ffHistogram(ms []int64) map[int]int {
	if len(ms) == 0 {
		return nil
	}
	h := make(map[int]int)
	for _, v := range ms {
		h[ffBucket(v)]++
	}
	return h
}

// ffPercentile reads the nearest-rank percentile p off a histogram.
func ffPercentile(h []int, n int, p float64) time.Duration {
	rank := max(1, int(float64(n)*p+0.9999999))
	seen := 0
	for i, c := range h {
		seen += c
		if seen >= rank {
			return ffBound(i)
		}
	}
	return 0
}

// fleetMsg is one record of the partials topic: a partition's partial
// (kind partition, key "part/SOURCE") or a dispatcher node's count of
// dispatch requests (kind node, key "node/ID").
type fleetMsg struct {
	Kind   string    `json:"kind"`
	Source string    `json:"source,omitempty"` // "topic/partition"
	Owner  string    `json:"owner,omitempty"`
	At     time.Time `json:"at"`
	// To is the partition's next offset: the partial covers its records
	// before To (from the checkpoint the owner started at).
	To   int64     `json:"to,omitempty"`
	Keys []Partial `json:"keys,omitempty"`
	// Requests counts the dispatch requests of node Node since it started.
	Node     string `json:"node,omitempty"`
	Requests uint64 `json:"requests,omitempty"`
}

// Bounds on one partials record (the topic is internal, but its bytes come
// from the network).
const (
	maxFleetRecord = 8 << 20
	maxFleetKeys   = 100_000
	// maxFleetSources bounds the partitions and the nodes a view keeps
	// (a hostile or broken producer cannot grow them without end).
	maxFleetSources = 10_000
)

// StageOneConfig configures a StageOne.
type StageOneConfig struct {
	// NewAggregator makes the aggregator of one partition.
	NewAggregator func() (*Aggregator, error)
	// Publisher takes the partials, on Topic.
	Publisher bus.Publisher
	Topic     string
	// Tick between partials [1s]. Need is how far back in time the state
	// of a partition reaches (its checkpoint is the first record since
	// then): the longer of the bandwidth and quality windows, plus slack.
	Tick  time.Duration
	Need  time.Duration
	Owner string
	Now   func() time.Time
	Log   *slog.Logger
}

// StageOne owns partitions of cdn.logs and qos.beacons and publishes their
// partials. Each partition has its own aggregator and lock, fed by its own
// reader goroutine: the aggregation is sharded by partition, with no lock
// shared between partitions.
type StageOne struct {
	cfg   StageOneConfig
	mu    sync.Mutex
	parts map[string]*partOwner

	records, dups, published atomic.Int64
}

// NewStageOne checks cfg.
func NewStageOne(cfg StageOneConfig) (*StageOne, error) {
	if cfg.NewAggregator == nil || cfg.Publisher == nil || cfg.Topic == "" {
		return nil, errors.New("stage one: aggregator, publisher and topic are required")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Need <= 0 {
		cfg.Need = 75 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &StageOne{cfg: cfg, parts: make(map[string]*partOwner)}, nil
}

// StageOneStats counts what a stage-one worker did.
type StageOneStats struct {
	Partitions int   `json:"partitions"`
	Records    int64 `json:"records"`
	Duplicates int64 `json:"duplicates"` // redelivered records skipped
	Published  int64 `json:"published"`  // partials sent
}

// Stats returns the counters.
func (s *StageOne) Stats() StageOneStats {
	s.mu.Lock()
	n := len(s.parts)
	s.mu.Unlock()
	return StageOneStats{n, s.records.Load(), s.dups.Load(), s.published.Load()}
}

// Run owns partitions of cdn.logs and qos.beacons in group and publishes
// the partials every tick until ctx ends.
func (s *StageOne) Run(ctx context.Context, pc bus.PartitionConsumer, group string) error {
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := pc.Own(ctx, []string{bus.TopicCDNLogs, bus.TopicQoSBeacons}, group, s.Open); err != nil {
			s.cfg.Log.Error("stage one", "err", err)
		}
	})
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			s.Publish()
		}
	}
}

// Open implements the open function of [bus.PartitionConsumer.Own].
func (s *StageOne) Open(topic string, partition int) bus.PartitionOwner {
	o := &partOwner{s: s, topic: topic, source: topic + "/" + strconv.Itoa(partition), next: -1, opened: s.cfg.Now()}
	agg, err := s.cfg.NewAggregator()
	if err != nil { // the config was checked when the mixer was built
		s.cfg.Log.Error("stage one aggregator", "err", err)
		agg, _ = NewAggregator(AggregatorConfig{})
	}
	o.agg = agg
	s.mu.Lock()
	s.parts[o.source] = o
	s.mu.Unlock()
	s.cfg.Log.Debug("partition owned", "source", o.source)
	return o
}

// Publish sends the partial of every owned partition that has caught up.
func (s *StageOne) Publish() {
	s.mu.Lock()
	owners := make([]*partOwner, 0, len(s.parts))
	for _, o := range s.parts {
		owners = append(owners, o)
	}
	s.mu.Unlock()
	for _, o := range owners {
		m, ok := o.partial()
		if !ok {
			continue
		}
		b, err := json.Marshal(m)
		if err != nil {
			continue
		}
		if err := s.cfg.Publisher.Publish(s.cfg.Topic, []byte("part/"+m.Source), b); err != nil {
			s.cfg.Log.Warn("partial not published", "source", m.Source, "err", err)
			continue
		}
		s.published.Add(1)
	}
}

// partOwner is the state of one owned partition.
type partOwner struct {
	s              *StageOne
	topic, source  string
	opened         time.Time
	agg            *Aggregator
	mu             sync.Mutex
	next           int64  // next offset expected; -1 before the first record
	marks          []mark // first offset of each second of record time
	lastRec        time.Time
	caughtUp, done bool
}

type mark struct {
	sec int64
	off int64
}

// Handle implements bus.PartitionOwner: a record already applied (a
// redelivery within this ownership) is skipped.
func (o *partOwner) Handle(r bus.Record) {
	now := o.s.cfg.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return
	}
	if o.next >= 0 && r.Offset < o.next {
		o.s.dups.Add(1)
		return
	}
	o.next = r.Offset + 1
	o.s.records.Add(1)
	at := r.Time
	if at.IsZero() {
		at = now
	}
	if sec := at.Unix(); len(o.marks) == 0 || sec > o.marks[len(o.marks)-1].sec {
		o.marks = append(o.marks, mark{sec, r.Offset})
	}
	o.trim(now)
	o.lastRec = now
	if r.HighWater > 0 && r.Offset+1 >= r.HighWater {
		o.caughtUp = true
	}
	ctx := context.Background()
	switch o.topic {
	case bus.TopicCDNLogs:
		o.agg.HandleLog(ctx, r.Message)
	case bus.TopicQoSBeacons:
		o.agg.HandleBeacon(ctx, r.Message)
	}
}

// trim drops the marks older than the state needs.
func (o *partOwner) trim(now time.Time) {
	cutoff := now.Add(-o.s.cfg.Need).Unix()
	i := 0
	for i < len(o.marks) && o.marks[i].sec < cutoff {
		i++
	}
	if i > 0 {
		o.marks = slices.Delete(o.marks, 0, i)
	}
}

// Checkpoint implements bus.PartitionOwner: the oldest record the state
// still needs, so a new owner that starts there rebuilds the same state.
func (o *partOwner) Checkpoint() (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trim(o.s.cfg.Now())
	if len(o.marks) > 0 {
		return o.marks[0].off, true
	}
	return o.next, o.next >= 0
}

// Close implements bus.PartitionOwner.
func (o *partOwner) Close() {
	o.mu.Lock()
	o.done = true
	o.mu.Unlock()
	o.s.mu.Lock()
	if o.s.parts[o.source] == o {
		delete(o.s.parts, o.source)
	}
	o.s.mu.Unlock()
}

// partial ticks the partition's aggregator and returns its partial, once
// the owner has caught up with the partition (a new owner replaying from
// the checkpoint publishes nothing until its state is whole).
func (o *partOwner) partial() (fleetMsg, bool) {
	now := o.s.cfg.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return fleetMsg{}, false
	}
	if !o.caughtUp && now.Sub(o.opened) > 3*time.Second && now.Sub(o.lastRec) > time.Second {
		o.caughtUp = true // nothing more to read
	}
	keys := o.agg.TickPartials()
	if !o.caughtUp {
		return fleetMsg{}, false
	}
	return fleetMsg{Kind: "partition", Source: o.source, Owner: o.s.cfg.Owner, At: now, To: o.next, Keys: keys}, true
}

// FleetViewConfig configures a FleetView.
type FleetViewConfig struct {
	// Tick between sums [1s]; TTL of a partition's partial [30s]; a node
	// whose dispatch count is older than NodeTTL is gone [5s].
	Tick, TTL, NodeTTL time.Duration
	// ForecastAhead [10s], HoltAlpha [0.5], HoltBeta [0.3]: the forecast,
	// as the Aggregator's.
	ForecastAhead       time.Duration
	HoltAlpha, HoltBeta float64
	// PolledTTL as the Aggregator's [30s].
	PolledTTL time.Duration
	// Bound as the Aggregator's.
	Bound func(Key) (Key, bool)
	// Node is this node's id; Requests, if set, counts its dispatch
	// requests, published on Topic through Publisher every tick.
	Node      string
	MinNodes  int // the fleet's size until the counts show more nodes [1]
	Requests  func() uint64
	Publisher bus.Publisher
	Topic     string
	Now       func() time.Time
	Log       *slog.Logger
}

// FleetView is stage two: it keeps the newest partial of every partition
// and sums them every tick into fleet-wide observations (an [Observer]),
// and measures each dispatcher node's share of the dispatch requests.
type FleetView struct {
	cfg  FleetViewConfig
	snap atomic.Pointer[map[Key]Observation]
	// share is this node's share of the fleet's dispatch requests, as
	// float64 bits; behind how far the oldest partial is behind.
	share  atomic.Uint64
	behind atomic.Int64

	mu      sync.Mutex
	sources map[string]*fleetMsg
	nodes   map[string]*nodeRate
	holt    map[Key]*Holt
	minutes map[Key]*fleetMinutes
	polled  map[string]polledStats
	bad     int64
	stale   int64
}

// fleetMinutes is the per-minute history of one key, from the sums.
type fleetMinutes struct {
	last int64 // unix minute of the last closed minute
	list []MinuteStat
}

type nodeRate struct {
	at    time.Time
	count uint64
	rate  float64 // requests per second, smoothed
	seen  bool
}

// NewFleetView checks cfg.
func NewFleetView(cfg FleetViewConfig) *FleetView {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Tick, time.Second)
	def(&cfg.TTL, 30*time.Second)
	def(&cfg.NodeTTL, 5*time.Second)
	def(&cfg.ForecastAhead, 10*time.Second)
	def(&cfg.PolledTTL, 30*time.Second)
	if cfg.HoltAlpha <= 0 {
		cfg.HoltAlpha = 0.5
	}
	if cfg.HoltBeta <= 0 {
		cfg.HoltBeta = 0.3
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	f := &FleetView{cfg: cfg, sources: make(map[string]*fleetMsg), nodes: make(map[string]*nodeRate),
		holt: make(map[Key]*Holt), minutes: make(map[Key]*fleetMinutes), polled: make(map[string]polledStats)}
	empty := map[Key]Observation{}
	f.snap.Store(&empty)
	f.share.Store(math.Float64bits(1))
	return f
}

// Snapshot implements Observer.
func (f *FleetView) Snapshot() map[Key]Observation { return *f.snap.Load() }

// Stale returns how far the oldest partial counted is behind the others
// (more than two ticks old): a partition whose owner died, until a new
// owner has caught up.
func (f *FleetView) Stale() time.Duration { return time.Duration(f.behind.Load()) }

// Share returns this node's share of the fleet's dispatch requests, in
// (0, 1]: its admission share.
func (f *FleetView) Share() float64 { return math.Float64frombits(f.share.Load()) }

// Run reads the partials topic from a little before now and sums every
// tick until ctx ends.
func (f *FleetView) Run(ctx context.Context, t bus.Tailer) error {
	var wg sync.WaitGroup
	from := f.cfg.Now().Add(-max(5*time.Second, 3*f.cfg.Tick))
	wg.Go(func() {
		if err := t.Tail(ctx, f.cfg.Topic, from, f.Handle); err != nil {
			f.cfg.Log.Error("partials", "err", err)
		}
	})
	tk := time.NewTicker(f.cfg.Tick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tk.C:
			f.Tick()
		}
	}
}

// Handle takes one record of the partials topic.
func (f *FleetView) Handle(r bus.Record) {
	if len(r.Value) > maxFleetRecord {
		f.mu.Lock()
		f.bad++
		f.mu.Unlock()
		return
	}
	var m fleetMsg
	if err := json.Unmarshal(r.Value, &m); err != nil || len(m.Keys) > maxFleetKeys || m.At.IsZero() {
		f.mu.Lock()
		f.bad++
		f.mu.Unlock()
		return
	}
	now := f.cfg.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	switch m.Kind {
	case "partition":
		if m.Source == "" || len(m.Source) > 300 {
			f.bad++
			return
		}
		cur := f.sources[m.Source]
		if cur == nil && len(f.sources) >= maxFleetSources {
			f.bad++
			return
		}
		// A partial replaces the one before unless it is behind it: a
		// former owner's last one, arriving after the new owner's.
		if cur != nil && m.To < cur.To && m.Owner != cur.Owner && now.Sub(cur.At) < f.cfg.TTL {
			f.stale++
			return
		}
		f.sources[m.Source] = &m
	case "node":
		if m.Node == "" || len(m.Node) > 300 {
			f.bad++
			return
		}
		n := f.nodes[m.Node]
		if n == nil {
			if len(f.nodes) >= maxFleetSources {
				f.bad++
				return
			}
			n = &nodeRate{}
			f.nodes[m.Node] = n
		}
		if n.seen && m.At.After(n.at) && m.Requests >= n.count {
			inst := float64(m.Requests-n.count) / m.At.Sub(n.at).Seconds()
			n.rate = 0.5*n.rate + 0.5*inst
		}
		if !n.seen || m.At.After(n.at) {
			n.at, n.count, n.seen = m.At, m.Requests, true
		}
	default:
		f.bad++
	}
}

// Minutes returns the per-minute history of one key from the fleet-wide
// sums (the last hour), oldest first.
func (f *FleetView) Minutes(k Key) []MinuteStat {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fm := f.minutes[k]; fm != nil {
		return slices.Clone(fm.list)
	}
	return nil
}

// minutes returns the quality history the control API shows: the
// fleet-wide one on a dispatch node, else the local aggregator's.
func (m *Mixer) minutes(k Key) []MinuteStat {
	if m.fleet != nil {
		return m.fleet.Minutes(k)
	}
	return m.agg.Minutes(k)
}

// SetPolled is the Aggregator's SetPolled for the fleet-wide figures.
func (f *FleetView) SetPolled(vendor string, mbps map[Bucket]float64) {
	if f.cfg.Bound != nil {
		bounded := make(map[Bucket]float64, len(mbps))
		for b, v := range mbps {
			k, ok := f.cfg.Bound(Key{vendor, b})
			if !ok {
				return
			}
			bounded[k.Bucket] += v
		}
		mbps = bounded
	}
	f.mu.Lock()
	f.polled[vendor] = polledStats{at: f.cfg.Now(), mbps: mbps}
	f.mu.Unlock()
}

type fleetSum struct {
	mbps                             float64
	users, stalled, attempts, okPull int
	ff                               []int
	ffN                              int
}

// Tick sums the partials into a new snapshot, updates this node's share
// and publishes its dispatch count.
func (f *FleetView) Tick() map[Key]Observation {
	now := f.cfg.Now()
	ahead := float64(f.cfg.ForecastAhead) / float64(f.cfg.Tick)
	f.mu.Lock()
	sums := make(map[Key]*fleetSum)
	var behind time.Duration
	for src, m := range f.sources {
		if now.Sub(m.At) > f.cfg.TTL {
			delete(f.sources, src)
			continue
		}
		behind = max(behind, now.Sub(m.At)-2*f.cfg.Tick)
		for _, p := range m.Keys {
			k := Key{p.Vendor, Bucket{p.Region, p.ISP}}
			if f.cfg.Bound != nil {
				var ok bool
				if k, ok = f.cfg.Bound(k); !ok {
					continue
				}
			}
			s := sums[k]
			if s == nil {
				s = &fleetSum{}
				sums[k] = s
			}
			if p.Mbps > 0 && !math.IsInf(p.Mbps, 0) {
				s.mbps += p.Mbps
			}
			s.users += max(0, p.Users)
			s.stalled += max(0, p.Stalled)
			s.attempts += max(0, p.Attempts)
			s.okPull += max(0, p.OK)
			for i, c := range p.FirstFrame {
				if i >= 0 && i < ffBuckets && c > 0 {
					if s.ff == nil {
						s.ff = make([]int, ffBuckets)
					}
					s.ff[i] += c
					s.ffN += c
				}
			}
		}
	}
	for v, p := range f.polled {
		if now.Sub(p.at) > f.cfg.PolledTTL {
			delete(f.polled, v)
			continue
		}
		for k, s := range sums {
			if k.Vendor == v {
				s.mbps = 0
			}
		}
		for b, mbps := range p.mbps {
			k := Key{v, b}
			if sums[k] == nil {
				sums[k] = &fleetSum{}
			}
			sums[k].mbps = mbps
		}
	}
	snap := make(map[Key]Observation, len(sums))
	for k, s := range sums {
		h := f.holt[k]
		if h == nil {
			h = &Holt{Alpha: f.cfg.HoltAlpha, Beta: f.cfg.HoltBeta}
			f.holt[k] = h
		}
		h.Update(s.mbps)
		ob := Observation{Mbps: s.mbps, ForecastMbps: max(0, h.Forecast(ahead)), Users: s.users,
			StalledUsers: s.stalled, PullSuccess: 1}
		if s.users > 0 {
			ob.StallRate = float64(s.stalled) / float64(s.users)
		}
		if s.attempts > 0 {
			ob.PullSuccess = float64(s.okPull) / float64(s.attempts)
		}
		if s.ffN > 0 {
			ob.FirstFrameP50 = ffPercentile(s.ff, s.ffN, 0.5)
			ob.FirstFrameP95 = ffPercentile(s.ff, s.ffN, 0.95)
		}
		snap[k] = ob
		fm := f.minutes[k]
		if fm == nil {
			fm = &fleetMinutes{last: now.Unix() / 60}
			f.minutes[k] = fm
		}
		if minute := now.Unix() / 60; minute > fm.last {
			ms := MinuteStat{Minute: time.Unix((minute-1)*60, 0).UTC(), Users: ob.Users, StalledUsers: ob.StalledUsers,
				StallRate: ob.StallRate, FirstFrameP50: ob.FirstFrameP50, FirstFrameP95: ob.FirstFrameP95,
				PullSuccess: ob.PullSuccess, Mbps: ob.Mbps}
			if ob.Users > 0 {
				ms.ZeroStallRate = 1 - ob.StallRate
			}
			fm.list = append(fm.list, ms)
			if len(fm.list) > 60 {
				fm.list = slices.Delete(fm.list, 0, len(fm.list)-60)
			}
			fm.last = minute
		}
	}
	for k := range f.holt {
		if sums[k] == nil {
			delete(f.holt, k)
		}
	}
	for k, fm := range f.minutes {
		if sums[k] == nil && (len(fm.list) == 0 || now.Sub(fm.list[len(fm.list)-1].Minute) > time.Hour) {
			delete(f.minutes, k)
		}
	}
	f.share.Store(math.Float64bits(f.shareLocked(now)))
	f.behind.Store(int64(max(0, behind)))
	f.mu.Unlock()
	f.snap.Store(&snap)
	if f.cfg.Requests != nil && f.cfg.Publisher != nil {
		b, _ := json.Marshal(fleetMsg{Kind: "node", Node: f.cfg.Node, At: now, Requests: f.cfg.Requests()})
		if err := f.cfg.Publisher.Publish(f.cfg.Topic, []byte("node/"+f.cfg.Node), b); err != nil {
			f.cfg.Log.Debug("dispatch count not published", "err", err)
		}
	}
	return snap
}

// shareLocked is this node's share of the live nodes' request rates,
// with a floor of a twentieth of an even share so that a node without
// traffic yet can still admit some. Until the counts show MinNodes nodes,
// the missing ones count with no traffic (so a node that starts first
// does not take the whole room).
func (f *FleetView) shareLocked(now time.Time) float64 {
	total, mine, n := 0.0, 0.0, 0
	self := false
	for id, nr := range f.nodes {
		if now.Sub(nr.at) > f.cfg.NodeTTL {
			if now.Sub(nr.at) > 10*f.cfg.NodeTTL {
				delete(f.nodes, id)
			}
			continue
		}
		n++
		total += nr.rate
		if id == f.cfg.Node {
			mine, self = nr.rate, true
		}
	}
	if !self {
		n++
	}
	n = max(n, f.cfg.MinNodes)
	if total <= 0 {
		return 1 / float64(n)
	}
	eps := 0.05 * total / float64(n)
	return (mine + eps) / (total + float64(n)*eps)
}

// FleetStats counts what a FleetView holds.
type FleetStats struct {
	Sources int     `json:"sources"`
	Nodes   int     `json:"nodes"`
	Bad     int64   `json:"bad"`
	Stale   int64   `json:"stale"`
	Share   float64 `json:"share"`
}

// Stats returns the counters.
func (f *FleetView) Stats() FleetStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FleetStats{len(f.sources), len(f.nodes), f.bad, f.stale, f.Share()}
}

// setupAggregation builds the stage-one worker and the fleet view of the
// node's roles; both need the Kafka bus (partitions and a tail).
func (m *Mixer) setupAggregation(aggCfg AggregatorConfig) error {
	a, err := m.cfg.Aggregation.check()
	if err != nil {
		return err
	}
	m.aggn = a
	if a.stageOne {
		if _, ok := m.bus.(bus.PartitionConsumer); !ok {
			return errors.New("aggregation: role stage_one needs the Kafka bus (bus.kafka.brokers)")
		}
		win := max(m.agg.cfg.BandwidthWindow, m.agg.cfg.QualityWindow)
		m.stage1, err = NewStageOne(StageOneConfig{
			NewAggregator: func() (*Aggregator, error) { return NewAggregator(aggCfg) },
			Publisher:     m.bus, Topic: a.PartialsTopic, Tick: a.Tick, Need: win + 2*a.Tick + 5*time.Second,
			Owner: a.NodeID, Now: m.opts.now, Log: m.log,
		})
		if err != nil {
			return err
		}
	}
	if a.dispatch {
		if _, ok := m.bus.(bus.Tailer); !ok {
			return errors.New("aggregation: role dispatch needs the Kafka bus (bus.kafka.brokers)")
		}
		m.fleet = NewFleetView(FleetViewConfig{Tick: a.Tick, TTL: a.PartialTTL, ForecastAhead: m.agg.cfg.ForecastAhead,
			PolledTTL: m.agg.cfg.PolledTTL, Bound: m.bound, Node: a.NodeID, MinNodes: m.cfg.FleetSize, Publisher: m.bus, Topic: a.PartialsTopic,
			Requests: func() uint64 {
				st := m.disp.Stats()
				return st.Dispatched + st.Unavailable
			},
			Now: m.opts.now, Log: m.log})
		m.obs = m.fleet
	}
	return nil
}

// StageOne returns the stage-one worker (nil unless the node has the role).
func (m *Mixer) StageOne() *StageOne { return m.stage1 }

// FleetView returns the stage-two view (nil unless the node dispatches in
// a fleet).
func (m *Mixer) FleetView() *FleetView { return m.fleet }
