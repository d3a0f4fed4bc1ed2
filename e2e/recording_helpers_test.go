package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	minioUser = "livefuse-e2e"
	minioPass = "livefuse-e2e-secret"
)

// minioBin finds the minio binary: on PATH or in $(go env GOPATH)/bin. It
// skips the test when it is missing, except in CI (CI=true), where that is
// a failure.
func minioBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
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
	msg := "minio not found on PATH nor in $(go env GOPATH)/bin: `make test` installs it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// minioProc is a real MinIO server on loopback ports picked at run time;
// stop and start keep its data and address.
type minioProc struct {
	t             *testing.T
	bin, dir      string
	addr, console string
	cmd           *exec.Cmd
	exited        chan struct{}
	mu            sync.Mutex
	log           bytes.Buffer
	mc            *minio.Client
}

func startMinio(t *testing.T) *minioProc {
	t.Helper()
	m := &minioProc{t: t, bin: minioBin(t), dir: t.TempDir()}
	m.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.console = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.start()
	t.Cleanup(m.stop)
	mc, err := minio.New(m.addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPass, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	m.mc = mc
	return m
}

func (m *minioProc) start() {
	t := m.t
	t.Helper()
	cmd := exec.Command(m.bin, "server", m.dir, "--address", m.addr, "--console-address", m.console, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPass,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	cmd.Stdout = &lockedWriter{mu: &m.mu, w: &m.log}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start minio: %v", err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { c.Wait(); close(ch) }(cmd, m.exited)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			t.Fatalf("minio exited at start:\n%s", m.log.String())
		default:
		}
		if resp, err := http.Get("http://" + m.addr + "/minio/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("minio not ready in 30 s")
}

func (m *minioProc) stop() {
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

func (m *minioProc) makeBucket(t *testing.T, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// "Server not initialized yet" can follow a ready health check.
	for {
		err := m.mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("make bucket: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// objects lists bucket/prefix: key → size.
func (m *minioProc) objects(t *testing.T, bucket, prefix string) map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int64{}
	for o := range m.mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s: %v", prefix, o.Err)
		}
		out[o.Key] = o.Size
	}
	return out
}

func (m *minioProc) get(t *testing.T, bucket, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obj, err := m.mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer obj.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(obj); err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b.Bytes()
}

// recordingYAML is the recording section for the S3 sink of m, with 2 s
// segments.
func recordingYAML(m *minioProc, bucket, secret string) string {
	return recordingYAMLSeg(m, bucket, secret, "2s")
}

func recordingYAMLSeg(m *minioProc, bucket, secret, seg string) string {
	return fmt.Sprintf(`recording:
  sink: s3
  segment_duration: %s
  session_gap: 2s
  retry_min: 200ms
  retry_max: 1s
  s3: {endpoint: %q, bucket: %q, region: us-east-1, access_key: %q, secret_key: %q}
`, seg, m.addr, bucket, minioUser, secret)
}

// recordingList is the body of GET /api/v1/recordings.
type recordingList struct {
	Recordings []struct {
		Session  string  `json:"session"`
		Live     bool    `json:"live"`
		Duration float64 `json:"duration"`
		Segments int     `json:"segments"`
		URL      string  `json:"url"`
		Playlist string  `json:"playlist_url"`
		Stopped  string  `json:"stopped"`
	} `json:"recordings"`
	Sink struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"sink"`
}

// recStreamStatus is the part of GET /api/v1/streams/{app}/{name} these tests read.
type recStreamStatus struct {
	Live *struct {
		Recording *struct {
			State    string `json:"state"`
			Segments int    `json:"segments"`
			Pending  int    `json:"pending"`
			Error    string `json:"error"`
		} `json:"recording"`
	} `json:"live"`
}

// recRun runs a command with a timeout, returning stdout and stderr.
func recRun(t *testing.T, timeout time.Duration, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// recPoll calls cond every 100 ms until it is true or within passes.
func recPoll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, within)
}
