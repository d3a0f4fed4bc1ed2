package transcode

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Benchmarks of the pool's own cost and of its latencies. They assert
// nothing about time; run them with
//
//	go test -run '^$' -bench . -benchtime 5x ./transcode/
//
// and read the custom metrics: the CPU ratio of a pool worker to the same
// ffmpeg command run by hand on the same input, and start-up and restart
// latencies (p50/p95).

// benchProfile is the ladder the benchmarks run.
func benchProfile() Profile {
	p := Profile{Name: "bench", Renditions: []Rendition{
		{Name: "360p", Width: 640, Height: 360, VideoKbps: 600, Preset: "ultrafast"},
		{Name: "180p", Width: 320, Height: 180, VideoKbps: 200, Preset: "ultrafast"},
	}}
	if err := p.Validate(); err != nil {
		panic(err)
	}
	return p
}

// fileSource serves one clip once, as fast as the reader takes it; after
// it was read to the end the stream is no longer live.
type fileSource struct {
	mu    sync.Mutex
	pkts  []*av.Packet
	ended bool
}

func (s *fileSource) Subscribe(app, name string) (PacketReader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, errNotLive
	}
	return &fileReader{src: s, pkts: s.pkts}, nil
}

type fileReader struct {
	src  *fileSource
	pkts []*av.Packet
}

func (r *fileReader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	if len(r.pkts) == 0 {
		r.src.mu.Lock()
		r.src.ended = true
		r.src.mu.Unlock()
		return dst, errors.New("end of clip")
	}
	n := min(64, len(r.pkts))
	dst = append(dst, r.pkts[:n]...)
	r.pkts = r.pkts[n:]
	return dst, ctx.Err()
}

func (r *fileReader) Close() {}

// nullPublisher takes renditions and drops their packets.
type nullPublisher struct{}

func (nullPublisher) Publish(string, string, av.Source) (FeedWriter, error) { return nullFeed{}, nil }

type nullFeed struct{}

func (nullFeed) WritePacket(*av.Packet) {}
func (nullFeed) Done() <-chan struct{}  { return nil }
func (nullFeed) Unpublish()             {}
func (nullFeed) Close()                 {}

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// handArgs turns the pool's command into the one an operator would run on
// the file: the clip instead of stdin, files instead of pipes.
func handArgs(c Command, clip, dir string) []string {
	args := slices.Clone(c.Args)
	for i, a := range args {
		switch {
		case a == "pipe:0":
			args[i] = clip
		case a == "pipe:"+itoa(c.ProgressFD):
			args[i] = filepath.Join(dir, "progress.txt")
		case strings.HasPrefix(a, "pipe:"):
			args[i] = filepath.Join(dir, "out"+a[5:]+".flv")
		}
	}
	return append([]string{"-y"}, args...)
}

