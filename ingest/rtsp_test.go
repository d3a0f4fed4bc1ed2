package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// rtspPush runs ffmpeg publishing clip to url with -c copy.
func rtspPush(t *testing.T, clip, url, transport string, realtime bool) (string, error) {
	t.Helper()
	args := []string{"-hide_banner", "-loglevel", "error"}
	if realtime {
		args = append(args, "-re")
	}
	args = append(args, "-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", transport, url)
	return rtspRun(t, 60*time.Second, "ffmpeg", args...)
}

func TestRTSPPublishFFmpeg(t *testing.T) {
	rtspNeedFFmpeg(t)
	tests := []struct {
		name      string
		transport string
		ext       string
		x264      string
		secs      int
		realtime  bool // UDP is paced so loopback buffers never overflow
		tail      rtspTail
	}{
		// SPS/PPS only in the SDP, as x264 writes them for mp4/flv.
		{name: "tcp", transport: "tcp", ext: "mp4", secs: 2, tail: rtspTail{audio: 8}},
		// the control connection idles longer than ReadTimeout while RTP
		// flows over UDP: the idle guard must leave it alone.
		{name: "udp", transport: "udp", ext: "mp4", secs: 3, realtime: true, tail: rtspTail{video: 3, audio: 16}},
		// SPS/PPS in band before every IDR too: they stay in the frames
		// as in ffmpeg's own FLV of the clip.
		{name: "tcp in-band parameter sets", transport: "tcp", ext: "flv", x264: "repeat-headers=1", secs: 2, tail: rtspTail{audio: 8}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clip := rtspClip(t, tc.ext, tc.secs, tc.x264)
			nVideo, nAudio := rtspProbeCounts(t, clip)
			ref := rtspReferenceFLV(t, clip)

			cfg := RTSPConfig{ReadTimeout: 2 * time.Second}
			if tc.transport == "udp" {
				rtp, rtcp := rtspFreeUDPPair(t)
				cfg.UDPRTPAddr = fmt.Sprintf("127.0.0.1:%d", rtp)
				cfg.UDPRTCPAddr = fmt.Sprintf("127.0.0.1:%d", rtcp)
			}
			sink := newRTSPFakeSink()
			srv := rtspStartServer(t, cfg, sink)

			url := "rtsp://" + srv.Addr().String() + "/live/cam?token=secret"
			if out, err := rtspPush(t, clip, url, tc.transport, tc.realtime); err != nil {
				t.Fatalf("ffmpeg push: %v\n%s", err, out)
			}
			w := sink.waitWriter(t, 1, 5*time.Second)
			w.waitClosed(t, 10*time.Second)
			if w.app != "live" || w.name != "cam" || w.feed != "main" || w.src.Protocol != "rtsp" || w.src.Remote == "" {
				t.Errorf("publish: %s/%s %s %+v", w.app, w.name, w.feed, w.src)
			}
			rtspCheckPublish(t, w.snapshot(), ref, nVideo, nAudio, tc.tail)
		})
	}
}

// rtspTail is how many frames may be missing at the end of a push.
type rtspTail struct{ video, audio int }

