package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/livefuse/livefuse/av"
)

// pullFakeRun stands in for a pull client: it reports each start and runs
// until its context ends, or fails at once when fail is set.
type pullFakeRun struct {
	starts chan pullFakeStart
	mu     sync.Mutex
	fail   bool
}

type pullFakeStart struct {
	src string
	w   FeedWriter
	ctx context.Context
}

func (f *pullFakeRun) run(ctx context.Context, src string, w FeedWriter, log *slog.Logger) error {
	f.starts <- pullFakeStart{src: src, w: w, ctx: ctx}
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errors.New("fake source down")
	}
	<-ctx.Done()
	return nil
}

func (f *pullFakeRun) next(t *testing.T) pullFakeStart {
	t.Helper()
	select {
	case s := <-f.starts:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("pull did not start")
		return pullFakeStart{}
	}
}

func (f *pullFakeRun) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-f.starts:
		t.Fatalf("unexpected start of %s", s.src)
	case <-time.After(d):
	}
}

func TestPullerSet(t *testing.T) {
	sink := newRTSPFakeSink()
	p := NewPuller(Deps{Sink: sink}, rtspTestLogger(t))
	p.minBackoff, p.maxBackoff = 10*time.Millisecond, 40*time.Millisecond
	fake := &pullFakeRun{starts: make(chan pullFakeStart, 100)}
	p.runRTSP, p.runRTMP = fake.run, fake.run
	defer p.Close()

	// two valid sources start; invalid keys and schemes are skipped
	p.Set(map[string]string{
		"live/a":    "rtsp://cam-a/stream",
		"live/b":    "rtmp://user:pw@cam-b/app/s",
		"bad/key/x": "rtsp://x/y",
		"live/c":    "http://x/y",
		"live/d?e":  "rtsp://x/y",
	})
	got := map[string]pullFakeStart{}
	for range 2 {
		s := fake.next(t)
		got[s.src] = s
	}
	fake.none(t, 100*time.Millisecond)
	a, b := got["rtsp://cam-a/stream"], got["rtmp://user:pw@cam-b/app/s"]
	if a.w == nil || b.w == nil {
		t.Fatalf("starts: %v", got)
	}
	wa, wb := a.w.(*rtspFakeWriter), b.w.(*rtspFakeWriter)
	if wa.app != "live" || wa.name != "a" || wa.feed != "main" || (wa.src.Protocol != "rtsp-pull" || wa.src.Remote != "rtsp://cam-a/stream") {
		t.Errorf("feed a: %s/%s %s %+v", wa.app, wa.name, wa.feed, wa.src)
	}
	if wb.src.Protocol != "rtmp-pull" || wb.src.Remote != "rtmp://cam-b/app/s" {
		t.Errorf("feed b source %+v: credentials must not show", wb.src)
	}

	// unchanged entries keep running; a changed URL restarts; a missing key stops
	p.Set(map[string]string{"live/a": "rtsp://cam-a/other"})
	if !wb.isClosed() || !wa.isClosed() || b.ctx.Err() == nil || a.ctx.Err() == nil {
		t.Fatal("Set returned before the stopped pulls closed their feeds")
	}
	a2 := fake.next(t)
	if a2.src != "rtsp://cam-a/other" {
		t.Fatalf("restarted with %s", a2.src)
	}
	p.Set(map[string]string{"live/a": "rtsp://cam-a/other"})
	fake.none(t, 100*time.Millisecond)

	// the origin drops the feed: the pull reconnects with a new one
	a2.w.(*rtspFakeWriter).kick()
	a3 := fake.next(t)
	if a2.ctx.Err() == nil || !a2.w.(*rtspFakeWriter).isClosed() || a3.w == a2.w {
		t.Fatal("kick did not end the old run and feed")
	}

	// a failing source is retried with backoff, each time with a fresh feed
	fake.mu.Lock()
	fake.fail = true
	fake.mu.Unlock()
	a3.w.(*rtspFakeWriter).kick()
	for range 4 {
		s := fake.next(t)
		if s.w.(*rtspFakeWriter).name != "a" {
			t.Fatal("retry published the wrong stream")
		}
	}
	fake.mu.Lock()
	fake.fail = false
	fake.mu.Unlock()

	p.Close()
	for _, w := range sink.all() {
		if !w.isClosed() {
			t.Errorf("feed %s/%s left open after Close", w.app, w.name)
		}
	}
	p.Set(map[string]string{"live/z": "rtsp://z/z"})
	fake.none(t, 50*time.Millisecond)
}

// rtspTestCamera is an RTSP server standing in for a camera: whatever is
// published to it (by ffmpeg) is served to players (the Puller).
type rtspTestCamera struct {
	srv *gortsplib.Server

	mu     sync.Mutex
	stream *gortsplib.ServerStream
	pub    *gortsplib.ServerSession
}

