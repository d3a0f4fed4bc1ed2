package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// lifecycle carries the signals' meaning to serve: drain is closed by
// the first signal once serving is set (before that, the first signal
// cancels the context: a node still starting has nothing to drain).
type lifecycle struct {
	drain   chan struct{}
	serving atomic.Bool
}

// drainSignals maps SIGTERM and Ctrl-C to the node's lifecycle: the first
// starts a drain (or cancels ctx during start-up), the second cancels ctx
// (stop now, within shutdown_timeout), and after it the default action
// returns, so a third ends a shutdown that hangs. stop releases the
// signals and cancels ctx.
func drainSignals() (context.Context, *lifecycle, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	life := &lifecycle{drain: make(chan struct{})}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		defer signal.Stop(sigs)
		for i := 0; i < 2; i++ {
			select {
			case <-sigs:
			case <-done:
				return
			}
			if i == 0 && life.serving.Load() {
				close(life.drain)
			} else {
				cancel()
				i = 1
			}
		}
	}()
	var once sync.Once
	return ctx, life, func() {
		once.Do(func() {
			close(done)
			signal.Stop(sigs)
			cancel()
		})
	}
}

// waitSignal marks the node serving and blocks until ctx is done (a
// second signal) or a drain that life starts (the first SIGTERM or
// Ctrl-C) has ended. The drain is the node's life cycle (lms.NodeAgent):
// /readyz answers 503 at once, new players and publishers are refused (the
// edge and load balancers retry them elsewhere), players already here play
// on until they leave or timeout passes. timeout 0 stops at once.
func (n *nodeLife) waitSignal(ctx context.Context, life *lifecycle, timeout time.Duration, log *slog.Logger) {
	life.serving.Store(true)
	select {
	case <-ctx.Done():
		return
	case <-life.drain:
	}
	if timeout <= 0 {
		log.Info("stopping: drain_timeout is 0")
		return
	}
	start := time.Now()
	n.agent.Drain("signal")
	log.Info("draining: not ready any more; stopping when the players have left or drain_timeout passes (signal again to stop now)",
		"players", n.agent.Node().Load.Players, "drain_timeout", timeout)
	select {
	case <-ctx.Done():
		log.Info("drain cut short by a second signal")
	case <-n.agent.Drained():
		if left := n.agent.Node().Load.Players; left > 0 {
			log.Info("drain_timeout passed: stopping with players still here", "players", left)
		} else {
			log.Info("drained: no players left", "after", time.Since(start).Round(time.Millisecond))
		}
	}
}
