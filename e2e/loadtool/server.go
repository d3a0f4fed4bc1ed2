package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Names the load tool gives the stream it publishes.
const (
	benchApp   = "live"
	benchName  = "bench"
	benchToken = "t0k"
)

// serverAddrs are the listeners the config gives the server.
type serverAddrs struct {
	RTMP, RTSP, HTTP, API string
}

// freeAddrs picks n distinct free 127.0.0.1 ports. They are held open until
// all are chosen, so no two are the same; another process could still take
// one before the server binds it.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// configYAML renders the server config. Keys are those of `livefuse serve`
// (it refuses unknown keys).
func configYAML(dataDir string, a serverAddrs, coalesce time.Duration) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "data_dir: %q\n", dataDir)
	fmt.Fprintf(&b, "log_level: info\n")
	// Every player connects from 127.0.0.1: lift the per-address cap
	// (default 256) that a real deployment keeps.
	fmt.Fprintf(&b, "rtmp: {addr: %q, max_conns_per_ip: -1}\n", a.RTMP)
	fmt.Fprintf(&b, "rtsp: {addr: %q, udp_rtp_addr: \"\", udp_rtcp_addr: \"\"}\n", a.RTSP)
	fmt.Fprintf(&b, "http: {addr: %q}\n", a.HTTP)
	fmt.Fprintf(&b, "lms: {api_addr: %q, api_token: \"secret\"}\n", a.API)
	fmt.Fprintf(&b, "origin: {flv_coalesce: %s}\n", coalesce)
	fmt.Fprintf(&b, "streams:\n  - {app: %s, name: %s, publish_token: %q, enabled: true}\n", benchApp, benchName, benchToken)
	return b.Bytes()
}

// server is the livefuse process under test, in its own process group so
// that stopping it also stops anything it started (ffmpeg workers).
type server struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

// startServer runs `bin serve --config cfgPath`, output to logPath, with
// env added to the environment.
func startServer(bin, cfgPath, logPath string, env ...string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Dir = filepath.Dir(cfgPath)
	// Own process group; killed by the kernel if we die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start server %s: %w", bin, err)
	}
	s := &server{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// waitReady waits until every address accepts TCP connections.
func (s *server) waitReady(ctx context.Context, timeout time.Duration, addrs ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-s.exited:
				return fmt.Errorf("server exited during start-up (%w); log %s:\n%s", s.waitErr, s.logPath, s.logTail(20))
			case <-ctx.Done():
				return fmt.Errorf("server not listening on %s: %w; log %s:\n%s", a, ctx.Err(), s.logPath, s.logTail(20))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// stop sends SIGTERM to the process group, waits up to grace, then kills
// whatever is left of the group.
func (s *server) stop(grace time.Duration) error {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	var err error
	select {
	case <-s.exited:
	case <-t.C:
		err = fmt.Errorf("server did not stop within %v after SIGTERM; killed", grace)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.exited
	}
	// Children that outlived the server.
	if kerr := syscall.Kill(-pgid, syscall.SIGKILL); kerr == nil && err == nil {
		err = errors.New("server left processes in its group; killed")
	}
	return err
}

// logTail returns the last n lines of the server log.
func (s *server) logTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
