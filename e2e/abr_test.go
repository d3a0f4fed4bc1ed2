package e2e

import (
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hlspl "github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/livefuse/livefuse/authkey"
)

const abrYAML = `transcode:
  workers: 2
  profiles:
    - name: abr
      gop: 1s
      renditions:
        - {name: 480p, width: 854, height: 480, video_kbps: 600, preset: ultrafast}
        - {name: 360p, width: 640, height: 360, video_kbps: 300, preset: ultrafast}
streams:
  - {app: live, name: abr, publish_token: "atok", profile: abr}
  - {app: live, name: abrk, publish_token: "ktok", play_key: "pk", profile: abr}
`

// abrMultivariant polls the playlist at u until it is a multivariant
// playlist with n variants, and returns it.
func abrMultivariant(t *testing.T, u string, n int, within time.Duration) *hlspl.Multivariant {
	t.Helper()
	var m *hlspl.Multivariant
	last := ""
	tcPoll(t, within, fmt.Sprintf("multivariant playlist with %d variants", n), func() bool {
		body, err := httpGet(u)
		last = body
		if err != nil {
			return false
		}
		var pl hlspl.Multivariant
		if pl.Unmarshal([]byte(body)) != nil || len(pl.Variants) != n {
			return false
		}
		m = &pl
		return true
	})
	if m == nil {
		t.Fatalf("last playlist:\n%s", last)
	}
	t.Logf("%s:\n%s", u, last)
	return m
}

