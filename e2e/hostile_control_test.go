package e2e

// Hostile conditions for the control plane, against the real binary: a
// damaged data dir, a signal during start-up, a storm of writes to one
// record, a damaged recording manifest, encryption without a play key and
// play URLs signed for the far future.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

// ctlStartTimeout is lms.etcd.start_timeout in these tests: the bound within
// which a start on a damaged or held store must end.
const ctlStartTimeout = 10 * time.Second

// ctlStoreDir is the embedded etcd's directory of a server's data dir.
func (s *server) ctlStoreDir() string { return filepath.Join(s.dir, "data", "etcd") }

// ctlConfig writes s's config with lms.etcd.start_timeout set (and extra
// appended) to a new file and returns its path.
func (s *server) ctlConfig(t *testing.T, timeout time.Duration, extra string) string {
	t.Helper()
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "lms: {", fmt.Sprintf("lms: {etcd: {start_timeout: %s}, ", timeout), 1)
	p := filepath.Join(s.dir, fmt.Sprintf("restart-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte(cfg+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ctlProc is a livefuse started by a test that expects it to exit.
type ctlProc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

func startCtlProc(t *testing.T, cfgPath string) *ctlProc {
	t.Helper()
	p := &ctlProc{out: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	p.cmd = exec.Command(env.bin, "serve", "--config", cfgPath)
	p.cmd.Stdout = &lockedWriter{mu: p.mu, w: p.out}
	p.cmd.Stderr = p.cmd.Stdout
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

func (p *ctlProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits up to within for the process to exit and returns its exit
// code, or fails the test.
func (p *ctlProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("livefuse still running after %v:\n%s", within, p.output())
		return 0
	}
}

// ctlStoppedServer runs a server until it is ready, so that its data dir
// holds a store with data, then stops it.
func ctlStoppedServer(t *testing.T) *server {
	t.Helper()
	s := startServer(t, `streams:
  - {name: kept, publish_token: pub}
`)
	s.stop()
	return s
}

// TestHostileDamagedStore: a truncated or corrupt WAL and a damaged bbolt
// db each end serve within the start timeout with a non-zero exit and an
// error naming the damaged file and what to do (before: a hang that
// ignored SIGTERM, or a raw stack naming no file).
func TestHostileDamagedStore(t *testing.T) {
	parallel(t)
	walOf := func(t *testing.T, s *server) string {
		m, _ := filepath.Glob(filepath.Join(s.ctlStoreDir(), "member", "wal", "*.wal"))
		if len(m) == 0 {
			t.Fatal("no WAL file")
		}
		return m[len(m)-1]
	}
	dbOf := func(t *testing.T, s *server) string { return filepath.Join(s.ctlStoreDir(), "member", "snap", "db") }
	scribble := func(t *testing.T, path string, off int64, n int) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, n), off); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, s *server) string // returns the damaged file
	}{
		{"wal truncated", func(t *testing.T, s *server) string {
			w := walOf(t, s)
			if err := os.Truncate(w, 100); err != nil {
				t.Fatal(err)
			}
			return w
		}},
		{"wal corrupt record", func(t *testing.T, s *server) string {
			w := walOf(t, s)
			scribble(t, w, 300, 8)
			return w
		}},
		{"db meta pages", func(t *testing.T, s *server) string {
			d := dbOf(t, s)
			scribble(t, d, 0, 8192)
			return d
		}},
		{"db tree pages", func(t *testing.T, s *server) string {
			d := dbOf(t, s)
			scribble(t, d, 8192, 4*4096)
			return d
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ctlStoppedServer(t)
			file := tc.damage(t, s)
			p := startCtlProc(t, s.ctlConfig(t, ctlStartTimeout, ""))
			code := p.wait(t, ctlStartTimeout+5*time.Second)
			out := p.output()
			if code == 0 || !strings.Contains(out, file) || !strings.Contains(out, "damaged") ||
				!strings.Contains(out, "move it aside") || strings.Contains(out, "goroutine ") {
				t.Fatalf("exit %d; want non-zero, a clear error naming %s and no stack:\n%s", code, file, out)
			}
		})
	}
}

// TestHostileStartupSignal: while start-up waits for a store held by
// another process (its db locked, as a running etcd locks it), SIGTERM
// ends the process at once, and without a signal the start ends at the
// start timeout with an error naming the data dir.
func TestHostileStartupSignal(t *testing.T) {
	s := ctlStoppedServer(t)
	f, err := os.Open(filepath.Join(s.ctlStoreDir(), "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	p := startCtlProc(t, s.ctlConfig(t, time.Hour, ""))
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-p.done:
		t.Fatalf("exited before the signal:\n%s", p.output())
	default:
	}
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 5*time.Second)
	t.Logf("stopped %v after SIGTERM during start-up", time.Since(sent).Round(time.Millisecond))

	p = startCtlProc(t, s.ctlConfig(t, 2*time.Second, ""))
	code := p.wait(t, 2*time.Second+ctlStartTimeout)
	if out := p.output(); code == 0 || !strings.Contains(out, s.ctlStoreDir()) {
		t.Fatalf("exit %d; want non-zero and an error naming %s:\n%s", code, s.ctlStoreDir(), out)
	}
}

