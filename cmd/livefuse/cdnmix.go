package main

import (
	"bytes"
	"context"
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
// when the registry has them enabled. The vendors live in the lms store
// (see vendorStore): the config's seed an empty store, the store's win
// afterwards, and a change through any node's control API reaches every
// node.
func newCDNMix(ctx context.Context, cfg cdnmix.Config, b bus.Bus, runBus func(context.Context), reg *lms.Registry, log *slog.Logger, promReg prometheus.Registerer) (*cdnMix, error) {
	exists := func(app, name string) bool {
		s, ok := reg.Get(app, name)
		return ok && s.Enabled
	}
	ctx, cancel := context.WithCancel(ctx)
	vs := &vendorStore{reg: reg, log: log.With("unit", "cdnmix"), ctx: ctx}
	stored, found, err := vs.load(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cdn vendors: %w", err)
	}
	m, err := cdnmix.New(cfg, b, log, promReg, cdnmix.WithStreamExists(exists), cdnmix.WithVendorsChanged(vs.save))
	if err != nil {
		cancel()
		return nil, err
	}
	vs.m = m
	switch {
	case found:
		if !sameVendors(stored, cfg.Vendors) {
			vs.log.Info("cdn vendors from the store; the config's only seed an empty store",
				"vendors", len(stored), "config_vendors", len(cfg.Vendors))
		}
		vs.apply(stored)
	case len(cfg.Vendors) > 0:
		if err := vs.seed(ctx); err != nil {
			cancel()
			m.Close()
			return nil, fmt.Errorf("cdn vendors: seed the store: %w", err)
		}
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
	c.wg.Go(func() { reg.WatchBlobs(ctx, vendorsKind, vs.changed) })
	return c, nil
}

// The vendor list is one blob, so that it is read and written whole, in
// its order, and an emptied list stays empty.
const vendorsKind, vendorsBlob = "cdnmix", "vendors"

// vendorStore keeps the mixer's vendors in the lms store as one JSON blob.
// The list holds the vendors' signing keys: it is never logged.
type vendorStore struct {
	reg *lms.Registry
	log *slog.Logger
	ctx context.Context // the mixer's life
	m   *cdnmix.Mixer

	mu     sync.Mutex
	ownRev int64 // store revision of this node's last write
}

// storeTimeout bounds one read or write of the vendor blob.
const storeTimeout = 5 * time.Second

// load reads the stored vendors; found is false when the store has none.
func (s *vendorStore) load(ctx context.Context) (vs []cdnmix.Vendor, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	b, ok, err := s.reg.GetBlob(ctx, vendorsKind, vendorsBlob)
	if err != nil || !ok {
		return nil, false, err
	}
	if err := json.Unmarshal(b, &vs); err != nil {
		s.log.Error("cdn vendors in the store unreadable, using the config's", "err", err)
		return nil, false, nil
	}
	return vs, true, nil
}

// seed stores the mixer's vendors (the config's, validated) when the store
// has none yet; when another node seeded first, its list applies.
func (s *vendorStore) seed(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	vs := s.m.Allocator().Vendors()
	b, err := json.Marshal(vs)
	if err != nil {
		return err
	}
	created, _, err := s.reg.CreateBlob(ctx, vendorsKind, vendorsBlob, b)
	if err != nil {
		return err
	}
	if created {
		s.log.Info("cdn vendors seeded from the config", "vendors", len(vs))
		return nil
	}
	stored, found, err := s.load(ctx)
	if err == nil && found {
		s.apply(stored)
	}
	return err
}

// save writes the list the control API made (cdnmix.WithVendorsChanged).
// The API has answered by then, so a failure can only be logged: this node
// serves the new list, the others keep the stored one.
func (s *vendorStore) save(vs []cdnmix.Vendor) {
	b, err := json.Marshal(vs)
	if err != nil {
		s.log.Error("cdn vendors not stored", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), storeTimeout)
	defer cancel()
	rev, err := s.reg.PutBlob(ctx, vendorsKind, vendorsBlob, b)
	if err != nil {
		s.log.Error("cdn vendors not stored: the other nodes keep the old list", "err", err)
		return
	}
	s.mu.Lock()
	s.ownRev = max(s.ownRev, rev)
	s.mu.Unlock()
	s.log.Info("cdn vendors stored", "vendors", len(vs), "revision", rev)
}

// changed applies a change of the stored list (WatchBlobs).
func (s *vendorStore) changed(e lms.BlobEvent) {
	if e.Name != vendorsBlob {
		return
	}
	if e.Deleted {
		s.log.Warn("cdn vendors removed from the store; keeping the current list")
		return
	}
	s.mu.Lock()
	stale := e.Revision < s.ownRev // this node wrote a newer list since
	s.mu.Unlock()
	if stale {
		return
	}
	var vs []cdnmix.Vendor
	if err := json.Unmarshal(e.Value, &vs); err != nil {
		s.log.Error("cdn vendors in the store unreadable, keeping the current list", "err", err, "revision", e.Revision)
		return
	}
	s.apply(vs)
}

// apply gives the mixer vs unless it has that list already.
func (s *vendorStore) apply(vs []cdnmix.Vendor) {
	if vs == nil {
		vs = []cdnmix.Vendor{}
	}
	a := s.m.Allocator()
	if sameVendors(vs, a.Vendors()) {
		return
	}
	if err := a.SetVendors(vs); err != nil {
		// The message names a vendor and a field, never a key's value.
		s.log.Error("cdn vendors in the store refused, keeping the current list", "err", err)
		return
	}
	s.log.Info("cdn vendors applied from the store", "vendors", len(vs))
}

// sameVendors reports whether a and b encode alike (nil and empty do).
func sameVendors(a, b []cdnmix.Vendor) bool {
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

// Close stops the mixer, the vendor watch and the bus (Kafka spills what
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
