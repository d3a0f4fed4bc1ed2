package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/lms"
)

// BusConfig is the bus section of livefuse.yaml: Kafka when brokers are
// set, else the in-process bus.
type BusConfig struct {
	Kafka bus.KafkaConfig `yaml:"kafka"`
}

// openBus returns the configured bus and a function that runs it (the
// Kafka sender) until ctx ends.
func openBus(cfg BusConfig, dataDir string, log *slog.Logger) (bus.Bus, func(ctx context.Context), error) {
	if len(cfg.Kafka.Brokers) == 0 {
		m := bus.NewMemory(bus.MemoryConfig{Logger: log})
		return m, func(ctx context.Context) { <-ctx.Done(); m.Close() }, nil
	}
	kc := cfg.Kafka
	if kc.SpillDir == "" {
		kc.SpillDir = filepath.Join(dataDir, "bus-spill")
	}
	kc.Logger = log
	k, err := bus.NewKafka(kc)
	if err != nil {
		return nil, nil, err
	}
	return k, func(ctx context.Context) { k.Run(ctx) }, nil
}

// cdnMix runs the CDN mixer of a node: dispatch and QoS on the media port,
// its routes on the control API.
type cdnMix struct {
	m      *cdnmix.Mixer
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newCDNMix builds the mixer and starts it and the bus; streams are known
// when the registry has them enabled. The vendors and the manual blacklist
// live in the lms store (see cdnBlob), so that they survive a restart and a
// change through any node's control API reaches every node. The config's
// vendors seed an empty store, the store's win afterwards; the stall
// rule's blacklist entries stay with the node that made them.
func newCDNMix(ctx context.Context, cfg cdnmix.Config, b bus.Bus, runBus func(context.Context), reg *lms.Registry, log *slog.Logger, promReg prometheus.Registerer) (*cdnMix, error) {
	exists := func(app, name string) bool {
		s, ok := reg.Get(app, name)
		return ok && s.Enabled
	}
	ctx, cancel := context.WithCancel(ctx)
	ulog := log.With("unit", "cdnmix")
	vendors := &cdnBlob[cdnmix.Vendor]{reg: reg, log: ulog, ctx: ctx, name: vendorsBlob, what: "cdn vendors", count: "vendors"}
	blacklist := &cdnBlob[cdnmix.BlacklistEntry]{reg: reg, log: ulog, ctx: ctx, name: blacklistBlob, what: "cdn blacklist", count: "entries"}
	storedVendors, vendorsFound, err := vendors.load(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cdn vendors: %w", err)
	}
	storedBlacklist, blacklistFound, err := blacklist.load(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cdn blacklist: %w", err)
	}
	opts := []cdnmix.Option{cdnmix.WithStreamExists(exists),
		cdnmix.WithVendorsChanged(vendors.save), cdnmix.WithBlacklistChanged(blacklist.save)}
	if cfg.QoS.TokenKey == "" {
		key, err := loadTokenKey(ctx, reg, ulog)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("cdn qos token key: %w", err)
		}
		opts = append(opts, cdnmix.WithTokenKey(key))
	}
	m, err := cdnmix.New(cfg, b, log, promReg, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	vendors.apply = func(vs []cdnmix.Vendor) { applyVendors(m, ulog, vs) }
	blacklist.apply = func(es []cdnmix.BlacklistEntry) { applyBlacklist(m, ulog, es) }
	switch {
	case vendorsFound:
		if !sameList(storedVendors, cfg.Vendors) {
			ulog.Info("cdn vendors from the store; the config's only seed an empty store",
				"vendors", len(storedVendors), "config_vendors", len(cfg.Vendors))
		}
		vendors.apply(storedVendors)
	case len(cfg.Vendors) > 0:
		seeded, err := vendors.seed(ctx, m.Allocator().Vendors())
		if err != nil {
			cancel()
			m.Close()
			return nil, fmt.Errorf("cdn vendors: seed the store: %w", err)
		}
		if seeded {
			ulog.Info("cdn vendors seeded from the config", "vendors", len(cfg.Vendors))
		}
	}
	if blacklistFound {
		blacklist.apply(storedBlacklist)
	}
	if promReg != nil {
		if err := registerBusMetrics(promReg, b); err != nil {
			cancel()
			m.Close()
			return nil, err
		}
	}
	c := &cdnMix{m: m, cancel: cancel}
	c.wg.Go(func() { runBus(ctx) })
	c.wg.Go(func() { m.Run(ctx) })
	c.wg.Go(func() { reg.WatchBlobs(ctx, cdnBlobKind, routeBlobs(vendors, blacklist)) })
	return c, nil
}

// The vendor list and the manual blacklist are one blob each, so that each
// is read and written whole, in its order, and an emptied list stays
// empty.
const (
	cdnBlobKind   = "cdnmix"
	vendorsBlob   = "vendors"
	blacklistBlob = "blacklist"
)

// tokenKeyBlob holds the session token key (cdnmix.qos.token_key) when
// the config sets none: made by the first node, read by every other, so
// that a token from any node's dispatch is good at every node's /qos and
// across restarts. Like the vendor list (which holds signing keys), it is
// a secret in the store and is never logged or served.
const tokenKeyBlob = "qos-token-key"

// loadTokenKey returns the stored session token key, storing a new random
// one when there is none.
func loadTokenKey(ctx context.Context, reg *lms.Registry, log *slog.Logger) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	key := make([]byte, 32)
	rand.Read(key)
	created, _, err := reg.CreateBlob(ctx, cdnBlobKind, tokenKeyBlob, key)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("qos session token key made and stored; every node of this store uses it")
		return key, nil
	}
	b, ok, err := reg.GetBlob(ctx, cdnBlobKind, tokenKeyBlob)
	if err != nil {
		return nil, err
	}
	if !ok || len(b) < 16 {
		return nil, fmt.Errorf("stored key missing or short (%d bytes)", len(b))
	}
	return b, nil
}