// TestHostilePatchStorm: many clients PATCH one stream at once. No answer
// is a 500: each is 200, or 409 for a write that still conflicts after
// the retries; the stored value is one of those written.
func TestHostilePatchStorm(t *testing.T) {
	parallel(t)
	s := startServer(t, `streams:
  - {name: storm, publish_token: pub}
`)
	const clients, each = 40, 10
	var mu sync.Mutex
	codes := map[int]int{}
	written := map[string]bool{}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("key-%d-%d", c, i)
				mu.Lock()
				written[key] = true
				mu.Unlock()
				code, err := s.api("PATCH", "/streams/live/storm", map[string]any{"play_key": key}, nil)
				if err != nil {
					t.Errorf("PATCH: %v", err)
					return
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("answers: %v", codes)
	for code, n := range codes {
		if code != 200 && code != 409 {
			t.Errorf("%d answers %d, want only 200 or 409", n, code)
		}
	}
	if codes[200] == 0 {
		t.Error("no PATCH succeeded")
	}
	var st struct {
		PlayKey string `json:"play_key"`
	}
	if code, err := s.api("GET", "/streams/live/storm", nil, &st); err != nil || code != 200 || !written[st.PlayKey] {
		t.Fatalf("final play_key %q (%d %v) is none of the written values", st.PlayKey, code, err)
	}
}

// TestHostileDamagedManifest: a recorded session whose stored manifest is
// damaged stays listed, as damaged, with its segments, which can still be
// fetched.
func TestHostileDamagedManifest(t *testing.T) {
	parallel(t)
	s := startServer(t, `recording: {segment_duration: 2s}
streams:
  - {name: rec, publish_token: pub, record: true}
`)
	type listing struct {
		Recordings []struct {
			Session      string `json:"session"`
			Live         bool   `json:"live"`
			Segments     int    `json:"segments"`
			Damaged      string `json:"damaged"`
			SegmentFiles []struct {
				File  string `json:"file"`
				Bytes int64  `json:"bytes"`
				URL   string `json:"url"`
			} `json:"segment_files"`
		} `json:"recordings"`
	}
	list := func() listing {
		var l listing
		s.api("GET", "/recordings?stream=live/rec", nil, &l)
		return l
	}
	pusher := push(t, s.rtmpURL("rec", "token=pub"), true)
	recPoll(t, 30*time.Second, "two segments recorded", func() bool {
		l := list()
		return len(l.Recordings) == 1 && l.Recordings[0].Segments >= 2
	})
	if code, err := s.api("PATCH", "/streams/live/rec", map[string]any{"record": false}, nil); err != nil || code != 200 {
		t.Fatalf("PATCH record=false: %d %v", code, err)
	}
	var session string
	var segments int
	recPoll(t, 20*time.Second, "session ended", func() bool {
		l := list()
		if len(l.Recordings) != 1 || l.Recordings[0].Live {
			return false
		}
		session, segments = l.Recordings[0].Session, l.Recordings[0].Segments
		return true
	})
	syscall.Kill(-pusher.Process.Pid, syscall.SIGKILL)

	manifest := filepath.Join(s.dir, "data", "recordings", "live", "rec", session, "session.json")
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	l := list()
	if len(l.Recordings) != 1 {
		t.Fatalf("damaged session not listed: %+v", l)
	}
	r := l.Recordings[0]
	if r.Session != session || r.Damaged == "" || r.Segments != segments || len(r.SegmentFiles) != segments {
		t.Fatalf("want session %s listed damaged with %d segments: %+v", session, segments, r)
	}
	resp, err := http.Get(r.SegmentFiles[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != r.SegmentFiles[0].Bytes {
		t.Fatalf("segment of the damaged session: %s, %d bytes of %d", resp.Status, n, r.SegmentFiles[0].Bytes)
	}
	t.Logf("listed damaged: %s", r.Damaged)
}

// TestHostileEncryptionWithoutPlayKey: encryption on for a stream without
// a play key is refused, through the API and in the config file, unless
// open key access is chosen explicitly (then warned in the log).
func TestHostileEncryptionWithoutPlayKey(t *testing.T) {
	parallel(t)
	s := startServer(t, `streams:
  - {name: open, publish_token: pub}
  - {name: keyed, publish_token: pub, play_key: pk}
`)
	var e struct {
		Error string `json:"error"`
	}
	code, err := s.api("PATCH", "/streams/live/open", map[string]any{"encryption": true}, &e)
	if err != nil || code != 400 || !strings.Contains(e.Error, "play_key") || !strings.Contains(e.Error, "open_key_access") {
		t.Fatalf("encryption on without play_key: %d %q %v, want 400 naming play_key and open_key_access", code, e.Error, err)
	}
	if code, err := s.api("PATCH", "/streams/live/keyed", map[string]any{"encryption": true}, nil); err != nil || code != 200 {
		t.Fatalf("encryption on with a play_key: %d %v", code, err)
	}
	e.Error = ""
	if code, _ := s.api("PATCH", "/streams/live/keyed", map[string]any{"play_key": ""}, &e); code != 400 || !strings.Contains(e.Error, "play_key") {
		t.Fatalf("removing the play_key of an encrypted stream: %d %q, want 400", code, e.Error)
	}

	// The config file: refused at start.
	s.stop()
	p := startCtlProc(t, s.ctlConfig(t, ctlStartTimeout, `  - {name: cfgenc, publish_token: pub, encryption: true}
`))
	if code := p.wait(t, 10*time.Second); code == 0 || !strings.Contains(p.output(), "cfgenc") || !strings.Contains(p.output(), "play_key") {
		t.Fatalf("config stream encrypted without play_key: exit %d\n%s", code, p.output())
	}

	// Open key access, chosen explicitly: allowed, warned, and players
	// get the keys without a token.
	const openLine = "encryption: {open_key_access: true}\n"
	o := startServer(t, openLine+`streams:
  - {name: open, publish_token: pub}
`)
	if code, err := o.api("PATCH", "/streams/live/open", map[string]any{"encryption": true}, nil); err != nil || code != 200 {
		t.Fatalf("open key access, encryption on: %d %v", code, err)
	}
	if !strings.Contains(o.logs(), "open_key_access is on") {
		t.Error("open key access not warned in the log")
	}
	push(t, o.rtmpURL("open", "token=pub"), true)
	if key := encGet(t, ctlKeyURL(t, o, "open"), 200); len(key) != 16 {
		t.Fatalf("key with open key access: %d bytes, want 16", len(key))
	}

	// The same store without open key access: the stream stored encrypted
	// without a play key is named in the log, and its keys are refused.
	o.stop()
	b, err := os.ReadFile(o.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.cfgPath, bytes.Replace(b, []byte(openLine), nil, 1), 0o600); err != nil {
		t.Fatal(err)
	}
	o.start()
	if !strings.Contains(o.logs(), `encrypted stream has no play_key`) {
		t.Error("the stored keyless encrypted stream is not warned about at start")
	}
	push(t, o.rtmpURL("open", "token=pub"), true)
	encGet(t, ctlKeyURL(t, o, "open"), 403)
}

// ctlKeyURL polls the HLS playlist of name until it names a SAMPLE-AES
// key and returns the key's absolute URL.
func ctlKeyURL(t *testing.T, s *server, name string) string {
	t.Helper()
	var m []string
	recPoll(t, 30*time.Second, "SAMPLE-AES playlist", func() bool {
		body, err := httpGet(s.hlsURL(name))
		m = keyURIRe.FindStringSubmatch(body)
		return err == nil && m != nil
	})
	u := m[1]
	if strings.HasPrefix(u, "/") {
		u = fmt.Sprintf("http://127.0.0.1:%d", s.http) + u
	}
	return u
}

// TestHostileAuthKeyFarFuture: a play URL signed to expire in the year
// 2286 is refused; one expiring in ten minutes plays.
func TestHostileAuthKeyFarFuture(t *testing.T) {
	parallel(t)
	s := startServer(t, `streams:
  - {name: signed, publish_token: pub, play_key: pk}
`)
	push(t, s.rtmpURL("signed", "token=pub"), true)
	const path = "/live/signed.flv"
	good := s.flvURL("signed") + "?auth_key=" + authkey.Sign(path, "pk", time.Now().Add(10*time.Minute), "r", "0")
	waitLive(t, good, 20*time.Second)
	far := s.flvURL("signed") + "?auth_key=" + authkey.Sign(path, "pk", time.Unix(9_999_999_999, 0), "r", "0")
	week := s.flvURL("signed") + "?auth_key=" + authkey.Sign(path, "pk", time.Now().Add(7*24*time.Hour), "r", "0")
	for _, tc := range []struct {
		name, url string
		want      int
	}{
		{"ten minutes", good, 200},
		{"year 2286", far, 403},
		{"a week (past the 24 h default)", week, 403},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", tc.url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			cancel()
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
		resp.Body.Close()
		cancel()
	}
}
