package ingest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

func rtmpPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestRTMPChunkRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		csid      uint32
		ts        uint32
		size      int
		chunkSize int
	}{
		{"one chunk", 3, 40, 100, 128},
		{"exact chunk", 4, 40, 128, 128},
		{"two chunks", 5, 0, 129, 128},
		{"many chunks", 6, 1000, 5000, 128},
		{"big chunks", 6, 1000, 50000, 4096},
		{"two-byte csid", 64, 1, 300, 128},
		{"two-byte csid max", 319, 1, 300, 128},
		{"three-byte csid", 320, 1, 300, 128},
		{"three-byte csid max", 65599, 1, 300, 128},
		{"extended timestamp", 6, 0xffffff, 1000, 128},
		{"large timestamp", 6, 0xfedcba98, 1000, 256},
		{"largest message", 7, 5, rtmpMaxPayload, 65536},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := rtmpPattern(tt.size)
			wire := rtmpAppendMessage(nil, tt.csid, 9, 1, tt.ts, payload, tt.chunkSize)
			p := newRTMPChunkParser(rtmpMaxPayload)
			p.chunkSize = uint32(tt.chunkSize)
			r := bytes.NewReader(wire)
			cs, err := p.readMessage(r)
			if err != nil {
				t.Fatal(err)
			}
			if cs.id != tt.csid || cs.typeID != 9 || cs.streamID != 1 || cs.timestamp != tt.ts || !bytes.Equal(cs.buf, payload) {
				t.Fatalf("got csid %d type %d stream %d ts %d, %d bytes", cs.id, cs.typeID, cs.streamID, cs.timestamp, len(cs.buf))
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left", r.Len())
			}
		})
	}
}

// TestRTMPChunkHeaderCompression reads messages whose headers lean on the
// previous ones (types 1, 2 and 3), as encoders send them.
func TestRTMPChunkHeaderCompression(t *testing.T) {
	var wire []byte
	wire = append(wire, rtmpRawHeader(0, 6, 100, 3, 9, 1)...)
	wire = append(wire, 'a', 'b', 'c')
	wire = append(wire, rtmpRawHeader(2, 6, 40, 0, 0, 0)...) // same length and type, delta 40
	wire = append(wire, 'd', 'e', 'f')
	wire = append(wire, 0xc6, 'g', 'h', 'i') // type 3: same delta
	wire = append(wire, rtmpRawHeader(1, 6, 10, 2, 8, 0)...)
	wire = append(wire, 'j', 'k')
	wire = append(wire, rtmpRawHeader(0, 6, 0xffffff, 200, 9, 1)...) // extended timestamp
	wire = append(wire, 0x01, 0x00, 0x00, 0x00)
	wire = append(wire, rtmpPattern(128)...)
	wire = append(wire, 0xc6, 0x01, 0x00, 0x00, 0x00) // continuation repeats it
	wire = append(wire, rtmpPattern(200)[128:]...)
	want := []struct {
		ts      uint32
		typeID  uint8
		payload string
	}{
		{100, 9, "abc"}, {140, 9, "def"}, {180, 9, "ghi"}, {190, 8, "jk"}, {0x1000000, 9, string(rtmpPattern(200))},
	}
	p := newRTMPChunkParser(1 << 20)
	r := bytes.NewReader(wire)
	for i, w := range want {
		cs, err := p.readMessage(r)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if cs.timestamp != w.ts || cs.typeID != w.typeID || cs.streamID != 1 || string(cs.buf) != w.payload {
			t.Fatalf("message %d: ts %d type %d stream %d %q", i, cs.timestamp, cs.typeID, cs.streamID, cs.buf)
		}
	}
	if _, err := p.readMessage(r); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}
}

func TestRTMPChunkParserErrors(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		err  string
	}{
		{"cut in the basic header", []byte{0x00}, "unexpected EOF"},
		{"cut in the message header", []byte{0x03, 0, 0}, "unexpected EOF"},
		{"cut in the extended timestamp", append(rtmpRawHeader(0, 3, 0xffffff, 4, 9, 0), 1), "unexpected EOF"},
		{"cut in the payload", append(rtmpRawHeader(0, 3, 0, 4, 9, 0), 1), "unexpected EOF"},
		{"over the limit", rtmpRawHeader(0, 3, 0, 1001, 9, 0), "message of 1001 bytes on chunk stream 3, limit 1000"},
		{"type 1 over the limit", append(rtmpAppendMessage(nil, 3, 9, 0, 0, []byte{1}, 128), rtmpRawHeader(1, 3, 0, 5000, 9, 0)...), "limit 1000"},
		{"short set chunk size", rtmpAppendMessage(nil, 2, 1, 0, 0, []byte{0, 1}, 128), "set chunk size message of 2 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newRTMPChunkParser(1000)
			r := bytes.NewReader(tt.wire)
			var err error
			for range 10 {
				if _, err = p.readMessage(r); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want %q", err, tt.err)
			}
		})
	}
}

