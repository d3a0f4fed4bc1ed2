package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/livefuse/livefuse/ingest"
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

// drainer takes a serving node out of service gently. The first SIGTERM
// (or Ctrl-C) starts a drain: /readyz answers 503 "draining" at once so
// that load balancers and the Kubernetes endpoints stop sending new
// players, players already here (and new ones, until their routing has
// caught up) keep playing, and the node stops when its last player has
// gone or drain_timeout has passed. A second signal stops it at once.
//
// Players are the HTTP requests in flight on the media listener
// (HTTP-FLV players for as long as they play, HLS fetches) and the RTMP
// players; publishers, relays, recordings and renditions are not players.
type drainer struct {
	players atomic.Int64
}

// media counts the requests in flight on the media listener.
func (d *drainer) media(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.players.Add(1)
		defer d.players.Add(-1)
		next.ServeHTTP(w, r)
	})
}

// play counts the RTMP players (nil stays nil: RTMP play refused).
func (d *drainer) play(next ingest.PlaySource) ingest.PlaySource {
	if next == nil {
		return nil
	}
	return countedPlay{next: next, n: &d.players}
}

type countedPlay struct {
	next ingest.PlaySource
	n    *atomic.Int64
}

func (c countedPlay) Subscribe(app, name string) (ingest.PacketReader, error) {
	r, err := c.next.Subscribe(app, name)
	if err != nil {
		return nil, err
	}
	c.n.Add(1)
	return &countedReader{PacketReader: r, n: c.n}, nil
}

type countedReader struct {
	ingest.PacketReader
	n    *atomic.Int64
	once sync.Once
}

func (r *countedReader) Close() {
	r.once.Do(func() { r.n.Add(-1) })
	r.PacketReader.Close()
}

// drainPoll is how often a drain looks at the player count.
const drainPoll = 250 * time.Millisecond

// wait marks the node serving and blocks until ctx is done (a second
// signal) or a drain that life starts has ended: every player gone, or
// timeout passed. markDraining turns /readyz to 503.
func (d *drainer) wait(ctx context.Context, life *lifecycle, timeout time.Duration, markDraining func(), log *slog.Logger) {
	life.serving.Store(true)
	select {
	case <-ctx.Done():
		return
	case <-life.drain:
	}
	markDraining()
	start := time.Now()
	log.Info("draining: not ready any more; stopping when the players have left or drain_timeout passes (signal again to stop now)",
		"players", d.players.Load(), "drain_timeout", timeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		if d.players.Load() <= 0 {
			log.Info("drained: no players left", "after", time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			log.Info("drain cut short by a second signal", "players", d.players.Load())
			return
		case <-deadline.C:
			log.Info("drain_timeout passed: stopping with players still here", "players", d.players.Load())
			return
		case <-tick.C:
		}
	}
}
