package e2e

import (
	"context"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// Renditions follow their source (issue 16, item 4) and main is preferred
// at start (item 10), with the real binary, ffmpeg encoders and ffprobe.

const rendYAML = `transcode:
  workers: 1
  profiles:
    - name: ladder
      gop: 1s
      renditions:
        - {name: low, width: 320, height: 180, video_kbps: 300, preset: ultrafast}
    - name: wm
      gop: 1s
      watermark_source: true
      source_kbps: 400
      watermark: {text: "e2e"}
streams:
  - {app: live, name: rd, publish_token: "rdtok", profile: ladder}
  - {app: live, name: wmk, publish_token: "wmtok", profile: wm}
`

// getStatus is the status code of a GET of url (0 when it fails).
func getStatus(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitGone polls url until it answers 404 and returns how long that took
// from since; it fails the test after within.
func waitGone(t *testing.T, url string, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(within)
	for {
		if getStatus(url) == http.StatusNotFound {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still answers %d %v after the end", url, getStatus(url), time.Since(since).Round(time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// liveInfo returns the live status of live/name (nil when not live).
func (s *server) liveInfo(t *testing.T, name string) *api.LiveStatus {
	t.Helper()
	var info api.StreamInfo
	code, err := s.api("GET", "/streams/live/"+name, nil, &info)
	if err != nil || code != 200 {
		t.Fatalf("GET stream %s: %d %v", name, code, err)
	}
	return info.Live
}

// firstVideoPTS is the PTS of the first video packet ffprobe reads at url.
func firstVideoPTS(t *testing.T, url string) time.Duration {
	t.Helper()
	out, err := exec.Command("timeout", "20", "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-read_intervals", "%+#1", "-show_entries", "packet=pts_time", "-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", url, err, out)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	sec, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(line), ","), 64)
	if err != nil {
		t.Fatalf("ffprobe %s: pts %q: %v", url, out, err)
	}
	return time.Duration(sec * float64(time.Second))
}

// TestRenditionsFollowSource: a rendition ends (404) within 5 s of its
// source's clean end; when the encoder returns, the rendition is back on
// the source's timeline (first PTS within one GOP of the source's); the
// API lists the renditions under their stream; removing the profile from
// the stream ends them; the watermarked source (NAME_source) ends with its
// source too.
func TestRenditionsFollowSource(t *testing.T) {
	parallel(t)
	const gop = time.Second
	s := startServer(t, rendYAML)
	clip := tcClip(t, "640x360", 4)
	src, low := s.flvURL("rd"), s.flvURL("rd_low")

	stop := tcPush(t, clip, s.rtmpURL("rd", "token=rdtok"))
	waitLive(t, src, 10*time.Second)
	waitLive(t, low, 15*time.Second)
	var ls *api.LiveStatus
	tcPoll(t, 10*time.Second, "rendition listed under its stream", func() bool {
		ls = s.liveInfo(t, "rd")
		return ls != nil && len(ls.Renditions) == 1 && ls.Renditions[0].Width == 320
	})
	if r := ls.Renditions[0]; r.Name != "low" || r.Stream != "live/rd_low" || r.Height != 180 || r.StartedAt.IsZero() {
		t.Errorf("rendition status %+v", r)
	}

	// The encoder stops cleanly (SIGINT: ffmpeg unpublishes).
	stop()
	ended := time.Now()
	d := waitGone(t, low, ended, 5*time.Second)
	t.Logf("FIGURE rendition 404 %v after the encoder's clean end", d.Round(time.Millisecond))
	clean := false
	for _, l := range strings.Split(s.logs(), "\n") {
		clean = clean || (strings.Contains(l, "publisher left") && strings.Contains(l, "stream=live/rd ") && strings.Contains(l, "clean=true"))
	}
	if !clean {
		t.Errorf("the encoder's end was not clean: the test proves nothing")
	}
	if ls := s.liveInfo(t, "rd"); ls != nil {
		t.Errorf("source still live after its end: %+v", ls)
	}

	// The encoder returns: the rendition starts on the source's timeline.
	tcPush(t, clip, s.rtmpURL("rd", "token=rdtok"))
	waitLive(t, src, 10*time.Second)
	waitLive(t, low, 15*time.Second)
	var srcPTS, lowPTS time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); srcPTS = firstVideoPTS(t, src) }()
	go func() { defer wg.Done(); lowPTS = firstVideoPTS(t, low) }()
	wg.Wait()
	t.Logf("after the encoder returned: source first PTS %v, rendition %v", srcPTS, lowPTS)
	if diff := lowPTS - srcPTS; diff < -gop || diff > gop {
		t.Errorf("rendition first PTS %v, source %v: want within one GOP (%v)", lowPTS, srcPTS, gop)
	}

	// The profile is removed from the stream: the rendition ends, the
	// source plays on.
	if code, err := s.api("PATCH", "/streams/live/rd", map[string]any{"profile": ""}, nil); err != nil || code != 200 {
		t.Fatalf("PATCH profile: %d %v", code, err)
	}
	d = waitGone(t, low, time.Now(), 5*time.Second)
	t.Logf("rendition 404 %v after its profile was removed", d.Round(time.Millisecond))
	if code := getStatus(src); code != 200 {
		t.Errorf("source answers %d after its profile was removed", code)
	}
	if ls := s.liveInfo(t, "rd"); ls == nil || len(ls.Renditions) != 0 {
		t.Errorf("live status after the profile was removed: %+v", ls)
	}

	// The watermarked source ends with its source.
	stopWM := tcPush(t, clip, s.rtmpURL("wmk", "token=wmtok"))
	wm := s.flvURL("wmk_source")
	waitLive(t, wm, 15*time.Second)
	tcPoll(t, 10*time.Second, "watermarked source listed", func() bool {
		ls := s.liveInfo(t, "wmk")
		return ls != nil && len(ls.Renditions) == 1 && ls.Renditions[0].Name == "source"
	})
	stopWM()
	d = waitGone(t, wm, time.Now(), 5*time.Second)
	t.Logf("watermarked source 404 %v after the encoder's clean end", d.Round(time.Millisecond))
	if code := getStatus(s.flvURL("wmk")); code != http.StatusNotFound {
		t.Errorf("stream answers %d after its end", code)
	}
}

// TestMainPreferredAtStart: main and backup encoders start ~150 ms apart,
// in either order: the stream starts on main and stays there (no switch
// at return_after), as the API and a player that joined first both see.
func TestMainPreferredAtStart(t *testing.T) {
	bclip := backupClipPath(t)
	for _, tc := range []struct {
		name  string
		first string
	}{{"backup first", "backup"}, {"main first", "main"}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, failoverStreams) // return_after: 2s
			labels := map[string]string{string(avcHeaderOf(t, env.clip)): "main", string(avcHeaderOf(t, bclip)): "backup"}
			mainURL, backupURL := s.rtmpURL("ha", "token=hatok"), s.rtmpURL("ha", "token=hatok&feed=backup")
			if tc.first == "backup" {
				newEncoder(t, backupURL, bclip)
				time.Sleep(150 * time.Millisecond)
				newEncoder(t, mainURL, env.clip)
			} else {
				newEncoder(t, mainURL, env.clip)
				time.Sleep(150 * time.Millisecond)
				newEncoder(t, backupURL, bclip)
			}
			waitLive(t, s.flvURL("ha"), 10*time.Second)
			p := playDrill(t, s.flvURL("ha"), labels)
			p.waitSource(t, "main", time.Time{}, 10*time.Second)
			// Past return_after (2 s) and a few GOPs.
			time.Sleep(4 * time.Second)
			p.mu.Lock()
			var sources []string
			for _, f := range p.frames {
				if len(sources) == 0 || sources[len(sources)-1] != f.source {
					sources = append(sources, f.source)
				}
			}
			n := len(p.frames)
			p.mu.Unlock()
			if len(sources) != 1 || sources[0] != "main" || n < 50 {
				t.Errorf("player saw %v over %d frames, want main only", sources, n)
			}
			ls := s.liveInfo(t, "ha")
			if ls == nil || ls.Switch == nil {
				t.Fatalf("no switch status: %+v", ls)
			}
			if ls.Switch.Active != "main" || ls.Switch.Switches != 1 {
				t.Errorf("switch status: active %s, %d switches (last: %s), want main and one switch (none → main)",
					ls.Switch.Active, ls.Switch.Switches, ls.Switch.LastReason)
			}
			// Which publisher the server saw first, for the record.
			for _, l := range strings.Split(s.logs(), "\n") {
				if strings.Contains(l, "publisher joined") {
					t.Log(l)
				}
			}
		})
	}
}