func TestRTMPChunkSetChunkSize(t *testing.T) {
	tests := []struct {
		size, want uint32
	}{
		{1, 1}, {4096, 4096}, {0xffffff, 0xffffff}, {0x1000000, 0xffffff}, {0x7fffffff, 0xffffff},
	}
	for _, tt := range tests {
		p := newRTMPChunkParser(1 << 20)
		wire := rtmpAppendMessage(nil, 2, 1, 0, 0, []byte{byte(tt.size >> 24), byte(tt.size >> 16), byte(tt.size >> 8), byte(tt.size)}, 128)
		payload := rtmpPattern(3000)
		wire = rtmpAppendMessage(wire, 3, 9, 1, 0, payload, int(tt.want))
		r := bytes.NewReader(wire)
		if _, err := p.readMessage(r); err != nil {
			t.Fatal(err)
		}
		if p.chunkSize != tt.want {
			t.Errorf("set chunk size %#x: chunk size %#x, want %#x", tt.size, p.chunkSize, tt.want)
		}
		if cs, err := p.readMessage(r); err != nil || !bytes.Equal(cs.buf, payload) {
			t.Errorf("set chunk size %#x: next message: %v", tt.size, err)
		}
	}
}

// rtmpPipeFeed writes data into one end of a pipe and returns the other;
// what is written to the other end (the handshake answer) is dropped.
func rtmpPipeFeed(t *testing.T, data []byte) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() { _, _ = a.Write(data) }()
	go func() { _, _ = io.Copy(io.Discard, a) }()
	return b
}

// TestRTMPNetConnGoRTMP feeds chunks as ffmpeg writes them (extended
// timestamps repeated in type 3 chunks) through rtmpNetConn into go-rtmp's
// own chunk reader, which must see the right messages.
func TestRTMPNetConnGoRTMP(t *testing.T) {
	type msg struct {
		ts      uint32
		payload []byte
	}
	msgs := []msg{
		{0, rtmpPattern(10)},
		{40, rtmpPattern(300)},
		{0x1000000, rtmpPattern(1000)}, // type 0 with extended timestamp and 7 type 3 continuations
		{0xfffffff0, rtmpPattern(129)},
		{5, rtmpPattern(1)},
	}
	wire := make([]byte, rtmpHandshakeSize)
	wire[0] = rtmpVersion
	for _, m := range msgs {
		wire = rtmpAppendMessage(wire, 6, 9, 0, m.ts, m.payload, 128)
	}
	rc := newRTMPNetConn(rtmpPipeFeed(t, wire), 1<<20)
	hs := make([]byte, rtmpHandshakeSize)
	if _, err := io.ReadFull(rc, hs); err != nil {
		t.Fatal(err)
	}
	cs := rtmp.NewChunkStreamer(rc, io.Discard, nil)
	defer cs.Close()
	for i, m := range msgs {
		var cmsg rtmp.ChunkMessage
		_, ts, err := cs.Read(&cmsg)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		v, ok := cmsg.Message.(*message.VideoMessage)
		if !ok {
			t.Fatalf("message %d: %T", i, cmsg.Message)
		}
		got, _ := io.ReadAll(v.Payload)
		if ts != m.ts || !bytes.Equal(got, m.payload) {
			t.Fatalf("message %d: ts %#x, %d bytes; want %#x, %d bytes", i, ts, len(got), m.ts, len(m.payload))
		}
	}
}

// rtmpPublishSession is what a publisher sends after the handshake:
// connect, createStream, publish (on message stream 1), metadata, then
// H.264 and AAC messages (one at a timestamp past 24 bits, split in chunks).
func rtmpPublishSession(t testing.TB, name string) []byte {
	must := func(typeID uint8, payload []byte, err error) (uint8, []byte) {
		if err != nil {
			t.Fatal(err)
		}
		return typeID, payload
	}
	var b []byte
	add := func(csid, sid, ts uint32, typeID uint8, payload []byte) {
		b = rtmpAppendMessage(b, csid, typeID, sid, ts, payload, 128)
	}
	typeID, payload := must(rtmpEncodeCommand("connect", 1, &message.NetConnectionConnect{Command: message.NetConnectionConnectCommand{
		App: "live", Type: "nonprivate", TCURL: "rtmp://127.0.0.1/live",
	}}))
	add(3, 0, 0, typeID, payload)
	typeID, payload = must(rtmpEncodeCommand("createStream", 2, &message.NetConnectionCreateStream{}))
	add(3, 0, 0, typeID, payload)
	typeID, payload = must(rtmpEncodeCommand("publish", 0, &message.NetStreamPublish{PublishingName: name, PublishingType: "live"}))
	add(8, 1, 0, typeID, payload)
	meta := append([]byte{2, 0, 13}, "@setDataFrame"...)
	meta = append(meta, av.EncodeScript("onMetaData", map[string]any{"width": 320.0, "height": 240.0})...)
	add(4, 1, 0, 18, meta)
	add(6, 1, 0, 9, []byte{0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 0})
	add(4, 1, 0, 8, []byte{0xaf, 0, 0x12, 0x10})
	add(6, 1, 0x1000000, 9, append([]byte{0x17, 1, 0, 0, 0x50, 0, 0, 1, 0}, rtmpPattern(256)...))
	add(4, 1, 0x1000010, 8, append([]byte{0xaf, 1}, rtmpPattern(300)...))
	return b
}

