package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const recStreamYAML = `streams:
  - {name: rec, publish_token: rectoken, record: true}
`

// TestRecordingToMinIO pushes 30 s (the 10 s clip three times) to a stream
// with record on, in the default 6 s segments, and plays the recording back
// from a real MinIO through the listed URL.
func TestRecordingToMinIO(t *testing.T) {
	parallel(t)
	m := startMinio(t)
	m.makeBucket(t, "vod")
	s := startServer(t, recordingYAMLSeg(m, "vod", minioPass, "6s")+recStreamYAML)

	ffmpegCmd(t, "-re", "-stream_loop", "2", "-i", env.clip, "-c", "copy", "-f", "flv", s.rtmpURL("rec", "token=rectoken")).Wait()
	list := waitRecording(t, s, 30*time.Second)
	rec := list.Recordings[0]

	// The playlist in MinIO lists every segment stored there.
	prefix := "live/rec/" + rec.Session + "/"
	objs := m.objects(t, "vod", prefix)
	var segs int
	for k := range objs {
		if strings.HasSuffix(k, ".ts") {
			segs++
		}
	}
	pl := string(m.get(t, "vod", prefix+"index.m3u8"))
	if n := strings.Count(pl, "#EXTINF:"); n != segs || n != rec.Segments || !strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("playlist lists %d segments, MinIO holds %d, listing says %d:\n%s", n, segs, rec.Segments, pl)
	}
	for k := range objs {
		if strings.HasSuffix(k, ".ts") && !strings.Contains(pl, filepath.Base(k)+"\n") {
			t.Errorf("%s is not in the playlist", k)
		}
	}

	// Playback through presigned segment URLs.
	out, errOut, err := recRun(t, time.Minute, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", rec.URL)
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", rec.URL, err, errOut)
	}
	dur, _ := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if dur < 30-6 || dur > 30+6 {
		t.Errorf("ffprobe duration %.2f s of a 30 s push: more than one segment (6 s) off", dur)
	}
	// The stored playlist itself, through its presigned URL.
	if got := httpGetBody(t, rec.Playlist); got != pl {
		t.Errorf("presigned playlist differs from the stored one:\n%s", got)
	}
	if _, errOut, err := recRun(t, time.Minute, "ffmpeg", "-nostdin", "-v", "error", "-i", rec.URL, "-f", "null", "-"); err != nil || errOut != "" {
		t.Errorf("decoding the recording: %v %s", err, errOut)
	}
	t.Logf("recorded %d segments, %.2f s (ffprobe %.2f s)", rec.Segments, rec.Duration, dur)
	metrics := httpGetBody(t, "http://127.0.0.1:"+strconv.Itoa(s.apiPort)+"/metrics")
	if !strings.Contains(metrics, "livefuse_recording_segments_uploaded_total "+strconv.Itoa(rec.Segments)+"\n") ||
		!strings.Contains(metrics, "livefuse_recording_sink_ok 1\n") {
		t.Errorf("metrics lack the recording figures")
	}

	// The control API switches recording of a live stream off: the session
	// ends (VOD) and the status no longer shows recording; the stream plays on.
	push(t, s.rtmpURL("rec", "token=rectoken"), true)
	var st recStreamStatus
	recPoll(t, 20*time.Second, "second session recording", func() bool {
		st = recStreamStatus{}
		s.api("GET", "/streams/live/rec", nil, &st)
		return st.Live != nil && st.Live.Recording != nil && st.Live.Recording.Segments >= 1
	})
	off := false
	if code, err := s.api("PATCH", "/streams/live/rec", map[string]any{"record": off}, nil); err != nil || code != 200 {
		t.Fatalf("PATCH record=false: %d %v", code, err)
	}
	recPoll(t, 10*time.Second, "recording off in the status", func() bool {
		st = recStreamStatus{}
		s.api("GET", "/streams/live/rec", nil, &st)
		return st.Live != nil && st.Live.Recording == nil
	})
	var list2 recordingList
	recPoll(t, 10*time.Second, "second session ended", func() bool {
		list2 = recordingList{}
		s.api("GET", "/recordings?stream=live/rec", nil, &list2)
		return len(list2.Recordings) == 2 && !list2.Recordings[0].Live && list2.Recordings[0].Stopped == ""
	})
	waitLive(t, s.flvURL("rec"), 5*time.Second)
}

// waitRecording polls the listing until the stream has one ended session
// whose segments are all stored.
func waitRecording(t *testing.T, s *server, within time.Duration) recordingList {
	t.Helper()
	var list recordingList
	recPoll(t, within, "recording listed as ended", func() bool {
		list = recordingList{}
		code, err := s.api("GET", "/recordings?stream=live/rec", nil, &list)
		return err == nil && code == 200 && len(list.Recordings) == 1 && !list.Recordings[0].Live
	})
	return list
}