// storeTimeout bounds one read or write of a blob.
const storeTimeout = 5 * time.Second

// cdnBlob keeps one list of the mixer in the lms store as a JSON blob
// cdnmix/NAME: read at start, written when this node's control API
// changes it (save), applied when any node changes it (changed, from the
// watch). Values are never logged: the vendor list holds signing keys.
type cdnBlob[E any] struct {
	reg   *lms.Registry
	log   *slog.Logger
	ctx   context.Context // the mixer's life
	name  string          // blob name
	what  string          // for log messages: "cdn vendors"
	count string          // log key of the list's length: "vendors"
	apply func([]E)       // gives the mixer a list from the store

	mu     sync.Mutex
	ownRev int64 // store revision of this node's last write
}

// load reads the stored list; found is false when the store has none, or
// one that does not decode (then this node starts from its own).
func (s *cdnBlob[E]) load(ctx context.Context) (list []E, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	b, ok, err := s.reg.GetBlob(ctx, cdnBlobKind, s.name)
	if err != nil || !ok {
		return nil, false, err
	}
	if err := json.Unmarshal(b, &list); err != nil {
		s.log.Error(s.what+" in the store unreadable, starting from this node's", "err", err)
		return nil, false, nil
	}
	return list, true, nil
}

// seed stores list when the store has none yet and reports whether it
// did; when another node seeded first, its list applies.
func (s *cdnBlob[E]) seed(ctx context.Context, list []E) (bool, error) {
	b, err := json.Marshal(list)
	if err != nil {
		return false, err
	}
	cctx, cancel := context.WithTimeout(ctx, storeTimeout)
	created, rev, err := s.reg.CreateBlob(cctx, cdnBlobKind, s.name, b)
	cancel()
	if err != nil {
		return false, err
	}
	if created {
		s.wrote(rev)
		return true, nil
	}
	stored, found, err := s.load(ctx)
	if err == nil && found {
		s.apply(stored)
	}
	return false, err
}

