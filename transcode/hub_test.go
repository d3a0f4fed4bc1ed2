package transcode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// testHub is a small stand-in for the origin Hub: streams with one writer
// and many readers, each reader starting with the headers and the cached
// GOP. It implements Source and Publisher.
type testHub struct {
	mu      sync.Mutex
	streams map[string]*testStream
}

func newTestHub() *testHub { return &testHub{streams: map[string]*testStream{}} }

var (
	errNotLive = errors.New("not live")
	errEnded   = fmt.Errorf("test stream ended: %w", ErrSourceEnded)
)

type testStream struct {
	hub     *testHub
	key     string
	mu      sync.Mutex
	headers map[av.Kind]*av.Packet
	gop     []*av.Packet
	readers map[*testReader]bool
	ended   bool
	clean   bool // Unpublish was called
	done    chan struct{}
}

func (h *testHub) Publish(app, name string, _ av.Source) (FeedWriter, error) {
	key := app + "/" + name
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[key] != nil {
		return nil, fmt.Errorf("%s: busy", key)
	}
	s := &testStream{hub: h, key: key, headers: map[av.Kind]*av.Packet{}, readers: map[*testReader]bool{}, done: make(chan struct{})}
	h.streams[key] = s
	return s, nil
}

func (h *testHub) Subscribe(app, name string) (PacketReader, error) {
	h.mu.Lock()
	s := h.streams[app+"/"+name]
	h.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%s/%s: %w", app, name, errNotLive)
	}
	return s.subscribe(), nil
}

func (h *testHub) live(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[key] != nil
}

func (s *testStream) subscribe() *testReader {
	r := &testReader{s: s, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		r.err = errEnded
		return r
	}
	for _, k := range []av.Kind{av.KindData, av.KindVideo, av.KindAudio} {
		if p := s.headers[k]; p != nil {
			r.q = append(r.q, p)
		}
	}
	r.q = append(r.q, s.gop...)
	s.readers[r] = true
	return r
}

func (s *testStream) WritePacket(p *av.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	switch {
	case p.Header || p.Kind == av.KindData:
		s.headers[p.Kind] = p
	case p.Kind == av.KindVideo && p.Key:
		s.gop = append(s.gop[:0:0], p)
	case len(s.gop) > 0:
		s.gop = append(s.gop, p)
	}
	for r := range s.readers {
		r.push(p)
	}
}

func (s *testStream) Done() <-chan struct{} { return s.done }

func (s *testStream) Unpublish() {
	s.mu.Lock()
	s.clean = true
	s.mu.Unlock()
}

func (s *testStream) unpublished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clean
}

// stream returns the live stream key, nil when it is not live.
func (h *testHub) stream(key string) *testStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[key]
}

// Close ends the stream: readers get what they have, then errEnded.
func (s *testStream) Close() {
	s.hub.mu.Lock()
	if s.hub.streams[s.key] == s {
		delete(s.hub.streams, s.key)
	}
	s.hub.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	for r := range s.readers {
		r.end(errEnded)
	}
}

type testReader struct {
	s    *testStream
	mu   sync.Mutex
	q    []*av.Packet
	err  error
	wake chan struct{}
}

const testReaderQueue = 2000

func (r *testReader) push(p *av.Packet) {
	r.mu.Lock()
	if len(r.q) >= testReaderQueue {
		r.err = errors.New("reader dropped: too far behind")
		r.mu.Unlock()
		r.signal()
		return
	}
	r.q = append(r.q, p)
	r.mu.Unlock()
	r.signal()
}

func (r *testReader) end(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.signal()
}

func (r *testReader) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *testReader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	for {
		r.mu.Lock()
		if len(r.q) > 0 {
			dst = append(dst, r.q...)
			r.q = r.q[:0]
			r.mu.Unlock()
			return dst, nil
		}
		err := r.err
		r.mu.Unlock()
		if err != nil {
			return dst, err
		}
		select {
		case <-ctx.Done():
			return dst, ctx.Err()
		case <-r.wake:
		}
	}
}

func (r *testReader) Close() {
	r.s.mu.Lock()
	delete(r.s.readers, r)
	r.s.mu.Unlock()
	r.end(errors.New("closed"))
}

// media is the test media, made by ffmpeg once per test binary run.
type media struct {
	once sync.Once
	dir  string
	err  error
}

var testMedia media

// clipPath returns an FLV clip (H.264 with a 1 s GOP + AAC) of the given
// size, made once.
func clipPath(t testing.TB, size string, fps, seconds int) string {
	t.Helper()
	testMedia.once.Do(func() { testMedia.dir, testMedia.err = os.MkdirTemp("", "transcode-test-") })
	if testMedia.err != nil {
		t.Fatal(testMedia.err)
	}
	out := filepath.Join(testMedia.dir, fmt.Sprintf("clip-%s-%d-%d.flv", size, fps, seconds))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	ffmpegRun(t, "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=%d", size, fps),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", fmt.Sprint(fps), "-bf", "0",
		"-c:a", "aac", "-b:a", "64k", "-ac", "2", "-f", "flv", out+".tmp")
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testMedia.dir != "" {
		os.RemoveAll(testMedia.dir)
	}
	os.Exit(code)
}

