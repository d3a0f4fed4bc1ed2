package e2e

import (
	"bufio"
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// firstSignal reads the HTTP-FLV at u until its first onEncryption tag and
// reports whether it announces encryption; ok is false when the first 300
// packets carry none (a clear output).
func firstSignal(t *testing.T, u string) (encrypted, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %v", u, err, resp)
	}
	defer resp.Body.Close()
	r, err := av.NewFLVReader(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("reading %s: %v", u, err)
		}
		if p.Kind == av.KindData && encryption.IsSignal(p.Data) {
			sg, err := encryption.ParseSignal(p.Data)
			if err != nil {
				t.Fatal(err)
			}
			return sg.Encrypted, true
		}
	}
	return false, false
}

var keyURIRe = regexp.MustCompile(`#EXT-X-KEY:METHOD=SAMPLE-AES,URI="([^"]+)"`)

// TestEncryptionCoversRenditions: encryption on for a stream covers every
// picture of it — its renditions over HTTP-FLV, its ABR HLS variants (whose
// keys open with the stream's own play token), and the watermarked source
// that players of a watermark_source stream get instead of the original.
func TestEncryptionCoversRenditions(t *testing.T) {
	parallel(t)
	logo := filepath.Join(t.TempDir(), "logo.png")
	if err := ffmpegCmd(t, "-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", "-y", logo).Wait(); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, `transcode:
  workers: 2
  profiles:
    - name: one
      renditions:
        - {name: 180p, width: 320, height: 180, video_kbps: 200, preset: ultrafast}
    - name: wm
      watermark_source: true
      source_kbps: 600
      watermark: {image: "`+logo+`", position: top-left, margin: 4}
streams:
  - {name: encr, publish_token: pub, play_key: `+encPlayKey+`, encryption: true, profile: one}
  - {name: encw, publish_token: pub, play_key: `+encPlayKey+`, encryption: true, profile: wm}
`)
	clip := tcClip(t, "640x360", 4)
	tcPush(t, clip, s.rtmpURL("encr", "token=pub"))
	tcPush(t, clip, s.rtmpURL("encw", "token=pub"))
	waitLive(t, signed(s.flvURL("encr_180p"), "/live/encr_180p.flv"), 30*time.Second)
	waitLive(t, signed(s.flvURL("encw_source"), "/live/encw_source.flv"), 30*time.Second)

	for _, tc := range []struct{ name, path string }{
		{"rendition", "/live/encr_180p.flv"},
		{"source", "/live/encr.flv"},
		{"watermarked source played as the stream", "/live/encw.flv"},
	} {
		enc, ok := firstSignal(t, signed(strings.TrimSuffix(s.flvURL("x"), "/live/x.flv")+tc.path, tc.path))
		if !ok || !enc {
			t.Errorf("%s (%s): onEncryption tag %v, encrypted %v; want an encrypted output", tc.name, tc.path, ok, enc)
		}
	}
	if logs := s.logs(); !strings.Contains(logs, `msg="stream live" stream=live/encw_source encrypted=true`) {
		t.Errorf("the watermarked source did not go live encrypted:\n%s", s.tail(30))
	}

	// The ABR variant's playlist is SAMPLE-AES, and its key opens with the
	// token signed for the stream's own index.m3u8.
	base := strings.TrimSuffix(s.hlsURL("encr"), "index.m3u8")
	var pl string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		body, err := httpGet(signed(base+"v/180p/index.m3u8", "/live/encr/index.m3u8"))
		if err == nil && keyURIRe.MatchString(body) {
			pl = body
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	m := keyURIRe.FindStringSubmatch(pl)
	if m == nil {
		t.Fatalf("the 180p variant's playlist is not SAMPLE-AES:\n%s", pl)
	}
	keyURL := m[1]
	if strings.HasPrefix(keyURL, "/") {
		keyURL = strings.TrimSuffix(s.flvURL("x"), "/live/x.flv") + keyURL
	}
	if key := encGet(t, keyURL, 200); len(key) != 16 {
		t.Errorf("variant key: %d bytes, want 16", len(key))
	}
	noTok, _, _ := strings.Cut(keyURL, "?")
	encGet(t, noTok, 403)
}

// TestEncryptionReachesEarlyPlayers: a player that joined while the
// stream was clear (and never encrypted) gets clear FLV with no signal
// tags, and is encrypted from the next keyframe once encryption is turned
// on — without reconnecting.
func TestEncryptionReachesEarlyPlayers(t *testing.T) {
	parallel(t)
	// Open play without a play_key: its keys go to anyone, which the
	// operator must allow explicitly.
	s := startServer(t, `encryption: {open_key_access: true}
streams:
  - {name: late, publish_token: pub}
`)
	push(t, s.rtmpURL("late", "token=pub"), true)
	waitLive(t, s.flvURL("late"), 15*time.Second)
	stop := signals(t, context.Background(), s.flvURL("late"))
	time.Sleep(2 * time.Second)
	on := true
	if code, err := s.api("PATCH", "/streams/live/late", map[string]any{"encryption": on}, nil); err != nil || code != 200 {
		t.Fatalf("PATCH encryption: %d %v", code, err)
	}
	time.Sleep(5 * time.Second) // at least one keyframe (2 s GOP)
	counts := stop()
	if counts["tags"] == 0 {
		t.Fatalf("the early player got no onEncryption tag after encryption was turned on: %v", counts)
	}
	if counts["on→off"] != 0 {
		t.Errorf("signal changes %v: the clear stream should carry no off signal before the first on", counts)
	}
	// A player joining now is encrypted from its first frame.
	if enc, ok := firstSignal(t, s.flvURL("late")); !ok || !enc {
		t.Errorf("a new player: signal %v encrypted %v, want encrypted", ok, enc)
	}
}
