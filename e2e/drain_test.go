package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readyz returns the node's /readyz status code and body ("" when it
// does not answer).
func (s *server) readyz() (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.apiPort))
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// waitExit waits for the process to end and returns its exit code.
func (s *server) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("livefuse still running %v later:\n%s", within, s.tail(40))
		return -1
	}
}

// startDraining starts a node with drain_timeout, a pushed stream and one
// HTTP-FLV player receiving it.
func startDraining(t *testing.T, drainTimeout string) (*server, *flvPlayer) {
	t.Helper()
	s := startServer(t, "drain_timeout: "+drainTimeout+"\n"+demoStreams)
	push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 10*time.Second)
	p := playFLV(t, s.flvURL("demo"), false)
	t.Cleanup(p.stop)
	p.waitFrames(t, 10, 10*time.Second)
	return s, p
}

// TestDrainOnSIGTERM: SIGTERM takes the node out of service gently.
// /readyz turns 503 "draining" at once, the connected player keeps
// receiving and a new player is refused (503, for the edge to retry it
// retried elsewhere), and when the players have left the node exits 0 on its own.
func TestDrainOnSIGTERM(t *testing.T) {
	s, p := startDraining(t, "60s")
	s.cmd.Process.Signal(syscall.SIGTERM)
	sent := time.Now()

	var code int
	var body string
	for i := 0; i < 40; i++ {
		if code, body = s.readyz(); code == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz after SIGTERM: %d %q, want 503 draining", code, body)
	}
	t.Logf("/readyz 503 draining %v after SIGTERM", time.Since(sent).Round(time.Millisecond))

	// The player keeps playing; a late one is refused with 503, which the
	// edge and load balancers retry on another unit.
	before := p.frames()
	resp, err := http.Get(s.flvURL("demo"))
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a new player on a draining node: %v %v, want 503", resp, err)
	}
	resp.Body.Close()
	p.waitFrames(t, before+25, 10*time.Second)
	if gap := p.maxGap(sent); gap > 2*time.Second {
		t.Errorf("the player's largest frame gap during the drain: %v", gap)
	}
	select {
	case <-s.exited:
		t.Fatalf("livefuse exited while a player was still playing:\n%s", s.tail(40))
	default:
	}

	// The last player leaves: the node stops by itself, exit status 0.
	left := time.Now()
	p.stop()
	if code := s.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d after the drain, want 0:\n%s", code, s.tail(40))
	}
	t.Logf("exited %v after the last player left", time.Since(left).Round(time.Millisecond))
	if !strings.Contains(s.logs(), "drained: no players left") {
		t.Errorf("the log does not say the node drained:\n%s", s.tail(40))
	}
}

// TestDrainTimeout: a player that stays is served until drain_timeout
// passes; then the node ends its stream and exits 0.
func TestDrainTimeout(t *testing.T) {
	s, p := startDraining(t, "3s")
	s.cmd.Process.Signal(syscall.SIGTERM)
	sent := time.Now()
	p.waitFrames(t, p.frames()+25, 10*time.Second)
	if code := s.waitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("exit status %d, want 0:\n%s", code, s.tail(40))
	}
	took := time.Since(sent)
	if took < 3*time.Second {
		t.Errorf("exited %v after SIGTERM, before drain_timeout (3s) with a player connected", took)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Error("the player's connection is still open after the node exited")
	}
	t.Logf("exited %v after SIGTERM (drain_timeout 3s)", took.Round(time.Millisecond))
	if !strings.Contains(s.logs(), "drain_timeout passed") {
		t.Errorf("the log does not name the drain timeout:\n%s", s.tail(40))
	}
}

// TestDrainSecondSignal: a second SIGTERM during a drain stops the node
// at once (within shutdown_timeout), with exit status 0.
func TestDrainSecondSignal(t *testing.T) {
	s, _ := startDraining(t, "10m")
	s.cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 40; i++ {
		if code, _ := s.readyz(); code == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	sent := time.Now()
	if code := s.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d, want 0:\n%s", code, s.tail(40))
	}
	t.Logf("exited %v after the second SIGTERM", time.Since(sent).Round(time.Millisecond))
	if !strings.Contains(s.logs(), "drain cut short") {
		t.Errorf("the log does not say the drain was cut short:\n%s", s.tail(40))
	}
}
