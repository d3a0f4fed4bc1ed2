package transcode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Why one ffmpeg run ended.
const (
	endEnded  = "ended"   // the source stream ended: the renditions end too
	endSource = "source"  // the source dropped the reader (it is still live)
	endExit   = "exit"    // ffmpeg exited on its own
	endStall  = "stall"   // no progress for stall_timeout: killed
	endReload = "reload"  // the profile changed
	endStop   = "stop"    // the stream's ladder was stopped
	endStart  = "startup" // ffmpeg could not be started
)

// worker serves one stream: it runs ffmpeg, restarts it, and holds the
// rendition feeds across runs.
type worker struct {
	pool *Pool
	job  *job

	reloadCh chan struct{}
	healthy  atomic.Bool // the last run gave a rendition keyframe

	// Owned by run.
	feeds map[string]*output
	tl    timeline // shared by the outputs

	mu       sync.Mutex
	pid      int
	restarts int
	lastExit string
	prog     Progress
	cpu      float64       // share of a core, last sample
	cpuTotal time.Duration // all runs
	cpuRun   time.Duration // this run so far
	rss      int64
}

func newWorker(p *Pool, j *job) *worker {
	return &worker{pool: p, job: j, reloadCh: make(chan struct{}, 1), feeds: map[string]*output{}}
}

// reload asks the worker to restart ffmpeg with the job's (new) profile.
func (w *worker) reload() {
	select {
	case w.reloadCh <- struct{}{}:
	default:
	}
}

func (w *worker) fill(st *Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st.PID, st.Restarts, st.LastExit = w.pid, w.restarts, w.lastExit
	st.FPS, st.Speed = w.prog.FPS, w.prog.Speed
	st.CPU, st.CPUSeconds, st.RSS = w.cpu, (w.cpuTotal + w.cpuRun).Seconds(), w.rss
}

