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

	"github.com/yutopp/go-rtmp/handshake"

	"github.com/livefuse/livefuse/av"
)

// Fakes and helpers of the RTMP tests.

type rtmpFakeSink struct {
	mu      sync.Mutex
	writers []*rtmpFakeWriter
	busy    map[string]bool // app/name/feed with a live writer
	publish int             // Publish calls
}

func newRTMPFakeSink() *rtmpFakeSink { return &rtmpFakeSink{busy: map[string]bool{}} }

func (s *rtmpFakeSink) Publish(app, name, feed string, src av.Source) (FeedWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publish++
	key := app + "/" + name + "/" + feed
	if s.busy[key] {
		return nil, ErrBusy
	}
	s.busy[key] = true
	w := &rtmpFakeWriter{sink: s, key: key, stream: app + "/" + name, feed: feed, src: src, done: make(chan struct{})}
	s.writers = append(s.writers, w)
	return w, nil
}

func (s *rtmpFakeSink) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publish
}

func (s *rtmpFakeSink) all() []*rtmpFakeWriter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rtmpFakeWriter(nil), s.writers...)
}

// waitWriter waits for the n-th (1-based) writer.
func (s *rtmpFakeSink) waitWriter(t *testing.T, n int) *rtmpFakeWriter {
	t.Helper()
	rtmpWaitFor(t, 10*time.Second, fmt.Sprintf("publish #%d", n), func() bool { return len(s.all()) >= n })
	return s.all()[n-1]
}

type rtmpFakeWriter struct {
	sink   *rtmpFakeSink
	key    string
	stream string
	feed   string
	src    av.Source

	mu          sync.Mutex
	pkts        []*av.Packet
	closed      bool
	unpublished bool
	done        chan struct{}
	kickOnce    sync.Once
}

func (w *rtmpFakeWriter) WritePacket(p *av.Packet) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		panic("WritePacket after Close")
	}
	w.pkts = append(w.pkts, p)
}

func (w *rtmpFakeWriter) Done() <-chan struct{} { return w.done }

func (w *rtmpFakeWriter) Unpublish() {
	w.mu.Lock()
	w.unpublished = true
	w.mu.Unlock()
}

func (w *rtmpFakeWriter) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		panic("FeedWriter closed twice")
	}
	w.closed = true
	w.mu.Unlock()
	if w.sink != nil {
		w.sink.mu.Lock()
		delete(w.sink.busy, w.key)
		w.sink.mu.Unlock()
	}
}

func (w *rtmpFakeWriter) kick() { w.kickOnce.Do(func() { close(w.done) }) }

func (w *rtmpFakeWriter) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

func (w *rtmpFakeWriter) packets() []*av.Packet {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*av.Packet(nil), w.pkts...)
}

func (w *rtmpFakeWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pkts)
}

type rtmpFakeAuth struct {
	token   string
	playKey string // when set, play needs ?auth_key=playKey

	mu        sync.Mutex
	playCalls []string // "uri?query" of AuthorizePlay calls
}

func (a *rtmpFakeAuth) AuthorizePublish(app, name, token string) error {
	if token != a.token {
		return ErrUnauthorized
	}
	return nil
}

func (a *rtmpFakeAuth) AuthorizePlay(app, name, uri string, q url.Values) error {
	a.mu.Lock()
	a.playCalls = append(a.playCalls, uri+"?"+q.Encode())
	a.mu.Unlock()
	if a.playKey != "" && q.Get("auth_key") != a.playKey {
		return ErrUnauthorized
	}
	return nil
}

// rtmpFakePlay serves every stream in streams with a reader that returns
// all packets at once, then waits (or fails with endErr when set).
type rtmpFakePlay struct {
	streams map[string][]*av.Packet
	endErr  error

	mu      sync.Mutex
	readers []*rtmpFakeReader
}

func (p *rtmpFakePlay) Subscribe(app, name string) (PacketReader, error) {
	pkts, ok := p.streams[app+"/"+name]
	if !ok {
		return nil, ErrNotFound
	}
	r := &rtmpFakeReader{pkts: pkts, endErr: p.endErr, closed: make(chan struct{})}
	p.mu.Lock()
	p.readers = append(p.readers, r)
	p.mu.Unlock()
	return r, nil
}

func (p *rtmpFakePlay) all() []*rtmpFakeReader {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*rtmpFakeReader(nil), p.readers...)
}

type rtmpFakeReader struct {
	pkts   []*av.Packet
	endErr error

	mu     sync.Mutex
	sent   bool
	closed chan struct{}
	once   sync.Once
}