// rtspCheckPublish compares what the sink got with ffmpeg's own FLV of the
// same clip.
func rtspCheckPublish(t *testing.T, got, ref []*av.Packet, nVideo, nAudio int, tail rtspTail) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("no packets")
	}

	// onMetaData first, with the picture size from the SPS
	if got[0].Kind != av.KindData {
		t.Fatalf("first packet is %v, want onMetaData", got[0].Kind)
	}
	name, meta, err := av.DecodeScript(got[0].Data)
	if err != nil || name != "onMetaData" {
		t.Errorf("metadata: %q %v", name, err)
	} else if meta["width"] != 320.0 || meta["height"] != 240.0 || meta["audiosamplerate"] != 48000.0 {
		t.Errorf("metadata values: %v", meta)
	}

	// sequence headers before frames, identical to ffmpeg's
	var gotVH, gotAH, refVH, refAH *av.Packet
	firstVideo := -1
	for i, p := range got {
		if p.Kind == av.KindVideo && p.Header && gotVH == nil {
			gotVH = p
		}
		if p.Kind == av.KindAudio && p.Header && gotAH == nil {
			gotAH = p
		}
		if p.Kind == av.KindVideo && !p.Header && firstVideo < 0 {
			firstVideo = i
			if gotVH == nil {
				t.Fatal("video frame before the AVC sequence header")
			}
			if !p.Key {
				t.Error("first video frame is not a keyframe")
			}
		}
		if p.Kind == av.KindAudio && !p.Header && gotAH == nil {
			t.Fatal("audio frame before the AAC sequence header")
		}
	}
	for _, p := range ref {
		if p.Kind == av.KindVideo && p.Header {
			refVH = p
		}
		if p.Kind == av.KindAudio && p.Header && len(p.Data) > 0 {
			refAH = p
		}
	}
	if refVH == nil || refAH == nil {
		t.Fatal("reference FLV lacks sequence headers")
	}
	if !bytes.Equal(gotVH.Data, refVH.Data) {
		t.Errorf("AVC header\n got %x\nwant %x", gotVH.Data, refVH.Data)
	}
	if !bytes.Equal(gotAH.Data, refAH.Data) {
		t.Errorf("AAC header: got %x, want %x", gotAH.Data, refAH.Data)
	}

	video, audio := rtspFrames(got, av.KindVideo), rtspFrames(got, av.KindAudio)
	refVideo, refAudio := rtspFrames(ref, av.KindVideo), rtspFrames(ref, av.KindAudio)
	if len(refVideo) != nVideo || len(refAudio) != nAudio {
		t.Fatalf("reference FLV has %d/%d frames, ffprobe counts %d/%d", len(refVideo), len(refAudio), nVideo, nAudio)
	}
	// Every frame ffmpeg sent arrives, in order: the frames are a prefix of
	// the clip's. ffmpeg's RTSP muxer itself never sends the last AAC
	// frames (it does not flush its AAC aggregation buffer, and drops the
	// very last packet even with -muxdelay 0), and over UDP the last
	// datagrams may trail the TEARDOWN; tail tolerates that much.
	if len(video) > nVideo || nVideo-len(video) > tail.video || len(audio) > nAudio || nAudio-len(audio) > tail.audio {
		t.Errorf("got %d video and %d audio frames, ffprobe counts %d and %d (tolerated tail %d/%d)",
			len(video), len(audio), nVideo, nAudio, tail.video, tail.audio)
	}

	// timestamps: DTS never goes back, PTS >= DTS, B-frames reorder
	reordered := false
	for i, p := range video {
		if p.CTS < 0 {
			t.Errorf("video frame %d: negative CTS %v", i, p.CTS)
		}
		if i > 0 {
			if p.DTS < video[i-1].DTS {
				t.Errorf("video frame %d: DTS %v after %v", i, p.DTS, video[i-1].DTS)
			}
			if p.PTS() < video[i-1].PTS() {
				reordered = true
			}
		}
	}
	if !reordered {
		t.Error("no frame presented before its predecessor: B-frames lost their order")
	}
	for i := 1; i < len(audio); i++ {
		if audio[i].DTS <= audio[i-1].DTS {
			t.Errorf("audio frame %d: DTS %v after %v", i, audio[i].DTS, audio[i-1].DTS)
			break
		}
	}

	// bit exactness and presentation times against ffmpeg's FLV
	for i := 0; i < min(len(video), len(refVideo)); i++ {
		if !bytes.Equal(video[i].Data, refVideo[i].Data) {
			t.Errorf("video frame %d payload differs from ffmpeg's FLV (%d vs %d bytes)", i, len(video[i].Data), len(refVideo[i].Data))
			break
		}
		if video[i].Key != refVideo[i].Key {
			t.Errorf("video frame %d: key %v, want %v", i, video[i].Key, refVideo[i].Key)
		}
		gotPTS := video[i].PTS() - video[0].PTS()
		wantPTS := refVideo[i].PTS() - refVideo[0].PTS()
		if d := gotPTS - wantPTS; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("video frame %d: PTS %v from the first, want %v", i, gotPTS, wantPTS)
			break
		}
	}
	for i := 0; i < min(len(audio), len(refAudio)); i++ {
		if !bytes.Equal(audio[i].Data, refAudio[i].Data) {
			t.Errorf("audio frame %d payload differs from ffmpeg's FLV", i)
			break
		}
		// several AAC frames share an RTP packet: each gets its own time
		gotDTS, wantDTS := audio[i].DTS-audio[0].DTS, refAudio[i].DTS-refAudio[0].DTS
		if d := gotDTS - wantDTS; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("audio frame %d: DTS %v from the first, want %v", i, gotDTS, wantDTS)
			break
		}
	}
}

