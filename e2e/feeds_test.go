package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBackupOnly: a backup feed of a stream with no main yet is accepted
// and served.
func TestBackupOnly(t *testing.T) {
	parallel(t)
	s := startServer(t, failoverStreams)
	push(t, s.rtmpURL("ha", "token=hatok&feed=backup"), true)
	waitLive(t, s.flvURL("ha"), 10*time.Second)
	p := playFLV(t, s.flvURL("ha"), false)
	p.waitFrames(t, 50, 10*time.Second)
}

// TestUnsupportedFeedRefused: a backup encoder sending a codec the outputs
// cannot carry (MP3 audio) is refused with a reason in the log, and the
// main feed's players see nothing of it.
func TestUnsupportedFeedRefused(t *testing.T) {
	s := startServer(t, failoverStreams)
	push(t, s.rtmpURL("ha", "token=hatok"), true)
	waitLive(t, s.flvURL("ha"), 10*time.Second)
	p := playFLV(t, s.flvURL("ha"), false)
	p.waitFrames(t, 25, 10*time.Second)
	t0 := time.Now()
	bad := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-t", "4",
		"-i", env.clip, "-c:v", "copy", "-c:a", "libmp3lame", "-f", "flv", s.rtmpURL("ha", "token=hatok&feed=backup"))
	out, err := bad.CombinedOutput()
	if err == nil {
		t.Errorf("an MP3 feed was pushed to the end without being refused: %s", out)
	}
	time.Sleep(time.Second)
	if g := p.maxGap(t0); g > time.Second {
		t.Errorf("main's player had a gap of %v while the bad feed was refused", g)
	}
	if logs := s.logs(); !strings.Contains(logs, "unsupported codec") {
		t.Errorf("no reason logged for the refused feed:\n%s", s.tail(20))
	}
}
