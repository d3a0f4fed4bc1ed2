package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

const demoStreams = `streams:
  - {app: live, name: demo, publish_token: "pubtok"}
  - {app: live, name: other, publish_token: "othertok"}
`

// sourceFrames is the framemd5 of the clip itself: the reference every
// passthrough is compared with.
func sourceFrames(t *testing.T) []frame {
	return framemd5(t, time.Minute, "-i", env.clip)
}

// TestPassthroughBitExact pushes the clip (-c copy) with each ingest protocol
// and checks that players get the very same packets, byte for byte. RTP
// over UDP may lose datagrams on a busy host (there is no retransmission;
// the server's socket buffer, rtsp.udp_read_buffer, only makes it rarer):
// there, every packet that arrives must be bit-exact and in order, and a
// lost one is not a failure (assertBitExactLossy).
func TestPassthroughBitExact(t *testing.T) {
	want := sourceFrames(t)
	cases := []struct {
		name   string
		push   func(s *server) string
		extra  []string
		play   func(s *server) string
		before []string
		lossy  bool // the transport may lose packets
	}{
		{name: "rtmp-to-flv", push: func(s *server) string { return s.rtmpURL("demo", "token=pubtok") },
			play: func(s *server) string { return s.flvURL("demo") }},
		{name: "rtmp-to-rtmp", push: func(s *server) string { return s.rtmpURL("demo", "token=pubtok") },
			play: func(s *server) string { return s.rtmpURL("demo", "") }},
		{name: "rtsp-tcp-to-flv", push: func(s *server) string { return s.rtspURL("demo", "token=pubtok") },
			extra: []string{"-rtsp_transport", "tcp"}, play: func(s *server) string { return s.flvURL("demo") }},
		{name: "rtsp-udp-to-flv", push: func(s *server) string { return s.rtspURL("demo", "token=pubtok") },
			extra: []string{"-rtsp_transport", "udp"}, play: func(s *server) string { return s.flvURL("demo") }, lossy: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, demoStreams)
			push(t, tc.push(s), false, tc.extra...)
			waitLive(t, s.flvURL("demo"), 10*time.Second)
			got := framemd5(t, 40*time.Second, "-i", tc.play(s))
			if tc.lossy {
				assertBitExactLossy(t, want, got, 0.9)
				return
			}
			assertBitExact(t, want, got, 0.9)
		})
	}
}

// TestHLS checks the HLS output: h264 + aac, segments decode, the playlist advances.
func TestHLS(t *testing.T) {
	parallel(t)
	s := startServer(t, demoStreams)
	push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 10*time.Second)

	seq1 := waitMediaSequence(t, s.hlsURL("demo"), -1, 15*time.Second)
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", s.hlsURL("demo")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v: %s", err, out)
	}
	codecs := strings.Fields(string(out))
	if !contains(codecs, "h264") || !contains(codecs, "aac") {
		t.Fatalf("ffprobe codecs %q, want h264 and aac", codecs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dec := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error",
		"-i", s.hlsURL("demo"), "-t", "3", "-f", "null", "-")
	if out, err := dec.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("decoding HLS: %v: %s", err, out)
	}
	seq2 := waitMediaSequence(t, s.hlsURL("demo"), seq1, 15*time.Second)
	t.Logf("media sequence advanced %d -> %d", seq1, seq2)
	checkSegmentsOnDisk(t, s, "demo")
}

// checkSegmentsOnDisk checks the default HLS store: the stream's finished
// segments are files under data_dir/hls, and each is byte for byte what a
// player gets for it.
func checkSegmentsOnDisk(t *testing.T, s *server, name string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.dir, "data", "hls", "live."+name+".*", "seg*.ts"))
	if err != nil || len(files) < 2 {
		t.Fatalf("segment files of %s under data_dir/hls: %v (%v), want the finished segments", name, files, err)
	}
	base := strings.TrimSuffix(s.hlsURL(name), "index.m3u8")
	compared := 0
	for _, f := range files {
		onDisk, err := os.ReadFile(f)
		if err != nil {
			continue // let go meanwhile
		}
		resp, err := http.Get(base + filepath.Base(f))
		if err != nil {
			t.Fatal(err)
		}
		served, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue // out of the window meanwhile
		}
		if !bytes.Equal(onDisk, served) {
			t.Fatalf("%s: %d bytes on disk, %d served", filepath.Base(f), len(onDisk), len(served))
		}
		compared++
	}
	if compared < 2 {
		t.Fatalf("compared %d of %d segment files with what players get, want at least 2", compared, len(files))
	}
	t.Logf("%d segments on disk, the same bytes as served", compared)
}

