package lms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/livefuse/livefuse/lms/api"
)

// Node is one process of the fleet as it reports itself; see api.Node.
type Node = api.Node

// NodeConfig is the lms.node section: who this node is in the node
// registry and how it drains.
type NodeConfig struct {
	// ID names the node in the registry (default: the host name, then
	// "-" and the unit, so that several units on one host differ; in
	// Kubernetes the host name is the pod's).
	ID string `yaml:"id"`
	// DrainTimeout bounds a drain: past it the node counts as drained
	// even with players left (SIGTERM then shuts down). The wiring fills
	// it from the top-level drain_timeout; default 60 s.
	DrainTimeout time.Duration `yaml:"-"`
	// ReportPeriod is how often the node writes its record and load
	// (default 2 s; the record expires after three periods).
	ReportPeriod time.Duration `yaml:"report_period"`
}

func (c NodeConfig) withDefaults(unit string) NodeConfig {
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "node"
		}
		c.ID = h
		if unit != "" {
			c.ID += "-" + unit
		}
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 60 * time.Second
	}
	if c.ReportPeriod <= 0 {
		c.ReportPeriod = 2 * time.Second
	}
	return c
}

// Validate checks the section.
func (c NodeConfig) Validate() error {
	if c.ID != "" {
		if err := api.ValidateName(c.ID); err != nil {
			return fmt.Errorf("lms.node.id %q: %w", c.ID, err)
		}
	}
	if c.DrainTimeout < 0 || c.ReportPeriod < 0 {
		return errors.New("lms.node: drain_timeout and report_period must not be negative")
	}
	return nil
}

// ErrNodeNotFound: no node with that id is registered (alive).
var ErrNodeNotFound = errors.New("node not found")

// NodeAgent keeps this node's record in the registry and runs its life
// cycle: starting → serving → draining → drained, back to serving when a
// drain requested through the API is cancelled. The state lives in the
// process: a node that loses the store keeps its state and keeps serving
// (its record expires, and is written again when the store returns).
type NodeAgent struct {
	st   *Store
	cfg  NodeConfig
	load func() api.NodeLoad
	log  *slog.Logger
	recs string // prefix of the records (leased)
	want string // prefix of the requested drains (kept until undrained)

	mu       sync.Mutex
	self     api.Node
	signaled bool          // drained because the process is stopping: never back
	wake     chan struct{} // a state change to apply at once
	drained  chan struct{} // closed on reaching drained; remade on undrain
}

// NewNodeAgent returns the agent of this node. self gives its role, unit
// and addresses; load is sampled once per report period.
func NewNodeAgent(st *Store, cfg NodeConfig, self api.Node, load func() api.NodeLoad, log *slog.Logger) *NodeAgent {
	cfg = cfg.withDefaults(self.Unit)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	self.ID = cfg.ID
	self.State = api.NodeStarting
	self.StartedAt = time.Now().UTC()
	return &NodeAgent{st: st, cfg: cfg, load: load, log: log.With("node", cfg.ID),
		recs: st.prefix + "nodes/live/", want: st.prefix + "nodes/drain/",
		self: self, wake: make(chan struct{}, 1), drained: make(chan struct{})}
}

// SetAddrs records the node's listeners (known once they are bound).
func (a *NodeAgent) SetAddrs(addrs map[string]string) {
	a.mu.Lock()
	a.self.Addrs = copyMap(addrs)
	a.mu.Unlock()
}

// ID is this node's id.
func (a *NodeAgent) ID() string { return a.cfg.ID }

// Node returns this node's record as it stands.
func (a *NodeAgent) Node() api.Node {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.self
	n.Addrs = copyMap(n.Addrs)
	return n
}

// Serving reports whether the node takes new players and publishers.
func (a *NodeAgent) Serving() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.self.State == api.NodeServing || a.self.State == api.NodeStarting
}

// Ready is nil while the node takes new players, else why not (for
// /readyz: a draining node must get no new traffic).
func (a *NodeAgent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.self.State {
	case api.NodeDraining, api.NodeDrained:
		return fmt.Errorf("node %s", a.self.State)
	}
	return nil
}

// Drained is closed when the node reaches drained.
func (a *NodeAgent) Drained() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.drained
}

