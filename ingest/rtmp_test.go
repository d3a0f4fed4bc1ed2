package ingest

import (
	"bytes"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/netguard"
)

func TestRTMPConfigDefaults(t *testing.T) {
	def := DefaultRTMPConfig()
	with := func(f func(*RTMPConfig)) RTMPConfig {
		c := def
		f(&c)
		return c
	}
	tests := []struct {
		in, want RTMPConfig
	}{
		{RTMPConfig{}, RTMPConfig{Addr: ":1935", MaxMessageSize: 8 << 20, ChunkSize: 4096,
			Limits:                netguard.Limits{MaxConns: 10000, MaxConnsPerIP: 256},
			PreAuthMaxMessageSize: 8 << 10, SetupTimeout: 10 * time.Second,
			MinPublishRate: 512, MinPublishRateWindow: 30 * time.Second, BufferBudget: 512 << 20}},
		{RTMPConfig{Addr: ":1", MaxMessageSize: 1 << 30, ChunkSize: 1}, with(func(c *RTMPConfig) { c.Addr, c.MaxMessageSize, c.ChunkSize = ":1", rtmpMaxPayload, 128 })},
		{RTMPConfig{ChunkSize: 1 << 20}, with(func(c *RTMPConfig) { c.ChunkSize = 64 << 10 })},
		// negative turns a limit off
		{RTMPConfig{Limits: netguard.Limits{MaxConns: -1, MaxConnsPerIP: -1}, SetupTimeout: -1, MinPublishRate: -1, BufferBudget: -1},
			with(func(c *RTMPConfig) {
				c.Limits, c.SetupTimeout, c.MinPublishRate, c.BufferBudget = netguard.Limits{}, 0, 0, 0
			})},
		{RTMPConfig{PreAuthMaxMessageSize: -1}, with(func(c *RTMPConfig) { c.PreAuthMaxMessageSize = 8 << 20 })},
		{RTMPConfig{MaxMessageSize: 4096}, with(func(c *RTMPConfig) { c.MaxMessageSize, c.PreAuthMaxMessageSize = 4096, 4096 })},
		{RTMPConfig{MinPublishRateWindow: -1}, with(func(c *RTMPConfig) { c.MinPublishRate, c.MinPublishRateWindow = 0, 0 })},
	}
	if got := DefaultRTMPConfig(); !reflect.DeepEqual(got, tests[0].want) {
		t.Errorf("DefaultRTMPConfig() = %+v", got)
	}
	for _, tt := range tests {
		if got := tt.in.normalize(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("normalize(%+v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestRTMPStartErrors(t *testing.T) {
	s := NewRTMPServer(RTMPConfig{Addr: "127.0.0.1:0"}, Deps{Sink: newRTMPFakeSink()}, nil)
	if err := s.Start(); err == nil {
		t.Error("Start without Auth succeeded")
	}
	a, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, nil)
	b := NewRTMPServer(RTMPConfig{Addr: a.Addr().String()}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, nil)
	if err := b.Start(); err == nil || !strings.Contains(err.Error(), a.Addr().String()) {
		t.Errorf("Start on a used port: %v", err)
	}
	b.Close()
}

// TestRTMPPublishFFmpeg pushes an H.264 (B-frames) + AAC clip with ffmpeg
// -c copy and checks the feed gets exactly the clip's packets.
func TestRTMPPublishFFmpeg(t *testing.T) {
	clip := rtmpClip(t, 3)
	ref := rtmpReadClip(t, clip)
	nVideo := rtmpProbeVideoPackets(t, clip)

	sink := newRTMPFakeSink()
	s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	out, err := rtmpRun(t, 60*time.Second, "ffmpeg", "-hide_banner", "-nostdin", "-re", "-i", clip,
		"-c", "copy", "-f", "flv", rtmpURL(s, "/live/demo?token=T"))
	if err != nil {
		t.Fatalf("ffmpeg push: %v\n%s", err, out)
	}
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 10*time.Second, "feed closed", w.isClosed)
	if w.stream != "live/demo" || w.feed != "main" || w.src.Protocol != "rtmp" || !strings.HasPrefix(w.src.Remote, "127.0.0.1:") {
		t.Errorf("publish %s feed %s source %+v", w.stream, w.feed, w.src)
	}
	got := w.packets()

	// Metadata is the FLV script body: "onMetaData" and an ECMA array.
	data := rtmpOfKind(got, av.KindData, false)
	if len(data) != 1 {
		t.Fatalf("%d data packets, want 1", len(data))
	}
	if name, vals, err := av.DecodeScript(data[0].Data); err != nil || name != "onMetaData" || vals["width"] != 320.0 {
		t.Errorf("metadata %q %v: %v", name, vals, err)
	}
	if !bytes.HasPrefix(data[0].Data, []byte("\x02\x00\x0aonMetaData")) {
		t.Errorf("metadata starts %q, want the onMetaData string", data[0].Data[:min(16, len(data[0].Data))])
	}

	// Sequence headers come before the media of their kind.
	for _, k := range []av.Kind{av.KindVideo, av.KindAudio} {
		var first *av.Packet
		for _, p := range got {
			if p.Kind == k {
				first = p
				break
			}
		}
		if first == nil || !first.Header {
			t.Errorf("first %v packet is not a sequence header: %+v", k, first)
		}
	}
	video := rtmpOfKind(got, av.KindVideo, false)
	if len(video) != nVideo {
		t.Errorf("%d video packets, ffprobe counts %d", len(video), nVideo)
	}
	if len(video) == 0 || !video[0].Key {
		t.Fatal("first video packet is not a keyframe")
	}
	for _, k := range []av.Kind{av.KindVideo, av.KindAudio} {
		ps := rtmpOfKind(got, k, false)
		for i := 1; i < len(ps); i++ {
			if ps[i].DTS < ps[i-1].DTS {
				t.Fatalf("%v DTS goes back at %d: %v after %v", k, i, ps[i].DTS, ps[i-1].DTS)
			}
		}
	}
	// -c copy: every video and audio packet is the clip's, in order.
	for _, k := range []av.Kind{av.KindVideo, av.KindAudio} {
		want, have := rtmpOfKind(ref, k, false), rtmpOfKind(got, k, false)
		if len(want) != len(have) {
			t.Errorf("%v: %d packets, clip has %d", k, len(have), len(want))
			continue
		}
		for i := range want {
			if err := rtmpSamePacket(have[i], want[i]); err != nil {
				t.Fatalf("%v packet %d: %v", k, i, err)
			}
		}
	}
}

func rtmpSamePacket(got, want *av.Packet) error {
	switch {
	case got.Kind != want.Kind || got.Codec != want.Codec || got.Header != want.Header || got.Key != want.Key:
		return fmt.Errorf("got %v/%v header=%v key=%v, want %v/%v header=%v key=%v",
			got.Kind, got.Codec, got.Header, got.Key, want.Kind, want.Codec, want.Header, want.Key)
	case got.DTS != want.DTS || got.CTS != want.CTS:
		return fmt.Errorf("got DTS %v CTS %v, want %v %v", got.DTS, got.CTS, want.DTS, want.CTS)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Errorf("data differs (%d bytes, want %d)", len(got.Data), len(want.Data))
	}
	return nil
}

func TestRTMPPublishRefused(t *testing.T) {
	clip := rtmpClip(t, 1)
	tests := []struct {
		name, path string
	}{
		{"wrong token", "/live/demo?token=nope"},
		{"no token", "/live/demo"},
		{"unknown feed", "/live/demo?token=T&feed=third"},
		{"bad name", "/live/de%20mo?token=T"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newRTMPFakeSink()
			s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
			out, err := rtmpRun(t, 30*time.Second, "ffmpeg", "-hide_banner", "-nostdin", "-i", clip,
				"-c", "copy", "-f", "flv", rtmpURL(s, tt.path))
			if err == nil {
				t.Fatalf("ffmpeg push succeeded:\n%s", out)
			}
			if !strings.Contains(out, "Publish refused") { // ffmpeg prints the BadName description
				t.Errorf("ffmpeg did not see the refusal:\n%s", out)
			}
			if sink.calls() != 0 {
				t.Errorf("sink got %d Publish calls", sink.calls())
			}
			logs.waitFor(t, "rtmp connection closed")
			if !strings.Contains(logs.String(), `msg="rtmp publish refused" remote=127.0.0.1:`) {
				t.Error("no refusal logged with the remote address")
			}
			if strings.Contains(logs.String(), "nope") {
				t.Error("the token was logged")
			}
		})
	}
}

