package cdnmix

import (
	"maps"
	"sync"
	"time"
)

// Bucket is a region (province) × ISP; an empty field means any.
type Bucket struct{ Region, ISP string }

func (b Bucket) String() string {
	r, i := b.Region, b.ISP
	if r == "" {
		r = "*"
	}
	if i == "" {
		i = "*"
	}
	return r + "/" + i
}

// Key names one vendor in one bucket.
type Key struct {
	Vendor string
	Bucket Bucket
}

// Observation is what the aggregator knows about one vendor in one bucket
// over its sliding windows. The allocator sums Mbps and ForecastMbps over
// the keys of a capacity pool, so an aggregator publishes either a
// breakdown or its total, never both. Quality fields are used only when
// Users is at least the allocator's MinQualityUsers.
type Observation struct {
	Mbps          float64       `json:"mbps"`
	ForecastMbps  float64       `json:"forecast_mbps"`
	Users         int           `json:"users"`
	StalledUsers  int           `json:"stalled_users"`
	StallRate     float64       `json:"stall_rate"`   // stalled users / users over the last minute
	FirstFrameP50 time.Duration `json:"-"`            // JSON: first_frame_p50_ms (msjson.go)
	FirstFrameP95 time.Duration `json:"-"`            // JSON: first_frame_p95_ms
	PullSuccess   float64       `json:"pull_success"` // 0..1; 0 with Users > 0 means all pulls failed
}

// Observer gives the allocator the latest observations. Snapshot returns a
// map the caller may keep but must not modify.
type Observer interface {
	Snapshot() map[Key]Observation
}

// StaticObserver is an in-memory Observer for tests and the simulator.
// The zero value is ready to use.
type StaticObserver struct {
	mu   sync.Mutex
	snap map[Key]Observation
}

// Set replaces one observation.
func (o *StaticObserver) Set(k Key, ob Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	next := maps.Clone(o.snap)
	if next == nil {
		next = make(map[Key]Observation)
	}
	next[k] = ob
	o.snap = next
}

// Replace swaps in a whole snapshot; the observer keeps m.
func (o *StaticObserver) Replace(m map[Key]Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.snap = m
}

// Snapshot implements Observer.
func (o *StaticObserver) Snapshot() map[Key]Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.snap
}

// Holt is Holt's linear trend (double exponential smoothing) forecaster.
// Alpha smooths the level and Beta the trend, both in (0, 1]. Feed it one
// value per fixed period; Forecast(h) is the value h periods ahead. The
// first value sets the level, the second the initial trend.
type Holt struct {
	Alpha, Beta float64

	level, trend float64
	n            int
}

// Update feeds one observation.
func (h *Holt) Update(v float64) {
	switch h.n {
	case 0:
		h.level = v
	case 1:
		h.trend = v - h.level
		h.level = v
	default:
		prev := h.level
		h.level = h.Alpha*v + (1-h.Alpha)*(h.level+h.trend)
		h.trend = h.Beta*(h.level-prev) + (1-h.Beta)*h.trend
	}
	h.n++
}

// Forecast returns the value steps periods after the last update (0 before
// any update).
func (h *Holt) Forecast(steps float64) float64 {
	if h.n == 0 {
		return 0
	}
	return h.level + steps*h.trend
}

// Level and Trend return the smoothed state.
func (h *Holt) Level() float64 { return h.level }

// Trend returns the smoothed change per period.
func (h *Holt) Trend() float64 { return h.trend }
