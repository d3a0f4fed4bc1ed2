package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Interop with independent RTMP and RTSP clients from Debian: GStreamer
// (rtmp2sink, rtmpsink on librtmp, rtspclientsink with its default AAC
// payloader, MP4A-LATM) publishes; GStreamer (rtmp2src, souphttpsrc !
// flvdemux) and rtmpdump play. Frames are counted as decoded (GStreamer)
// or by ffprobe on what was played (rtmpdump), and the clients' warnings
// about the server's side of the conversation must be gone.

const interopStreams = `streams:
  - {app: live, name: rtmp2, publish_token: "pubtok"}
  - {app: live, name: librtmp, publish_token: "pubtok"}
  - {app: live, name: rtsp, publish_token: "pubtok"}
`

const (
	interopPublish = 10 * time.Second // length of what the publishers send
	interopPlay    = 5 * time.Second  // how long each player plays
)

// interopNeed fails the test when a client or GStreamer element is missing
// (make test-deps installs them).
func interopNeed(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"gst-launch-1.0", "gst-inspect-1.0", "rtmpdump", "ffprobe"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not on PATH: run `make test-deps`", bin)
		}
	}
	for _, el := range []string{"rtmp2sink", "rtmp2src", "rtmpsink", "rtspclientsink", "souphttpsrc", "flvdemux", "flvmux",
		"x264enc", "avenc_aac", "avdec_h264", "avdec_aac", "h264parse", "aacparse"} {
		if out, err := exec.Command("gst-inspect-1.0", "--exists", el).CombinedOutput(); err != nil {
			t.Fatalf("GStreamer element %s missing (%v %s): run `make test-deps`", el, err, out)
		}
	}
}

// interopProc is one client process; its output (stdout and stderr) is kept.
type interopProc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *interopProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *interopProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// interopStart starts a client, bound to the test's lifetime.
func interopStart(t *testing.T, name string, args ...string) *interopProc {
	t.Helper()
	p := &interopProc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(p.cmd.Environ(), "GST_DEBUG=*:2", "GST_DEBUG_NO_COLOR=1")
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, interopTail(p.output(), 40))
		}
	})
	return p
}

// stop interrupts the client (GStreamer with -e and rtmpdump finish their
// output on SIGINT) and waits for it to exit.
func (p *interopProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	p.wait(t, 15*time.Second)
}

func (p *interopProc) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Errorf("%s still running after %v", p.name, within)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func interopTail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// interopSource is the GStreamer source side of a publisher: live H.264
// (1 s GOP) and AAC (avenc_aac, 44.1 kHz) for d.
func interopSource(d time.Duration) string {
	secs := int(d / time.Second)
	return fmt.Sprintf("videotestsrc is-live=true num-buffers=%d ! video/x-raw,format=I420,width=320,height=240,framerate=25/1 ! "+
		"x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! h264parse ! queue ! %%s "+
		"audiotestsrc is-live=true num-buffers=%d ! audioconvert ! avenc_aac ! aacparse ! queue ! %%s",
		secs*25, secs*44100/1024)
}

// interopPublisher starts a GStreamer publisher of kind rtmp2sink,
// rtmpsink or rtspclientsink to stream name.
func interopPublisher(t *testing.T, s *server, kind, name string) *interopProc {
	src := interopSource(interopPublish)
	if kind == "rtspclientsink" {
		src = interopSource(3 * interopPublish)
	}
	var pipeline string
	switch kind {
	case "rtmp2sink":
		pipeline = fmt.Sprintf(src, "m.", "m.") + fmt.Sprintf(" flvmux name=m streamable=true ! rtmp2sink location=%q", s.rtmpURL(name, "token=pubtok"))
	case "rtmpsink":
		pipeline = fmt.Sprintf(src, "m.", "m.") + fmt.Sprintf(" flvmux name=m streamable=true ! rtmpsink location=%q", s.rtmpURL(name, "token=pubtok")+" live=1")
	case "rtspclientsink":
		// The default payloaders: rtph264pay and, for AAC, rtpmp4apay (MP4A-LATM).
		pipeline = fmt.Sprintf(src, "r.sink_0", "r.sink_1") + fmt.Sprintf(" rtspclientsink name=r protocols=tcp location=%q", s.rtspURL(name, "token=pubtok"))
	}
	return interopStart(t, kind, append([]string{"gst-launch-1.0", "-e"}, strings.Fields(pipeline)...)...)
}