// TestRTMPPublishBusy: a second publisher to a feed in use is refused and
// the first keeps going; the other feed of the stream is free.
func TestRTMPPublishBusy(t *testing.T) {
	clip := rtmpClip(t, 2)
	sink := newRTMPFakeSink()
	s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	push := func(path string, loop bool) []string {
		args := []string{"-hide_banner", "-nostdin", "-re"}
		if loop {
			args = append(args, "-stream_loop", "-1")
		}
		return append(args, "-i", clip, "-c", "copy", "-f", "flv", rtmpURL(s, path))
	}
	first := rtmpStart(t, "ffmpeg", push("/live/demo?token=T", true)...)
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 10*time.Second, "first publisher's media", func() bool { return w.count() > 10 })

	out, err := rtmpRun(t, 30*time.Second, "ffmpeg", push("/live/demo?token=T", false)...)
	if err == nil {
		t.Fatalf("second publisher accepted:\n%s", out)
	}
	if len(sink.all()) != 1 {
		t.Fatalf("%d feeds published, want 1", len(sink.all()))
	}
	n := w.count()
	rtmpWaitFor(t, 10*time.Second, "first publisher to keep going", func() bool { return w.count() > n+10 })
	if w.isClosed() {
		t.Fatal("first feed closed")
	}

	backup := rtmpStart(t, "ffmpeg", push("/live/demo?token=T&feed=backup", false)...)
	if err := backup.wait(t, 30*time.Second); err != nil {
		t.Fatalf("backup publisher: %v\n%s", err, backup.out.String())
	}
	if ws := sink.all(); len(ws) != 2 || ws[1].feed != "backup" {
		t.Fatalf("backup feed not published: %d feeds", len(ws))
	}
	first.stop()
	rtmpWaitFor(t, 10*time.Second, "first feed closed", w.isClosed)
}

