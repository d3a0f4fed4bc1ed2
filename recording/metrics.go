package recording

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the recorder's running totals.
type counters struct {
	spooled, uploaded, uploadedBytes, failures, stopped atomic.Int64
}

var (
	descSpooled  = prometheus.NewDesc("livefuse_recording_segments_spooled_total", "Segments written to the spool.", nil, nil)
	descUploaded = prometheus.NewDesc("livefuse_recording_segments_uploaded_total", "Segments the store confirmed.", nil, nil)
	descBytes    = prometheus.NewDesc("livefuse_recording_uploaded_bytes_total", "Segment bytes the store confirmed.", nil, nil)
	descFailures = prometheus.NewDesc("livefuse_recording_upload_failures_total", "Failed upload attempts (each is retried).", nil, nil)
	descStopped  = prometheus.NewDesc("livefuse_recording_stopped_total", "Recordings stopped early (spool full, spool write error).", nil, nil)
	descSpool    = prometheus.NewDesc("livefuse_recording_spool_bytes", "Bytes in the spool waiting for the store.", nil, nil)
	descQueued   = prometheus.NewDesc("livefuse_recording_uploads_queued", "Uploads queued or running.", nil, nil)
	descStreams  = prometheus.NewDesc("livefuse_recording_streams", "Streams with recording on.", nil, nil)
	descSinkOK   = prometheus.NewDesc("livefuse_recording_sink_ok", "1 when the last store operation succeeded.", nil, nil)
)

// Collector returns the recorder's Prometheus metrics.
func (r *Recorder) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Recorder }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSpooled, descUploaded, descBytes, descFailures, descStopped, descSpool, descQueued, descStreams, descSinkOK} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(descSpooled, r.count.spooled.Load())
	counter(descUploaded, r.count.uploaded.Load())
	counter(descBytes, r.count.uploadedBytes.Load())
	counter(descFailures, r.count.failures.Load())
	counter(descStopped, r.count.stopped.Load())
	st := r.SinkStatus()
	gauge(descSpool, float64(st.SpoolBytes))
	gauge(descQueued, float64(st.Queued))
	r.mu.Lock()
	n := len(r.streams)
	r.mu.Unlock()
	gauge(descStreams, float64(n))
	ok := 0.0
	if st.OK {
		ok = 1
	}
	gauge(descSinkOK, ok)
}
