package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/livefuse/livefuse/av"
)

// fakeServerEnv makes the test binary act as `livefuse serve`, so the whole
// tool (config, process start and stop, publishing, both player kinds,
// sampling, the report) can be tested without the real server.
const fakeServerEnv = "LOADTOOL_FAKE_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(fakeServerEnv) == "1" {
		os.Exit(fakeServerMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeConfig is the part of the livefuse config the fake server reads.
type fakeConfig struct {
	RTMP   struct{ Addr string } `yaml:"rtmp"`
	HTTP   struct{ Addr string } `yaml:"http"`
	Origin struct {
		FLVCoalesce time.Duration `yaml:"flv_coalesce"`
	} `yaml:"origin"`
	Streams []struct {
		App, Name    string
		PublishToken string `yaml:"publish_token"`
	} `yaml:"streams"`
}

func fakeServerMain(args []string) int {
	if len(args) != 3 || args[0] != "serve" || args[1] != "--config" {
		fmt.Fprintln(os.Stderr, "fake server: want serve --config FILE, got", args)
		return 2
	}
	b, err := os.ReadFile(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake server:", err)
		return 1
	}
	var cfg fakeConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "fake server: config:", err)
		return 1
	}
	if len(cfg.Streams) != 1 || cfg.Streams[0].PublishToken != benchToken {
		fmt.Fprintf(os.Stderr, "fake server: streams %+v\n", cfg.Streams)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	r := &relay{}
	ln, err := net.Listen("tcp", cfg.RTMP.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake server:", err)
		return 1
	}
	stopRelay := serveRelay(r, ln)
	defer stopRelay()
	hs := &http.Server{Addr: cfg.HTTP.Addr, Handler: http.HandlerFunc(r.serveFLV)}
	go func() { <-ctx.Done(); hs.Close() }()
	fmt.Fprintf(os.Stderr, "fake server: rtmp %s http %s coalesce %v\n", cfg.RTMP.Addr, cfg.HTTP.Addr, cfg.Origin.FLVCoalesce)
	if err := hs.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "fake server:", err)
		return 1
	}
	return 0
}

// writeSyntheticClip writes syntheticClip as an FLV file.
func writeSyntheticClip(t *testing.T, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.flv")
	var buf bytes.Buffer
	w := av.NewFLVWriter(&buf, true, true)
	c := syntheticClip(seconds)
	for _, p := range append(c.headers, c.media...) {
		if err := w.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBenchAgainstFakeServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeServerEnv, "1")
	clipPath := writeSyntheticClip(t, 2)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-server", exe, "-flv", "3", "-rtmp", "3", "-duration", "1500ms", "-ramp", "200ms",
		"-settle", "500ms", "-coalesce", "5ms", "-clip", clipPath}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("run exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"http-flv", "rtmp", "server: CPU", "load tool: CPU", "flv_coalesce 5ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rep report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("last line is not the JSON report: %v\n%s", err, out)
	}
	if rep.Samples < 1 || rep.ServerRSS <= 0 || rep.PubFrames == 0 || rep.Coalesce != "5ms" {
		t.Errorf("report %+v: want samples, RSS, publisher frames and coalesce 5ms", rep)
	}
	for _, s := range []*protoSummary{rep.FLV, rep.RTMP} {
		if s == nil {
			t.Fatalf("a protocol is missing: %s", out)
		}
		if s.Players != 3 || s.Connected != 3 || s.KeptUp == 0 || s.Disconnected != 0 || s.Stuck != 0 {
			t.Errorf("%s: %+v; want 3 players connected, some kept up, none dropped", s.Proto, s)
		}
		if s.LatencyP50 <= 0 || s.Unstamped != 0 || s.Mbps <= 0 {
			t.Errorf("%s: latency p50 %v, unstamped %d, %v Mbit/s", s.Proto, s.LatencyP50, s.Unstamped, s.Mbps)
		}
	}
}

func TestBenchServerFailsToStart(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "livefuse")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho 'config: bad key' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"-server", exe, "-flv", "1", "-rtmp", "0", "-clip", writeSyntheticClip(t, 1)}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "server exited during start-up") || !strings.Contains(stderr.String(), "config: bad key") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

func TestClipFromFFmpeg(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not in PATH")
	}
	if testing.Short() {
		t.Skip("encodes for a few seconds")
	}
	path := filepath.Join(t.TempDir(), "clip.flv")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := generateClip(ctx, path); err != nil {
		t.Fatal(err)
	}
	c, err := loadClip(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.videoFrames != clipSeconds*25 {
		t.Errorf("%d video frames, want %d", c.videoFrames, clipSeconds*25)
	}
	if c.period < (clipSeconds*1000-100)*time.Millisecond || c.period > (clipSeconds*1000+100)*time.Millisecond {
		t.Errorf("loop period %v, want about %ds", c.period, clipSeconds)
	}
	var keys, bframes, videoBytes int
	var lastKey time.Duration = -1
	var last time.Duration = -1
	for _, p := range c.media {
		if p.DTS < last {
			t.Fatalf("DTS goes back: %v after %v", p.DTS, last)
		}
		last = p.DTS
		if p.Kind != av.KindVideo {
			continue
		}
		videoBytes += len(p.Data)
		if p.CTS != 0 {
			bframes++
		}
		if p.Key {
			if lastKey >= 0 && p.DTS-lastKey != 2*time.Second {
				t.Errorf("keyframe interval %v, want 2s", p.DTS-lastKey)
			}
			lastKey = p.DTS
			keys++
		}
		if out, ok := appendStamped(nil, p.Data, 1); !ok {
			t.Fatalf("frame at %v: cannot insert a stamp", p.DTS)
		} else if ns, ok := stampFromAVCC(out); !ok || ns != 1 {
			t.Fatalf("frame at %v: stamp not found after insertion", p.DTS)
		}
	}
	if keys != clipSeconds/2 || bframes == 0 {
		t.Errorf("%d keyframes and %d frames with a composition offset; want %d and some", keys, bframes, clipSeconds/2)
	}
	if mbps := float64(videoBytes) * 8 / clipSeconds / 1e6; mbps < 2.2 || mbps > 2.8 {
		t.Errorf("video at %.2f Mbit/s, want about 2.5", mbps)
	}
}