// TestRTMPKick: when the origin drops a publisher, its connection closes.
func TestRTMPKick(t *testing.T) {
	clip := rtmpClip(t, 2)
	sink := newRTMPFakeSink()
	s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	p := rtmpStart(t, "ffmpeg", "-hide_banner", "-nostdin", "-re", "-stream_loop", "-1", "-i", clip,
		"-c", "copy", "-f", "flv", rtmpURL(s, "/live/demo?token=T"))
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 10*time.Second, "media", func() bool { return w.count() > 5 })
	w.kick()
	if err := p.wait(t, 15*time.Second); err == nil {
		t.Error("ffmpeg exited cleanly after the kick")
	}
	rtmpWaitFor(t, 10*time.Second, "feed closed", w.isClosed)
	logs.waitFor(t, `reason="publisher dropped by the origin"`)
}

// TestRTMPCloseServer: Close ends publishers (feeds closed) and players
// (readers closed).
func TestRTMPCloseServer(t *testing.T) {
	clip := rtmpClip(t, 2)
	sink := newRTMPFakeSink()
	play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/tv": rtmpReadClip(t, clip)}}
	s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}, Play: play}, nil)
	pub := rtmpStart(t, "ffmpeg", "-hide_banner", "-nostdin", "-re", "-stream_loop", "-1", "-i", clip,
		"-c", "copy", "-f", "flv", rtmpURL(s, "/live/demo?token=T"))
	player := rtmpStart(t, "ffmpeg", "-hide_banner", "-nostdin", "-i", rtmpURL(s, "/live/tv"), "-c", "copy", "-f", "null", "-")
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 10*time.Second, "player", func() bool { return len(play.all()) == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !w.isClosed() {
		t.Error("feed not closed by Close")
	}
	if !play.all()[0].isClosed() {
		t.Error("reader not closed by Close")
	}
	_ = pub.wait(t, 15*time.Second)
	_ = player.wait(t, 15*time.Second)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// rtmpRawHeader builds a chunk header by hand (for headers the writer
// would never produce).
func rtmpRawHeader(format byte, csid uint32, ts, length uint32, typeID uint8, sid uint32) []byte {
	b := rtmpAppendBasicHeader(nil, format, csid)
	switch format {
	case 0:
		b = append(b, byte(ts>>16), byte(ts>>8), byte(ts), byte(length>>16), byte(length>>8), byte(length), typeID,
			byte(sid), byte(sid>>8), byte(sid>>16), byte(sid>>24))
	case 1:
		b = append(b, byte(ts>>16), byte(ts>>8), byte(ts), byte(length>>16), byte(length>>8), byte(length), typeID)
	case 2:
		b = append(b, byte(ts>>16), byte(ts>>8), byte(ts))
	}
	return b
}

// TestRTMPBadInput: each kind of bad input closes its connection with the
// reason logged, and the server still takes a good publisher afterwards.
func TestRTMPBadInput(t *testing.T) {
	manyStreams := []byte{}
	for i := range rtmpMaxChunkStreams + 1 {
		manyStreams = rtmpAppendMessage(manyStreams, uint32(3+i), 8, 0, 0, []byte{0xaf}, 128)
	}
	tests := []struct {
		name      string
		handshake bool // send after a valid handshake
		data      []byte
		reason    string
	}{
		{"http request", false, []byte("GET /live/demo HTTP/1.1\r\nHost: x\r\n\r\n"), "handshake version 71"},
		{"rtmpe handshake", false, append([]byte{6}, make([]byte, 1536)...), "handshake version 6"},
		{"message over the limit", true, rtmpRawHeader(0, 3, 0, 2<<20, 9, 0), "message of 2097152 bytes on chunk stream 3 before publish or play, limit 8192"},
		{"largest declared message", true, rtmpRawHeader(0, 4, 0, 0xffffff, 20, 0), "limit 8192"},
		{"type 3 chunk first", true, []byte{0xc3, 1, 2, 3}, "has no message header yet"},
		{"type 2 chunk first", true, rtmpRawHeader(2, 5, 10, 0, 0, 0), "has no message header yet"},
		{"empty message", true, rtmpRawHeader(0, 3, 0, 0, 20, 0), "empty message"},
		{"header inside a message", true, append(append(rtmpRawHeader(0, 3, 0, 300, 9, 0), make([]byte, 128)...),
			rtmpRawHeader(1, 3, 0, 10, 9, 0)...), "chunk type 1 on chunk stream 3 before its message"},
		{"chunk size zero", true, rtmpAppendMessage(nil, 2, 1, 0, 0, []byte{0, 0, 0, 0}, 128), "invalid chunk size 0x0"},
		{"chunk size top bit", true, rtmpAppendMessage(nil, 2, 1, 0, 0, []byte{0x80, 0, 0x10, 0}, 128), "invalid chunk size"},
		{"too many chunk streams", true, manyStreams, "more than 8 chunk streams before publish or play"},
		{"undecodable command", true, rtmpAppendMessage(nil, 3, 20, 0, 0, []byte{2, 0, 7, 'c', 'o', 'n', 'n', 'e', 'c', 't', 0xff, 0xff}, 128), "command message refused: amf0: type marker 0xff"},
		{"aggregate message", true, rtmpAppendMessage(nil, 3, 22, 0, 0, []byte{1, 2, 3}, 128), "rtmp: "},
		{"message on a stream never created", true, rtmpAppendMessage(nil, 3, 9, 7, 0, []byte{0x17, 0}, 128), "rtmp: "},
	}
	clip := rtmpClip(t, 1)
	sink := newRTMPFakeSink()
	s, logs := rtmpTestServer(t, RTMPConfig{MaxMessageSize: 1 << 20}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var nc net.Conn
			if tt.handshake {
				nc = rtmpDialHandshake(t, s.Addr().String())
			} else {
				var err error
				if nc, err = net.DialTimeout("tcp", s.Addr().String(), 5*time.Second); err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
			}
			_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = nc.Write(tt.data) // the server may close before it read everything
			rtmpWaitClosed(t, nc, 5*time.Second)
			logs.waitFor(t, fmt.Sprintf("remote=%s reason=", nc.LocalAddr()))
			line := rtmpLogLine(logs.String(), "remote="+nc.LocalAddr().String()+" reason=")
			if !strings.Contains(line, tt.reason) {
				t.Errorf("close logged as %q, want reason %q", line, tt.reason)
			}
		})
	}
	if sink.calls() != 0 {
		t.Fatalf("bad input reached the sink (%d publishes)", sink.calls())
	}
	out, err := rtmpRun(t, 30*time.Second, "ffmpeg", "-hide_banner", "-nostdin", "-i", clip, "-c", "copy", "-f", "flv", rtmpURL(s, "/live/demo?token=T"))
	if err != nil {
		t.Fatalf("good publisher after bad input: %v\n%s", err, out)
	}
	// ffmpeg may have exited before the server read all it sent.
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 10*time.Second, "good publisher's video", func() bool { return len(rtmpOfKind(w.packets(), av.KindVideo, false)) > 0 })
}