// TestRecordingSpoolSurvivesKill: with MinIO down, segments wait in the
// spool; livefuse is killed with SIGKILL; after a restart (MinIO back) the
// spooled segments are uploaded with the sizes and checksums the spool
// recorded.
func TestRecordingSpoolSurvivesKill(t *testing.T) {
	m := startMinio(t)
	m.makeBucket(t, "vod")
	m.stop()
	s := startServer(t, recordingYAML(m, "vod", minioPass)+recStreamYAML)

	ff := push(t, s.rtmpURL("rec", "token=rectoken"), true)
	var st recStreamStatus
	recPoll(t, 20*time.Second, "3 segments pending", func() bool {
		st = recStreamStatus{}
		s.api("GET", "/streams/live/rec", nil, &st)
		return st.Live != nil && st.Live.Recording != nil && st.Live.Recording.Pending >= 3
	})
	if r := st.Live.Recording; r.State != "recording" || !strings.Contains(r.Error, "unreachable") {
		t.Errorf("stream status while MinIO is down: %+v; want recording with the store error", *r)
	}
	time.Sleep(1200 * time.Millisecond) // into the next segment
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	syscall.Kill(-ff.Process.Pid, syscall.SIGKILL)

	// What the spool holds after the kill.
	manifests, _ := filepath.Glob(filepath.Join(s.dir, "data", "recording-spool", "live", "rec", "*", "session.json"))
	if len(manifests) != 1 {
		t.Fatalf("%d sessions in the spool, want 1", len(manifests))
	}
	b, err := os.ReadFile(manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	var spooled struct {
		Session  string `json:"session"`
		Segments []struct {
			File     string `json:"file"`
			Size     int64  `json:"size"`
			SHA256   string `json:"sha256"`
			Uploaded bool   `json:"uploaded"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(b, &spooled); err != nil {
		t.Fatal(err)
	}
	waiting := 0
	for _, seg := range spooled.Segments {
		if !seg.Uploaded {
			waiting++
		}
	}
	if waiting < 3 {
		t.Fatalf("%d segments waiting in the spool after the kill, want 3 or more; manifest %s", waiting, b)
	}
	// The segment being written when the process died.
	var partial int64
	if fi, err := os.Stat(filepath.Join(filepath.Dir(manifests[0]), "open-segment.ts.part")); err == nil {
		partial = fi.Size()
	}

	m.start()
	s.start()
	list := waitRecording(t, s, 30*time.Second)
	rec := list.Recordings[0]
	salvaged := rec.Segments - len(spooled.Segments)
	if rec.Session != spooled.Session || salvaged < 0 || salvaged > 1 {
		t.Fatalf("listing %+v, want session %s with %d segments (+1 salvaged)", rec, spooled.Session, len(spooled.Segments))
	}
	if partial > 64<<10 && salvaged != 1 {
		t.Errorf("the open segment (%d bytes) was not salvaged", partial)
	}
	prefix := "live/rec/" + rec.Session + "/"
	objs := m.objects(t, "vod", prefix)
	for _, seg := range spooled.Segments {
		size, ok := objs[prefix+seg.File]
		if !ok || size != seg.Size {
			t.Fatalf("%s: in MinIO %v with %d bytes, spooled %d", seg.File, ok, size, seg.Size)
		}
		sum := sha256.Sum256(m.get(t, "vod", prefix+seg.File))
		if hex.EncodeToString(sum[:]) != seg.SHA256 {
			t.Fatalf("%s: SHA-256 differs from the spool's record", seg.File)
		}
	}
	pl := string(m.get(t, "vod", prefix+"index.m3u8"))
	if n := strings.Count(pl, "#EXTINF:"); n != rec.Segments || !strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("playlist lists %d of %d segments:\n%s", n, rec.Segments, pl)
	}
	if _, errOut, err := recRun(t, time.Minute, "ffmpeg", "-nostdin", "-v", "error", "-i", rec.URL, "-f", "null", "-"); err != nil || errOut != "" {
		t.Errorf("decoding the recording: %v %s", err, errOut)
	}
	if rec.Stopped != "node restarted" {
		t.Errorf("stopped %q, want \"node restarted\"", rec.Stopped)
	}
	recPoll(t, 5*time.Second, "spool emptied", func() bool {
		left, _ := filepath.Glob(filepath.Join(s.dir, "data", "recording-spool", "live", "rec", "*", "*"))
		return len(left) == 0
	})
	t.Logf("%d segments spooled before SIGKILL (%d waiting), all uploaded after the restart; open segment of %d bytes salvaged: %v",
		len(spooled.Segments), waiting, partial, salvaged == 1)
}

// TestRecordingBadStore: wrong credentials are reported at start and in the
// stream status, and the stream is still served.
func TestRecordingBadStore(t *testing.T) {
	parallel(t)
	m := startMinio(t)
	m.makeBucket(t, "vod")
	s := startServer(t, recordingYAML(m, "vod", "wrong-secret")+recStreamYAML)
	recPoll(t, 10*time.Second, "start-up report", func() bool {
		return strings.Contains(s.logs(), "recording sink is not usable") && strings.Contains(s.logs(), "credentials refused")
	})
	push(t, s.rtmpURL("rec", "token=rectoken"), true)
	waitLive(t, s.flvURL("rec"), 15*time.Second)
	p := playFLV(t, s.flvURL("rec"), false)
	p.waitFrames(t, 50, 10*time.Second)

	var st recStreamStatus
	recPoll(t, 15*time.Second, "recording error in the stream status", func() bool {
		st = recStreamStatus{}
		s.api("GET", "/streams/live/rec", nil, &st)
		return st.Live != nil && st.Live.Recording != nil && strings.Contains(st.Live.Recording.Error, "credentials refused")
	})
	var list recordingList
	if code, err := s.api("GET", "/recordings?stream=live/rec", nil, &list); err != nil || code != 502 {
		t.Errorf("listing with a refused store: %d %v, want 502", code, err)
	}
	t.Logf("stream status: %+v", *st.Live.Recording)
}

// TestRecordingRenditions: with recording.renditions, the renditions of a
// recorded stream are recorded too (local sink, served by the node).
func TestRecordingRenditions(t *testing.T) {
	parallel(t)
	s := startServer(t, `transcode:
  workers: 1
  profiles:
    - name: low
      renditions:
        - {name: low, width: 320, height: 180, video_kbps: 300, preset: ultrafast}
recording:
  segment_duration: 2s
  session_gap: 2s
  renditions: true
streams:
  - {app: live, name: recr, publish_token: rtok, profile: low, record: true}
`)
	push(t, s.rtmpURL("recr", "token=rtok"), false).Wait()
	for _, tc := range []struct{ stream, size string }{{"recr", "640,360"}, {"recr_low", "320,180"}} {
		var list recordingList
		recPoll(t, 30*time.Second, tc.stream+" recording ended", func() bool {
			list = recordingList{}
			code, err := s.api("GET", "/recordings?stream=live/"+tc.stream, nil, &list)
			return err == nil && code == 200 && len(list.Recordings) == 1 && !list.Recordings[0].Live
		})
		rec := list.Recordings[0]
		out, errOut, err := recRun(t, time.Minute, "ffprobe", "-v", "error", "-select_streams", "v:0",
			"-show_entries", "stream=width,height:format=duration", "-of", "csv=p=0", rec.URL)
		if err != nil {
			t.Fatalf("ffprobe %s: %v: %s", rec.URL, err, errOut)
		}
		lines := strings.Fields(out)
		if len(lines) < 2 || lines[0] != tc.size {
			t.Errorf("%s: ffprobe %q, want %s", tc.stream, out, tc.size)
		}
		t.Logf("%s: %d segments, %.2f s, ffprobe %q", tc.stream, rec.Segments, rec.Duration, strings.Join(lines, " "))
	}
}

func httpGetBody(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, b)
	}
	return string(b)
}

// TestRecordingOtherUnit: a unit left out of recording.units records
// nothing, and still answers the listing.
func TestRecordingOtherUnit(t *testing.T) {
	parallel(t)
	s := startServer(t, `recording:
  segment_duration: 1s
  units: [b]
streams:
  - {name: rec, publish_token: rectoken, record: true}
`)
	push(t, s.rtmpURL("rec", "token=rectoken"), true)
	waitLive(t, s.flvURL("rec"), 15*time.Second)
	time.Sleep(3 * time.Second) // three segments, were it recording
	var st recStreamStatus
	if _, err := s.api("GET", "/streams/live/rec", nil, &st); err != nil || st.Live == nil || st.Live.Recording != nil {
		t.Fatalf("stream status %+v (%v): want live, not recording", st.Live, err)
	}
	var list recordingList
	if code, err := s.api("GET", "/recordings?stream=live/rec", nil, &list); err != nil || code != 200 || len(list.Recordings) != 0 {
		t.Fatalf("listing %d %v %+v, want none", code, err, list)
	}
	if left, _ := filepath.Glob(filepath.Join(s.dir, "data", "recording-spool", "*", "*", "*", "*")); len(left) != 0 {
		t.Fatalf("spool files on a unit that does not record: %v", left)
	}
	if !strings.Contains(s.logs(), "this unit does not record") {
		t.Errorf("no start-up note that this unit does not record")
	}
}