// TestRTMPPublishRaw publishes with hand-made chunks, including an
// extended timestamp repeated in type 3 chunks as ffmpeg writes it.
func TestRTMPPublishRaw(t *testing.T) {
	sink := newRTMPFakeSink()
	s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	nc := rtmpDialHandshake(t, s.Addr().String())
	go func() { _, _ = io.Copy(io.Discard, nc) }()
	if _, err := nc.Write(rtmpPublishSession(t, "raw?token=T&feed=backup")); err != nil {
		t.Fatal(err)
	}
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 5*time.Second, "5 packets", func() bool { return w.count() == 5 })
	nc.Close()
	rtmpWaitFor(t, 5*time.Second, "feed closed", w.isClosed)
	got := w.packets()
	want := []struct {
		kind   av.Kind
		header bool
		dts    time.Duration
		size   int
	}{
		{av.KindData, false, 0, 0},
		{av.KindVideo, true, 0, 8},
		{av.KindAudio, true, 0, 2},
		{av.KindVideo, false, 0x1000000 * time.Millisecond, 4 + 256},
		{av.KindAudio, false, 0x1000010 * time.Millisecond, 300},
	}
	if w.stream != "live/raw" || w.feed != "backup" {
		t.Errorf("published %s feed %s", w.stream, w.feed)
	}
	for i, p := range got {
		if p.Kind != want[i].kind || p.Header != want[i].header || p.DTS != want[i].dts || (want[i].size > 0 && len(p.Data) != want[i].size) {
			t.Errorf("packet %d: %v header=%v DTS=%v %d bytes, want %+v", i, p.Kind, p.Header, p.DTS, len(p.Data), want[i])
		}
	}
	if name, _, err := av.DecodeScript(got[0].Data); err != nil || name != "onMetaData" {
		t.Errorf("metadata %q: %v", name, err)
	}
	if got[3].CTS != 80*time.Millisecond || !got[3].Key {
		t.Errorf("frame CTS %v key %v", got[3].CTS, got[3].Key)
	}
}

// TestRTMPUnsupportedCodec: HEVC (legacy id 12) and enhanced RTMP close
// the publisher's connection with the reason.
func TestRTMPUnsupportedCodec(t *testing.T) {
	tests := []struct {
		name   string
		body   []byte
		reason string
	}{
		{"hevc legacy id", []byte{0x1c, 0, 0, 0, 0, 1, 2, 3}, "video codec id 12"},
		{"enhanced rtmp", append([]byte{0x90}, "hvc1..."...), `enhanced rtmp video \"hvc1\"`}, // quotes escaped in the log
		{"mp3 audio", []byte{0x2f, 1, 2, 3}, "audio sound format 2"},
		{"truncated avc", []byte{0x17, 1}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newRTMPFakeSink()
			s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
			nc := rtmpDialHandshake(t, s.Addr().String())
			session := rtmpPublishSession(t, "demo?token=T")
			typeID := uint8(9)
			if tt.body[0]>>4 == 2 {
				typeID = 8
			}
			session = rtmpAppendMessage(session, 7, typeID, 1, 1000, tt.body, 128)
			if _, err := nc.Write(session); err != nil {
				t.Fatal(err)
			}
			rtmpWaitClosed(t, nc, 5*time.Second)
			w := sink.waitWriter(t, 1)
			rtmpWaitFor(t, 5*time.Second, "feed closed", w.isClosed)
			logs.waitFor(t, tt.reason)
		})
	}
}

func TestRTMPSplitAggregate(t *testing.T) {
	var agg []byte
	tag := func(tagType uint8, ts uint32, body []byte) {
		agg = av.AppendRawTag(agg, tagType, ts, body)
	}
	tag(av.TagVideo, 1000, []byte{0x17, 1, 0, 0, 0, 9})
	tag(av.TagAudio, 1010, []byte{0xaf, 1, 8})
	tag(7, 1020, []byte{1}) // unknown tag type: skipped
	tag(av.TagVideo, 1040, []byte{0x27, 1, 0, 0, 0, 7})
	type got struct {
		tagType uint8
		ts      uint32
		n       int
	}
	var gots []got
	err := rtmpSplitAggregate(500, agg, func(tagType uint8, ts uint32, body []byte) error {
		gots = append(gots, got{tagType, ts, len(body)})
		return nil
	})
	want := []got{{9, 500, 6}, {8, 510, 3}, {9, 540, 6}}
	if err != nil || len(gots) != len(want) {
		t.Fatalf("got %v, %v", gots, err)
	}
	for i := range want {
		if gots[i] != want[i] {
			t.Errorf("tag %d: %+v, want %+v", i, gots[i], want[i])
		}
	}
	if err := rtmpSplitAggregate(0, agg[:len(agg)-8], func(uint8, uint32, []byte) error { return nil }); err == nil {
		t.Error("cut aggregate accepted")
	}
	stop := errors.New("stop")
	if err := rtmpSplitAggregate(0, agg, func(uint8, uint32, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("callback error: %v", err)
	}
}