// BenchmarkWorkerCPU compares the CPU of one pool worker (ffmpeg fed by
// the pool, outputs parsed back into packets) with the same ffmpeg
// command run by hand on the clip file. Both run unpaced, as fast as
// ffmpeg goes.
func BenchmarkWorkerCPU(b *testing.B) {
	needFFmpeg(b)
	clip := clipPath(b, "1280x720", 25, 10)
	pkts := readClip(b, clip)
	prof := benchProfile()
	dir := b.TempDir()
	var ratios, overheads []float64
	var hands, pools []time.Duration
	for i := 0; i < b.N; i++ {
		// By hand.
		c0 := rusage(syscall.RUSAGE_CHILDREN)
		cmd := exec.Command("ffmpeg", handArgs(BuildCommand(&prof), clip, dir)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("ffmpeg by hand: %v: %s", err, out)
		}
		hand := rusage(syscall.RUSAGE_CHILDREN) - c0

		// Through the pool.
		src := &fileSource{pkts: pkts}
		p, err := NewPool(Config{Workers: 1, Profiles: []Profile{prof}}, src, nullPublisher{}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		c0, s0 := rusage(syscall.RUSAGE_CHILDREN), rusage(syscall.RUSAGE_SELF)
		if err := p.Start("live", "bench", "bench"); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, ok := p.Status("live", "bench"); !ok {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("pool worker did not finish the clip in 2 min")
			}
			time.Sleep(10 * time.Millisecond)
		}
		pool := rusage(syscall.RUSAGE_CHILDREN) - c0
		self := rusage(syscall.RUSAGE_SELF) - s0
		p.Close()
		hands, pools = append(hands, hand), append(pools, pool)
		ratios = append(ratios, float64(pool)/float64(hand))
		overheads = append(overheads, float64(pool+self)/float64(hand))
	}
	b.ReportMetric(median(ratios), "ffmpeg-cpu-ratio")
	b.ReportMetric(median(overheads), "total-cpu-ratio")
	b.ReportMetric(medianDur(hands).Seconds(), "hand-cpu-s")
	b.ReportMetric(medianDur(pools).Seconds(), "pool-ffmpeg-cpu-s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkStartupFirstKeyframe measures Start to the first keyframe of a
// rendition at its reader, on a live (real-time) source.
func BenchmarkStartupFirstKeyframe(b *testing.B) {
	needFFmpeg(b)
	h := newTestHub()
	prof := benchProfile()
	p, _ := newTestPool(b, Config{Workers: 1, Profiles: []Profile{prof}}, h)
	publishLoop(b, h, "live", "st", readClip(b, clipPath(b, "640x360", 25, 4)))
	time.Sleep(1500 * time.Millisecond) // a GOP in the cache, as for a stream already on air
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := p.Start("live", "st", "bench"); err != nil {
			b.Fatal(err)
		}
		c := collect(b, h, "live/st_180p", 10*time.Second)
		deadline := time.Now().Add(10 * time.Second)
		for c.firstKeyAt().IsZero() {
			if time.Now().After(deadline) {
				b.Fatal("no keyframe within 10 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		ds = append(ds, c.firstKeyAt().Sub(start))
		c.stop()
		p.Stop("live", "st")
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, ok := p.Status("live", "st"); !ok && !h.live("live/st_180p") {
				break
			}
		}
	}
	b.ReportMetric(float64(percentile(ds, 50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(percentile(ds, 95).Milliseconds()), "p95-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRestartFirstFrame measures SIGKILL of ffmpeg to the first frame
// of the new ffmpeg at a rendition reader that stays connected.
func BenchmarkRestartFirstFrame(b *testing.B) {
	needFFmpeg(b)
	h := newTestHub()
	prof := benchProfile()
	p, _ := newTestPool(b, Config{Workers: 1, RestartBackoff: 100 * time.Millisecond, Profiles: []Profile{prof}}, h)
	publishLoop(b, h, "live", "rs", readClip(b, clipPath(b, "640x360", 25, 4)))
	if err := p.Start("live", "rs", "bench"); err != nil {
		b.Fatal(err)
	}
	c := collect(b, h, "live/rs_180p", 10*time.Second)
	c.waitFrames(b, 25, 10*time.Second)
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		// A run that gave keyframes for healthyRun restarts after the first
		// backoff: every kill then measures the same path.
		time.Sleep(healthyRun + 300*time.Millisecond)
		st, _ := p.Status("live", "rs")
		killed := time.Now()
		killPID(b, st.PID, syscall.SIGKILL)
		// Frames after the new ffmpeg started come from it: the old run's
		// outputs are drained before the restart.
		var started time.Time
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			if s, _ := p.Status("live", "rs"); s.PID != 0 && s.PID != st.PID {
				started = time.Now()
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("ffmpeg not restarted within 10 s")
			}
		}
		at, ok := c.firstFrameAfter(started.Add(-5*time.Millisecond), 10*time.Second)
		if !ok {
			b.Fatal("no frame after the restart")
		}
		ds = append(ds, at.Sub(killed))
	}
	if err := c.readErr(); err != nil {
		b.Fatalf("reader dropped: %v", err)
	}
	b.ReportMetric(float64(percentile(ds, 50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(percentile(ds, 95).Milliseconds()), "p95-ms")
	b.ReportMetric(0, "ns/op")
}

func (c *collector) firstKeyAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.pkts {
		if p.Kind == av.KindVideo && !p.Header {
			if p.Key {
				return c.arrivals[n]
			}
			n++
		}
	}
	return time.Time{}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianDur(v []time.Duration) time.Duration { return percentile(v, 50) }

func percentile(v []time.Duration, pc int) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*pc + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}