// variantURL resolves a variant's URI against the multivariant playlist's URL.
func variantURL(t *testing.T, master string, v *hlspl.MultivariantVariant) string {
	t.Helper()
	b, err := url.Parse(master)
	if err != nil {
		t.Fatal(err)
	}
	u, err := b.Parse(v.URI)
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

// decodeErrors decodes seconds of input with `ffmpeg -v error` and returns
// what it reported (empty: a clean decode).
func decodeErrors(t *testing.T, input string, seconds int) string {
	t.Helper()
	out, err := exec.Command("timeout", "30", "ffmpeg", "-hide_banner", "-nostdin", "-v", "error",
		"-i", input, "-t", fmt.Sprint(seconds), "-f", "null", "-").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestABRLadder: a 960x540 stream with a 480p/360p ladder. Its
// index.m3u8 becomes a multivariant playlist listing the source and both
// renditions with their RESOLUTION, CODECS, FRAME-RATE and BANDWIDTH;
// ffprobe reads every variant at its size and ffmpeg decodes a few
// seconds of each without an error.
func TestABRLadder(t *testing.T) {
	parallel(t)
	s := startServer(t, abrYAML)
	tcPush(t, tcClip(t, "960x540", 4), s.rtmpURL("abr", "token=atok"))
	waitLive(t, s.flvURL("abr"), 10*time.Second)
	started := time.Now()
	m := abrMultivariant(t, s.hlsURL("abr"), 3, 30*time.Second)
	t.Logf("full ladder listed %v after the source went live", time.Since(started).Round(100*time.Millisecond))
	want := []struct{ uri, res string }{
		{"v/source/index.m3u8", "960x540"}, {"v/480p/index.m3u8", "854x480"}, {"v/360p/index.m3u8", "640x360"},
	}
	for i, w := range want {
		v := m.Variants[i]
		if v.URI != w.uri || v.Resolution != w.res {
			t.Errorf("variant %d: %s %s, want %s %s", i, v.URI, v.Resolution, w.uri, w.res)
		}
		if len(v.Codecs) != 2 || !strings.HasPrefix(v.Codecs[0], "avc1.") || v.Codecs[1] != "mp4a.40.2" {
			t.Errorf("variant %d: CODECS %v", i, v.Codecs)
		}
		if v.FrameRate == nil || *v.FrameRate < 24 || *v.FrameRate > 26 {
			t.Errorf("variant %d: FRAME-RATE %v, want 25", i, v.FrameRate)
		}
		if v.Bandwidth < 100_000 {
			t.Errorf("variant %d: BANDWIDTH %d", i, v.Bandwidth)
		}
	}
	if !(m.Variants[1].Bandwidth < m.Variants[0].Bandwidth && m.Variants[2].Bandwidth < m.Variants[1].Bandwidth) {
		t.Errorf("BANDWIDTH does not fall down the ladder: %d %d %d", m.Variants[0].Bandwidth, m.Variants[1].Bandwidth, m.Variants[2].Bandwidth)
	}
	for i, w := range want {
		vu := variantURL(t, s.hlsURL("abr"), m.Variants[i])
		if got := ffprobeVideoURL(t, vu); got != "h264,"+strings.Replace(w.res, "x", ",", 1) {
			t.Errorf("%s: ffprobe %q, want h264 at %s", vu, got, w.res)
		}
		if errs := decodeErrors(t, vu, 3); errs != "" {
			t.Errorf("%s: ffmpeg decode: %s", vu, errs)
		}
	}
	// Without renditions nothing changes: a rendition's own index.m3u8 is a media playlist.
	if body, err := httpGet(s.hlsURL("abr_360p")); err != nil || !strings.Contains(body, "#EXTINF") {
		t.Errorf("rendition's own playlist: %v\n%s", err, body)
	}
}

// TestABRPlayKey: the variants of a stream with a play key need the key
// signed for /live/NAME/index.m3u8, and accept it (carried into every
// variant and segment URI): ffmpeg decodes a variant through it.
func TestABRPlayKey(t *testing.T) {
	parallel(t)
	s := startServer(t, abrYAML)
	tcPush(t, tcClip(t, "960x540", 4), s.rtmpURL("abrk", "token=ktok"))
	key := "auth_key=" + url.QueryEscape(authkey.Sign("/live/abrk/index.m3u8", "pk", time.Now().Add(10*time.Minute), "0", "0"))
	master := s.hlsURL("abrk") + "?" + key
	m := abrMultivariant(t, master, 3, 40*time.Second)
	if _, err := httpGet(s.hlsURL("abrk")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("multivariant without a key: %v", err)
	}
	for _, v := range m.Variants {
		if !strings.HasSuffix(v.URI, "?"+key) {
			t.Fatalf("variant URI %q does not carry the key", v.URI)
		}
		vu := variantURL(t, master, v)
		body, err := httpGet(vu)
		if err != nil {
			t.Fatalf("signed variant %s: %v", vu, err)
		}
		bare, _, _ := strings.Cut(vu, "?")
		if _, err := httpGet(bare); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("variant without a key: %v", err)
		}
		var seg string
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "seg") {
				seg = line
			}
		}
		if !strings.HasSuffix(seg, "?"+key) {
			t.Fatalf("segment URI %q does not carry the key:\n%s", seg, body)
		}
		segURL := bare[:strings.LastIndex(bare, "/")+1] + seg
		if _, err := httpGet(segURL); err != nil {
			t.Errorf("signed segment: %v", err)
		}
		segBare, _, _ := strings.Cut(segURL, "?")
		if _, err := httpGet(segBare); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("segment without a key: %v", err)
		}
		// A key signed for the variant's own path is not one for the stream.
		own := bare + "?auth_key=" + url.QueryEscape(authkey.Sign(strings.TrimPrefix(bare, fmt.Sprintf("http://127.0.0.1:%d", s.http)), "pk", time.Now().Add(time.Minute), "0", "0"))
		if _, err := httpGet(own); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("variant with a key for its own path: %v", err)
		}
	}
	vu := variantURL(t, master, m.Variants[2])
	if errs := decodeErrors(t, vu, 2); errs != "" {
		t.Errorf("ffmpeg through the signed 360p variant: %s", errs)
	}
}