// Drain starts a drain for the process's own reason (a signal): it is
// never cancelled.
func (a *NodeAgent) Drain(reason string) {
	a.mu.Lock()
	a.signaled = true
	a.startDrainLocked(reason)
	a.mu.Unlock()
	a.poke()
}

func (a *NodeAgent) startDrainLocked(reason string) {
	if a.self.State == api.NodeDraining || a.self.State == api.NodeDrained {
		return
	}
	a.self.State = api.NodeDraining
	a.self.DrainReason = reason
	a.self.DrainDeadline = time.Now().Add(a.cfg.DrainTimeout).UTC()
	a.log.Info("node draining: no new players or publishers", "reason", reason, "drain_timeout", a.cfg.DrainTimeout)
}

func (a *NodeAgent) undrainLocked() {
	if a.signaled || (a.self.State != api.NodeDraining && a.self.State != api.NodeDrained) {
		return
	}
	if a.self.State == api.NodeDrained {
		a.drained = make(chan struct{})
	}
	a.self.State = api.NodeServing
	a.self.DrainReason, a.self.DrainDeadline = "", time.Time{}
	a.log.Info("node serving again: drain cancelled")
}

func (a *NodeAgent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// step samples the load and moves the state on: serving once started, and
// drained when the last player left or the deadline passed.
func (a *NodeAgent) step(requested bool, known bool) api.Node {
	var load api.NodeLoad
	if a.load != nil {
		load = a.load()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.self.Load = load
	if a.self.State == api.NodeStarting {
		a.self.State = api.NodeServing
	}
	if known {
		if requested {
			a.startDrainLocked("api")
		} else if a.self.DrainReason == "api" {
			a.undrainLocked()
		}
	}
	if a.self.State == api.NodeDraining && (load.Players == 0 || time.Now().After(a.self.DrainDeadline)) {
		a.self.State = api.NodeDrained
		a.log.Info("node drained", "players_left", load.Players)
		close(a.drained)
	}
	a.self.ReportedAt = time.Now().UTC()
	n := a.self
	n.Addrs = copyMap(n.Addrs)
	return n
}

// Run keeps the record and follows drain requests until ctx ends; it
// never blocks on the store for long (every call is bounded), so a node
// cut off from the store keeps its state and serves on.
func (a *NodeAgent) Run(ctx context.Context) {
	key := a.recs + a.cfg.ID
	ttl := int64(3*a.cfg.ReportPeriod/time.Second) + 1
	var lease clientv3.LeaseID
	go a.watchRequests(ctx)
	t := time.NewTicker(a.cfg.ReportPeriod)
	defer t.Stop()
	for {
		requested, known := a.requested(ctx)
		n := a.step(requested, known)
		if err := a.put(ctx, key, ttl, &lease, n); err != nil && ctx.Err() == nil {
			a.log.Debug("lms: node record not written", "err", err)
		}
		// While draining, look at the players often: the drain ends as
		// soon as the last one leaves.
		var fast <-chan time.Time
		if n.State == api.NodeDraining {
			fast = time.After(drainPoll)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = a.st.cli.Delete(dctx, key)
			cancel()
			return
		case <-t.C:
		case <-fast:
		case <-a.wake:
		}
	}
}

// requested reads whether a drain of this node is requested; known is
// false when the store did not answer.
func (a *NodeAgent) requested(ctx context.Context) (requested, known bool) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := a.st.cli.Get(cctx, a.want+a.cfg.ID, clientv3.WithCountOnly())
	if err != nil {
		return false, false
	}
	return resp.Count > 0, true
}

// watchRequests wakes Run at once when a drain of this node is requested
// or cancelled (Run re-reads the key: the watch is only a doorbell).
func (a *NodeAgent) watchRequests(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range a.st.cli.Watch(wctx, a.want+a.cfg.ID) {
			if resp.Err() != nil {
				break
			}
			backoff = 100 * time.Millisecond
			a.poke()
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (a *NodeAgent) put(ctx context.Context, key string, ttl int64, lease *clientv3.LeaseID, n api.Node) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if *lease == 0 {
		g, err := a.st.cli.Grant(cctx, ttl)
		if err != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		*lease = g.ID
	}
	if _, err := a.st.cli.Put(cctx, key, string(b), clientv3.WithLease(*lease)); err != nil {
		*lease = 0
		return fmt.Errorf("put %s: %w", key, err)
	}
	if _, err := a.st.cli.KeepAliveOnce(cctx, *lease); err != nil {
		*lease = 0
		return fmt.Errorf("keep lease: %w", err)
	}
	return nil
}

// ListNodes returns the records of the nodes alive, by id.
func ListNodes(ctx context.Context, st *Store) ([]api.Node, error) {
	resp, err := st.cli.Get(ctx, st.prefix+"nodes/live/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]api.Node, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var n api.Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			continue // a record from another version: skip it
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// RequestDrain asks node id to drain (drain true) or to serve again. The
// request outlives the node's restarts until it is cancelled.
func RequestDrain(ctx context.Context, st *Store, id string, drain bool) error {
	if err := api.ValidateName(id); err != nil {
		return fmt.Errorf("%w: node id: %w", ErrInvalid, err)
	}
	nodes, err := ListNodes(ctx, st)
	if err != nil {
		return err
	}
	found := false
	for _, n := range nodes {
		found = found || n.ID == id
	}
	if !found && drain {
		return fmt.Errorf("%w: %s", ErrNodeNotFound, id)
	}
	key := st.prefix + "nodes/drain/" + id
	if drain {
		_, err = st.cli.Put(ctx, key, time.Now().UTC().Format(time.RFC3339))
	} else {
		_, err = st.cli.Delete(ctx, key)
	}
	if err != nil {
		return fmt.Errorf("drain request for %s: %w", id, err)
	}
	return nil
}

// MountNodes adds the node routes to the control API: GET /api/v1/nodes,
// POST /api/v1/nodes/{id}/drain and .../undrain ("self" names the node
// that answers). A drain answer waits up to a few seconds for the node
// to show its new state.
func MountNodes(s *Server, st *Store, self *NodeAgent) {
	s.Handle("GET /api/v1/nodes", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), storeCallTimeout)
		defer cancel()
		nodes, err := ListNodes(ctx, st)
		if err != nil {
			// The store is away: this node still knows itself.
			w.Header().Set("X-Livefuse-Stale", "store unreachable")
			nodes = []api.Node{self.Node()}
		}
		writeJSON(w, http.StatusOK, api.NodeList{Nodes: nodes})
	}))
	drain := func(on bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if id == "self" {
				id = self.ID()
			}
			ctx, cancel := context.WithTimeout(r.Context(), storeCallTimeout)
			defer cancel()
			if err := RequestDrain(ctx, st, id, on); err != nil {
				switch {
				case errors.Is(err, ErrNodeNotFound):
					writeError(w, http.StatusNotFound, err.Error())
				case errors.Is(err, ErrInvalid):
					writeError(w, http.StatusBadRequest, err.Error())
				default:
					writeError(w, http.StatusServiceUnavailable, "store unreachable: "+err.Error())
				}
				return
			}
			verb := "undrain"
			if on {
				verb = "drain"
			}
			s.audit(r, verb, "node/"+id)
			n, ok := waitNodeState(r.Context(), st, id, on, nodeAnswerWait)
			if !ok {
				writeJSON(w, http.StatusAccepted, n)
				return
			}
			writeJSON(w, http.StatusOK, n)
		}
	}
	s.Handle("POST /api/v1/nodes/{id}/drain", drain(true))
	s.Handle("POST /api/v1/nodes/{id}/undrain", drain(false))
}

const (
	// drainPoll is how often a draining node looks at its players.
	drainPoll        = 250 * time.Millisecond
	storeCallTimeout = 3 * time.Second
	nodeAnswerWait   = 5 * time.Second
)

// waitNodeState polls the record of id until it shows a drain (on) or
// serving (off), for at most d.
func waitNodeState(ctx context.Context, st *Store, id string, on bool, d time.Duration) (api.Node, bool) {
	deadline := time.Now().Add(d)
	var last api.Node
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		nodes, err := ListNodes(cctx, st)
		cancel()
		if err == nil {
			for _, n := range nodes {
				if n.ID != id {
					continue
				}
				last = n
				draining := n.State == api.NodeDraining || n.State == api.NodeDrained
				if draining == on {
					return n, true
				}
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return last, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