func rtmpLogLine(logs, substr string) string {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

// TestRTMPTimeouts: a peer silent in the handshake or after it loses its slot.
func TestRTMPTimeouts(t *testing.T) {
	s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, func(s *RTMPServer) {
		s.handshakeTimeout = 300 * time.Millisecond
		s.idleTimeout = 300 * time.Millisecond
	})
	tests := []struct {
		name   string
		dial   func(t *testing.T) net.Conn
		reason string
	}{
		{"silent before the handshake", func(t *testing.T) net.Conn {
			nc, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			return nc
		}, "handshake timeout"},
		{"stuck in the handshake", func(t *testing.T) net.Conn {
			nc, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			_, _ = nc.Write([]byte{3, 0, 0, 0})
			return nc
		}, "handshake timeout"},
		{"silent after the handshake", func(t *testing.T) net.Conn { return rtmpDialHandshake(t, s.Addr().String()) }, "idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := tt.dial(t)
			rtmpWaitClosed(t, nc, 5*time.Second)
			logs.waitFor(t, fmt.Sprintf("remote=%s reason=%q", nc.LocalAddr(), tt.reason))
		})
	}
}

// TestRTMPPlayFFprobe: ffprobe plays a stream from the PlaySource over
// RTMP, sees H.264 and AAC, and received the configured chunk size.
func TestRTMPPlayFFprobe(t *testing.T) {
	clip := rtmpClip(t, 2)
	play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/demo": rtmpReadClip(t, clip)}}
	auth := &rtmpFakeAuth{token: "T"}
	s, _ := rtmpTestServer(t, RTMPConfig{ChunkSize: 8192}, Deps{Sink: newRTMPFakeSink(), Auth: auth, Play: play}, nil)

	out, err := rtmpRun(t, 30*time.Second, "ffprobe", "-hide_banner", "-loglevel", "debug",
		"-show_entries", "stream=codec_name,width,height,sample_rate", "-of", "compact",
		rtmpURL(s, "/live/demo?auth_key=k1"))
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	for _, want := range []string{
		"stream|codec_name=h264|width=320|height=240",
		"stream|codec_name=aac|sample_rate=44100",
		"New incoming chunk size = 8192",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ffprobe output lacks %q:\n%s", want, out)
		}
	}
	// Chunks from the server never exceed the size it announced.
	if strings.Contains(out, "New incoming chunk size = 128\n") {
		t.Error("server announced chunk size 128")
	}
	rs := play.all()
	if len(rs) != 1 {
		t.Fatalf("%d subscriptions, want 1", len(rs))
	}
	rtmpWaitFor(t, 5*time.Second, "reader closed after the player left", rs[0].isClosed)
	auth.mu.Lock()
	calls := append([]string(nil), auth.playCalls...)
	auth.mu.Unlock()
	if len(calls) != 1 || calls[0] != "/live/demo?auth_key=k1" {
		t.Errorf("AuthorizePlay calls %q", calls)
	}
}