func startRTSPTestCamera(t *testing.T, addr string) *rtspTestCamera {
	t.Helper()
	c := &rtspTestCamera{}
	c.srv = &gortsplib.Server{Handler: c, RTSPAddress: addr}
	// the port was free a moment ago; retry briefly if the old camera's
	// socket lingers
	var err error
	for i := 0; i < 50; i++ {
		if err = c.srv.Start(); err == nil {
			t.Cleanup(c.srv.Close)
			return c
		}
		time.Sleep(100 * time.Millisecond)
		c.srv = &gortsplib.Server{Handler: c, RTSPAddress: addr}
	}
	t.Fatalf("camera: %v", err)
	return nil
}

func (c *rtspTestCamera) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pub == ctx.Session && c.stream != nil {
		c.stream.Close()
		c.stream, c.pub = nil, nil
	}
}

func (c *rtspTestCamera) OnDescribe(*gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (c *rtspTestCamera) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream != nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("camera busy")
	}
	c.stream = &gortsplib.ServerStream{Server: c.srv, Desc: ctx.Description}
	if err := c.stream.Initialize(); err != nil {
		c.stream = nil
		return &base.Response{StatusCode: base.StatusInternalServerError}, err
	}
	c.pub = ctx.Session
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (c *rtspTestCamera) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (c *rtspTestCamera) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (c *rtspTestCamera) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	c.mu.Lock()
	stream := c.stream
	c.mu.Unlock()
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		stream.WritePacketRTP(medi, pkt)
	})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// rtspStartFFmpeg pushes clip in a loop, in real time, until stopped.
func rtspStartFFmpeg(t *testing.T, clip, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
		"-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", url)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-done
			cancel()
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestPullerRTSP(t *testing.T) {
	rtspNeedFFmpeg(t)
	clip := rtspClip(t, "mp4", 2, "")
	addr := fmt.Sprintf("127.0.0.1:%d", rtspFreeTCPPort(t))
	startRTSPTestCamera(t, addr)
	stopFFmpeg := rtspStartFFmpeg(t, clip, "rtsp://"+addr+"/cam")

	sink := newRTSPFakeSink()
	p := NewPuller(Deps{Sink: sink}, rtspTestLogger(t))
	p.minBackoff, p.maxBackoff = 100*time.Millisecond, 400*time.Millisecond
	defer p.Close()
	p.Set(map[string]string{"live/cam": "rtsp://viewer:pw@" + addr + "/cam"})

	// the camera may not have its publisher yet: the first attempts can
	// fail (404) and are retried
	var w *rtspFakeWriter
	deadline := time.Now().Add(20 * time.Second)
	for n := 1; w == nil; n++ {
		if time.Now().After(deadline) {
			t.Fatal("no pulled frames")
		}
		c := sink.waitWriter(t, n, 20*time.Second)
		for time.Now().Before(deadline) && !c.isClosed() {
			if len(rtspFrames(c.snapshot(), av.KindVideo)) >= 10 {
				w = c
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if w.src.Protocol != "rtsp-pull" || w.src.Remote != "rtsp://"+addr+"/cam" {
		t.Errorf("source %+v", w.src)
	}
	rtspCheckPulled(t, w.snapshot())

	// the camera's encoder goes away: the feed closes, the puller retries
	stopFFmpeg()
	w.waitClosed(t, 10*time.Second)
	n := len(sink.all())

	// and comes back
	rtspStartFFmpeg(t, clip, "rtsp://"+addr+"/cam")
	deadline = time.Now().Add(20 * time.Second)
	for {
		ws := sink.all()
		if len(ws) > n {
			last := ws[len(ws)-1]
			if len(rtspFrames(last.snapshot(), av.KindVideo)) >= 10 {
				rtspCheckPulled(t, last.snapshot())
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the puller did not reconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rtspCheckPulled checks the start of a pulled feed: metadata, headers,
// keyframe first, DTS never going back.
func rtspCheckPulled(t *testing.T, pkts []*av.Packet) {
	t.Helper()
	if pkts[0].Kind != av.KindData {
		t.Errorf("first packet %v, want onMetaData", pkts[0].Kind)
	}
	sawHeader := false
	var video []*av.Packet
	for _, p := range pkts {
		if p.Kind == av.KindVideo && p.Header {
			sawHeader = true
		}
		if p.Kind == av.KindVideo && !p.Header {
			if !sawHeader {
				t.Fatal("video frame before the AVC header")
			}
			video = append(video, p)
		}
	}
	if !video[0].Key {
		t.Error("first pulled frame is not a keyframe")
	}
	for i := 1; i < len(video); i++ {
		if video[i].DTS < video[i-1].DTS || video[i].CTS < 0 {
			t.Errorf("frame %d: DTS %v after %v, CTS %v", i, video[i].DTS, video[i-1].DTS, video[i].CTS)
		}
	}
}