// run supervises ffmpeg until the stream ends, the ladder is stopped or ctx
// is done. The rendition feeds outlive every restart of ffmpeg; they end
// (cleanly: their streams end at once) with the source stream, and at the
// end of run.
func (w *worker) run(ctx context.Context) {
	p, j := w.pool, w.job
	log := p.log.With("stream", j.key)
	defer w.endFeeds()
	backoff := p.cfg.RestartBackoff
	first := true
	for runs := 0; ; runs++ {
		rd, err := w.subscribe(ctx)
		if err != nil {
			log.Info("transcode worker done: stream not live", "err", err)
			return
		}
		p.mu.Lock()
		prof := j.profile
		p.mu.Unlock()
		w.syncFeeds(&prof)
		started := time.Now()
		end, err := w.runOnce(ctx, rd, &prof, first, log)
		rd.Close()
		first = false
		switch end {
		case endStop:
			log.Info("transcode worker stopped")
			return
		case endEnded:
			// The source ended: so do its renditions. If it comes back,
			// the next run publishes them again on its new timeline.
			log.Info("source ended: renditions ended")
			w.endFeeds()
			first = true
			continue
		case endSource, endReload:
			// Not a failure: follow the stream (it may be back) at once.
			log.Debug("ffmpeg run ended", "why", end, "err", err)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		p.m.restarts.WithLabelValues(end).Inc()
		w.mu.Lock()
		w.restarts++
		w.lastExit = fmt.Sprintf("%s at %s: %v", end, time.Now().UTC().Format(time.RFC3339), err)
		w.mu.Unlock()
		if w.healthy.Load() && time.Since(started) >= healthyRun {
			backoff = p.cfg.RestartBackoff // it worked for a while: not a crash loop
		}
		log.Warn("ffmpeg failed: restarting", "why", end, "err", err, "backoff", backoff, "run", runs)
		select {
		case <-ctx.Done():
			return
		case <-j.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.cfg.MaxRestartBackoff)
	}
}

// subscribe reads the stream, giving a reconnecting publisher a moment.
func (w *worker) subscribe(ctx context.Context) (PacketReader, error) {
	p, j := w.pool, w.job
	var err error
	for tries := 0; tries < 3; tries++ {
		var rd PacketReader
		rd, err = p.src.Subscribe(j.app, j.name)
		if err == nil {
			p.mu.Lock()
			j.again = false
			p.mu.Unlock()
			return rd, nil
		}
		p.mu.Lock()
		again := j.again
		j.again = false
		p.mu.Unlock()
		if !again && tries > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-j.stop:
			return nil, errors.New("stopped")
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, err
}

// endFeeds ends every rendition (their streams end) and starts a new
// timeline for the next ones.
func (w *worker) endFeeds() {
	for name, o := range w.feeds {
		o.close()
		delete(w.feeds, name)
	}
	w.tl.reset()
}

// syncFeeds publishes the outputs of prof that have no feed yet and ends
// the feeds prof no longer has.
func (w *worker) syncFeeds(prof *Profile) {
	want := map[string]bool{}
	for _, name := range prof.outputs() {
		want[name] = true
		if w.feeds[name] == nil {
			w.feeds[name] = newOutput(w.pool.pub, w.job.app, RenditionStream(w.job.name, name), &w.tl)
		}
	}
	for name, o := range w.feeds {
		if !want[name] {
			o.close()
			delete(w.feeds, name)
		}
	}
}

// runState is what the goroutines of one ffmpeg run share.
type runState struct {
	start       time.Time
	lastAdvance atomic.Int64 // unix ns: progress or output moved
	lastInput   atomic.Int64 // unix ns: a packet came from the source
	writing     atomic.Bool  // a write to ffmpeg's stdin is under way
	sourceEnded atomic.Bool  // the reader failed: stdin is closed
	streamEnded atomic.Bool  // … because the source stream ended
	firstKey    sync.Once
}

// sourceEnd is the end of a run whose input ended.
func (rs *runState) sourceEnd() string {
	if rs.streamEnded.Load() {
		return endEnded
	}
	return endSource
}

// healthyRun is how long a run that gave keyframes must last for the next
// restart to start again from the first backoff.
const healthyRun = 5 * time.Second

func (rs *runState) advance() { rs.lastAdvance.Store(time.Now().UnixNano()) }

// runOnce runs ffmpeg once and says why it ended.
func (w *worker) runOnce(ctx context.Context, rd PacketReader, prof *Profile, first bool, log *slog.Logger) (string, error) {
	p := w.pool
	c := BuildCommand(prof)
	log.Debug("ffmpeg start", "cmd", p.cfg.FFmpeg+" "+strings.Join(c.Args, " "))

	cmd := exec.Command(p.cfg.FFmpeg, c.Args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return endStart, err
	}
	stderr := &tailBuffer{max: 4096}
	cmd.Stderr = stderr
	// Pipes: one per output, then progress. The child gets the write ends.
	var readers []*os.File
	var writers []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range len(c.Outputs) + 1 {
		r, wr, err := os.Pipe()
		if err != nil {
			closeAll(readers)
			closeAll(writers)
			return endStart, err
		}
		readers, writers = append(readers, r), append(writers, wr)
	}
	cmd.ExtraFiles = writers
	rs := &runState{start: time.Now()}
	rs.advance()
	rs.lastInput.Store(time.Now().UnixNano())
	if err := cmd.Start(); err != nil {
		closeAll(readers)
		closeAll(writers)
		return endStart, err
	}
	closeAll(writers)
	pid := cmd.Process.Pid
	w.healthy.Store(false)
	w.mu.Lock()
	w.pid = pid
	w.prog = Progress{}
	w.cpuRun = 0
	w.mu.Unlock()
	kill := func() { syscall.Kill(-pid, syscall.SIGKILL) }
	w.tl.newRun()

	var wg sync.WaitGroup
	for i, name := range c.Outputs {
		o := w.feeds[name]
		wg.Add(1)
		go func(r *os.File) {
			defer wg.Done()
			defer r.Close()
			w.readOutput(r, o, rs, first, log)
		}(readers[i])
	}
	wg.Add(1)
	go func(r *os.File) {
		defer wg.Done()
		defer r.Close()
		ReadProgress(r, func(pr Progress) {
			w.mu.Lock()
			prev := w.prog
			w.prog = pr
			w.mu.Unlock()
			if pr.Frame > prev.Frame || pr.OutTime > prev.OutTime {
				rs.advance()
			}
		})
	}(readers[len(c.Outputs)])
	inCtx, inCancel := context.WithCancel(ctx)
	inDone := make(chan error, 1)
	go func() { inDone <- w.feedInput(inCtx, rd, stdin, rs) }()

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastSample, lastCPU := time.Now(), time.Duration(0)
	var end string
	var endErr, writeErr error
	var sourceEndAt time.Time
loop:
	for {
		select {
		case err := <-exited:
			if end == "" {
				end, endErr = endExit, exitError(err, stderr)
				if writeErr != nil && err == nil {
					endErr = fmt.Errorf("write to ffmpeg: %w", writeErr)
				}
				if rs.sourceEnded.Load() {
					end = rs.sourceEnd()
				}
			}
			break loop
		case <-ctx.Done():
			end, endErr = endStop, ctx.Err()
			kill()
		case <-w.job.stop:
			end, endErr = endStop, nil
			kill()
		case <-w.reloadCh:
			end, endErr = endReload, nil
			kill()
		case err := <-inDone:
			inDone = nil
			if rs.sourceEnded.Load() {
				// ffmpeg drains and exits; give it a moment.
				sourceEndAt = time.Now()
				log.Debug("source ended: ffmpeg finishing", "err", err)
			} else if end == "" {
				// ffmpeg stopped reading (it died, most likely): make sure,
				// and let its exit status tell why.
				writeErr = err
				kill()
			}
		case now := <-tick.C:
			if u, err := readProc(pid); err == nil {
				w.mu.Lock()
				if dt := now.Sub(lastSample); dt > 0 {
					w.cpu = float64(u.CPU-lastCPU) / float64(dt)
				}
				w.cpuRun, w.rss = u.CPU, u.RSS
				w.mu.Unlock()
				lastSample, lastCPU = now, u.CPU
			}
			if end != "" {
				continue
			}
			if !sourceEndAt.IsZero() && now.Sub(sourceEndAt) > 5*time.Second {
				end, endErr = rs.sourceEnd(), errors.New("ffmpeg did not finish within 5 s of the end of input")
				kill()
				continue
			}
			stall := p.cfg.StallTimeout
			since := now.Sub(time.Unix(0, rs.lastAdvance.Load()))
			inputRecent := now.Sub(time.Unix(0, rs.lastInput.Load())) < stall || rs.writing.Load()
			if since > stall && inputRecent {
				end, endErr = endStall, withStderr(fmt.Errorf("no progress for %v", since.Round(time.Millisecond)), stderr)
				kill()
			}
		}
	}
	inCancel()
	stdin.Close()
	if inDone != nil {
		<-inDone
	}
	wg.Wait()
	w.mu.Lock()
	w.cpuTotal += w.cpuRun
	if st := cmd.ProcessState; st != nil {
		if total := st.UserTime() + st.SystemTime(); total > w.cpuRun {
			w.cpuTotal += total - w.cpuRun
		}
	}
	w.cpuRun, w.pid, w.cpu = 0, 0, 0
	w.mu.Unlock()
	return end, endErr
}

// feedInput writes the stream to ffmpeg's stdin as FLV until the stream
// ends (sourceEnded is set and stdin closed) or a write fails.
func (w *worker) feedInput(ctx context.Context, rd PacketReader, stdin io.WriteCloser, rs *runState) error {
	bw := bufio.NewWriterSize(stdin, 64<<10)
	var fw *av.FLVWriter
	var buf []*av.Packet
	for {
		var err error
		buf, err = rd.ReadPackets(ctx, buf[:0])
		if err != nil {
			if ctx.Err() == nil {
				rs.streamEnded.Store(errors.Is(err, ErrSourceEnded))
				rs.sourceEnded.Store(true)
				stdin.Close()
			}
			return err
		}
		rs.lastInput.Store(time.Now().UnixNano())
		if fw == nil {
			var hasVideo, hasAudio bool
			start, media := time.Duration(0), false
			for _, pk := range buf {
				hasVideo = hasVideo || pk.Kind == av.KindVideo
				hasAudio = hasAudio || pk.Kind == av.KindAudio
				if !pk.Header && pk.Kind != av.KindData && (!media || pk.DTS < start) {
					start, media = pk.DTS, true
				}
			}
			if media {
				// ffmpeg's output starts near zero at this input time.
				w.tl.anchor(start)
			}
			fw = av.NewFLVWriter(bw, hasVideo || !hasAudio, hasAudio)
		}
		rs.writing.Store(true)
		for _, pk := range buf {
			if err := fw.WritePacket(pk); err != nil {
				rs.writing.Store(false)
				return err
			}
		}
		err = bw.Flush()
		rs.writing.Store(false)
		clear(buf)
		if err != nil {
			return err
		}
	}
}

// readOutput parses one rendition's FLV and publishes it.
func (w *worker) readOutput(r io.Reader, o *output, rs *runState, first bool, log *slog.Logger) {
	fr, err := av.NewFLVReader(r)
	if err != nil {
		return // ffmpeg died before writing: the supervisor tells why
	}
	for {
		pk, err := fr.ReadPacket()
		if err != nil {
			if fr.Err() != nil {
				return
			}
			log.Warn("rendition packet skipped", "rendition", o.name, "err", err)
			continue
		}
		rs.advance()
		if pk.Kind == av.KindVideo && pk.Key && !pk.Header {
			rs.firstKey.Do(func() {
				w.healthy.Store(true)
				kind := "restart"
				if first {
					kind = "start"
				}
				w.pool.m.firstKey.WithLabelValues(kind).Observe(time.Since(rs.start).Seconds())
			})
		}
		o.write(pk)
	}
}

// timeline puts the renditions on their source's timeline. Each ffmpeg
// run starts again near zero. The first run of a source session is
// anchored to the source: ffmpeg's zero is the first input timestamp, so a
// rendition's timestamps are the source's (players switching between them
// in an ABR playlist stay in step). A later run (ffmpeg restarted while the
// source went on) continues instead: the first packet of the run (of any
// output) sets one offset for all outputs, the last timestamp written plus
// the wall time since, so readers see time go on and the renditions stay
// aligned with each other.
type timeline struct {
	mu       sync.Mutex
	off      time.Duration
	last     time.Duration // latest DTS written, all outputs
	lastWall time.Time
	have     bool          // last is valid
	inRun    bool          // the offset of this run is set
	start    time.Duration // the source's first input timestamp (anchor)
}

func (tl *timeline) newRun() {
	tl.mu.Lock()
	tl.inRun = false
	tl.mu.Unlock()
}

// reset starts a new timeline (a new source session).
func (tl *timeline) reset() {
	tl.mu.Lock()
	tl.off, tl.last, tl.lastWall, tl.have, tl.inRun, tl.start = 0, 0, time.Time{}, false, false, 0
	tl.mu.Unlock()
}

// anchor records the first input timestamp of a run; only the first run
// of a timeline uses it.
func (tl *timeline) anchor(start time.Duration) {
	tl.mu.Lock()
	if !tl.have && !tl.inRun {
		tl.start = start
	}
	tl.mu.Unlock()
}

// rebase moves pk onto the readers' timeline.
func (tl *timeline) rebase(pk *av.Packet) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if !tl.inRun {
		tl.inRun = true
		if tl.have {
			gap := max(time.Since(tl.lastWall), 20*time.Millisecond)
			tl.off = tl.last + gap - pk.DTS
		} else {
			tl.off = tl.start
		}
	}
	pk.DTS += tl.off
	if !pk.Header && pk.Kind != av.KindData && pk.DTS > tl.last {
		tl.last, tl.have = pk.DTS, true
	}
	tl.lastWall = time.Now()
}

// output is one rendition's feed, held across ffmpeg runs.
type output struct {
	pub       Publisher
	app, name string
	tl        *timeline

	mu      sync.Mutex
	feed    FeedWriter
	retryAt time.Time
}

func newOutput(pub Publisher, app, name string, tl *timeline) *output {
	o := &output{pub: pub, app: app, name: name, tl: tl}
	o.ensureFeed()
	return o
}

func (o *output) ensureFeed() bool {
	if o.feed != nil {
		select {
		case <-o.feed.Done():
			o.feed.Close()
			o.feed = nil
		default:
			return true
		}
	}
	if time.Now().Before(o.retryAt) {
		return false
	}
	f, err := o.pub.Publish(o.app, o.name, av.Source{Protocol: "transcode", Remote: "ffmpeg"})
	if err != nil {
		o.retryAt = time.Now().Add(time.Second)
		return false
	}
	o.feed = f
	return true
}

func (o *output) write(pk *av.Packet) {
	o.tl.rebase(pk)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ensureFeed() {
		o.feed.WritePacket(pk)
	}
}

// close ends the rendition: its stream ends at once.
func (o *output) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.feed != nil {
		o.feed.Unpublish()
		o.feed.Close()
		o.feed = nil
	}
}

// tailBuffer keeps the last max bytes written (ffmpeg's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

func exitError(err error, stderr *tailBuffer) error {
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return withStderr(err, stderr)
}

// withStderr adds the end of ffmpeg's stderr to err, when there is any.
func withStderr(err error, stderr *tailBuffer) error {
	if s := stderr.String(); s != "" {
		return fmt.Errorf("%w: %s", err, s)
	}
	return err
}