var mediaSeqRe = regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:(\d+)`)

// waitMediaSequence fetches the media playlist (following the multivariant
// one) until its media sequence is above after.
func waitMediaSequence(t *testing.T, url string, after int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for time.Now().Before(deadline) {
		body, err := httpGet(url)
		if err == nil {
			// A multivariant playlist names the media playlist on its first URI line.
			if !strings.Contains(body, "#EXTINF") {
				for _, line := range strings.Split(body, "\n") {
					if line != "" && !strings.HasPrefix(line, "#") {
						base := url[:strings.LastIndex(url, "/")+1]
						body, err = httpGet(base + strings.TrimSpace(line))
						break
					}
				}
			}
			if err == nil {
				last = body
				if m := mediaSeqRe.FindStringSubmatch(body); m != nil && strings.Contains(body, "#EXTINF") {
					n, _ := strconv.Atoi(m[1])
					if n > after {
						return n
					}
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("media sequence of %s not above %d within %v; last playlist:\n%s", url, after, within, last)
	return 0
}

func httpGet(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return string(b), err
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestFirstFrameFromGOPCache: a player joining mid-GOP gets metadata and
// sequence headers, then a keyframe, at once.
func TestFirstFrameFromGOPCache(t *testing.T) {
	parallel(t)
	s := startServer(t, demoStreams)
	push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 10*time.Second)
	time.Sleep(3 * time.Second) // well inside the second GOP
	for i := 0; i < 3; i++ {
		start := time.Now()
		p := playFLV(t, s.flvURL("demo"), false)
		p.waitFrames(t, 1, 5*time.Second)
		firstFrame := p.arrivals[0].Sub(start)
		p.stop()
		var sawVideoHeader, sawAudioHeader bool
		for _, pkt := range p.packets {
			if pkt.Kind == av.KindVideo && pkt.Header {
				sawVideoHeader = true
			}
			if pkt.Kind == av.KindAudio && pkt.Header {
				sawAudioHeader = true
			}
			if pkt.Kind == av.KindVideo && !pkt.Header {
				if !pkt.Key {
					t.Fatalf("first video frame is not a keyframe")
				}
				break
			}
		}
		if !sawVideoHeader || !sawAudioHeader {
			t.Fatalf("sequence headers before the first frame: video %v audio %v", sawVideoHeader, sawAudioHeader)
		}
		t.Logf("join %d: first frame after %v", i, firstFrame)
		time.Sleep(700 * time.Millisecond)
	}
}

// TestRegistryPersistsAndApplies: a stream created through the API survives
// a restart, and a token change applies without one.
func TestRegistryPersistsAndApplies(t *testing.T) {
	parallel(t)
	s := startServer(t, "")
	code, err := s.api("POST", "/streams", map[string]any{"app": "live", "name": "cam", "publish_token": "first"}, nil)
	if err != nil || code != 201 {
		t.Fatalf("create: %d %v", code, err)
	}
	s.stop()
	s.start()
	var st map[string]any
	if code, err := s.api("GET", "/streams/live/cam", nil, &st); err != nil || code != 200 {
		t.Fatalf("after restart: %d %v", code, err)
	}
	if st["publish_token"] != "first" {
		t.Fatalf("after restart: token %v", st["publish_token"])
	}
	if code, err := s.api("PATCH", "/streams/live/cam", map[string]any{"publish_token": "second"}, nil); err != nil || code != 200 {
		t.Fatalf("patch: %d %v", code, err)
	}
	// The old token is refused, the new one accepted, with no restart.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := pushOnce(t, s.rtmpURL("cam", "token=first")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("old token still accepted 5 s after the change")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := pushOnce(t, s.rtmpURL("cam", "token=second")); err != nil {
		t.Fatalf("new token refused: %v", err)
	}
}

// pushOnce pushes one second of the clip and reports whether ffmpeg succeeded.
func pushOnce(t *testing.T, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-hide_banner", "-nostdin", "-v", "error", "-i", env.clip, "-t", "1", "-c", "copy"}
	if strings.HasPrefix(url, "rtsp://") {
		args = append(args, "-f", "rtsp", url)
	} else {
		args = append(args, "-f", "flv", url)
	}
	out, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// TestBadInput: wrong tokens are refused, garbage on the protocol ports is
// dropped, and a player of a good stream never notices.
func TestBadInput(t *testing.T) {
	s := startServer(t, demoStreams)
	pub := push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 10*time.Second)
	p := playFLV(t, s.flvURL("demo"), false)
	p.waitFrames(t, 10, 5*time.Second)
	from := time.Now()

	for _, u := range []string{s.rtmpURL("other", "token=wrong"), s.rtmpURL("other", ""), s.rtspURL("other", "token=wrong")} {
		if err := pushOnce(t, u); err == nil {
			t.Errorf("push to %s with a bad token was accepted", u)
		}
	}
	// A second publisher to the live feed is refused; the first is untouched.
	if err := pushOnce(t, s.rtmpURL("demo", "token=pubtok")); err == nil {
		t.Errorf("second publisher to a live feed was accepted")
	}

	junk := make([]byte, 64<<10)
	rand.Read(junk)
	rtmpHandshakeThenHugeChunk := append([]byte{3}, make([]byte, 1536)...)
	sends := []struct {
		port int
		data []byte
	}{
		{s.rtmp, junk},
		{s.rtsp, junk},
		{s.rtsp, []byte("OPTIONS * RTSP/1.0\r\nCSeq: x\r\nContent-Length: 99999999999\r\n\r\n")},
		{s.rtsp, []byte("ANNOUNCE rtsp://127.0.0.1/live/demo RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\nzzzzz")},
		{s.rtmp, []byte{3}},
		{s.rtmp, rtmpHandshakeThenHugeChunk},
	}
	for _, snd := range sends {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", snd.port), 2*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", snd.port, err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(snd.data)
		io.Copy(io.Discard, c) // the server should answer or close; the deadline bounds it
		c.Close()
	}
	time.Sleep(2 * time.Second)
	if gap := p.maxGap(from); gap > time.Second {
		t.Errorf("player's largest gap during the bad input: %v, want < 1 s", gap)
	}
	if pub.ProcessState != nil {
		t.Errorf("the good publisher exited: %v", pub.ProcessState)
	}
	// The server still takes new players.
	p2 := playFLV(t, s.flvURL("demo"), false)
	p2.waitFrames(t, 5, 5*time.Second)
}

// TestSlowReader: a player that stops reading slows neither the publisher
// nor the other players.
func TestSlowReader(t *testing.T) {
	s := startServer(t, demoStreams)
	pub := push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 10*time.Second)
	good1 := playFLV(t, s.flvURL("demo"), false)
	good1.waitFrames(t, 5, 5*time.Second)

	// Stalled readers: request the stream, then never read.
	var stalled []net.Conn
	for i := 0; i < 3; i++ {
		d := net.Dialer{Control: nil}
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.http))
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /live/demo.flv HTTP/1.1\r\nHost: x\r\n\r\n")
		stalled = append(stalled, c)
	}
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	from := time.Now()
	good2 := playFLV(t, s.flvURL("demo"), false)
	time.Sleep(12 * time.Second)
	for i, p := range []*flvPlayer{good1, good2} {
		gap := p.maxGap(from)
		t.Logf("player %d: %d frames, largest gap %v", i, p.frames(), gap)
		if gap > time.Second {
			t.Errorf("player %d largest gap %v with stalled readers, want < 1 s", i, gap)
		}
	}
	// 12 s at 25 fps: the second player must have about 300 frames.
	if n := good2.frames(); n < 12*25*8/10 {
		t.Errorf("player 2 got %d frames in 12 s; the stream was slowed", n)
	}
	if pub.ProcessState != nil {
		t.Errorf("publisher exited: %v", pub.ProcessState)
	}
	var st map[string]any
	if code, err := s.api("GET", "/streams/live/demo", nil, &st); err == nil && code == 200 {
		b, _ := json.Marshal(st)
		t.Logf("status: %s", b)
	}
}
