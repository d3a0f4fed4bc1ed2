// Package transcode is livefuse's processing stage: a bounded, supervised
// pool of ffmpeg workers that turn a live stream into a ladder of
// renditions, with an optional watermark.
//
// One worker serves one stream with one ffmpeg process: the stream is fed
// as FLV on ffmpeg's stdin, decoded once, watermarked, split and scaled,
// and every rendition comes back as FLV on its own pipe (pipe:3, pipe:4,
// …); -progress on the next pipe tells the supervisor that ffmpeg is
// alive. Renditions are published as app/NAME_<rendition>, so every output
// of the origin serves them as it serves any stream. A worker whose ffmpeg
// exits or stalls restarts it with backoff while keeping its rendition
// feeds open, so players of the renditions stay connected.
//
// Renditions follow their source: when the source stream ends (not when
// its reader is merely dropped) the worker unpublishes every rendition, so
// their streams end at once too; when the source comes back the worker (or
// a new one) publishes them again on a new timeline, anchored to the
// source's (a rendition's timestamps are the source's, within a frame or
// two). Stopping a ladder (the stream lost its profile) ends them the same
// way.
//
// The pool never runs more than Config.Workers ffmpeg processes. A stream
// that finds the pool full waits in a bounded queue (it is served without
// its ladder meanwhile, and its status says so) and gets its ladder when a
// worker frees; past the queue it is refused.
//
// The package knows nothing of the origin: it reads and publishes streams
// through the small interfaces below, which cmd/livefuse adapts.
package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
)

// Source gives workers the streams they transcode.
type Source interface {
	// Subscribe returns a reader of app/name, or an error when it is not live.
	Subscribe(app, name string) (PacketReader, error)
}

// PacketReader is one reader of a stream: it starts with the sequence
// headers and the cached GOP, then live packets.
type PacketReader interface {
	// ReadPackets waits for packets and appends them to dst. It fails when
	// the stream ended (with an error wrapping ErrSourceEnded) or the
	// reader was dropped (any other error).
	ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error)
	Close()
}

// ErrSourceEnded is what a PacketReader's error wraps when the stream
// itself ended (its publisher left, it was kicked): the worker then ends
// the renditions too, and a stream that comes back gets new ones, on its
// new timeline.
var ErrSourceEnded = errors.New("source stream ended")

// Publisher publishes rendition streams.
type Publisher interface {
	// Publish claims app/name for a rendition.
	Publish(app, name string, src av.Source) (FeedWriter, error)
}

// FeedWriter is a published rendition.
type FeedWriter interface {
	// WritePacket hands p over; it never blocks.
	WritePacket(p *av.Packet)
	// Done is closed when the origin drops the feed (then it is republished).
	Done() <-chan struct{}
	// Unpublish says the rendition ends on purpose, so that the Close which
	// follows ends its stream at once (players get the end, not a slate).
	Unpublish()
	Close()
}

// Config of a pool.
type Config struct {
	// Workers is the most ffmpeg processes at once (default: number of CPUs).
	Workers int `yaml:"workers"`
	// Queue is how many streams may wait for a worker (default 16; -1: none).
	Queue int `yaml:"queue"`
	// FFmpeg is the ffmpeg binary (default "ffmpeg" from PATH).
	FFmpeg string `yaml:"ffmpeg"`
	// StallTimeout: a worker whose ffmpeg makes no progress this long while
	// it has input is killed and restarted (default 5 s).
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// RestartBackoff is the first wait before a restart (default 200 ms);
	// it doubles up to MaxRestartBackoff (default 10 s) and starts again
	// from RestartBackoff after a run that gave keyframes for 5 s.
	RestartBackoff    time.Duration `yaml:"restart_backoff"`
	MaxRestartBackoff time.Duration `yaml:"max_restart_backoff"`
	// Profiles declared in the config file.
	Profiles []Profile `yaml:"profiles"`
}

// DefaultConfig is the configuration of a node without a config file.
func DefaultConfig() Config {
	return Config{Workers: runtime.NumCPU(), Queue: 16, FFmpeg: "ffmpeg", StallTimeout: 5 * time.Second,
		RestartBackoff: 200 * time.Millisecond, MaxRestartBackoff: 10 * time.Second}
}

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.Workers < 0 {
		return c, fmt.Errorf("transcode: workers %d: want > 0", c.Workers)
	}
	switch {
	case c.Queue == 0:
		c.Queue = d.Queue
	case c.Queue < 0:
		c.Queue = 0
	}
	if c.FFmpeg == "" {
		c.FFmpeg = d.FFmpeg
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = d.StallTimeout
	}
	if c.RestartBackoff == 0 {
		c.RestartBackoff = d.RestartBackoff
	}
	if c.MaxRestartBackoff == 0 {
		c.MaxRestartBackoff = d.MaxRestartBackoff
	}
	if c.StallTimeout < 0 || c.RestartBackoff < 0 || c.MaxRestartBackoff < c.RestartBackoff {
		return c, errors.New("transcode: stall_timeout and restart backoffs must be positive, max_restart_backoff ≥ restart_backoff")
	}
	return c, nil
}