// save writes the list the control API made (cdnmix.WithVendorsChanged,
// WithBlacklistChanged). The API has answered by then, so a failure can
// only be logged: this node serves the new list, the others keep the
// stored one.
func (s *cdnBlob[E]) save(list []E) {
	b, err := json.Marshal(list)
	if err != nil {
		s.log.Error(s.what+" not stored", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), storeTimeout)
	defer cancel()
	rev, err := s.reg.PutBlob(ctx, cdnBlobKind, s.name, b)
	if err != nil {
		s.log.Error(s.what+" not stored: the other nodes keep the old list", "err", err)
		return
	}
	s.wrote(rev)
	s.log.Info(s.what+" stored", s.count, len(list), "revision", rev)
}

func (s *cdnBlob[E]) wrote(rev int64) {
	s.mu.Lock()
	s.ownRev = max(s.ownRev, rev)
	s.mu.Unlock()
}

// changed applies a change of the stored list (WatchBlobs), unless this
// node has written a newer one since.
func (s *cdnBlob[E]) changed(e lms.BlobEvent) {
	if e.Deleted {
		s.log.Warn(s.what + " removed from the store; keeping the current list")
		return
	}
	s.mu.Lock()
	stale := e.Revision < s.ownRev
	s.mu.Unlock()
	if stale {
		return
	}
	var list []E
	if err := json.Unmarshal(e.Value, &list); err != nil {
		s.log.Error(s.what+" in the store unreadable, keeping the current list", "err", err, "revision", e.Revision)
		return
	}
	s.apply(list)
}

func (s *cdnBlob[E]) blobName() string { return s.name }

// routeBlobs hands each change of a cdnmix blob to the cdnBlob of its name
// (one watch serves them all).
func routeBlobs(blobs ...interface {
	blobName() string
	changed(lms.BlobEvent)
}) func(lms.BlobEvent) {
	return func(e lms.BlobEvent) {
		for _, b := range blobs {
			if b.blobName() == e.Name {
				b.changed(e)
			}
		}
	}
}

// applyVendors gives the mixer vs unless it has that list already.
func applyVendors(m *cdnmix.Mixer, log *slog.Logger, vs []cdnmix.Vendor) {
	if vs == nil {
		vs = []cdnmix.Vendor{}
	}
	a := m.Allocator()
	if sameList(vs, a.Vendors()) {
		return
	}
	if err := a.SetVendors(vs); err != nil {
		// The message names a vendor and a field, never a key's value.
		log.Error("cdn vendors in the store refused, keeping the current list", "err", err)
		return
	}
	log.Info("cdn vendors applied from the store", "vendors", len(vs))
}

// applyBlacklist gives the mixer the manual blacklist es unless it has
// those entries already. Entries that have ended are left out (the store
// keeps them until the next change); the rest end at their Until, the same
// moment on every node.
func applyBlacklist(m *cdnmix.Mixer, log *slog.Logger, es []cdnmix.BlacklistEntry) {
	now := time.Now()
	active := make([]cdnmix.BlacklistEntry, 0, len(es))
	for _, e := range es {
		if e.Until.IsZero() || now.Before(e.Until) {
			active = append(active, e)
		}
	}
	if sameList(active, m.ManualBlacklist()) {
		return
	}
	if err := m.SetBlacklist(active); err != nil {
		log.Error("cdn blacklist in the store refused, keeping the current one", "err", err)
		return
	}
	log.Info("cdn blacklist applied from the store", "entries", len(active))
}

// sameList reports whether a and b encode alike (nil and empty do).
func sameList[E any](a, b []E) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// wrap serves /dispatch/ and /qos in front of the media handler.
func (c *cdnMix) wrap(media http.Handler) http.Handler { return c.m.Wrap(media) }

// mount adds /api/v1/cdn/... to the control API.
func (c *cdnMix) mount(api *lms.Server) { c.m.Mount(api) }

