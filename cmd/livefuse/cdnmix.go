package main

import (
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
	m         *cdnmix.Mixer
	blacklist *lms.Collection[cdnmix.BlacklistEntry] // the manual entries (plans write here)
	colls     []interface{ Close() }
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// newCDNMix builds the mixer and starts it and the bus; streams are known
// when the registry has them enabled. The vendors and the manual blacklist
// are lms collections (one record per vendor and per entry): the control
// API of any node writes there with compare-and-swap, and every node
// applies them from its watch, so they survive a restart and two nodes
// changing them at once lose nothing. The config's vendors seed a store
// that was never seeded; the store's win afterwards. The stall rule's
// blacklist entries stay with the node that made them.
func newCDNMix(ctx context.Context, cfg cdnmix.Config, b bus.Bus, runBus func(context.Context), reg *lms.Registry,
	store *lms.Store, log *slog.Logger, promReg prometheus.Registerer) (*cdnMix, error) {
	exists := func(app, name string) bool {
		s, ok := reg.Get(app, name)
		return ok && s.Enabled
	}
	ulog := log.With("unit", "cdnmix")
	vendors, err := lms.NewCollection(store, vendorsKind, lms.CollectionOptions[cdnmix.StoredVendor]{Log: ulog})
	if err != nil {
		return nil, err
	}
	blacklist, err := lms.NewCollection(store, blacklistKind, lms.CollectionOptions[cdnmix.BlacklistEntry]{Log: ulog})
	if err != nil {
		return nil, err
	}
	opts := []cdnmix.Option{cdnmix.WithStreamExists(exists), cdnmix.WithVendorStore(vendors), cdnmix.WithBlacklistStore(blacklist)}
	if cfg.QoS.TokenKey == "" {
		key, err := loadTokenKey(ctx, reg, ulog)
		if err != nil {
			return nil, fmt.Errorf("cdn qos token key: %w", err)
		}
		opts = append(opts, cdnmix.WithTokenKey(key))
	}
	m, err := cdnmix.New(cfg, b, log, promReg, opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &cdnMix{m: m, blacklist: blacklist, cancel: cancel, colls: []interface{ Close() }{vendors, blacklist}}
	fail := func(err error) (*cdnMix, error) {
		c.Close()
		return nil, err
	}
	vendors.OnChange(m.SyncVendors)
	blacklist.OnChange(m.SyncBlacklist)
	if err := vendors.Start(ctx); err != nil {
		return fail(fmt.Errorf("cdn vendors: %w", err))
	}
	if err := blacklist.Start(ctx); err != nil {
		return fail(fmt.Errorf("cdn blacklist: %w", err))
	}
	if err := seedCDN(ctx, reg, vendors, blacklist, cfg.Vendors, ulog); err != nil {
		return fail(err)
	}
	m.SyncVendors()
	m.SyncBlacklist()
	if promReg != nil {
		if err := registerBusMetrics(promReg, b); err != nil {
			return fail(err)
		}
	}
	c.wg.Go(func() { runBus(ctx) })
	c.wg.Go(func() { m.Run(ctx) })
	return c, nil
}

// The collections of the mixer, and the blobs earlier versions kept the
// whole lists in (read once, to carry them over).
const (
	vendorsKind   = "cdn-vendors"
	blacklistKind = "cdn-blacklist"
	cdnBlobKind   = "cdnmix"
	vendorsBlob   = "vendors"
	blacklistBlob = "blacklist"
)

// seedCDN seeds the vendor and blacklist collections once: from the lists
// an earlier version stored as blobs, else (vendors) from the config.
func seedCDN(ctx context.Context, reg *lms.Registry, vendors *lms.Collection[cdnmix.StoredVendor],
	blacklist *lms.Collection[cdnmix.BlacklistEntry], cfgVendors []cdnmix.Vendor, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	vs, fromBlob, err := oldBlob[cdnmix.Vendor](ctx, reg, vendorsBlob, log)
	if err != nil {
		return fmt.Errorf("cdn vendors: %w", err)
	}
	if !fromBlob {
		vs = cfgVendors
	}
	seeded, err := vendors.SeedOnce(ctx, cdnmix.StoreVendors(vs))
	switch {
	case err != nil:
		return fmt.Errorf("cdn vendors: seed the store: %w", err)
	case seeded && fromBlob:
		log.Info("cdn vendors carried over from the previous store format", "vendors", len(vs))
	case seeded && len(vs) > 0:
		log.Info("cdn vendors seeded from the config", "vendors", len(vs))
	case !seeded && len(cfgVendors) > 0:
		log.Info("cdn vendors from the store; the config's only seed an empty store",
			"vendors", vendors.Len(), "config_vendors", len(cfgVendors))
	}
	es, fromBlob, err := oldBlob[cdnmix.BlacklistEntry](ctx, reg, blacklistBlob, log)
	if err != nil {
		return fmt.Errorf("cdn blacklist: %w", err)
	}
	seed := make(map[string]cdnmix.BlacklistEntry, len(es))
	for _, e := range es {
		seed[cdnmix.BlacklistName(e.Vendor, e.Region, e.ISP)] = e
	}
	if seeded, err = blacklist.SeedOnce(ctx, seed); err != nil {
		return fmt.Errorf("cdn blacklist: seed the store: %w", err)
	}
	if seeded && fromBlob {
		log.Info("cdn blacklist carried over from the previous store format", "entries", len(es))
	}
	return nil
}

// oldBlob reads a list an earlier version kept as one blob; found is false
// when there is none, or one that does not decode.
func oldBlob[E any](ctx context.Context, reg *lms.Registry, name string, log *slog.Logger) (list []E, found bool, err error) {
	b, ok, err := reg.GetBlob(ctx, cdnBlobKind, name)
	if err != nil || !ok {
		return nil, false, err
	}
	if err := json.Unmarshal(b, &list); err != nil {
		log.Error("cdn "+name+" of the previous store format unreadable, not carried over", "err", err)
		return nil, false, nil
	}
	return list, true, nil
}

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

// storeTimeout bounds the reads and writes of the start-up.
const storeTimeout = 5 * time.Second

// wrap serves /dispatch/ and /qos in front of the media handler.
func (c *cdnMix) wrap(media http.Handler) http.Handler { return c.m.Wrap(media) }

// mount adds /api/v1/cdn/... to the control API.
func (c *cdnMix) mount(api *lms.Server) { c.m.Mount(api) }

// Close stops the mixer, the store watch and the bus (Kafka spills what
// it has not sent).
func (c *cdnMix) Close() {
	c.cancel()
	for _, coll := range c.colls {
		coll.Close()
	}
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