// interopDecode is a GStreamer player that decodes video and audio from an
// FLV source element and counts the decoded frames at its fakesinks.
func interopDecode(t *testing.T, name, source string) *interopProc {
	pipeline := source + " ! flvdemux name=d " +
		"d.video ! queue ! h264parse ! avdec_h264 ! fakesink name=v silent=false " +
		"d.audio ! queue ! aacparse ! avdec_aac ! fakesink name=a silent=false"
	return interopStart(t, name, append([]string{"gst-launch-1.0", "-v", "-e"}, strings.Fields(pipeline)...)...)
}

// interopDecoded counts the frames a fakesink of interopDecode (v or a)
// got: gst-launch -v prints each one's last-message, some twice, so
// frames are told apart by their PTS.
func interopDecoded(out, sink string) int {
	re := regexp.MustCompile(`GstFakeSink:` + sink + `: last-message = chain .*? pts: ([0-9:.]+)`)
	seen := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		seen[m[1]] = true
	}
	return len(seen)
}

var (
	// WARN and ERROR lines of GStreamer's RTMP and FLV code (with
	// GST_DEBUG=*:2): "User control message on chunk stream 20, not 2",
	// librtmp's "HandShake: client signature does not match!".
	interopGstWarn = regexp.MustCompile(`(?m)^.*\b(WARN|ERROR)\s+(rtmp\S*|flvdemux)\s.*$`)
)

// interopProbe lists the stream types of input and, for a file
// (count set), the frames ffprobe decodes in each.
func interopProbe(t *testing.T, input string, count bool) (types []string, frames map[string]int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", input}
	if count {
		args = []string{"-v", "error", "-count_frames", "-show_entries", "stream=codec_type,nb_read_frames", "-of", "csv=p=0", input}
	}
	out, err := exec.CommandContext(ctx, "ffprobe", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", input, err, out)
	}
	frames = map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var typ string
		var n int
		if k, _ := fmt.Sscanf(strings.Replace(line, ",", " ", 1), "%s %d", &typ, &n); k >= 1 {
			types = append(types, typ)
			frames[typ] += n
		}
	}
	return types, frames
}

