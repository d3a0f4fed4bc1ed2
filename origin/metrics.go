package origin

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the origin's Prometheus collectors.
type metrics struct {
	dropped   prometheus.Counter
	streams   prometheus.Gauge
	packetsIn prometheus.Counter
	flvBytes  prometheus.Counter
	hlsBytes  prometheus.Counter
	switches  *prometheus.CounterVec
}

// newMetrics builds the collectors and registers them on reg (nil: not
// registered).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	bytesOut := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "livefuse", Subsystem: "origin", Name: "bytes_out_total",
		Help: "Bytes sent to players, by output.",
	}, []string{"output"})
	m := &metrics{
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "livefuse", Subsystem: "origin", Name: "dropped_readers_total",
			Help: "Readers disconnected for falling too far behind.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "livefuse", Subsystem: "origin", Name: "streams",
			Help: "Live streams.",
		}),
		packetsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "livefuse", Subsystem: "origin", Name: "packets_in_total",
			Help: "Packets written to streams.",
		}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "livefuse", Subsystem: "origin", Name: "switches_total",
			Help: "Feed switches of the main/backup switcher, by the source switched to (main, backup, slate).",
		}, []string{"to"}),
		flvBytes: bytesOut.WithLabelValues("flv"),
		hlsBytes: bytesOut.WithLabelValues("hls"),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.dropped, m.streams, m.packetsIn, bytesOut, m.switches} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("origin metrics: %w", err)
	}
	return m, nil
}

// readersCollector reports the hub's readers at each scrape: players by
// protocol (HLS players are counted by client, so there is nothing to
// increment), and internal readers apart.
type readersCollector struct {
	h                 *Hub
	players, internal *prometheus.Desc
}

func newReadersCollector(h *Hub) *readersCollector {
	return &readersCollector{
		h: h,
		players: prometheus.NewDesc("livefuse_origin_readers",
			"Players of the unit's streams, by protocol (flv, rtmp, hls; HLS players are distinct clients active within a few target durations).",
			[]string{"protocol"}, nil),
		internal: prometheus.NewDesc("livefuse_origin_internal_readers",
			"Stream readers that are not players: HLS packagers, encrypting readers, recorders, transcode workers, relays.",
			nil, nil),
	}
}

func (c *readersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.players
	ch <- c.internal
}

func (c *readersCollector) Collect(ch chan<- prometheus.Metric) {
	byProto := map[string]int{ProtoFLV: 0, ProtoRTMP: 0, ProtoHLS: 0}
	internal := 0
	for _, st := range c.h.List() {
		for p, n := range st.ReadersByProtocol {
			byProto[p] += n
		}
		internal += st.InternalReaders
	}
	for p, n := range byProto {
		ch <- prometheus.MustNewConstMetric(c.players, prometheus.GaugeValue, float64(n), p)
	}
	ch <- prometheus.MustNewConstMetric(c.internal, prometheus.GaugeValue, float64(internal))
}
