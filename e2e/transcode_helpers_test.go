package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/lms/api"
)

// tcClips holds the clips the transcode tests make, once per run.
var tcClips struct {
	mu    sync.Mutex
	paths map[string]string
}

// tcClip returns a clip (H.264 with a 1 s GOP, no B-frames, + AAC) of size
// and length, made by ffmpeg on first use.
func tcClip(t *testing.T, size string, seconds int) string {
	t.Helper()
	tcClips.mu.Lock()
	defer tcClips.mu.Unlock()
	key := fmt.Sprintf("%s-%d", size, seconds)
	if p, ok := tcClips.paths[key]; ok {
		return p
	}
	out := filepath.Join(env.dir, "tc-"+key+".flv")
	cmd := ffmpegCmd(t, "-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "0",
		"-c:a", "aac", "-b:a", "64k", "-ac", "2", "-y", "-f", "flv", out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("make clip %s: %v", key, err)
	}
	if tcClips.paths == nil {
		tcClips.paths = map[string]string{}
	}
	tcClips.paths[key] = out
	return out
}

// tcPush pushes clip in a loop, in real time, until the test ends or the
// returned command is killed.
func tcPush(t *testing.T, clip, url string) func() {
	cmd := ffmpegCmd(t, "-re", "-stream_loop", "-1", "-i", clip, "-c", "copy", "-f", "flv", url)
	return func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
}

// tcPoll calls cond every 50 ms until it is true or within has passed.
func tcPoll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tcStatus returns the transcode status of live/name from the control API
// (nil when the stream is not live or has no ladder state).
func (s *server) tcStatus(t *testing.T, name string) *api.TranscodeStatus {
	t.Helper()
	var info api.StreamInfo
	code, err := s.api("GET", "/streams/live/"+name, nil, &info)
	if err != nil || code != 200 {
		t.Fatalf("GET stream %s: %d %v", name, code, err)
	}
	if info.Live == nil {
		return nil
	}
	return info.Live.Transcode
}

// ffmpegChildren lists the pids of the server's ffmpeg children.
func (s *server) ffmpegChildren() []int {
	var pids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", s.cmd.Process.Pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(field)
			if err != nil {
				continue
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(comm)) == "ffmpeg" {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// videoKbps is the video payload rate a player received, over media time.
func (p *flvPlayer) videoKbps() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var bytes, n int
	var first, last time.Duration
	for _, pk := range p.packets {
		if pk.Kind != av.KindVideo || pk.Header {
			continue
		}
		if n == 0 {
			first = pk.DTS
		} else {
			bytes += len(pk.Data)
		}
		last = pk.DTS
		n++
	}
	if last <= first {
		return 0
	}
	return float64(bytes) * 8 / 1000 / (last - first).Seconds()
}