// TestABRWatermarkedSource: with watermark_source, players of the stream
// get the watermarked rendition over HTTP-FLV, HLS and RTMP: a frame has
// the opaque red watermark at its position, where the pushed clip has none.
func TestABRWatermarkedSource(t *testing.T) {
	parallel(t)
	logo := filepath.Join(t.TempDir(), "red.png")
	if err := ffmpegCmd(t, "-f", "lavfi", "-i", "color=c=red:s=48x48", "-frames:v", "1", "-y", logo).Wait(); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, `transcode:
  workers: 1
  profiles:
    - name: wm
      watermark_source: true
      source_kbps: 800
      watermark: {image: "`+logo+`", position: top-left, margin: 8}
streams:
  - {app: live, name: wm, publish_token: "wtok", profile: wm}
`)
	clip := tcClip(t, "640x360", 4)
	tcPush(t, clip, s.rtmpURL("wm", "token=wtok"))
	waitLive(t, s.flvURL("wm_source"), 20*time.Second)
	// The mean colour of a 16x16 patch inside the watermark (8..56).
	patch := func(input string) string {
		t.Helper()
		out, err := exec.Command("timeout", "30", "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", input,
			"-frames:v", "1", "-vf", "crop=16:16:24:24,scale=1:1:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "-").Output()
		if err != nil || len(out) != 3 {
			t.Fatalf("frame of %s: %v (%d bytes)", input, err, len(out))
		}
		return fmt.Sprintf("%d,%d,%d", out[0], out[1], out[2])
	}
	red := func(rgb string) bool {
		var r, g, b int
		fmt.Sscanf(rgb, "%d,%d,%d", &r, &g, &b)
		return r > 200 && g < 70 && b < 70
	}
	if c := patch(clip); red(c) {
		t.Fatalf("the pushed clip is red at the watermark (%s): the test cannot tell", c)
	}
	waitMediaSequence(t, s.hlsURL("wm"), -1, 20*time.Second)
	for _, u := range []string{s.flvURL("wm"), s.hlsURL("wm"), s.rtmpURL("wm", "")} {
		c := patch(u)
		t.Logf("%s: RGB %s at the watermark (clip: %s)", u, c, patch(clip))
		if !red(c) {
			t.Errorf("%s: colour %s at the watermark: the original is played, not the watermarked source", u, c)
		}
	}
}

// TestABRQueuedLadder: a stream whose ladder waits for a worker (the pool
// is full) has a multivariant playlist listing only its source, so its
// index.m3u8 keeps its kind; the renditions appear once the ladder runs.
func TestABRQueuedLadder(t *testing.T) {
	parallel(t)
	s := startServer(t, `transcode:
  workers: 1
  profiles:
    - name: one
      renditions:
        - {name: 180p, width: 320, height: 180, video_kbps: 200, preset: ultrafast}
streams:
  - {app: live, name: qa, publish_token: "atok", profile: one}
  - {app: live, name: qb, publish_token: "btok", profile: one}
`)
	clip := tcClip(t, "640x360", 4)
	stopA := tcPush(t, clip, s.rtmpURL("qa", "token=atok"))
	waitLive(t, s.flvURL("qa_180p"), 15*time.Second)
	tcPush(t, clip, s.rtmpURL("qb", "token=btok"))
	tcPoll(t, 10*time.Second, "qb queued", func() bool { st := s.tcStatus(t, "qb"); return st != nil && st.State == "queued" })
	m := abrMultivariant(t, s.hlsURL("qb"), 1, 15*time.Second)
	if v := m.Variants[0]; v.URI != "v/source/index.m3u8" || v.Resolution != "640x360" {
		t.Fatalf("queued ladder: variant %s %s, want the source", v.URI, v.Resolution)
	}
	if errs := decodeErrors(t, variantURL(t, s.hlsURL("qb"), m.Variants[0]), 2); errs != "" {
		t.Errorf("source variant: %s", errs)
	}
	stopA()
	m = abrMultivariant(t, s.hlsURL("qb"), 2, 20*time.Second)
	if v := m.Variants[1]; v.URI != "v/180p/index.m3u8" || v.Resolution != "320x180" {
		t.Fatalf("after the ladder started: variant %s %s", v.URI, v.Resolution)
	}
}
