package ingest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/batchio"
)

// TestRTMPPlayOutBytes checks that a player's batch, written as pieces
// (headers from its own buffer, payloads from the shared packets), is
// byte for byte what rtmpAppendMessage makes of each packet's tag body:
// payloads across chunk boundaries, in and around the tag body header,
// extended timestamps, metadata at timestamp 0, packets RTMP cannot carry.
func TestRTMPPlayOutBytes(t *testing.T) {
	meta := av.EncodeScript("onMetaData", map[string]any{"width": 1280.0})
	var pkts []*av.Packet
	for _, size := range []int{0, 1, 3, 4, 100, 511, 512, 4091, 4092, 4096, 4097, 8192, 20000, 131072} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + size)
		}
		for _, dts := range []time.Duration{0, 40 * time.Millisecond, 0xfffffe * time.Millisecond, 0x1234567 * time.Millisecond} {
			pkts = append(pkts,
				&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: size%2 == 0, DTS: dts, CTS: 80 * time.Millisecond, Data: data},
				&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: dts, Data: data})
		}
	}
	pkts = append(pkts,
		&av.Packet{Kind: av.KindData, DTS: 5 * time.Second, Data: meta},
		&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Data: []byte{1, 2, 3}},
		&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
		&av.Packet{Kind: av.KindVideo, Codec: av.Codec(200), Data: []byte{1}}, // not carried
	)
	for _, chunkSize := range []int{rtmpDefaultChunkSize, 4096, 60000} {
		for _, inline := range []int{rtmpPlayInline, 1 << 30} {
			t.Run(fmt.Sprintf("chunk=%d/inline=%d", chunkSize, inline), func(t *testing.T) {
				const sid = 1
				var want []byte
				for _, p := range pkts {
					body, typeID, ts := av.AppendTagBody(nil, p)
					var csid uint32
					switch typeID {
					case av.TagVideo:
						csid = rtmpCSIDVideo
					case av.TagAudio:
						csid = rtmpCSIDAudio
					case av.TagScript:
						csid = rtmpCSIDStatus
					default:
						continue
					}
					want = rtmpAppendMessage(want, csid, typeID, sid, ts, body, chunkSize)
				}
				o := &rtmpPlayOut{chunkSize: chunkSize, sid: sid, b: batchio.NewBatch(rtmpPlayHeadSize, inline)}
				for _, p := range pkts {
					o.appendPacket(p)
				}
				got := o.b.AppendTo(nil)
				if o.size() != len(want) {
					t.Errorf("batch size %d, want %d", o.size(), len(want))
				}
				if !bytes.Equal(got, want) {
					i := 0
					for i < len(got) && i < len(want) && got[i] == want[i] {
						i++
					}
					t.Fatalf("%d bytes, want %d; first difference at %d", len(got), len(want), i)
				}
			})
		}
	}
}

// TestRTMPPlayOutWrite checks the writev path on a real TCP connection and
// that a batch leaves nothing of the packets behind.
func TestRTMPPlayOutWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		done <- b
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := newRTMPNetConn(nc, 1<<20)
	rc.writeTimeout = 5 * time.Second
	o := newRTMPPlayOut(rc, 4096, 1)
	if !o.bw.Vectored() {
		t.Fatal("no writev on a TCP connection")
	}
	data := bytes.Repeat([]byte{0xab}, 10000)
	p := &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: true, DTS: time.Second, Data: data}
	body, _, _ := av.AppendTagBody(nil, p)
	want := rtmpAppendMessage([]byte("raw"), rtmpCSIDVideo, av.TagVideo, 1, 1000, body, 4096)
	o.appendRaw([]byte("raw"))
	o.appendPacket(p)
	if err := o.flush(); err != nil {
		t.Fatal(err)
	}
	if o.b.Refs() || len(o.b.Head) != 0 || o.size() != 0 {
		t.Fatal("batch not reset")
	}
	nc.Close()
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes, want %d", len(got), len(want))
	}
}

// TestRTMPPlayHandoff: once play has started, the player's connection is
// read by the server without go-rtmp: commands the player sends then are
// dropped without ending the play, the media goes on, and when the player
// closes, its reader is closed and the connection is logged as closed by
// the peer (not as an error of the hand-off).
func TestRTMPPlayHandoff(t *testing.T) {
	pkts := []*av.Packet{
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: []byte{1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 0}},
		{Kind: av.KindVideo, Codec: av.CodecH264, Key: true, DTS: time.Second, Data: rtmpPattern(9000)},
	}
	play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/x": pkts}}
	deps := Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{token: "T"}, Play: play}
	s, logs := rtmpTestServer(t, RTMPConfig{}, deps, nil)
	c := newRTMPTestClient(t, s.Addr().String())
	c.connect()
	c.command(8, 1, "play", 4, nil, "x")
	c.waitFor("video frame", func(m rtmpTestMsg) bool { return m.typeID == 9 && len(m.payload) > 9000 })
	rtmpWaitFor(t, 5*time.Second, "hand-off", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for conn := range s.conns {
			if conn.role == "play" && conn.rc.handoff.Load() {
				return true
			}
		}
		return false
	})
	c.command(8, 1, "pause", 5, nil, true, 0.0) // read and dropped
	time.Sleep(100 * time.Millisecond)
	if r := play.all(); len(r) != 1 || r[0].isClosed() {
		t.Fatal("play ended by a command after the hand-off")
	}
	c.nc.Close()
	rtmpWaitFor(t, 5*time.Second, "reader closed", func() bool { return play.all()[0].isClosed() })
	logs.waitFor(t, `reason="peer closed"`)
	if strings.Contains(logs.String(), "handed off") {
		t.Errorf("the hand-off was logged as a reason:\n%s", logs.String())
	}
}