func TestRTSPPublishRefused(t *testing.T) {
	rtspNeedFFmpeg(t)
	clip := rtspClip(t, "mp4", 1, "")
	sink := newRTSPFakeSink()
	srv := rtspStartServer(t, RTSPConfig{}, sink)
	base := "rtsp://" + srv.Addr().String()

	// someone already publishes live/busy main
	first, err := sink.Publish("live", "busy", "main", av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		url      string
		encode   []string // encode live instead of copying the clip
		wantCode string
	}{
		{name: "wrong token", url: base + "/live/cam?token=wrong", wantCode: "401"},
		{name: "no token", url: base + "/live/cam", wantCode: "401"},
		{name: "bad feed", url: base + "/live/cam?token=secret&feed=third", wantCode: "400"},
		{name: "bad path", url: base + "/a/b/c?token=secret", wantCode: "400"},
		{name: "busy feed", url: base + "/live/busy?token=secret", wantCode: "409"},
		{name: "opus audio", url: base + "/live/cam?token=secret", wantCode: "415",
			encode: []string{"-c:v", "libx264", "-c:a", "libopus"}},
		{name: "h265 video", url: base + "/live/cam?token=secret", wantCode: "415",
			encode: []string{"-an", "-c:v", "libx265", "-x265-params", "log-level=error"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out string
			var err error
			if tc.encode == nil {
				out, err = rtspPush(t, clip, tc.url, "tcp", false)
			} else {
				args := []string{"-hide_banner", "-loglevel", "error",
					"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
					"-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "0.5"}
				args = append(args, tc.encode...)
				args = append(args, "-f", "rtsp", "-rtsp_transport", "tcp", tc.url)
				out, err = rtspRun(t, 60*time.Second, "ffmpeg", args...)
			}
			if err == nil {
				t.Fatalf("ffmpeg succeeded, want refusal %s\n%s", tc.wantCode, out)
			}
			if !strings.Contains(out, tc.wantCode) {
				t.Errorf("ffmpeg output lacks %s:\n%s", tc.wantCode, out)
			}
		})
	}
	if ws := sink.all(); len(ws) != 1 {
		t.Errorf("sink has %d feeds, want only the first publisher", len(ws))
	}
	if first.(*rtspFakeWriter).isClosed() || len(first.(*rtspFakeWriter).snapshot()) != 0 {
		t.Error("the first publisher was disturbed")
	}

	// the backup feed of the busy stream is free
	if out, err := rtspPush(t, clip, base+"/live/busy?token=secret&feed=backup", "tcp", false); err != nil {
		t.Fatalf("backup push: %v\n%s", err, out)
	}
	w := sink.waitWriter(t, 2, 5*time.Second)
	w.waitClosed(t, 10*time.Second)
	if w.feed != "backup" || len(rtspFrames(w.snapshot(), av.KindVideo)) == 0 {
		t.Errorf("backup feed %q got %d video frames", w.feed, len(rtspFrames(w.snapshot(), av.KindVideo)))
	}
}

// rtspOptions checks the server answers OPTIONS on a new connection.
func rtspOptions(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "OPTIONS rtsp://%s/live/x RTSP/1.0\r\nCSeq: 1\r\n\r\n", addr); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("options: %w", err)
	}
	if !strings.HasPrefix(line, "RTSP/1.0 200") {
		return fmt.Errorf("options answered %q", line)
	}
	return nil
}

