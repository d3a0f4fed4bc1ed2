package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp"
	rtmpmsg "github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// syntheticClip is a clip of fake H.264 frames (no decoder looks at them):
// 25 fps with a keyframe every 10 frames, and AAC frames at 43 per second.
func syntheticClip(seconds int) *clip {
	c := &clip{headers: []*av.Packet{
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 3, 0x68, 0xeb, 0xe3}},
		{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
	}}
	frame := 40 * time.Millisecond
	n := seconds * 25
	for i := range n {
		dts := time.Duration(i) * frame
		key := i%10 == 0
		nal := append([]byte{0x41}, bytes.Repeat([]byte{0x9a, 0}, 2000)...) // zeros to need emulation prevention
		if key {
			nal[0] = 0x65
		}
		c.media = append(c.media, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: key, DTS: dts, CTS: 80 * time.Millisecond, Data: avcc(nal)})
		c.media = append(c.media, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: dts, Data: bytes.Repeat([]byte{0x21}, 300)})
		c.videoFrames++
	}
	c.period = time.Duration(n) * frame
	return c
}

// relay is a minimal go-rtmp server: what one publisher sends goes to every
// RTMP player and HTTP-FLV subscriber, the way ingest and origin connect in
// livefuse.
type relay struct {
	mu      sync.Mutex
	players []*relayPlayer
	subs    map[chan []byte]bool // HTTP-FLV subscribers get whole FLV tags
	headers [][]byte             // sequence headers as FLV tags, for late joiners
	names   []string             // publishing names seen
}

type relayPlayer struct {
	conn     *rtmp.Conn
	streamID uint32
	started  <-chan struct{} // closed once go-rtmp has written Play.Start
}

type relayHandler struct {
	rtmp.DefaultHandler
	r     *relay
	conn  *rtmp.Conn
	watch *playStartWatch
}

// playStartWatch closes started once go-rtmp has written a player's
// NetStream.Play.Start: go-rtmp writes it after OnPlay returns, and its
// writer must not be used from another goroutine before then.
type playStartWatch struct {
	net.Conn
	once    sync.Once
	started chan struct{}
}

func (w *playStartWatch) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	if bytes.Contains(p, []byte("NetStream.Play.Start")) {
		w.once.Do(func() { close(w.started) })
	}
	return n, err
}

func (h *relayHandler) OnServe(c *rtmp.Conn) { h.conn = c }

func (h *relayHandler) OnPublish(_ *rtmp.StreamContext, _ uint32, cmd *rtmpmsg.NetStreamPublish) error {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.names = append(h.r.names, cmd.PublishingName)
	if !strings.HasSuffix(cmd.PublishingName, "?token=t0k") {
		return errors.New("bad token")
	}
	return nil
}

func (h *relayHandler) OnPlay(ctx *rtmp.StreamContext, _ uint32, cmd *rtmpmsg.NetStreamPlay) error {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.players = append(h.r.players, &relayPlayer{conn: h.conn, streamID: ctx.StreamID, started: h.watch.started})
	return nil
}