func TestRTMPPlayRefused(t *testing.T) {
	clip := rtmpClip(t, 1)
	pkts := rtmpReadClip(t, clip)
	tests := []struct {
		name  string
		play  PlaySource
		path  string
		log   string
		reads int
	}{
		{"wrong play key", &rtmpFakePlay{streams: map[string][]*av.Packet{"live/demo": pkts}}, "/live/demo?auth_key=bad", "rtmp play refused", 0},
		{"unknown stream", &rtmpFakePlay{streams: map[string][]*av.Packet{}}, "/live/none?auth_key=k", "stream not found", 0},
		{"play disabled", nil, "/live/demo?auth_key=k", "rtmp play disabled", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{playKey: "k"}, Play: tt.play}, nil)
			out, err := rtmpRun(t, 30*time.Second, "ffprobe", "-hide_banner", rtmpURL(s, tt.path))
			if err == nil {
				t.Fatalf("ffprobe succeeded:\n%s", out)
			}
			logs.waitFor(t, tt.log)
		})
	}
}

// TestRTMPPlayStreamEnds: when the reader fails (stream gone, player too
// slow), the player's connection closes.
func TestRTMPPlayStreamEnds(t *testing.T) {
	clip := rtmpClip(t, 1)
	play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/demo": rtmpReadClip(t, clip)}, endErr: ErrNotFound}
	s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}, Play: play}, nil)
	out, err := rtmpRun(t, 30*time.Second, "ffmpeg", "-hide_banner", "-nostdin", "-i", rtmpURL(s, "/live/demo"), "-c", "copy", "-f", "null", "-")
	if err != nil {
		t.Fatalf("player did not end cleanly: %v\n%s", err, out)
	}
	if n := rtmpProbeVideoPackets(t, clip); !strings.Contains(out, fmt.Sprintf("frame=%5d", n)) {
		t.Errorf("player did not get the %d frames:\n%s", n, out)
	}
	logs.waitFor(t, `reason="stream ended: stream not found"`)
	rtmpWaitFor(t, 5*time.Second, "reader closed", play.all()[0].isClosed)
}
