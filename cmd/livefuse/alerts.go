package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/recording"
)

// newAlerts builds the node's alert engine over what it observes: this
// unit's feeds (origin), the CDN mixer's stall rates and pools, the
// recording spool, the transcode restarts, the node registry (units), and
// probes of etcd, Kafka (when configured) and S3 (when recording to it).
// Its routes go on the control API, its transitions on the bus.
func newAlerts(ctx context.Context, cfg Config, hub *origin.Hub, reg *lms.Registry, store *lms.Store, tc *transcoder, rec *recorder,
	cm *cdnMix, events bus.Publisher, promReg prometheus.Registerer, log *slog.Logger) (*lms.Alerts, error) {
	spoolMax := cfg.Recording.SpoolMaxBytes
	if spoolMax <= 0 {
		spoolMax = recording.DefaultConfig().SpoolMaxBytes
	}
	expected := []string{cfg.Unit} // this unit first, then the others of the config
	for _, u := range cfg.Units {
		if u.Name != cfg.Unit {
			expected = append(expected, u.Name)
		}
	}
	src := lms.AlertSources{
		Unit:     cfg.Unit,
		Streams:  alertStreams{hub: hub, reg: reg, unit: cfg.Unit},
		Quality:  alertCDN{cm.m},
		Vendors:  alertCDN{cm.m},
		Spool:    alertSpool{rec: rec, max: spoolMax},
		Restarts: alertRestarts{tc},
		Units:    lms.RegisteredUnits{Store: store, Expected: expected},
		Probes:   []lms.AlertProbe{lms.StoreProbe(reg)},
	}
	if brokers := cfg.Bus.Kafka.Brokers; len(brokers) > 0 {
		src.Probes = append(src.Probes, lms.AlertProbe{Kind: api.AlertKafka, Check: func(ctx context.Context) error {
			return dialAny(ctx, brokers)
		}})
	}
	if cfg.Recording.Sink == recording.SinkS3 && rec != nil {
		src.Probes = append(src.Probes, lms.AlertProbe{Kind: api.AlertS3, Check: func(context.Context) error {
			if st := rec.rec.SinkStatus(); !st.OK {
				return fmt.Errorf("last store operation failed: %s", st.Error)
			}
			return nil
		}})
	}
	a, err := lms.NewAlerts(cfg.Alerts, src, log.With("part", "alerts"))
	if err != nil {
		return nil, err
	}
	a.SetPublisher(events)
	if err := a.UseStore(ctx, store); err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{a.Collector(), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "livefuse_recording_spool_max_bytes",
		Help: "The bound of the recording spool (recording.spool_max_bytes).",
	}, func() float64 { return float64(spoolMax) })} {
		if err := promReg.Register(c); err != nil {
			log.Warn("alerts metrics not registered", "err", err)
		}
	}
	return a, nil
}

// dialAny reports whether any of addrs accepts a TCP connection.
func dialAny(ctx context.Context, addrs []string) error {
	var d net.Dialer
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("none of %d brokers accepted a connection", len(addrs))
}

// alertStreams gives the registered streams live at this unit (not their
// renditions, which have no backup by nature).
type alertStreams struct {
	hub  *origin.Hub
	reg  *lms.Registry
	unit string
}

func (s alertStreams) StreamHealth() []lms.StreamHealth {
	sts := s.hub.List()
	out := make([]lms.StreamHealth, 0, len(sts))
	for _, st := range sts {
		if _, ok := s.reg.Get(st.App, st.Name); !ok {
			continue
		}
		sh := lms.StreamHealth{Stream: st.App + "/" + st.Name, Unit: s.unit, Switches: st.Switch.Switches, LastReason: st.Switch.LastReason}
		for _, f := range st.Switch.Feeds {
			sh.Feeds = append(sh.Feeds, lmsFeedStatus(f))
		}
		out = append(out, sh)
	}
	return out
}

// alertCDN reads the mixer's one-minute stall rates and its pools.
type alertCDN struct{ m *cdnmix.Mixer }

func (c alertCDN) Quality() []lms.QualityStat {
	obs := c.m.Observations()
	out := make([]lms.QualityStat, 0, len(obs))
	for k, ob := range obs {
		if ob.Users > 0 {
			out = append(out, lms.QualityStat{Vendor: k.Vendor, Region: k.Bucket.Region, ISP: k.Bucket.ISP,
				Users: ob.Users, StallRate: ob.StallRate})
		}
	}
	return out
}

func (c alertCDN) VendorLoad() []lms.VendorLoad {
	p := c.m.Allocator().Plan()
	if p == nil {
		return nil
	}
	out := make([]lms.VendorLoad, 0, len(p.Pools))
	for _, pl := range p.Pools {
		out = append(out, lms.VendorLoad{Vendor: pl.Vendor, Region: pl.Region, Mbps: pl.Mbps, CeilingMbps: pl.CeilingMbps})
	}
	return out
}

type alertSpool struct {
	rec *recorder
	max int64
}

func (s alertSpool) Spool() (used, max int64) {
	if s.rec == nil || s.rec.off {
		return 0, 0
	}
	return s.rec.rec.SinkStatus().SpoolBytes, s.max
}

type alertRestarts struct{ tc *transcoder }

func (r alertRestarts) TranscodeRestarts() map[string]int64 {
	if r.tc == nil || r.tc.pool == nil {
		return nil
	}
	out := map[string]int64{}
	for _, st := range r.tc.pool.List() {
		out[st.App+"/"+st.Name] = int64(st.Restarts)
	}
	return out
}