func (h *relayHandler) forward(ts uint32, payload io.Reader, tagType uint8) error {
	b, err := io.ReadAll(payload)
	if err != nil {
		return err
	}
	tag := av.AppendRawTag(nil, tagType, ts, b)
	h.r.mu.Lock()
	if len(b) >= 2 && b[1] == 0 { // AVC or AAC sequence header
		h.r.headers = append(h.r.headers, tag)
	}
	players := append([]*relayPlayer(nil), h.r.players...)
	for ch := range h.r.subs {
		select {
		case ch <- tag:
		default: // a slow subscriber loses tags
		}
	}
	h.r.mu.Unlock()
	for _, p := range players {
		select {
		case <-p.started:
		default:
			continue // go-rtmp is still answering its play
		}
		var msg rtmpmsg.Message = &rtmpmsg.AudioMessage{Payload: bytes.NewReader(b)}
		csid := 5
		if tagType == av.TagVideo {
			msg, csid = &rtmpmsg.VideoMessage{Payload: bytes.NewReader(b)}, 6
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = p.conn.Write(ctx, csid, ts, &rtmp.ChunkMessage{StreamID: p.streamID, Message: msg})
		cancel()
	}
	return nil
}

func (h *relayHandler) OnVideo(ts uint32, payload io.Reader) error {
	return h.forward(ts, payload, av.TagVideo)
}

func (h *relayHandler) OnAudio(ts uint32, payload io.Reader) error {
	return h.forward(ts, payload, av.TagAudio)
}

// serveFLV streams the relay as HTTP-FLV at /live/bench.flv.
func (r *relay) serveFLV(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/live/bench.flv" {
		http.NotFound(w, req)
		return
	}
	ch := make(chan []byte, 256)
	r.mu.Lock()
	if r.subs == nil {
		r.subs = map[chan []byte]bool{}
	}
	r.subs[ch] = true
	headers := append([][]byte(nil), r.headers...)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.subs, ch)
		r.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "video/x-flv")
	if _, err := w.Write(av.FLVHeader(true, true)); err != nil {
		return
	}
	for _, h := range headers {
		if _, err := w.Write(h); err != nil {
			return
		}
	}
	for {
		select {
		case <-req.Context().Done():
			return
		case tag := <-ch:
			if _, err := w.Write(tag); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

// serveRelay runs the relay's RTMP side on ln until ln is closed.
func serveRelay(r *relay, ln net.Listener) (stop func()) {
	srv := rtmp.NewServer(&rtmp.ServerConfig{OnConnect: func(c net.Conn) (io.ReadWriteCloser, *rtmp.ConnConfig) {
		w := &playStartWatch{Conn: c, started: make(chan struct{})}
		return w, &rtmp.ConnConfig{Handler: &relayHandler{r: r, watch: w}}
	}})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return func() { srv.Close(); ln.Close(); <-done }
}

func startRelay(t *testing.T) (*relay, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{}
	t.Cleanup(serveRelay(r, ln))
	return r, ln.Addr().String()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestPublishAndPlayRTMP runs the publisher and one RTMP player through a
// go-rtmp relay: publish with a token, play, stamps survive the trip.
func TestPublishAndPlayRTMP(t *testing.T) {
	r, addr := startRelay(t)
	now := time.Now()
	win := window{start: now.Add(300 * time.Millisecond), end: now.Add(1500 * time.Millisecond)}
	ctx, cancel := context.WithDeadline(context.Background(), win.end)
	defer cancel()

	pl := newPlayer(protoRTMP, win)
	plDone := make(chan error, 1)
	go func() { plDone <- runRTMP(ctx, pl, addr, "live", "bench") }()
	// The relay forwards only to players that joined: wait for ours.
	for i := 0; i < 200; i++ {
		r.mu.Lock()
		n := len(r.players)
		r.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	pub := &publisher{addr: addr, app: "live", stream: "bench?token=t0k", clip: syntheticClip(1), win: win, log: quietLogger()}
	ready := make(chan struct{})
	pubErr := pub.run(ctx, ready)
	if pubErr != nil {
		t.Fatalf("publisher: %v", pubErr)
	}
	perr := <-plDone
	if !errors.Is(perr, context.DeadlineExceeded) {
		t.Errorf("player ended with %v, want the deadline", perr)
	}
	select {
	case <-ready:
	default:
		t.Error("publisher never became ready")
	}
	if pub.framesSent == 0 || pub.framesInWindow == 0 || pub.unstamped != 0 {
		t.Errorf("publisher sent %d frames, %d in the window, %d unstamped", pub.framesSent, pub.framesInWindow, pub.unstamped)
	}
	if !pl.gotFirst || pl.frames == 0 {
		t.Fatalf("player got first=%v, %d frames in the window", pl.gotFirst, pl.frames)
	}
	if len(pl.lat) == 0 || pl.unstamped != 0 {
		t.Errorf("player: %d latency samples, %d frames without a stamp", len(pl.lat), pl.unstamped)
	}
	for _, us := range pl.lat {
		if us < 0 {
			t.Fatalf("negative latency %d µs", us)
		}
	}
}

func TestPublishRefused(t *testing.T) {
	_, addr := startRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := &publisher{addr: addr, app: "live", stream: "bench?token=wrong", clip: syntheticClip(1), log: quietLogger()}
	_, _, err := pub.connectOnce(ctx)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("connectOnce with a wrong token: %v, want a refusal", err)
	}
}

// TestPlayHTTPFLV serves stamped frames as HTTP-FLV (what origin does) and
// checks what the player records.
func TestPlayHTTPFLV(t *testing.T) {
	cl := syntheticClip(1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/live/bench.flv" {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "video/x-flv")
		fw := av.NewFLVWriter(w, true, true)
		for _, h := range cl.headers {
			if err := fw.WritePacket(h); err != nil {
				return
			}
		}
		var buf []byte
		for _, p := range cl.media {
			q := *p
			if p.Kind == av.KindVideo {
				buf, _ = appendStamped(buf[:0], p.Data, time.Now().UnixNano())
				q.Data = buf
			}
			if err := fw.WritePacket(&q); err != nil {
				return
			}
			if p.Kind == av.KindVideo {
				w.(http.Flusher).Flush()
				select {
				case <-req.Context().Done():
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}
		<-req.Context().Done()
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"stream", "/live/bench.flv", ""},
		{"not found", "/live/none.flv", "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			win := window{start: now, end: now.Add(time.Second)}
			ctx, cancel := context.WithDeadline(context.Background(), win.end)
			defer cancel()
			p := newPlayer(protoFLV, win)
			err := runFLV(ctx, p, addr, tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("runFLV: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("runFLV ended with %v, want the deadline", err)
			}
			p.finish(nil, time.Now())
			if !p.gotFirst || !p.firstKey || p.frames != cl.videoFrames {
				t.Errorf("first=%v key=%v frames=%d; want a keyframe first and %d frames", p.gotFirst, p.firstKey, p.frames, cl.videoFrames)
			}
			// Latency counts from the second keyframe (frame 10) on.
			if want := cl.videoFrames - 10; len(p.lat) != want || p.unstamped != 0 {
				t.Errorf("%d latency samples and %d unstamped, want %d and 0", len(p.lat), p.unstamped, want)
			}
			if p.bytes == 0 {
				t.Error("no bytes counted")
			}
		})
	}
}

func TestPlayerAccounting(t *testing.T) {
	t0 := time.Unix(1000, 0)
	win := window{start: t0.Add(time.Second), end: t0.Add(3 * time.Second)}
	key := func(ns int64) []byte {
		return append([]byte{0x17, 1, 0, 0, 0}, avcc(appendStampSEI(nil, ns), []byte{0x65, 0x88})...)
	}
	inter := func(ns int64) []byte {
		return append([]byte{0x27, 1, 0, 0, 0}, avcc(appendStampSEI(nil, ns), []byte{0x41, 0x9a})...)
	}
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	p := newPlayer(protoFLV, win)
	p.start = t0
	p.onTag(av.TagVideo, []byte{0x17, 0, 0, 0, 0, 1, 2, 3}, at(100)) // sequence header: not a frame
	p.onTag(av.TagAudio, []byte{0xaf, 1, 9}, at(150))
	p.onTag(av.TagVideo, inter(at(0).UnixNano()), at(200))  // first frame, not a keyframe
	p.onTag(av.TagVideo, key(at(900).UnixNano()), at(1100)) // in the window, first keyframe: no latency yet
	p.onTag(av.TagVideo, inter(at(1100).UnixNano()), at(1150))
	p.onTag(av.TagVideo, key(at(1500).UnixNano()), at(1520))   // second keyframe: 20 ms
	p.onTag(av.TagVideo, inter(at(1540).UnixNano()), at(1570)) // 30 ms
	p.onTag(av.TagVideo, append([]byte{0x27, 1, 0, 0, 0}, avcc([]byte{0x41})...), at(1600))
	p.onTag(av.TagVideo, inter(at(3000).UnixNano()), at(3100)) // after the window
	p.finish(errors.New("reset"), at(3100))

	if !p.gotFirst || p.firstFrame != 200*time.Millisecond || p.firstKey {
		t.Errorf("first frame %v key %v", p.firstFrame, p.firstKey)
	}
	if p.frames != 5 {
		t.Errorf("frames in window %d, want 5", p.frames)
	}
	if len(p.lat) != 2 || p.lat[0] != 20000 || p.lat[1] != 30000 || p.unstamped != 1 {
		t.Errorf("latency %v µs, unstamped %d; want [20000 30000] and 1", p.lat, p.unstamped)
	}
	// 1100 - 200 = 900 ms between frames across the window start; the last
	// frame at 1600 leaves 1400 ms to the end of the window.
	if p.maxGap != 1400*time.Millisecond {
		t.Errorf("max gap %v, want 1.4s", p.maxGap)
	}
	if p.disconnected() {
		t.Error("an error after the window counts as a disconnect")
	}
	if p.keptUp(5) != true || p.keptUp(6) != false {
		t.Errorf("keptUp(5)=%v keptUp(6)=%v; want true, false", p.keptUp(5), p.keptUp(6))
	}
}
