// Package mixerwave drives an entrance wave of viewers through a fleet of
// cdnmix dispatcher nodes and measures what the vendors served: each
// viewer asks one node's /dispatch (retrying while it is refused), then
// pulls a segment from its vendor every period (HLS-like) and posts a QoS
// heartbeat with its session token. The truth is read back from the
// vendors' own access logs ([ReadAccessLogs]); [Sampler] records each
// node's view of the vendors. The fleet e2e test and `make drill-mixer`
// use it.
package mixerwave

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Node is one dispatcher node.
type Node struct {
	Media string // base URL of /dispatch and /qos
	API   string // base URL of the control API (/api/v1, /metrics)
	Token string // control API token
}

// Config of a wave. Zero fields take the defaults in brackets.
type Config struct {
	Nodes []Node
	// Weights of the nodes in the dispatch requests [even].
	Weights []float64
	// Viewers arrive evenly over Ramp; ID numbers them from First.
	Viewers int
	Ramp    time.Duration
	First   int
	// Stream path [live/demo.flv].
	Stream string
	// XFF are client addresses the viewers pose as, in turn [none].
	XFF []string
	// StallEvery: every n-th viewer reports 3 s of empty buffer [0: none].
	StallEvery int
	// Period between segment pulls [1s]; a heartbeat every BeaconEvery
	// pulls [2]; Retry after a refused dispatch [1s].
	Period      time.Duration
	BeaconEvery int
	Retry       time.Duration
	Client      *http.Client
}

// Wave is a running wave.
type Wave struct {
	cfg    Config
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	viewers []*viewer

	requests, admitted, refused []atomic.Int64
	errors, pulls, beacons      atomic.Int64
}

type viewer struct {
	id, node int
	stall    bool
	vendor   string
	active   atomic.Bool
	cancel   context.CancelFunc
}

// NewClient returns a client for many viewers on loopback: kept-alive
// connections, no redirects followed, bounded time.
func NewClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second},
		Timeout:   10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Start starts the wave; it runs until ctx ends or Stop.
func Start(ctx context.Context, cfg Config) *Wave {
	if cfg.Stream == "" {
		cfg.Stream = "live/demo.flv"
	}
	if cfg.Period <= 0 {
		cfg.Period = time.Second
	}
	if cfg.BeaconEvery <= 0 {
		cfg.BeaconEvery = 2
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.Client == nil {
		cfg.Client = NewClient()
	}
	if len(cfg.Weights) != len(cfg.Nodes) {
		cfg.Weights = make([]float64, len(cfg.Nodes))
		for i := range cfg.Weights {
			cfg.Weights[i] = 1
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Wave{cfg: cfg, cancel: cancel, requests: make([]atomic.Int64, len(cfg.Nodes)),
		admitted: make([]atomic.Int64, len(cfg.Nodes)), refused: make([]atomic.Int64, len(cfg.Nodes))}
	total := 0.0
	for _, x := range cfg.Weights {
		total += x
	}
	w.wg.Go(func() {
		for i := range cfg.Viewers {
			if cfg.Ramp > 0 && i > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(cfg.Ramp / time.Duration(cfg.Viewers)):
				}
			}
			// Spread the nodes by weight: viewer i's point in [0, total).
			p := math.Mod(float64(i)*0.6180339887498949, 1) * total
			node := 0
			for acc := cfg.Weights[0]; p >= acc && node < len(cfg.Nodes)-1; {
				node++
				acc += cfg.Weights[node]
			}
			vctx, vcancel := context.WithCancel(ctx)
			v := &viewer{id: cfg.First + i, node: node, cancel: vcancel,
				stall: cfg.StallEvery > 0 && (cfg.First+i)%cfg.StallEvery == 0}
			w.mu.Lock()
			w.viewers = append(w.viewers, v)
			w.mu.Unlock()
			w.wg.Go(func() { w.run(vctx, v) })
		}
	})
	return w
}

// Stop ends every viewer and waits.
func (w *Wave) Stop() {
	w.cancel()
	w.wg.Wait()
}

// Leave ends the first n viewers still active.
func (w *Wave) Leave(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.viewers {
		if n == 0 {
			return
		}
		if v.active.Load() {
			v.cancel()
			v.active.Store(false)
			n--
		}
	}
}

// Stats of a wave.
type Stats struct {
	Requests, Admitted, Refused []int64 // per node
	Active, Stalled             int     // viewers pulling now, of them reporting stalls
	ActiveBy                    map[string]int
	Pulls, Beacons, Errors      int64
}

// Stats returns the counters.
func (w *Wave) Stats() Stats {
	s := Stats{ActiveBy: map[string]int{}}
	for i := range w.admitted {
		s.Requests = append(s.Requests, w.requests[i].Load())
		s.Admitted = append(s.Admitted, w.admitted[i].Load())
		s.Refused = append(s.Refused, w.refused[i].Load())
	}
	w.mu.Lock()
	for _, v := range w.viewers {
		if v.active.Load() {
			s.Active++
			s.ActiveBy[v.vendor]++
			if v.stall {
				s.Stalled++
			}
		}
	}
	w.mu.Unlock()
	s.Pulls, s.Beacons, s.Errors = w.pulls.Load(), w.beacons.Load(), w.errors.Load()
	return s
}

func (w *Wave) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (w *Wave) run(ctx context.Context, v *viewer) {
	n := w.cfg.Nodes[v.node]
	xff := ""
	if len(w.cfg.XFF) > 0 {
		xff = w.cfg.XFF[v.id%len(w.cfg.XFF)]
	}
	var loc *url.URL
	for loc == nil {
		if ctx.Err() != nil {
			return
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", n.Media+"/dispatch/"+w.cfg.Stream, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		w.requests[v.node].Add(1)
		resp, err := w.cfg.Client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				w.errors.Add(1)
			}
			w.sleep(ctx, w.cfg.Retry)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusFound:
			loc, err = url.Parse(resp.Header.Get("Location"))
			if err != nil {
				w.errors.Add(1)
				return
			}
		case http.StatusServiceUnavailable:
			w.refused[v.node].Add(1)
			w.sleep(ctx, w.cfg.Retry)
		default:
			w.errors.Add(1)
			w.sleep(ctx, w.cfg.Retry)
		}
	}
	w.admitted[v.node].Add(1)
	v.vendor = loc.Host
	v.active.Store(true)
	defer v.active.Store(false)
	token := loc.Query().Get("qos_token")
	empty := 0
	if v.stall {
		empty = 3000
	}
	beacon, _ := json.Marshal(map[string]any{"token": token, "event": "heartbeat", "buffer_empty_ms": empty})
	t := time.NewTicker(w.cfg.Period)
	defer t.Stop()
	for i := 0; ; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", loc.String(), nil)
		if resp, err := w.cfg.Client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			w.pulls.Add(1)
		} else if ctx.Err() == nil {
			w.errors.Add(1)
		}
		if i%w.cfg.BeaconEvery == 0 && token != "" {
			req, _ := http.NewRequestWithContext(ctx, "POST", n.Media+"/qos", bytes.NewReader(beacon))
			if xff != "" {
				req.Header.Set("X-Forwarded-For", xff)
			}
			if resp, err := w.cfg.Client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					w.beacons.Add(1)
				} else {
					w.errors.Add(1)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Origin serves every GET with size bytes (a segment); the vendors'
// nginx proxies to it.
func Origin(size int) http.Handler {
	seg := bytes.Repeat([]byte{'x'}, size)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Write(seg)
	})
}
