package ingest

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// The RTMP conversation as real clients expect it (GStreamer, librtmp,
// Flash), checked on the messages the server sends.

// rtmpTestArgs are command arguments as a client writes them.
type rtmpTestArgs []any

func (rtmpTestArgs) FromArgs(...any) error { return errors.New("not decoded") }

func (a rtmpTestArgs) ToArgs(message.EncodingType) ([]any, error) { return a, nil }

// rtmpTestMsg is one message the server sent.
type rtmpTestMsg struct {
	csid, sid, ts uint32
	typeID        uint8
	payload       []byte
}

func (m rtmpTestMsg) has(s string) bool { return bytes.Contains(m.payload, []byte(s)) }

// rtmpTestClient is a hand-made RTMP client: it writes chunks and collects
// every message the server sends.
type rtmpTestClient struct {
	t  *testing.T
	nc net.Conn

	mu   sync.Mutex
	msgs []rtmpTestMsg
	err  error
}

func newRTMPTestClient(t *testing.T, addr string) *rtmpTestClient {
	c := &rtmpTestClient{t: t, nc: rtmpDialHandshake(t, addr)}
	_ = c.nc.SetDeadline(time.Time{})
	go func() {
		p := newRTMPChunkParser(0)
		for {
			cs, err := p.readMessage(c.nc)
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.msgs = append(c.msgs, rtmpTestMsg{csid: cs.id, sid: cs.streamID, ts: cs.timestamp, typeID: cs.typeID, payload: bytes.Clone(cs.buf)})
			c.mu.Unlock()
		}
	}()
	return c
}

// command sends command name on chunk stream csid, message stream sid.
func (c *rtmpTestClient) command(csid, sid uint32, name string, txID int64, args ...any) {
	c.t.Helper()
	typeID, payload, err := rtmpEncodeCommand(name, txID, rtmpTestArgs(args))
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.nc.Write(rtmpAppendMessage(nil, csid, typeID, sid, 0, payload, 128)); err != nil {
		c.t.Fatalf("send %s: %v", name, err)
	}
}

