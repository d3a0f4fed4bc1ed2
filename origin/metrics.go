package origin

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the origin's Prometheus collectors.
type metrics struct {
	readers   prometheus.Gauge
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
		readers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "livefuse", Subsystem: "origin", Name: "readers",
			Help: "Stream readers attached (players, HLS packagers, relays, ...).",
		}),
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
	for _, c := range []prometheus.Collector{m.readers, m.dropped, m.streams, m.packetsIn, bytesOut, m.switches} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("origin metrics: %w", err)
	}
	return m, nil
}