// rtspSendGarbage writes data and reports whether the server closed the
// connection (rather than leaving it open until timeout).
func rtspSendGarbage(addr string, data []byte, timeout time.Duration) (closed bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	go c.Write(data) // may fail once the server closes; the read tells
	_, err = io.Copy(io.Discard, c)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return false, nil
	}
	return true, nil
}

func TestRTSPGarbage(t *testing.T) {
	sink := newRTSPFakeSink()
	srv := rtspStartServer(t, RTSPConfig{ReadTimeout: time.Second}, sink)
	addr := srv.Addr().String()

	// a publisher streams meanwhile and must not notice
	var pushDone chan error
	var clip string
	if _, err := exec.LookPath("ffmpeg"); err == nil {
		clip = rtspClip(t, "mp4", 2, "")
		pushDone = make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", clip,
			"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+addr+"/live/cam?token=secret")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { pushDone <- cmd.Wait() }()
		defer func() {
			if pushDone != nil {
				cmd.Process.Kill()
				<-pushDone
			}
		}()
		sink.waitWriter(t, 1, 10*time.Second)
	}

	tests := []struct {
		name string
		data []byte
	}{
		{"binary", []byte("\x00\xff\x10\x80garbage\r\n\r\n")},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"skipped bytes after a method letter", append([]byte("Ox"), bytes.Repeat([]byte{'x'}, 2<<20)...)},
		{"incomplete request", []byte("OPTIONS rtsp://127.0.0.1/ RTSP/1.0\r\nCSeq: 1\r\n")},
		{"silence", nil},
		{"bad request line", []byte("OPTIONS\r\n\r\n")},
		{"method too long", append(bytes.Repeat([]byte{'A'}, 100), "\r\n\r\n"...)},
		{"frame before session", []byte("$\x00\x00\x04abcd")},
		{"huge body", []byte("ANNOUNCE rtsp://127.0.0.1/live/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n")},
		{"no cseq", []byte("OPTIONS rtsp://127.0.0.1/ RTSP/1.0\r\n\r\n")},
		{"bad sdp", []byte("ANNOUNCE rtsp://127.0.0.1/live/a?token=secret RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			closed, err := rtspSendGarbage(addr, tc.data, 8*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !closed {
				t.Error("connection left open")
			}
			if err := rtspOptions(addr); err != nil {
				t.Errorf("server after garbage: %v", err)
			}
		})
	}

	if pushDone != nil {
		if err := <-pushDone; err != nil {
			t.Fatalf("publisher failed while garbage arrived: %v", err)
		}
		pushDone = nil
		w := sink.all()[0]
		w.waitClosed(t, 10*time.Second)
		nVideo, nAudio := rtspProbeCounts(t, clip)
		pkts := w.snapshot()
		// all video; audio less what ffmpeg's RTSP muxer never sends (see rtspCheckPublish)
		if v, a := len(rtspFrames(pkts, av.KindVideo)), len(rtspFrames(pkts, av.KindAudio)); v != nVideo || a > nAudio || a < nAudio-8 {
			t.Errorf("publisher got %d/%d frames, want %d/%d", v, a, nVideo, nAudio)
		}
	}
}

func TestRTSPKickByOrigin(t *testing.T) {
	rtspNeedFFmpeg(t)
	clip := rtspClip(t, "mp4", 2, "")
	sink := newRTSPFakeSink()
	srv := rtspStartServer(t, RTSPConfig{}, sink)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
		"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+srv.Addr().String()+"/live/cam?token=secret")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	}()

	w := sink.waitWriter(t, 1, 10*time.Second)
	w.waitFrames(t, 5, 10*time.Second)
	w.kick()
	w.waitClosed(t, 10*time.Second)
	select {
	case <-done:
		exited = true
	case <-time.After(20 * time.Second):
		t.Fatal("ffmpeg still running after the origin dropped its feed")
	}
}