func (c *rtmpTestClient) connect() {
	c.command(3, 0, "connect", 1, map[string]any{"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
	c.command(3, 0, "createStream", 2, nil)
	c.waitFor("createStream result", func(m rtmpTestMsg) bool { return m.typeID == 20 && m.has("_result") && !m.has("NetConnection") })
}

func (c *rtmpTestClient) messages() ([]rtmpTestMsg, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rtmpTestMsg(nil), c.msgs...), c.err
}

// waitFor waits for a message for which match is true and returns its
// index.
func (c *rtmpTestClient) waitFor(what string, match func(rtmpTestMsg) bool) int {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		msgs, err := c.messages()
		for i, m := range msgs {
			if match(m) {
				return i
			}
		}
		if err != nil || time.Now().After(deadline) {
			c.t.Fatalf("no %s from the server (%v) in %d messages", what, err, len(msgs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRTMPPlayConversation: Stream Begin on chunk stream 2, one
// NetStream.Play.Start and before any media, onMetaData at timestamp 0.
func TestRTMPPlayConversation(t *testing.T) {
	meta := av.EncodeScript("onMetaData", map[string]any{"width": 320.0})
	pkts := []*av.Packet{
		{Kind: av.KindData, DTS: 5 * time.Second, Data: meta},
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, DTS: 5 * time.Second, Data: []byte{1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 0}},
		{Kind: av.KindVideo, Codec: av.CodecH264, Key: true, DTS: 5 * time.Second, Data: rtmpPattern(500)},
	}
	deps := Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{token: "T"}, Play: &rtmpFakePlay{streams: map[string][]*av.Packet{"live/x": pkts}}}
	s, _ := rtmpTestServer(t, RTMPConfig{}, deps, nil)
	c := newRTMPTestClient(t, s.Addr().String())
	c.connect()
	c.command(8, 1, "play", 4, nil, "x")
	frame := c.waitFor("video frame", func(m rtmpTestMsg) bool { return m.typeID == 9 && len(m.payload) > 500 })
	time.Sleep(200 * time.Millisecond) // a second Play.Start would be out by now
	msgs, _ := c.messages()

	begin, starts, firstMedia := -1, 0, -1
	for i, m := range msgs {
		switch {
		case m.typeID == 4 && len(m.payload) == 6 && m.payload[1] == 0: // Stream Begin
			if m.payload[5] != 1 {
				continue // stream 0, at connect
			}
			begin = i
			if m.csid != 2 || m.sid != 0 {
				t.Errorf("Stream Begin on chunk stream %d, message stream %d; want 2, 0", m.csid, m.sid)
			}
		case m.typeID == 20 && m.has("NetStream.Play.Start"):
			starts++
			if firstMedia >= 0 {
				t.Errorf("NetStream.Play.Start (message %d) after media (message %d)", i, firstMedia)
			}
		case (m.typeID == 8 || m.typeID == 9) && firstMedia < 0:
			firstMedia = i
		case m.typeID == 18 && m.has("onMetaData") && m.ts != 0:
			t.Errorf("onMetaData at timestamp %d, want 0", m.ts)
		}
	}
	if begin < 0 || begin > frame {
		t.Errorf("no Stream Begin for stream 1 before the media")
	}
	if starts != 1 {
		t.Errorf("NetStream.Play.Start sent %d times, want once", starts)
	}
}

// TestRTMPPublishConversation: FCPublish and FCUnpublish are answered, and
// the forms of closeStream and deleteStream clients send end the publish
// without a decode error; the connection stays usable.
func TestRTMPPublishConversation(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(c *rtmpTestClient)
	}{
		{"ffmpeg and librtmp: deleteStream(null, 1)", func(c *rtmpTestClient) {
			c.command(3, 0, "FCUnpublish", 5, nil, "x")
			c.command(3, 0, "deleteStream", 6, nil, 1.0)
		}},
		{"GStreamer rtmp2: deleteStream(null, name)", func(c *rtmpTestClient) {
			c.command(3, 0, "FCUnpublish", 5, nil, "x")
			c.command(3, 0, "deleteStream", 6, nil, "x")
		}},
		{"deleteStream(null, null)", func(c *rtmpTestClient) { c.command(3, 0, "deleteStream", 5, nil, nil) }},
		{"deleteStream()", func(c *rtmpTestClient) { c.command(3, 0, "deleteStream", 5) }},
		{"closeStream() on the stream", func(c *rtmpTestClient) { c.command(8, 1, "closeStream", 0) }},
		{"closeStream(null) on the stream", func(c *rtmpTestClient) { c.command(8, 1, "closeStream", 0, nil) }},
		{"GStreamer rtmp2: closeStream(null, name)", func(c *rtmpTestClient) { c.command(3, 0, "closeStream", 5, nil, "x") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newRTMPFakeSink()
			s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
			c := newRTMPTestClient(t, s.Addr().String())
			c.connect()
			c.command(3, 0, "releaseStream", 3, nil, "x?token=T")
			c.command(3, 0, "FCPublish", 4, nil, "x?token=T")
			c.command(8, 1, "publish", 5, nil, "x?token=T", "live")
			fc := c.waitFor("onFCPublish", func(m rtmpTestMsg) bool { return m.typeID == 20 && m.has("onFCPublish") })
			if msgs, _ := c.messages(); !msgs[fc].has("NetStream.Publish.Start") || msgs[fc].has("token") {
				t.Errorf("onFCPublish %q", msgs[fc].payload)
			}
			w := sink.waitWriter(t, 1)

			tc.stop(c)
			rtmpWaitFor(t, 5*time.Second, "publish ended", w.isClosed)
			w.mu.Lock()
			unpublished := w.unpublished
			w.mu.Unlock()
			if !unpublished {
				t.Error("feed ended without Unpublish (the encoder ended it on purpose)")
			}
			if strings.Contains(tc.name, "FCUnpublish") || strings.Contains(tc.name, "ffmpeg") || strings.Contains(tc.name, "rtmp2: delete") {
				c.waitFor("onFCUnpublish", func(m rtmpTestMsg) bool { return m.typeID == 20 && m.has("onFCUnpublish") })
			}
			// Still connected: another createStream is answered.
			c.command(3, 0, "createStream", 9, nil)
			c.waitFor("second createStream result", func(m rtmpTestMsg) bool {
				return m.typeID == 20 && m.has("_result") && bytes.Contains(m.payload, []byte{0x00, 0x40, 0x22}) // transaction 9.0
			})
			c.nc.Close()
			logs.waitFor(t, "rtmp connection closed")
			if line := rtmpLogLine(logs.String(), "rtmp connection closed"); !strings.Contains(line, `reason="peer closed"`) {
				t.Errorf("closed with %s", line)
			}
		})
	}
}

// TestRTMPDeleteStreamWithoutStream: a deleteStream that names no stream
// on a connection that has none is refused with a reason, and does not
// delete the control stream.
func TestRTMPDeleteStreamWithoutStream(t *testing.T) {
	s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{token: "T"}}, nil)
	c := newRTMPTestClient(t, s.Addr().String())
	c.connect()
	c.command(3, 0, "deleteStream", 5, nil, "x")
	logs.waitFor(t, "rtmp connection closed")
	if line := rtmpLogLine(logs.String(), "rtmp connection closed"); !strings.Contains(line, "deleteStream without a stream") {
		t.Errorf("closed with %s", line)
	}
}