// States of a stream in the pool.
const (
	StateRunning  = "running"  // a worker serves the ladder (ffmpeg may be restarting)
	StateQueued   = "queued"   // waiting for a worker; served without ladder
	StateRejected = "rejected" // pool and queue full; served without ladder
)

// Errors of Start.
var (
	ErrUnknownProfile = errors.New("unknown transcode profile")
	ErrClosed         = errors.New("transcode pool closed")
)

// Pool runs ffmpeg workers for live streams. It is safe for concurrent use.
type Pool struct {
	cfg Config
	src Source
	pub Publisher
	log *slog.Logger
	m   *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	profiles map[string]Profile
	jobs     map[string]*job
	queue    []*job // FIFO of StateQueued jobs
	running  int
}

// job is one stream that asked for a ladder.
type job struct {
	app, name string
	key       string
	profile   Profile
	state     string
	reason    string
	since     time.Time
	w         *worker       // StateRunning
	stopWatch func()        // queued/rejected: stops the watcher of the stream's end
	again     bool          // Start was called while running: retry once if the source seems gone
	stop      chan struct{} // closed by Stop: the worker ends
	stopOnce  sync.Once
}

// NewPool checks cfg (and its profiles) and returns a pool; ffmpeg must be
// on PATH (or at cfg.FFmpeg). Metrics are registered on reg (nil: not
// registered); log may be nil.
func NewPool(cfg Config, src Source, pub Publisher, log *slog.Logger, reg prometheus.Registerer) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	path, err := exec.LookPath(cfg.FFmpeg)
	if err != nil {
		return nil, fmt.Errorf("transcode: ffmpeg: %w", err)
	}
	cfg.FFmpeg = path
	profiles, err := ValidateProfiles(cfg.Profiles)
	if err != nil {
		return nil, fmt.Errorf("transcode: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{cfg: cfg, src: src, pub: pub, log: log, jobs: map[string]*job{}, profiles: map[string]Profile{}}
	for _, pr := range profiles {
		p.profiles[pr.Name] = pr
	}
	p.m, err = newMetrics(reg, p)
	if err != nil {
		return nil, err
	}
	p.m.workersMax.Set(float64(cfg.Workers))
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Config returns the pool's configuration with defaults filled in.
func (p *Pool) Config() Config { return p.cfg }

// Profiles returns the profiles, sorted by name.
func (p *Pool) Profiles() []Profile {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Profile, 0, len(p.profiles))
	for _, pr := range p.profiles {
		out = append(out, pr.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SetProfiles replaces every profile at once, after validating all of them
// (one bad profile refuses the set and nothing changes). Running workers
// whose profile changed restart ffmpeg with the new one; streams whose
// profile is gone lose their ladder.
func (p *Pool) SetProfiles(ps []Profile) error {
	valid, err := ValidateProfiles(ps)
	if err != nil {
		return err
	}
	m := make(map[string]Profile, len(valid))
	for _, pr := range valid {
		m[pr.Name] = pr
	}
	p.mu.Lock()
	p.profiles = m
	var gone []*job
	for _, j := range p.jobs {
		np, ok := m[j.profile.Name]
		switch {
		case !ok:
			gone = append(gone, j)
		case !profileEqual(np, j.profile):
			j.profile = np
			if j.w != nil {
				j.w.reload()
			}
		}
	}
	p.mu.Unlock()
	for _, j := range gone {
		p.log.Info("transcode profile removed: ladder stopped", "stream", j.key, "profile", j.profile.Name)
		p.Stop(j.app, j.name)
	}
	return nil
}

// Start gives app/name the ladder of profile; call it when the stream goes
// live (it is idempotent; a different profile replaces the old one). It
// returns ErrUnknownProfile or ErrClosed; a full pool is no error: the
// stream waits in the queue or is refused, and Status says which.
func (p *Pool) Start(app, name, profile string) error {
	key := app + "/" + name
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("transcode %s: %w", key, ErrClosed)
	}
	pr, ok := p.profiles[profile]
	if !ok {
		p.mu.Unlock()
		return fmt.Errorf("transcode %s: %w %q", key, ErrUnknownProfile, profile)
	}
	if j := p.jobs[key]; j != nil {
		j.again = true
		if j.profile.Name != profile {
			j.profile = pr
			if j.w != nil {
				j.w.reload()
			}
		}
		p.mu.Unlock()
		return nil
	}
	j := &job{app: app, name: name, key: key, profile: pr, since: time.Now(), stop: make(chan struct{})}
	p.jobs[key] = j
	switch {
	case p.running < p.cfg.Workers:
		p.startLocked(j)
		p.m.admissions.WithLabelValues("started").Inc()
	case len(p.queue) < p.cfg.Queue:
		j.state = StateQueued
		j.reason = fmt.Sprintf("pool full: %d of %d workers busy; waiting for a worker (position %d in the queue)",
			p.running, p.cfg.Workers, len(p.queue)+1)
		p.queue = append(p.queue, j)
		p.m.queue.Set(float64(len(p.queue)))
		p.m.admissions.WithLabelValues("queued").Inc()
		p.m.noLadder.WithLabelValues("pool_full").Inc()
		p.watchLocked(j)
		p.log.Warn("transcode pool full: stream served without ladder, queued", "stream", key, "profile", profile)
	default:
		j.state = StateRejected
		j.reason = fmt.Sprintf("pool full: %d of %d workers busy and %d streams queued; served without ladder",
			p.running, p.cfg.Workers, len(p.queue))
		p.m.admissions.WithLabelValues("rejected").Inc()
		p.m.noLadder.WithLabelValues("queue_full").Inc()
		p.watchLocked(j)
		p.log.Warn("transcode pool and queue full: stream served without ladder", "stream", key, "profile", profile)
	}
	p.mu.Unlock()
	return nil
}

// Stop ends the ladder of app/name (the stream ended, or its profile was
// removed). It waits for nothing: the job is forgotten at once, so a Start
// that follows gets a new worker (which takes over the rendition streams
// once the old worker has let them go).
func (p *Pool) Stop(app, name string) {
	p.mu.Lock()
	j := p.jobs[app+"/"+name]
	if j != nil {
		p.removeLocked(j)
	}
	p.mu.Unlock()
	if j != nil {
		j.stopOnce.Do(func() { close(j.stop) })
	}
}

// startLocked gives j a worker (p.mu held).
func (p *Pool) startLocked(j *job) {
	if j.stopWatch != nil {
		j.stopWatch()
		j.stopWatch = nil
	}
	j.state, j.reason, j.since = StateRunning, "", time.Now()
	j.w = newWorker(p, j)
	p.running++
	p.m.busy.Set(float64(p.running))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		j.w.run(p.ctx)
		p.mu.Lock()
		p.running--
		p.m.busy.Set(float64(p.running))
		j.w = nil
		p.removeLocked(j)
		p.admitLocked()
		p.mu.Unlock()
	}()
}

// admitLocked starts queued jobs while workers are free.
func (p *Pool) admitLocked() {
	for p.running < p.cfg.Workers && len(p.queue) > 0 && !p.closed {
		j := p.queue[0]
		p.queue = p.queue[1:]
		p.log.Info("transcode worker free: queued stream gets its ladder", "stream", j.key,
			"waited", time.Since(j.since).Round(time.Millisecond))
		p.startLocked(j)
	}
	for i, j := range p.queue {
		j.reason = fmt.Sprintf("pool full: %d of %d workers busy; waiting for a worker (position %d in the queue)",
			p.running, p.cfg.Workers, i+1)
	}
	p.m.queue.Set(float64(len(p.queue)))
}

// removeLocked forgets j (p.mu held).
func (p *Pool) removeLocked(j *job) {
	if p.jobs[j.key] == j {
		delete(p.jobs, j.key)
	}
	for i, q := range p.queue {
		if q == j {
			p.queue = append(p.queue[:i:i], p.queue[i+1:]...)
			break
		}
	}
	p.m.queue.Set(float64(len(p.queue)))
	if j.stopWatch != nil {
		j.stopWatch()
		j.stopWatch = nil
	}
}

// watchLocked follows a stream without a worker, to forget it when it
// ends: a reader that discards what it reads (cheap: no ffmpeg).
func (p *Pool) watchLocked(j *job) {
	ctx, cancel := context.WithCancel(p.ctx)
	j.stopWatch = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ended := p.drainUntilEnd(ctx, j)
		if !ended {
			return
		}
		p.mu.Lock()
		if j.w == nil && p.jobs[j.key] == j {
			p.log.Info("stream without ladder ended", "stream", j.key, "state", j.state)
			p.removeLocked(j)
		}
		p.mu.Unlock()
	}()
}

// drainUntilEnd reads app/name until it ends (true) or ctx is done (false).
func (p *Pool) drainUntilEnd(ctx context.Context, j *job) bool {
	// The stream may go live just after Start was called from its publish
	// hook, and may come back at once after a reconnect: a few tries.
	for tries := 0; ; tries++ {
		rd, err := p.src.Subscribe(j.app, j.name)
		if err != nil {
			if tries >= 3 {
				return true
			}
			select {
			case <-ctx.Done():
				return false
			case <-j.stop:
				return false
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		tries = 0
		var buf []*av.Packet
		for {
			buf, err = rd.ReadPackets(ctx, buf[:0])
			clear(buf)
			if err != nil {
				break
			}
		}
		rd.Close()
		if ctx.Err() != nil {
			return false
		}
	}
}

// Close stops every worker (their ffmpeg processes are killed and their
// rendition feeds closed) and waits for them.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.queue = nil
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// Status of one stream in the pool.
type Status struct {
	App     string `json:"app"`
	Name    string `json:"name"`
	Profile string `json:"profile"`
	// State is running, queued or rejected; Reason says why a stream has
	// no ladder.
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// Renditions are the streams published for it (app/NAME_<rendition>).
	Renditions []RenditionStatus `json:"renditions,omitempty"`
	// Worker figures (running only).
	PID      int     `json:"pid,omitempty"`
	Restarts int     `json:"restarts"`
	LastExit string  `json:"last_exit,omitempty"`
	FPS      float64 `json:"fps"`
	Speed    float64 `json:"speed"`
	// CPU is the share of one core used over the last second; CPUSeconds
	// the total since the worker started (every ffmpeg run).
	CPU        float64 `json:"cpu"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSS        int64   `json:"rss_bytes"`
}

// RenditionStatus describes one rendition of a running worker.
type RenditionStatus struct {
	Name      string `json:"name"`
	Stream    string `json:"stream"` // app/NAME_<rendition>
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	VideoKbps int    `json:"video_kbps"`
	// MaxFPS is the frame rate cap (0: the source's).
	MaxFPS float64 `json:"max_fps,omitempty"`
}

// Status returns the status of app/name, and false when it has no job.
func (p *Pool) Status(app, name string) (Status, bool) {
	p.mu.Lock()
	j := p.jobs[app+"/"+name]
	var st Status
	if j != nil {
		st = p.statusLocked(j)
	}
	p.mu.Unlock()
	return st, j != nil
}

// List returns the status of every stream in the pool, sorted by app/name.
func (p *Pool) List() []Status {
	p.mu.Lock()
	out := make([]Status, 0, len(p.jobs))
	for _, j := range p.jobs {
		out = append(out, p.statusLocked(j))
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, k int) bool {
		if out[i].App != out[k].App {
			return out[i].App < out[k].App
		}
		return out[i].Name < out[k].Name
	})
	return out
}

func (p *Pool) statusLocked(j *job) Status {
	st := Status{App: j.app, Name: j.name, Profile: j.profile.Name, State: j.state, Reason: j.reason, Since: j.since}
	if j.w != nil {
		st.Renditions = renditionStatus(j.app, j.name, &j.profile)
		j.w.fill(&st)
	}
	return st
}

func renditionStatus(app, name string, pr *Profile) []RenditionStatus {
	var out []RenditionStatus
	for _, r := range pr.Renditions {
		out = append(out, RenditionStatus{Name: r.Name, Stream: app + "/" + RenditionStream(name, r.Name),
			Width: r.Width, Height: r.Height, VideoKbps: r.VideoKbps, MaxFPS: r.MaxFPS})
	}
	if pr.WatermarkSource {
		out = append(out, RenditionStatus{Name: RenditionSource, Stream: app + "/" + RenditionStream(name, RenditionSource),
			VideoKbps: pr.SourceKbps})
	}
	return out
}

// RenditionStream is the stream name of rendition r of stream name.
func RenditionStream(name, r string) string { return name + "_" + r }

func profileEqual(a, b Profile) bool {
	if a.Name != b.Name || a.WatermarkSource != b.WatermarkSource || a.SourceKbps != b.SourceKbps ||
		a.GOP != b.GOP || a.Keyframes != b.Keyframes || len(a.Renditions) != len(b.Renditions) {
		return false
	}
	for i := range a.Renditions {
		if a.Renditions[i] != b.Renditions[i] {
			return false
		}
	}
	switch {
	case a.Watermark == nil && b.Watermark == nil:
		return true
	case a.Watermark == nil || b.Watermark == nil:
		return false
	}
	return *a.Watermark == *b.Watermark
}

// Validate checks c and its profiles as NewPool and the profile store do,
// so that a bad config is refused before anything starts.
func (c Config) Validate() error {
	if _, err := c.withDefaults(); err != nil {
		return err
	}
	if _, err := ValidateProfiles(c.Profiles); err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	return nil
}