// Close stops the mixer, the store watch and the bus (Kafka spills what
// it has not sent).
func (c *cdnMix) Close() {
	c.cancel()
	c.wg.Wait()
	c.m.Close()
}

// registerBusMetrics exports the bus producer counters.
func registerBusMetrics(reg prometheus.Registerer, b bus.Bus) error {
	counter := func(name, help string, f func(bus.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(b.Stats())) })
	}
	gauge := func(name, help string, f func(bus.Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(f(b.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		counter("livefuse_bus_published_total", "Events accepted by the bus.", func(s bus.Stats) int64 { return s.Published }),
		counter("livefuse_bus_sent_total", "Events acknowledged by the broker (or delivered, in process).", func(s bus.Stats) int64 { return s.Sent }),
		counter("livefuse_bus_spilled_total", "Events written to the disk spill while the broker was away.", func(s bus.Stats) int64 { return s.Spilled }),
		counter("livefuse_bus_dropped_total", "Events lost: queue and spill full, or bus closed.", func(s bus.Stats) int64 { return s.Dropped }),
		counter("livefuse_bus_write_failures_total", "Failed broker writes.", func(s bus.Stats) int64 { return s.Failures }),
		gauge("livefuse_bus_queued_events", "Events in the memory queue.", func(s bus.Stats) int64 { return s.Queued }),
		gauge("livefuse_bus_spill_events", "Events in the disk spill.", func(s bus.Stats) int64 { return s.Pending }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("bus metrics: %w", err)
		}
	}
	return nil
}

func cdnmixUsage(w io.Writer) {
	fmt.Fprint(w, `usage: livefuse cdnmix simulate --scenario FILE [--csv FILE] [--svg FILE]

  Replays a scenario (vendors, audience curve, events) through the real
  allocator and writes per-vendor bandwidth against commit and ceiling as
  CSV and an SVG chart (by default next to the scenario: NAME.csv, NAME.svg).
`)
}

// runCDNMix implements `livefuse cdnmix ...`.
func runCDNMix(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "simulate" {
		cdnmixUsage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("cdnmix simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "", "scenario YAML file (required)")
	csvPath := fs.String("csv", "", "CSV output (default: the scenario path with .csv)")
	svgPath := fs.String("svg", "", "SVG chart output (default: the scenario path with .svg)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *scenario == "" || fs.NArg() > 0 {
		cdnmixUsage(stderr)
		return 2
	}
	base := strings.TrimSuffix(*scenario, filepath.Ext(*scenario))
	if *csvPath == "" {
		*csvPath = base + ".csv"
	}
	if *svgPath == "" {
		*svgPath = base + ".svg"
	}
	if err := simulate(*scenario, *csvPath, *svgPath, stdout); err != nil {
		fmt.Fprintln(stderr, "livefuse cdnmix simulate:", err)
		return 1
	}
	return 0
}

func simulate(scenarioPath, csvPath, svgPath string, stdout io.Writer) error {
	s, err := cdnmix.LoadScenario(scenarioPath)
	if err != nil {
		return err
	}
	csvFile, err := os.Create(csvPath)
	if err != nil {
		return err
	}
	res, err := cdnmix.Simulate(s, csvFile)
	if cerr := csvFile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	svgFile, err := os.Create(svgPath)
	if err != nil {
		return err
	}
	err = res.WriteSVG(svgFile)
	if cerr := svgFile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	vendors, unserved := res.Summary()
	fmt.Fprintf(stdout, "scenario %q: %d steps, %d vendors, %d buckets\n", s.Name, len(res.Times), len(res.Vendors), len(res.Buckets))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "vendor\tcommit Gbps\tceiling Gbps\tpeak Gbps\tend Gbps\tsteps over ceiling\t")
	for _, v := range vendors {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", v.Vendor, v.CommitMbps/1e3, v.CeilingMbps/1e3, v.PeakMbps/1e3, v.EndMbps/1e3, v.OverCeiling)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "most viewers waiting for a vendor at once: %d\nwrote %s and %s\n", unserved, csvPath, svgPath)
	return nil
}
