package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Fault drills of the main/backup switcher with real encoders (ffmpeg
// pushing RTMP) and a real player (an HTTP-FLV reader that stamps every
// frame's arrival). Each drill runs drillTrials() times; the test logs the
// median and worst figure and fails when the worst misses its target.

const failoverStreams = `streams:
  - {app: live, name: ha, publish_token: "hatok"}
origin:
  feed_timeout: 500ms
  return_after: 2s
`

// drillTrials is LIVEFUSE_DRILL_TRIALS (default 3; 10 for the figures).
func drillTrials() int {
	if n, err := strconv.Atoi(os.Getenv("LIVEFUSE_DRILL_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 2 // make test's time; make drill runs 5
}

var backupClip struct {
	once sync.Once
	path string
	err  error
}

// backupClipPath makes (once) the backup encoder's clip: the same pattern
// at 854x480, so the player can tell the feeds apart by their headers.
func backupClipPath(t *testing.T) string {
	t.Helper()
	backupClip.once.Do(func() {
		backupClip.path = filepath.Join(env.dir, "backup-480p.flv")
		backupClip.err = makeClip(backupClip.path, "854x480", 10)
	})
	if backupClip.err != nil {
		t.Fatal(backupClip.err)
	}
	return backupClip.path
}

// avcHeaderOf returns the AVC sequence header of an FLV file.
func avcHeaderOf(t *testing.T, path string) []byte {
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
	for i := 0; i < 100; i++ {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind == av.KindVideo && p.Header {
			return p.Data
		}
	}
	t.Fatalf("%s: no AVC header", path)
	return nil
}

// drillFrame is one video frame as the player got it.
type drillFrame struct {
	at     time.Time
	dts    time.Duration
	pts    time.Duration
	source string // which header it follows: main, backup or slate
	key    bool
}

// drillPlayer reads HTTP-FLV and labels each frame with the source of the
// sequence header in force.
type drillPlayer struct {
	mu      sync.Mutex
	frames  []drillFrame
	err     error
	source  string
	labels  map[string]string // header bytes → source name
	done    chan struct{}
	cancel  context.CancelFunc
	backErr []string // timestamp errors seen
}

func playDrill(t *testing.T, url string, labels map[string]string) *drillPlayer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &drillPlayer{labels: labels, done: make(chan struct{}), cancel: cancel}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the reading goroutine, or below on failure
	if err != nil {
		cancel()
		t.Fatalf("play %s: %v", url, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		t.Fatalf("play %s: status %d", url, resp.StatusCode)
	}
	go func() {
		defer close(p.done)
		defer resp.Body.Close()
		r, err := av.NewFLVReader(resp.Body)
		if err != nil {
			p.fail(err)
			return
		}
		var lastV, lastA time.Duration
		var seenV, seenA bool
		for {
			pkt, err := r.ReadPacket()
			if err != nil {
				p.fail(err)
				return
			}
			now := time.Now()
			p.mu.Lock()
			switch {
			case pkt.Kind == av.KindVideo && pkt.Header:
				if l, ok := p.labels[string(pkt.Data)]; ok {
					p.source = l
				} else {
					p.source = "slate"
				}
			case pkt.Kind == av.KindVideo:
				if seenV && pkt.DTS <= lastV {
					p.backErr = append(p.backErr, fmt.Sprintf("video DTS %v after %v", pkt.DTS, lastV))
				}
				lastV, seenV = pkt.DTS, true
				p.frames = append(p.frames, drillFrame{at: now, dts: pkt.DTS, pts: pkt.PTS(), source: p.source, key: pkt.Key})
			case pkt.Kind == av.KindAudio && !pkt.Header:
				if seenA && pkt.DTS <= lastA {
					p.backErr = append(p.backErr, fmt.Sprintf("audio DTS %v after %v", pkt.DTS, lastA))
				}
				lastA, seenA = pkt.DTS, true
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *drillPlayer) fail(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

func (p *drillPlayer) stop() {
	p.cancel()
	<-p.done
}

// waitSource waits until a frame from source arrives after since and
// returns its arrival.
func (p *drillPlayer) waitSource(t *testing.T, source string, since time.Time, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for i := len(p.frames) - 1; i >= 0 && p.frames[i].at.After(since); i-- {
			if p.frames[i].source == source && (i == 0 || p.frames[i-1].source != source || p.frames[i-1].at.Before(since)) {
				// the first frame of a run of source after since
				j := i
				for j > 0 && p.frames[j-1].source == source && p.frames[j-1].at.After(since) {
					j--
				}
				at := p.frames[j].at
				p.mu.Unlock()
				return at
			}
		}
		err := p.err
		p.mu.Unlock()
		if err != nil {
			t.Fatalf("player ended while waiting for %s: %v", source, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s frame within %v", source, within)
	return time.Time{}
}

// gap is the largest interval between consecutive frame arrivals that
// overlaps [from, to].
func (p *drillPlayer) gap(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var g time.Duration
	for i := 1; i < len(p.frames); i++ {
		a, b := p.frames[i-1].at, p.frames[i].at
		if b.Before(from) || a.After(to) {
			continue
		}
		g = max(g, b.Sub(a))
	}
	return g
}

// firstOf returns the first frame of source arriving after since.
func (p *drillPlayer) firstOf(source string, since time.Time) (drillFrame, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.frames {
		if f.at.After(since) && f.source == source {
			return f, i, true
		}
	}
	return drillFrame{}, 0, false
}

type figure struct {
	name   string
	target time.Duration
	vals   []time.Duration
}

func (f *figure) add(d time.Duration) { f.vals = append(f.vals, d) }

func (f *figure) report(t *testing.T) {
	t.Helper()
	if len(f.vals) == 0 {
		return
	}
	v := slices.Clone(f.vals)
	slices.Sort(v)
	med, worst := v[len(v)/2], v[len(v)-1]
	t.Logf("FIGURE %s: median %v, worst %v over %d trials (target %v)", f.name, med.Round(time.Millisecond), worst.Round(time.Millisecond), len(v), f.target)
	// The median is the design's figure and must meet the target; a
	// worst case is also the shared host's scheduling, so it may miss the
	// target (logged) but not by twice.
	switch {
	case med > f.target:
		t.Errorf("%s: median %v over %d trials misses the target %v (all: %v)", f.name, med, len(v), f.target, v)
	case worst > 2*f.target:
		t.Errorf("%s: worst %v over %d trials is over twice the target %v (all: %v)", f.name, worst, len(v), f.target, v)
	case worst > f.target:
		t.Logf("MISSED TARGET %s: worst %v over %d trials exceeds %v (all: %v)", f.name, worst, len(v), f.target, v)
	}
}

// encoder is one pushing ffmpeg, which the drills kill, stop and restart.
type encoder struct {
	t    *testing.T
	url  string
	clip string
	cmd  *exec.Cmd
}

func (e *encoder) start() {
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", e.clip, "-c", "copy", "-f", "flv", e.url}
	e.cmd = exec.Command("ffmpeg", args...)
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *encoder) signal(sig syscall.Signal) {
	if e.cmd != nil && e.cmd.Process != nil {
		syscall.Kill(-e.cmd.Process.Pid, sig)
	}
}

func (e *encoder) kill() {
	if e.cmd == nil {
		return
	}
	e.signal(syscall.SIGCONT)
	e.signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.cmd = nil
}

func newEncoder(t *testing.T, url, clip string) *encoder {
	e := &encoder{t: t, url: url, clip: clip}
	e.start()
	t.Cleanup(e.kill)
	return e
}

// checkHLSDiscontinuity waits for the playlist to mark a discontinuity
// (the switch to a feed with other parameters) and probes the segment
// after it: it must carry the new feed's resolution.
func checkHLSDiscontinuity(t *testing.T, url, size string) {
	t.Helper()
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		body, err := httpGet(url)
		if err == nil {
			if _, after, ok := bytes.Cut([]byte(body), []byte("#EXT-X-DISCONTINUITY\n")); ok {
				if m := segRe.FindSubmatch(after); m != nil {
					seg := url[:len(url)-len("index.m3u8")] + string(m[1])
					out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=width,height", "-of", "csv=s=x:p=0", seg).CombinedOutput()
					// TS: the stream shows once per program and once alone.
					if got := strings.Fields(string(out)); err != nil || len(got) == 0 || got[0] != size {
						t.Errorf("segment after the discontinuity: %q (%v), want %s", got, err, size)
					}
					return
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Errorf("no #EXT-X-DISCONTINUITY in the HLS playlist after a switch to a feed with other parameters")
}

// TestFailoverDrills: SIGKILL and SIGSTOP of the main encoder, return to
// main, forced switches, both encoders gone (slate) — with main at 640x360
// and backup at 854x480, so every switch also changes codec parameters.
func TestFailoverDrills(t *testing.T) {
	bclip := backupClipPath(t)
	s := startServer(t, failoverStreams)
	labels := map[string]string{string(avcHeaderOf(t, env.clip)): "main", string(avcHeaderOf(t, bclip)): "backup"}

	main := newEncoder(t, s.rtmpURL("ha", "token=hatok"), env.clip)
	waitLive(t, s.flvURL("ha"), 10*time.Second)
	backup := newEncoder(t, s.rtmpURL("ha", "token=hatok&feed=backup"), bclip)
	p := playDrill(t, s.flvURL("ha"), labels)
	p.waitSource(t, "main", time.Time{}, 10*time.Second)

	// An ffmpeg player records the output for a decode check at the end.
	rec := filepath.Join(t.TempDir(), "out.flv")
	recCmd := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", s.flvURL("ha"), "-c", "copy", "-f", "flv", rec)
	recCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var recErr bytes.Buffer
	recCmd.Stderr = &recErr
	if err := recCmd.Start(); err != nil {
		t.Fatal(err)
	}
	recDone := make(chan struct{})
	go func() { recCmd.Wait(); close(recDone) }()
	t.Cleanup(func() { syscall.Kill(-recCmd.Process.Pid, syscall.SIGKILL); <-recDone })

	// Backup must be hot (its GOP cached) before the drills start.
	time.Sleep(2500 * time.Millisecond)

	kill := &figure{name: "largest gap, main SIGKILL", target: 500 * time.Millisecond}
	stop := &figure{name: "largest gap, main SIGSTOP", target: 800 * time.Millisecond}
	back := &figure{name: "largest gap, return to main", target: 200 * time.Millisecond}
	returnAfter := &figure{name: "main healthy to return (return_after 2s + next keyframe)", target: 4500 * time.Millisecond}

	restartMain := func() {
		main.kill()
		t0 := time.Now()
		main.start()
		at := p.waitSource(t, "main", t0, 10*time.Second)
		returnAfter.add(at.Sub(t0))
		f, _, _ := p.firstOf("main", t0)
		if !f.key {
			t.Errorf("return to main starts with a non-keyframe")
		}
		back.add(p.gap(at.Add(-time.Second), at.Add(500*time.Millisecond)))
		if at.Sub(t0) < 2*time.Second {
			t.Errorf("returned to main %v after it came back, before return_after (2s)", at.Sub(t0))
		}
		time.Sleep(600 * time.Millisecond)
	}
	for i := 0; i < drillTrials(); i++ {
		// Hard failure: the encoder dies, its TCP connection with it.
		t0 := time.Now()
		main.signal(syscall.SIGKILL)
		at := p.waitSource(t, "backup", t0, 5*time.Second)
		time.Sleep(500 * time.Millisecond)
		kill.add(p.gap(t0, at.Add(300*time.Millisecond)))
		if i == 0 {
			checkHLSDiscontinuity(t, s.hlsURL("ha"), "854x480")
		}
		restartMain()

		// Silent stall: the encoder freezes, its connection stays open.
		time.Sleep(2500 * time.Millisecond) // main's GOP cached again, backup hot
		t0 = time.Now()
		main.signal(syscall.SIGSTOP)
		at = p.waitSource(t, "backup", t0, 5*time.Second)
		time.Sleep(500 * time.Millisecond)
		stop.add(p.gap(t0, at.Add(300*time.Millisecond)))
		restartMain()
		time.Sleep(2500 * time.Millisecond)
	}

	// Forced switch through the API, and back to auto.
	forced := &figure{name: "largest gap, forced switch", target: 200 * time.Millisecond}
	forcedIn := &figure{name: "forced switch effective after", target: 2500 * time.Millisecond}
	var steps []struct{ feed, want string }
	for i := 0; i < drillTrials(); i++ {
		steps = append(steps, struct{ feed, want string }{"backup", "backup"}, struct{ feed, want string }{"main", "main"})
	}
	steps = append(steps, struct{ feed, want string }{"auto", "main"})
	for _, step := range steps {
		t0 := time.Now()
		var out struct {
			FeedPolicy string `json:"feed_policy"`
		}
		if code, err := s.api("POST", "/streams/live/ha/switch", map[string]string{"feed": step.feed}, &out); err != nil || code != 200 {
			t.Fatalf("switch %s: %d %v", step.feed, code, err)
		}
		if step.feed == "auto" {
			time.Sleep(time.Second)
			continue // already on main: nothing to see
		}
		at := p.waitSource(t, step.want, t0, 5*time.Second)
		forcedIn.add(at.Sub(t0))
		time.Sleep(400 * time.Millisecond)
		forced.add(p.gap(at.Add(-time.Second), at.Add(300*time.Millisecond)))
	}
	// Policy backup is strict: main is never shown while it is forced.
	if code, _ := s.api("POST", "/streams/live/ha/switch", map[string]string{"feed": "backup"}, nil); code != 200 {
		t.Fatalf("switch backup: %d", code)
	}
	var info struct {
		Units []struct {
			Unit, Active, Policy string
		} `json:"units"`
	}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		s.api("GET", "/streams/live/ha", nil, &info)
		if len(info.Units) == 1 && info.Units[0].Active == "backup" && info.Units[0].Policy == "backup" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(info.Units) != 1 || info.Units[0].Active != "backup" {
		t.Errorf("unit status after a forced switch to backup: %+v", info.Units)
	}
	s.api("POST", "/streams/live/ha/switch", map[string]string{"feed": "auto"}, nil)
	p.waitSource(t, "main", time.Now(), 8*time.Second)

	// Both encoders gone: the slate, then live again.
	slateIn := &figure{name: "slate start after both encoders died", target: time.Second}
	liveIn := &figure{name: "live again after an encoder restarted (with ffmpeg's start-up)", target: 1500 * time.Millisecond}
	for i := 0; i < drillTrials(); i++ {
		t0 := time.Now()
		main.kill()
		backup.kill()
		at := p.waitSource(t, "slate", t0, 5*time.Second)
		slateIn.add(at.Sub(t0))
		time.Sleep(1500 * time.Millisecond)
		if g := p.gap(at, time.Now()); g > 200*time.Millisecond {
			t.Errorf("slate paced with a gap of %v", g)
		}
		t1 := time.Now()
		main.start()
		liveIn.add(p.waitSource(t, "main", t1, 5*time.Second).Sub(t1))
		backup.start()
		time.Sleep(2500 * time.Millisecond) // backup hot again for the next trial
	}
	time.Sleep(time.Second)

	for _, f := range []*figure{kill, stop, back, returnAfter, forced, forcedIn, slateIn, liveIn} {
		f.report(t)
	}
	p.mu.Lock()
	if len(p.backErr) > 0 {
		t.Errorf("timestamps went back %d times at the player: %v", len(p.backErr), p.backErr[:min(5, len(p.backErr))])
	}
	if p.err != nil {
		t.Errorf("player disconnected: %v", p.err)
	}
	p.mu.Unlock()

	// The recording decodes without an error across every switch.
	syscall.Kill(-recCmd.Process.Pid, syscall.SIGINT)
	select {
	case <-recDone:
	case <-time.After(10 * time.Second):
		t.Fatal("ffmpeg recorder did not stop")
	}
	if recErr.Len() > 0 {
		t.Errorf("ffmpeg player logged errors: %s", recErr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", rec, "-f", "null", "-").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("decoding the player's recording: %v: %s", err, out)
	}
}
