package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
)

// nodeLife wires this node's life cycle (lms.NodeAgent) into the media
// side: while the node drains, new players and publishers are refused
// (HTTP 503, which the edge and load balancers retry on the other unit;
// RTMP play and publish refused), and players already on keep playing.
// It samples the node's load for the registry and /metrics.
type nodeLife struct {
	agent   *lms.NodeAgent
	hub     *origin.Hub
	gather  prometheus.Gatherer
	log     *slog.Logger
	sampler lms.LoadSampler
	// serving is the agent's Serving (a field, for tests of the gates).
	serving func() bool
}

func newNodeLife(cfg Config, store *lms.Store, hub *origin.Hub, promReg *prometheus.Registry, log *slog.Logger) (*nodeLife, error) {
	n := &nodeLife{hub: hub, gather: promReg, log: log}
	nc := cfg.LMS.Node
	nc.DrainTimeout = cfg.DrainTimeout // one key for SIGTERM and API drains
	n.agent = lms.NewNodeAgent(store, nc, api.Node{Role: "unit", Unit: cfg.Unit}, n.load, log)
	n.serving = n.agent.Serving
	gauges := []struct {
		name, help string
		fn         func(api.NodeLoad) float64
	}{
		{"egress_bps", "Media sent to players, bits per second over the last report period.", func(l api.NodeLoad) float64 { return float64(l.EgressBps) }},
		{"players", "Players connected to this node (every protocol).", func(l api.NodeLoad) float64 { return float64(l.Players) }},
		{"streams", "Streams live on this node.", func(l api.NodeLoad) float64 { return float64(l.Streams) }},
		{"packets_per_second", "Media packets received per second.", func(l api.NodeLoad) float64 { return l.PacketsPerSecond }},
		{"cpu_percent", "Process CPU over the last report period, percent of one core.", func(l api.NodeLoad) float64 { return l.CPUPercent }},
	}
	for _, g := range gauges {
		if err := promReg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "livefuse", Subsystem: "node", Name: g.name, Help: g.help,
		}, func() float64 { return g.fn(n.agent.Node().Load) })); err != nil {
			return nil, fmt.Errorf("node metrics: %w", err)
		}
	}
	if err := promReg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "livefuse", Subsystem: "node", Name: "draining",
		Help: "1 while the node drains or is drained (it takes no new players), else 0.",
	}, func() float64 {
		if n.agent.Serving() {
			return 0
		}
		return 1
	})); err != nil {
		return nil, fmt.Errorf("node metrics: %w", err)
	}
	return n, nil
}

// load samples the node's load (once per report period, from the agent).
func (n *nodeLife) load() api.NodeLoad {
	l := api.NodeLoad{}
	for _, st := range n.hub.List() {
		l.Streams++
		l.Players += st.Readers
	}
	c := lms.SumCounters(n.gather, "livefuse_origin_bytes_out_total", "livefuse_origin_packets_in_total")
	egress, pps, cpu, rss := n.sampler.Sample(time.Now(), c[0], c[1])
	l.EgressBps, l.PacketsPerSecond, l.CPUPercent, l.RSSBytes = egress, pps, cpu, rss
	return l
}

// run keeps the node's record until ctx ends.
func (n *nodeLife) run(ctx context.Context) { n.agent.Run(ctx) }

// mount adds the node routes to the control API and makes /readyz follow
// the node's state.
func (n *nodeLife) mount(s *lms.Server, store *lms.Store) {
	lms.MountNodes(s, store, n.agent)
	s.SetReadiness(n.agent.Ready)
}

// isPlayPath reports whether an HTTP request on the media listener starts
// or continues playing a stream (FLV, HLS playlists, segments and parts).
func isPlayPath(p string) bool {
	if strings.HasPrefix(p, "/keys/") || strings.HasPrefix(p, "/player") || strings.HasPrefix(p, "/dispatch/") ||
		strings.HasPrefix(p, "/qos") || strings.HasPrefix(p, "/recordings/") {
		return false
	}
	for _, ext := range []string{".flv", ".m3u8", ".ts", ".m4s", ".mp4"} {
		if strings.HasSuffix(p, ext) {
			return true
		}
	}
	return false
}

// media refuses new plays while the node drains: 503 with Retry-After, so
// that the edge (proxy_next_upstream http_503) and players try the other
// unit. HTTP-FLV players already connected are not requests any more and
// play on; HLS players move with their next playlist request.
func (n *nodeLife) media(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.serving() && isPlayPath(r.URL.Path) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "node draining: play from another unit", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// drainPlay refuses new RTMP players while the node drains.
type drainPlay struct {
	n    *nodeLife
	next ingest.PlaySource
}

func (d drainPlay) Subscribe(app, name string) (ingest.PacketReader, error) {
	if !d.n.serving() {
		return nil, fmt.Errorf("%w: %s/%s: node draining, play from another unit", ingest.ErrNotFound, app, name)
	}
	return d.next.Subscribe(app, name)
}

// drainAuth refuses new publishers while the node drains (encoders and
// relays reconnect to the other unit); players are checked by the gates.
type drainAuth struct {
	n    *nodeLife
	next ingest.Authorizer
}

func (d drainAuth) AuthorizePublish(app, name, token string) error {
	if !d.n.serving() {
		return fmt.Errorf("%w: %s/%s: node draining, publish to another unit", ingest.ErrUnauthorized, app, name)
	}
	return d.next.AuthorizePublish(app, name, token)
}

func (d drainAuth) AuthorizePlay(app, name, uri string, q url.Values) error {
	return d.next.AuthorizePlay(app, name, uri, q)
}

// listenerAddrs names the node's bound listeners for its record.
func listenerAddrs(apiURL string, httpAddr, rtmp, rtsp, rtmps net.Addr) map[string]string {
	m := map[string]string{"api": apiURL}
	for name, a := range map[string]net.Addr{"http": httpAddr, "rtmp": rtmp, "rtsp": rtsp, "rtmps": rtmps} {
		if a != nil {
			m[name] = a.String()
		}
	}
	return m
}

// SetLocalFeed forces feed on this unit alone (lms.LocalSwitcher): the
// control API's emergency switch when the store has no quorum.
func (l liveSource) SetLocalFeed(app, name, feed string) error {
	s, ok := l.policies.reg.Get(app, name)
	if !ok {
		return fmt.Errorf("%s/%s: %w", app, name, lms.ErrNotFound)
	}
	s.FeedPolicy = feed
	return l.hub.SetStreamPolicy(app, name, l.policies.policy(s))
}