// TestInteropClients publishes with three GStreamer encoders at once and
// plays each stream with rtmp2src, souphttpsrc ! flvdemux and rtmpdump.
func TestInteropClients(t *testing.T) {
	interopNeed(t)
	s := startServer(t, interopStreams)
	for _, tc := range []struct{ kind, stream string }{
		{"rtmp2sink", "rtmp2"},
		{"rtmpsink", "librtmp"},
		{"rtspclientsink", "rtsp"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			pub := interopPublisher(t, s, tc.kind, tc.stream)
			waitLive(t, s.flvURL(tc.stream), 20*time.Second)

			dump := filepath.Join(t.TempDir(), "rtmpdump.flv")
			dumpFP9 := filepath.Join(t.TempDir(), "rtmpdump-fp9.flv")
			players := []*interopProc{
				interopDecode(t, "rtmp2src", fmt.Sprintf("rtmp2src location=%s", s.rtmpURL(tc.stream, ""))),
				interopDecode(t, "souphttpsrc", fmt.Sprintf("souphttpsrc is-live=true location=%s", s.flvURL(tc.stream))),
				interopStart(t, "rtmpdump", "rtmpdump", "-V", "--live", "-r", s.rtmpURL(tc.stream, ""), "-o", dump),
				// With a SWF hash and size librtmp does the digest (Flash
				// Player 9) handshake and checks the server's answer.
				interopStart(t, "rtmpdump digest", "rtmpdump", "-V", "--live", "-r", s.rtmpURL(tc.stream, ""), "-o", dumpFP9,
					"--swfsize", "1000", "--swfhash", strings.Repeat("00", 32)),
			}
			time.Sleep(interopPlay)
			for _, p := range players {
				p.stop(t)
			}
			// Live from here on: no extra data stream for what players join.
			types, _ := interopProbe(t, s.flvURL(tc.stream), false)
			if strings.Join(types, ",") != "video,audio" {
				t.Errorf("HTTP-FLV streams %v, want video and audio only", types)
			}

			// At least 60 % of the frames of the time played (25 fps video,
			// 43 AAC frames a second).
			minVideo, minAudio := int(interopPlay.Seconds()*25*0.6), int(interopPlay.Seconds()*43*0.6)
			for _, p := range players[:2] {
				out := p.output()
				v, a := interopDecoded(out, "v"), interopDecoded(out, "a")
				t.Logf("%s: %d video and %d audio frames decoded", p.name, v, a)
				if v < minVideo || a < minAudio {
					t.Errorf("%s decoded %d video and %d audio frames, want at least %d and %d", p.name, v, a, minVideo, minAudio)
				}
				if w := interopGstWarn.FindAllString(out, -1); len(w) > 0 {
					t.Errorf("%s warns:\n%s", p.name, strings.Join(w, "\n"))
				}
			}
			if rd := players[2].output(); strings.Contains(rd, "client signature does not match") {
				t.Error("rtmpdump: HandShake: client signature does not match")
			}
			if rd := players[3].output(); !strings.Contains(rd, "HandShake: Genuine Adobe Flash Media Server") {
				t.Errorf("rtmpdump did not verify the server's digest handshake:\n%s", interopTail(rd, 20))
			}
			for i, file := range []string{dump, dumpFP9} {
				p := players[2+i]
				if n := strings.Count(p.output(), "onStatus: NetStream.Play.Start"); n != 1 {
					t.Errorf("%s got NetStream.Play.Start %d times, want once", p.name, n)
				}
				types, frames := interopProbe(t, file, true)
				t.Logf("%s: %v frames", p.name, frames)
				if strings.Join(types, ",") != "video,audio" {
					t.Errorf("%s's file has streams %v, want video and audio only", p.name, types)
				}
				if frames["video"] < minVideo || frames["audio"] < minAudio {
					t.Errorf("%s's file has %v frames, want at least %d video and %d audio", p.name, frames, minVideo, minAudio)
				}
			}

			// An RTMP publisher ends on its own: its stop commands must be
			// taken without a decode error. (rtspclientsink over TCP may hang
			// at the end of its input: it gets a longer one and is stopped.)
			// No publisher warned.
			if tc.kind == "rtspclientsink" {
				_ = pub.cmd.Process.Signal(syscall.SIGINT)
				select {
				case <-pub.done:
				case <-time.After(10 * time.Second):
					t.Log("rtspclientsink did not stop on SIGINT; killed")
					_ = syscall.Kill(-pub.cmd.Process.Pid, syscall.SIGKILL)
					<-pub.done
				}
			} else {
				pub.wait(t, interopPublish+15*time.Second)
			}
			if w := interopGstWarn.FindAllString(pub.output(), -1); len(w) > 0 {
				t.Errorf("%s warns:\n%s", tc.kind, strings.Join(w, "\n"))
			}
			if tc.kind == "rtspclientsink" {
				return
			}
			closed := regexp.MustCompile(`msg="rtmp connection closed".*role=publish stream=live/` + tc.stream + `\b.*`)
			deadline := time.Now().Add(10 * time.Second)
			for !closed.MatchString(s.logs()) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			line := closed.FindString(s.logs())
			if line == "" || strings.Contains(line, `reason="rtmp:`) || strings.Contains(line, "level=WARN") {
				t.Errorf("publisher's connection ended with %q", line)
			}
		})
	}
}
