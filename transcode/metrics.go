package transcode

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of a pool. Per-worker figures are collected at scrape time from
// the pool's status, so a worker's series go away with it.
type metrics struct {
	busy       prometheus.Gauge
	workersMax prometheus.Gauge
	queue      prometheus.Gauge
	admissions *prometheus.CounterVec
	noLadder   *prometheus.CounterVec
	restarts   *prometheus.CounterVec
	firstKey   *prometheus.HistogramVec
	workers    *workerCollector
}

func newMetrics(reg prometheus.Registerer, p *Pool) (*metrics, error) {
	m := &metrics{
		busy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livefuse_transcode_workers_busy",
			Help: "Transcode workers running (each one ffmpeg)."}),
		workersMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livefuse_transcode_workers_max",
			Help: "Most transcode workers the pool runs at once."}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livefuse_transcode_queue_length",
			Help: "Streams waiting for a transcode worker."}),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livefuse_transcode_admissions_total",
			Help: "Streams asking for a ladder, by outcome (started, queued, rejected)."}, []string{"result"}),
		noLadder: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livefuse_transcode_no_ladder_total",
			Help: "Streams served without their ladder because the pool was full (pool_full: queued; queue_full: refused)."}, []string{"reason"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livefuse_transcode_restarts_total",
			Help: "ffmpeg restarts by cause (exit, stall, startup)."}, []string{"reason"}),
		firstKey: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "livefuse_transcode_first_keyframe_seconds",
			Help:    "From ffmpeg start to the first rendition keyframe (kind: start or restart).",
			Buckets: []float64{0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10}}, []string{"kind"}),
		workers: newWorkerCollector(p),
	}
	for _, r := range []string{"started", "queued", "rejected"} {
		m.admissions.WithLabelValues(r)
	}
	for _, r := range []string{"pool_full", "queue_full"} {
		m.noLadder.WithLabelValues(r)
	}
	for _, r := range []string{endExit, endStall, endStart} {
		m.restarts.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.busy, m.workersMax, m.queue, m.admissions, m.noLadder,
			m.restarts, m.firstKey, m.workers} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// workerCollector reports per-worker figures from the pool's status.
type workerCollector struct {
	pool                           *Pool
	cpu, rss, fps, speed, restarts *prometheus.Desc
}

func newWorkerCollector(p *Pool) *workerCollector {
	l := []string{"stream"}
	return &workerCollector{pool: p,
		cpu: prometheus.NewDesc("livefuse_transcode_worker_cpu_seconds_total",
			"CPU time of the stream's ffmpeg processes (user+system, every run).", l, nil),
		rss: prometheus.NewDesc("livefuse_transcode_worker_rss_bytes",
			"Resident memory of the stream's ffmpeg.", l, nil),
		fps: prometheus.NewDesc("livefuse_transcode_worker_fps",
			"Frames per second ffmpeg encodes (from -progress).", l, nil),
		speed: prometheus.NewDesc("livefuse_transcode_worker_speed",
			"ffmpeg speed: media time per wall time (from -progress).", l, nil),
		restarts: prometheus.NewDesc("livefuse_transcode_worker_restarts",
			"ffmpeg restarts of the stream's worker.", l, nil),
	}
}

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpu, c.rss, c.fps, c.speed, c.restarts} {
		ch <- d
	}
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.pool.List() {
		if st.State != StateRunning {
			continue
		}
		k := st.App + "/" + st.Name
		ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, st.CPUSeconds, k)
		ch <- prometheus.MustNewConstMetric(c.rss, prometheus.GaugeValue, float64(st.RSS), k)
		ch <- prometheus.MustNewConstMetric(c.fps, prometheus.GaugeValue, st.FPS, k)
		ch <- prometheus.MustNewConstMetric(c.speed, prometheus.GaugeValue, st.Speed, k)
		ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.GaugeValue, float64(st.Restarts), k)
	}
}
