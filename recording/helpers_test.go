package recording

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/livefuse/livefuse/av"
)

// testLog logs through t at debug level (only shown for failing tests).
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// need skips (or, in CI, fails) when a tool is missing.
func need(t testing.TB, tool string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	if tool == "minio" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
				gopath = strings.TrimSpace(string(out))
			}
		}
		for _, dir := range filepath.SplitList(gopath) {
			p := filepath.Join(dir, "bin", "minio")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	msg := fmt.Sprintf("%s not found on PATH (nor in $(go env GOPATH)/bin): `make test` installs it", tool)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// minioServer is a real MinIO server on a loopback port picked at run time.
type minioServer struct {
	t        testing.TB
	bin, dir string
	addr     string // 127.0.0.1:port
	console  string
	certs    string // with TLS: the certs dir (public.crt, private.key)
	cmd      *exec.Cmd
	exited   chan struct{}
	log      bytes.Buffer
	mu       sync.Mutex
}

const (
	minioUser = "livefuse-test"
	minioPass = "livefuse-test-secret"
)

func startMinio(t testing.TB) *minioServer {
	t.Helper()
	m := &minioServer{t: t, bin: need(t, "minio"), dir: t.TempDir()}
	m.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.console = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.start()
	t.Cleanup(m.stop)
	return m
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (m *minioServer) start() {
	t := m.t
	t.Helper()
	args := []string{"server", m.dir, "--address", m.addr, "--console-address", m.console, "--quiet"}
	scheme, client := "http", http.DefaultClient
	if m.certs != "" {
		args = append(args, "--certs-dir", m.certs)
		scheme = "https"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	cmd := exec.Command(m.bin, args...)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPass,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	cmd.Stdout = &lockedBuf{mu: &m.mu, b: &m.log}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start minio: %v", err)
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { c.Wait(); close(ch) }(cmd, m.exited)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			t.Fatalf("minio exited at start:\n%s", m.logs())
		default:
		}
		resp, err := client.Get(scheme + "://" + m.addr + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("minio not ready in 30 s:\n%s", m.logs())
}

// stop ends the server (SIGTERM, then SIGKILL after 10 s); start can run again.
func (m *minioServer) stop() {
	if m.cmd == nil {
		return
	}
	select {
	case <-m.exited:
	default:
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.exited
		}
	}
	m.cmd = nil
}

func (m *minioServer) logs() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// s3Config returns a sink config for bucket on m.
func (m *minioServer) s3Config(bucket string) S3Config {
	c := DefaultConfig().S3
	c.Endpoint, c.Bucket, c.AccessKey, c.SecretKey, c.Region = m.addr, bucket, minioUser, minioPass, "us-east-1"
	return c
}

var minioBucketOpts = minio.MakeBucketOptions{Region: "us-east-1"}

// makeBucket creates bucket with a sink's client.
func (m *minioServer) makeBucket(t testing.TB, bucket string) *S3Sink {
	t.Helper()
	s, err := NewS3Sink(m.s3Config(bucket))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// "Server not initialized yet" can follow a ready health check.
	for {
		err := s.mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("make bucket: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

// clip is a test clip as packets: H.264 (2 s GOP, B-frames) + AAC.
type clip struct {
	headers []*av.Packet
	media   []*av.Packet
	dur     time.Duration // DTS span of media plus one frame
}

var clipCache struct {
	sync.Mutex
	m map[string]*clip
}

// makeClip encodes a clip with ffmpeg and parses its FLV into packets.
func makeClip(t testing.TB, seconds int, size string) *clip {
	t.Helper()
	need(t, "ffmpeg")
	key := fmt.Sprint(seconds, size)
	clipCache.Lock()
	defer clipCache.Unlock()
	if c := clipCache.m[key]; c != nil {
		return c
	}
	out := filepath.Join(t.TempDir(), "clip.flv")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "2",
		"-c:a", "aac", "-b:a", "64k", "-ac", "2", "-f", "flv", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg clip: %v: %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := av.NewFLVReader(f)
	if err != nil {
		t.Fatal(err)
	}
	c := &clip{dur: time.Duration(seconds) * time.Second}
	for i := 0; i < 1e6; i++ {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case p.Kind == av.KindData:
		case p.Header:
			c.headers = append(c.headers, p)
		case p.DTS < c.dur: // loops join seamlessly
			c.media = append(c.media, p)
		}
	}
	if clipCache.m == nil {
		clipCache.m = map[string]*clip{}
	}
	clipCache.m[key] = c
	return c
}

// testStream plays a clip (looped to a duration) as a live stream: readers
// get the headers, then packets paced at speed × real time.
type testStream struct {
	mu      sync.Mutex
	live    bool
	readers map[*testReader]bool
	headers []*av.Packet
	gop     []*av.Packet // since the last keyframe, as the origin caches it
	drops   atomic.Int64 // packets a reader's full queue lost
}

type testReader struct {
	s      *testStream
	ch     chan *av.Packet
	closed chan struct{}
	once   sync.Once
}

func (s *testStream) Subscribe(app, name string) (PacketReader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.live {
		return nil, errors.New("not live")
	}
	r := &testReader{s: s, ch: make(chan *av.Packet, 4096), closed: make(chan struct{})}
	for _, h := range s.headers {
		r.ch <- h
	}
	for _, p := range s.gop {
		r.ch <- p
	}
	if s.readers == nil {
		s.readers = map[*testReader]bool{}
	}
	s.readers[r] = true
	return r, nil
}

func (r *testReader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	select {
	case p, ok := <-r.ch:
		if !ok {
			return dst, errors.New("stream ended")
		}
		dst = append(dst, p)
	case <-ctx.Done():
		return dst, ctx.Err()
	case <-r.closed:
		return dst, errors.New("reader closed")
	}
	for len(dst) < cap(dst) {
		select {
		case p, ok := <-r.ch:
			if !ok {
				return dst, nil
			}
			dst = append(dst, p)
		default:
			return dst, nil
		}
	}
	return dst, nil
}

func (r *testReader) Close() {
	r.once.Do(func() { close(r.closed) })
	r.s.mu.Lock()
	delete(r.s.readers, r)
	r.s.mu.Unlock()
}

// publish plays c looped for dur of media at speed, then ends the stream.
// It returns the media duration played.
func (s *testStream) publish(ctx context.Context, c *clip, dur time.Duration, speed float64) time.Duration {
	s.mu.Lock()
	s.live, s.headers = true, c.headers
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.live, s.gop = false, nil
		for r := range s.readers {
			close(r.ch)
			delete(s.readers, r)
		}
		s.mu.Unlock()
	}()
	start := time.Now()
	var played time.Duration
	for loop := time.Duration(0); ; loop++ {
		off := loop * c.dur
		for _, p := range c.media {
			q := *p
			q.DTS += off
			if q.DTS >= dur {
				return played
			}
			if wait := time.Duration(float64(q.DTS)/speed) - time.Since(start); wait > 0 {
				select {
				case <-ctx.Done():
					return played
				case <-time.After(wait):
				}
			}
			s.mu.Lock()
			if q.Kind == av.KindVideo && q.Key {
				s.gop = s.gop[:0]
			}
			if len(s.gop) < 2000 {
				s.gop = append(s.gop, &q)
			}
			for r := range s.readers {
				select {
				case r.ch <- &q:
				default: // a slow reader loses packets, as with the origin
					s.drops.Add(1)
				}
			}
			s.mu.Unlock()
			played = q.DTS + 40*time.Millisecond
		}
	}
}

// events collects recorder events.
type events struct {
	mu sync.Mutex
	l  []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.l = append(e.l, ev)
	e.mu.Unlock()
}

func (e *events) of(typ string) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.l {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor polls cond every 50 ms until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, within)
}

// run runs a command with a timeout and returns stdout and stderr.
func run(t testing.TB, timeout time.Duration, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}