func ffmpegRun(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", append([]string{"-hide_banner", "-nostdin", "-loglevel", "error", "-y"}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v: %s", args, err, b)
	}
}

func needFFmpeg(t testing.TB) {
	t.Helper()
	for _, b := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not on PATH: run `make deps` (make test installs it)", b)
		}
	}
}

func readClip(t testing.TB, path string) []*av.Packet {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := av.NewFLVReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var pkts []*av.Packet
	for {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			return pkts
		}
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, p)
	}
}

// publishLoop publishes the clip as app/name in real time, looping it with
// timestamps that go on, until the returned stop is called (which ends the
// stream). The packets are handed out by Publish like an encoder would.
func publishLoop(t testing.TB, h *testHub, app, name string, pkts []*av.Packet) (stop func()) {
	t.Helper()
	return publishLoopFrom(t, h, app, name, pkts, 0)
}

// publishLoopFrom is publishLoop with the encoder's clock starting at base.
func publishLoopFrom(t testing.TB, h *testHub, app, name string, pkts []*av.Packet, base0 time.Duration) (stop func()) {
	t.Helper()
	feed, err := h.Publish(app, name, av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// The loop period follows the video (one frame after the last), so the
	// frame cadence runs on across loops.
	var clipLen, prev, frame time.Duration
	for _, p := range pkts {
		if p.Kind == av.KindVideo && !p.Header {
			if p.DTS > prev {
				frame = p.DTS - prev
			}
			prev = p.DTS
			clipLen = p.DTS + frame
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for loop := 0; ; loop++ {
			base := base0 + time.Duration(loop)*clipLen
			for _, p := range pkts {
				if loop > 0 && (p.Header || p.Kind == av.KindData) {
					continue
				}
				at := base + p.DTS
				if d := time.Until(start.Add(at - base0)); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				q := *p
				q.DTS = at
				feed.WritePacket(&q)
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			feed.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// collector reads a stream into memory and records when video frames come.
type collector struct {
	mu       sync.Mutex
	pkts     []*av.Packet
	arrivals []time.Time
	keys     int
	err      error
	cancel   context.CancelFunc
	done     chan struct{}
}

func collect(t testing.TB, h *testHub, key string, within time.Duration) *collector {
	t.Helper()
	deadline := time.Now().Add(within)
	var rd PacketReader
	for {
		var err error
		app, name, _ := cut(key)
		if rd, err = h.Subscribe(app, name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not live within %v", key, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer rd.Close()
		var buf []*av.Packet
		for {
			var err error
			buf, err = rd.ReadPackets(ctx, buf[:0])
			c.mu.Lock()
			for _, p := range buf {
				c.pkts = append(c.pkts, p)
				if p.Kind == av.KindVideo && !p.Header {
					c.arrivals = append(c.arrivals, time.Now())
					if p.Key {
						c.keys++
					}
				}
			}
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func cut(key string) (string, string, bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

func (c *collector) stop() {
	c.cancel()
	<-c.done
}

func (c *collector) frames() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.arrivals)
}

func (c *collector) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// waitFrames waits until n video frames arrived in total.
func (c *collector) waitFrames(t testing.TB, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c.frames() >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("got %d video frames in %v, want %d (reader error %v)", c.frames(), within, n, c.readErr())
}

// firstFrameAfter waits for a video frame arriving after from.
func (c *collector) firstFrameAfter(from time.Time, within time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for i := len(c.arrivals) - 1; i >= 0 && c.arrivals[i].After(from); i-- {
			if i == 0 || !c.arrivals[i-1].After(from) {
				at := c.arrivals[i]
				c.mu.Unlock()
				return at, true
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, false
}

// writeFLV writes what was collected as an FLV file for ffprobe/ffmpeg.
func (c *collector) writeFLV(t testing.TB, path string) {
	t.Helper()
	c.mu.Lock()
	pkts := append([]*av.Packet(nil), c.pkts...)
	c.mu.Unlock()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hasAudio := false
	for _, p := range pkts {
		hasAudio = hasAudio || p.Kind == av.KindAudio
	}
	w := av.NewFLVWriter(f, true, hasAudio)
	for _, p := range pkts {
		if p.Kind == av.KindData {
			continue
		}
		if err := w.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
}

// videoKbps is the video payload rate between the first and last frame.
func (c *collector) videoKbps() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var bytes int
	var first, last time.Duration
	n := 0
	for _, p := range c.pkts {
		if p.Kind != av.KindVideo || p.Header {
			continue
		}
		if n == 0 {
			first = p.DTS
		} else {
			bytes += len(p.Data) // the first frame's bytes precede the interval
		}
		last = p.DTS
		n++
	}
	if last <= first {
		return 0
	}
	return float64(bytes) * 8 / 1000 / (last - first).Seconds()
}

// killGroup is used by tests to kill ffmpeg as a crash would.
func killPID(t testing.TB, pid int, sig syscall.Signal) {
	t.Helper()
	if pid <= 0 {
		t.Fatal("no ffmpeg pid")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
}
