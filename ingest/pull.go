package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Pull reconnection timing.
const (
	pullMinBackoff   = 500 * time.Millisecond
	pullMaxBackoff   = 30 * time.Second
	pullHealthyAfter = time.Minute
)

// pullRunFunc runs one pull client until it fails or ctx ends, writing
// packets to w.
type pullRunFunc func(ctx context.Context, src string, w FeedWriter, log *slog.Logger) error

// Puller keeps remote sources (rtsp:// or rtmp:// URLs) flowing into the
// Sink as the main feed of their streams: each source is published, run
// until it fails, and reconnected with exponential backoff.
type Puller struct {
	deps Deps
	log  *slog.Logger

	// timing and clients, replaceable in tests
	minBackoff, maxBackoff, healthyAfter time.Duration
	runRTSP, runRTMP                     pullRunFunc

	setMu  sync.Mutex // serializes Set and Close
	mu     sync.Mutex
	jobs   map[string]*pullJob // by "app/name"
	closed bool
}

type pullJob struct {
	src    string
	cancel context.CancelFunc
	done   chan struct{}
}

// NewPuller returns a Puller with no sources.
func NewPuller(deps Deps, log *slog.Logger) *Puller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Puller{
		deps:         deps,
		log:          log.With("proto", "pull"),
		minBackoff:   pullMinBackoff,
		maxBackoff:   pullMaxBackoff,
		healthyAfter: pullHealthyAfter,
		runRTSP:      runRTSPPull,
		runRTMP: func(ctx context.Context, src string, w FeedWriter, log *slog.Logger) error {
			return runRTMPPull(ctx, src, w, log, deps.Budget)
		},
		jobs: make(map[string]*pullJob),
	}
}

// Set makes sources (key "app/name", value the source URL) the pulled set:
// new keys start, missing ones stop, changed URLs restart. It returns once
// the stopped pulls have closed their feeds. Invalid entries are logged and
// skipped.
func (p *Puller) Set(sources map[string]string) {
	p.setMu.Lock()
	defer p.setMu.Unlock()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	var stopping []*pullJob
	for key, job := range p.jobs {
		if src, ok := sources[key]; !ok || src != job.src {
			job.cancel()
			stopping = append(stopping, job)
			delete(p.jobs, key)
		}
	}
	p.mu.Unlock()
	for _, job := range stopping {
		<-job.done
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	for key, src := range sources {
		if _, ok := p.jobs[key]; ok {
			continue
		}
		app, name, run, proto, err := p.check(key, src)
		if err != nil {
			p.log.Error("pull source skipped", "stream", key, "remote", pullRedact(src), "err", err)
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		job := &pullJob{src: src, cancel: cancel, done: make(chan struct{})}
		p.jobs[key] = job
		go func() {
			defer close(job.done)
			p.loop(ctx, app, name, src, proto, run)
		}()
	}
}

// Close stops every pull and waits for their feeds to close.
func (p *Puller) Close() {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	p.mu.Lock()
	p.closed = true
	jobs := p.jobs
	p.jobs = map[string]*pullJob{}
	p.mu.Unlock()
	for _, job := range jobs {
		job.cancel()
	}
	for _, job := range jobs {
		<-job.done
	}
}

// check validates one entry and picks its client.
func (p *Puller) check(key, src string) (app, name string, run pullRunFunc, proto string, err error) {
	if strings.ContainsRune(key, '?') {
		return "", "", nil, "", fmt.Errorf("pull key %q: want app/name", key)
	}
	app, name, _, err = ParseStreamPath(key)
	if err != nil {
		return "", "", nil, "", fmt.Errorf("pull key: %w", err)
	}
	u, err := url.Parse(src)
	if err != nil {
		return "", "", nil, "", fmt.Errorf("pull url: %w", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "rtsp", "rtsps":
		return app, name, p.runRTSP, "rtsp-pull", nil
	case "rtmp", "rtmps":
		return app, name, p.runRTMP, "rtmp-pull", nil
	}
	return "", "", nil, "", fmt.Errorf("pull url scheme %q: want rtsp or rtmp", u.Scheme)
}

// loop pulls src into app/name until ctx ends.
func (p *Puller) loop(ctx context.Context, app, name, src, proto string, run pullRunFunc) {
	remote := pullRedact(src)
	log := p.log.With("stream", app+"/"+name, "remote", remote)
	backoff := p.minBackoff
	for {
		began := time.Now()
		err := p.once(ctx, app, name, src, proto, run, log)
		if ctx.Err() != nil {
			log.Info("pull stopped")
			return
		}
		if time.Since(began) >= p.healthyAfter {
			backoff = p.minBackoff
		}
		// full jitter on the upper half: between backoff/2 and backoff
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("pull failed, reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			log.Info("pull stopped")
			return
		case <-t.C:
		}
		backoff = min(backoff*2, p.maxBackoff)
	}
}

// once publishes the feed and runs the client once.
func (p *Puller) once(ctx context.Context, app, name, src, proto string, run pullRunFunc, log *slog.Logger) error {
	w, err := p.deps.Sink.Publish(app, name, "main", av.Source{Protocol: proto, Remote: pullRedact(src)})
	if err != nil {
		return fmt.Errorf("publish %s/%s: %w", app, name, err)
	}
	defer func() {
		if ctx.Err() != nil {
			w.Unpublish() // removed from the config or shutting down
		}
		w.Close()
	}()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.Done():
			log.Info("pull dropped by the origin")
			cancel()
		case <-runCtx.Done():
		}
	}()
	log.Info("pull connecting")
	err = run(runCtx, src, w, log)
	if err == nil && ctx.Err() == nil {
		err = fmt.Errorf("%s ended", proto)
	}
	return err
}

// pullRedact returns src without user information, for logs and status.
func pullRedact(src string) string {
	u, err := url.Parse(src)
	if err != nil {
		return "(unparsable url)"
	}
	u.User = nil
	return u.String()
}
