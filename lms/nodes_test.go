package lms

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// startAgent runs a NodeAgent with a fast report period and a player
// count the test sets.
func startAgent(t *testing.T, st *Store, id string, drainTimeout time.Duration) (*NodeAgent, *atomic.Int64) {
	t.Helper()
	players := &atomic.Int64{}
	a := NewNodeAgent(st, NodeConfig{ID: id, DrainTimeout: drainTimeout, ReportPeriod: 100 * time.Millisecond},
		api.Node{Role: "unit", Unit: "a", Addrs: map[string]string{"http": "127.0.0.1:8080"}},
		func() api.NodeLoad { return api.NodeLoad{Players: int(players.Load())} }, testLogger(t))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a, players
}

// waitState waits (bounded) until node id's record in the store shows state.
func waitState(t *testing.T, st *Store, id, state string) api.Node {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		nodes, err := ListNodes(t.Context(), st)
		if err == nil {
			for _, n := range nodes {
				if n.ID == id && n.State == state {
					return n
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s never reached %s (last: %+v, %v)", id, state, nodes, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNodeDrainThroughStore(t *testing.T) {
	st := prefixStore(t)
	a, players := startAgent(t, st, "n1", time.Minute)
	n := waitState(t, st, "n1", api.NodeServing)
	if n.Role != "unit" || n.Unit != "a" || n.Addrs["http"] == "" {
		t.Fatalf("record %+v", n)
	}
	players.Store(3)
	if err := RequestDrain(t.Context(), st, "n1", true); err != nil {
		t.Fatal(err)
	}
	n = waitState(t, st, "n1", api.NodeDraining)
	if a.Ready() == nil || a.Serving() {
		t.Fatal("a draining node is ready for new players")
	}
	if n.DrainReason != "api" || n.DrainDeadline.IsZero() || n.Load.Players != 3 {
		t.Fatalf("draining record %+v", n)
	}
	// Players stay until they leave: then drained.
	players.Store(0)
	waitState(t, st, "n1", api.NodeDrained)
	select {
	case <-a.Drained():
	default:
		t.Fatal("Drained not closed")
	}
	// A cancelled drain serves again.
	if err := RequestDrain(t.Context(), st, "n1", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, st, "n1", api.NodeServing)
	if a.Ready() != nil {
		t.Fatal("undrained node not ready")
	}
	select {
	case <-a.Drained():
		t.Fatal("Drained still closed after an undrain")
	default:
	}
}

func TestNodeDrainTimeoutAndSignal(t *testing.T) {
	st := prefixStore(t)
	a, players := startAgent(t, st, "n2", 300*time.Millisecond)
	waitState(t, st, "n2", api.NodeServing)
	players.Store(5)
	a.Drain("signal")
	select {
	case <-a.Drained():
	case <-time.After(5 * time.Second):
		t.Fatal("not drained after the drain timeout with players left")
	}
	n := waitState(t, st, "n2", api.NodeDrained)
	if n.DrainReason != "signal" || n.Load.Players != 5 {
		t.Fatalf("record %+v", n)
	}
	// A drain for stopping is never cancelled.
	if err := RequestDrain(t.Context(), st, "n2", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if a.Ready() == nil {
		t.Fatal("a stopping node came back to serving")
	}
}

func TestRequestDrainUnknownNode(t *testing.T) {
	st := prefixStore(t)
	if err := RequestDrain(t.Context(), st, "nobody", true); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("err = %v, want ErrNodeNotFound", err)
	}
	if err := RequestDrain(t.Context(), st, "../x", true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}