func (r *rtmpFakeReader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	r.mu.Lock()
	sent := r.sent
	r.sent = true
	r.mu.Unlock()
	if !sent {
		return append(dst, r.pkts...), nil
	}
	if r.endErr != nil {
		return dst, r.endErr
	}
	select {
	case <-ctx.Done():
		return dst, ctx.Err()
	case <-r.closed:
		return dst, errors.New("reader closed")
	}
}

func (r *rtmpFakeReader) Close() { r.once.Do(func() { close(r.closed) }) }

func (r *rtmpFakeReader) isClosed() bool {
	select {
	case <-r.closed:
		return true
	default:
		return false
	}
}

// rtmpLogs collects the server's log lines (and passes them to t.Log).
type rtmpLogs struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *rtmpLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (l *rtmpLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *rtmpLogs) waitFor(t *testing.T, s string) {
	t.Helper()
	rtmpWaitFor(t, 10*time.Second, "log "+strconv.Quote(s), func() bool { return strings.Contains(l.String(), s) })
}

func newRTMPLogs(t *testing.T) (*rtmpLogs, *slog.Logger) {
	l := &rtmpLogs{t: t}
	return l, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rtmpTestServer starts a server on 127.0.0.1:0; tweak may change it
// before Start. Close runs at cleanup.
func rtmpTestServer(t *testing.T, cfg RTMPConfig, deps Deps, tweak func(*RTMPServer)) (*RTMPServer, *rtmpLogs) {
	t.Helper()
	logs, log := newRTMPLogs(t)
	cfg.Addr = "127.0.0.1:0"
	s := NewRTMPServer(cfg, deps, log)
	if tweak != nil {
		tweak(s)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { s.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("RTMPServer.Close did not return")
		}
	})
	return s, logs
}

func rtmpURL(s *RTMPServer, path string) string {
	return "rtmp://" + s.Addr().String() + path
}

func rtmpWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rtmpNeedFFmpeg(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not in PATH", bin)
		}
	}
}

// rtmpRun runs a command to completion (killed after timeout) and returns
// its combined output.
func rtmpRun(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// rtmpProc is a background command.
type rtmpProc struct {
	cmd  *exec.Cmd
	out  *rtmpLockedBuffer
	done chan struct{}
	err  error
}

type rtmpLockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *rtmpLockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *rtmpLockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// rtmpStart starts a command; cleanup kills it if still running.
func rtmpStart(t *testing.T, name string, args ...string) *rtmpProc {
	t.Helper()
	p := &rtmpProc{cmd: exec.Command(name, args...), out: &rtmpLockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the command to exit.
func (p *rtmpProc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v; output:\n%s", p.cmd.Path, timeout, p.out.String())
		return nil
	}
}

func (p *rtmpProc) stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rtmpClip makes an FLV clip of secs seconds: H.264 with B-frames (25 fps,
// GOP 50) and AAC, as encoders send it.
func rtmpClip(t *testing.T, secs int) string {
	t.Helper()
	rtmpNeedFFmpeg(t)
	path := filepath.Join(t.TempDir(), "clip.flv")
	out, err := rtmpRun(t, 60*time.Second, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", strconv.Itoa(secs),
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "50", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", path)
	if err != nil {
		t.Fatalf("make clip: %v\n%s", err, out)
	}
	return path
}

// rtmpProbeVideoPackets counts the video packets of a file with ffprobe.
func rtmpProbeVideoPackets(t *testing.T, path string) int {
	t.Helper()
	out, err := rtmpRun(t, 30*time.Second, "ffprobe", "-v", "error", "-select_streams", "v",
		"-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path)
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("ffprobe count %q: %v", out, err)
	}
	return n
}

// rtmpReadClip returns the packets of an FLV file.
func rtmpReadClip(t *testing.T, path string) []*av.Packet {
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

func rtmpOfKind(pkts []*av.Packet, k av.Kind, headers bool) []*av.Packet {
	var out []*av.Packet
	for _, p := range pkts {
		if p.Kind == k && p.Header == headers {
			out = append(out, p)
		}
	}
	return out
}

// rtmpDialHandshake connects to addr and completes a client handshake.
func rtmpDialHandshake(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := handshake.HandshakeWithServer(nc, nc, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return nc
}

// rtmpWaitClosed reads (and drops) what the server sends until it closes
// the connection; it fails if that takes longer than timeout.
func rtmpWaitClosed(t *testing.T, nc net.Conn, timeout time.Duration) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, nc)
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		t.Fatalf("server kept the connection open for %v", timeout)
	}
}
