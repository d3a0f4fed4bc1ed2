package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// rtspFakeSink is a Sink that records feeds and their packets.
type rtspFakeSink struct {
	mu      sync.Mutex
	writers []*rtspFakeWriter
	notify  chan struct{} // pulsed on every Publish
}

func newRTSPFakeSink() *rtspFakeSink {
	return &rtspFakeSink{notify: make(chan struct{}, 1)}
}

func (s *rtspFakeSink) Publish(app, name, feed string, src av.Source) (FeedWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.writers {
		if w.app == app && w.name == name && w.feed == feed && !w.isClosed() {
			return nil, fmt.Errorf("fake sink %s/%s %s: %w", app, name, feed, ErrBusy)
		}
	}
	w := &rtspFakeWriter{app: app, name: name, feed: feed, src: src, done: make(chan struct{}), closedCh: make(chan struct{})}
	s.writers = append(s.writers, w)
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return w, nil
}

func (s *rtspFakeSink) all() []*rtspFakeWriter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rtspFakeWriter(nil), s.writers...)
}

// waitWriter waits until the sink holds at least n writers and returns the
// n-th (1-based).
func (s *rtspFakeSink) waitWriter(t *testing.T, n int, timeout time.Duration) *rtspFakeWriter {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if ws := s.all(); len(ws) >= n {
			return ws[n-1]
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("no publish #%d within %s", n, timeout)
		}
	}
}

type rtspFakeWriter struct {
	app, name, feed string
	src             av.Source

	mu          sync.Mutex
	packets     []*av.Packet
	closed      bool
	unpublished bool
	done        chan struct{} // closed by kick()
	closedCh    chan struct{}
	kickOnce    sync.Once
}

func (w *rtspFakeWriter) WritePacket(p *av.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		panic("WritePacket after Close")
	}
	w.packets = append(w.packets, p)
}

func (w *rtspFakeWriter) Done() <-chan struct{} { return w.done }

func (w *rtspFakeWriter) Unpublish() {
	w.mu.Lock()
	w.unpublished = true
	w.mu.Unlock()
}

func (w *rtspFakeWriter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.closedCh)
	}
}

func (w *rtspFakeWriter) kick() { w.kickOnce.Do(func() { close(w.done) }) }

func (w *rtspFakeWriter) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

func (w *rtspFakeWriter) snapshot() []*av.Packet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*av.Packet(nil), w.packets...)
}

func (w *rtspFakeWriter) waitClosed(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.closedCh:
	case <-time.After(timeout):
		t.Fatalf("feed %s/%s %s not closed within %s", w.app, w.name, w.feed, timeout)
	}
}

// waitFrames waits until the writer got at least n video frames.
func (w *rtspFakeWriter) waitFrames(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if got := len(rtspFrames(w.snapshot(), av.KindVideo)); got >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("fewer than %d video frames within %s", n, timeout)
}

// rtspFakeAuth accepts one token.
type rtspFakeAuth struct{ token string }

func (a rtspFakeAuth) AuthorizePublish(app, name, token string) error {
	if token != a.token {
		return ErrUnauthorized
	}
	return nil
}

func (a rtspFakeAuth) AuthorizePlay(app, name, uri string, q url.Values) error { return nil }

// rtspFrames returns the non-header packets of kind k.
func rtspFrames(pkts []*av.Packet, k av.Kind) []*av.Packet {
	var out []*av.Packet
	for _, p := range pkts {
		if p.Kind == k && !p.Header {
			out = append(out, p)
		}
	}
	return out
}

func rtspTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(rtspTestLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type rtspTestLogWriter struct{ t *testing.T }

func (w rtspTestLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func rtspNeedFFmpeg(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not in PATH", bin)
		}
	}
}

// rtspRun runs a command to completion with a bound on its time.
func rtspRun(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// rtspClip writes a test clip (H.264 with B-frames, AAC) of secs seconds
// in container ext and returns its path. x264Params adds libx264 options.
func rtspClip(t *testing.T, ext string, secs int, x264Params string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip."+ext)
	args := []string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(secs),
		"-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "50", "-pix_fmt", "yuv420p"}
	if x264Params != "" {
		args = append(args, "-x264-params", x264Params)
	}
	args = append(args, "-c:a", "aac", "-b:a", "64k", path)
	if out, err := rtspRun(t, 60*time.Second, "ffmpeg", args...); err != nil {
		t.Fatalf("ffmpeg clip: %v\n%s", err, out)
	}
	return path
}

// rtspProbeCounts returns the number of video and audio packets ffprobe
// reads from path.
func rtspProbeCounts(t *testing.T, path string) (video, audio int) {
	t.Helper()
	out, err := rtspRun(t, 30*time.Second, "ffprobe", "-v", "error", "-count_packets",
		"-show_entries", "stream=codec_type,nb_read_packets", "-of", "csv=p=0", path)
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		typ, n, ok := strings.Cut(strings.TrimSpace(line), ",")
		if !ok {
			continue
		}
		v, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("ffprobe line %q: %v", line, err)
		}
		switch typ {
		case "video":
			video = v
		case "audio":
			audio = v
		}
	}
	return video, audio
}

// rtspReferenceFLV remuxes path to FLV with ffmpeg (-c copy) and reads the
// packets back with av.FLVReader.
func rtspReferenceFLV(t *testing.T, path string) []*av.Packet {
	t.Helper()
	flv := filepath.Join(t.TempDir(), "ref.flv")
	if out, err := rtspRun(t, 30*time.Second, "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-i", path, "-c", "copy", "-f", "flv", flv); err != nil {
		t.Fatalf("ffmpeg flv: %v\n%s", err, out)
	}
	f, err := os.Open(flv)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := av.NewFLVReader(f)
	if err != nil {
		t.Fatalf("flv reader: %v", err)
	}
	var pkts []*av.Packet
	for i := 0; i < 100000; i++ {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			return pkts
		}
		if err != nil {
			t.Fatalf("flv read: %v", err)
		}
		pkts = append(pkts, p)
	}
	t.Fatal("flv: too many packets")
	return nil
}

// rtspFreeTCPPort returns a port that was free a moment ago.
func rtspFreeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// rtspFreeUDPPair returns an even UDP port whose successor was free too.
func rtspFreeUDPPair(t *testing.T) (rtp, rtcp int) {
	t.Helper()
	for i := 0; i < 50; i++ {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		a.Close()
		if p%2 != 0 || p >= 65535 {
			continue
		}
		b, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p+1))
		if err != nil {
			continue
		}
		b.Close()
		return p, p + 1
	}
	t.Fatal("no free UDP port pair")
	return 0, 0
}

// rtspStartServer starts an RTSPServer on 127.0.0.1 with a fake sink.
func rtspStartServer(t *testing.T, cfg RTSPConfig, sink Sink) *RTSPServer {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s := NewRTSPServer(cfg, Deps{Sink: sink, Auth: rtspFakeAuth{token: "secret"}}, rtspTestLogger(t))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
