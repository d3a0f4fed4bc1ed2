package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp"
	rtmpmsg "github.com/yutopp/go-rtmp/message"
)

type testMsg struct {
	csid     int
	typeID   uint8
	streamID uint32
	ts       uint32
	data     []byte
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// writeWithGoRTMP chunks msgs with go-rtmp's writer (what the livefuse
// server uses) and returns the bytes.
func writeWithGoRTMP(t *testing.T, chunkSize uint32, msgs []testMsg) []byte {
	t.Helper()
	pr, pw := io.Pipe()
	bw := bufio.NewWriter(pw)
	cs := rtmp.NewChunkStreamer(nil, bw, nil)
	if err := cs.SelfState().SetChunkSize(chunkSize); err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(pr)
		out <- b
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range msgs {
		var msg rtmpmsg.Message
		switch m.typeID {
		case msgVideo:
			msg = &rtmpmsg.VideoMessage{Payload: bytes.NewReader(m.data)}
		case msgAudio:
			msg = &rtmpmsg.AudioMessage{Payload: bytes.NewReader(m.data)}
		default:
			t.Fatalf("type %d", m.typeID)
		}
		if err := cs.Write(ctx, m.csid, m.ts, &rtmp.ChunkMessage{StreamID: m.streamID, Message: msg}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for every writer: a write on the same chunk stream waits for
	// the previous one.
	for _, csid := range []int{csidAudio, csidVideo} {
		if w, err := cs.NewChunkWriter(ctx, csid); err != nil || w == nil {
			t.Fatal(err)
		}
	}
	cs.Close()
	pw.Close()
	return <-out
}

func TestChunkReaderReadsGoRTMP(t *testing.T) {
	var msgs []testMsg
	ts := []uint32{0, 40, 80, 80, 0x2000000, 0x2000028, 0x4000000, 10, 50, 90} // big jumps use extended timestamps; 10 goes back
	sizes := []int{1, 127, 128, 129, 5000, 70000, 3, 128 * 3, 2, 40000}
	for i := range ts {
		msgs = append(msgs, testMsg{csid: csidVideo, typeID: msgVideo, streamID: 1, ts: ts[i], data: pattern(sizes[i], byte(i))})
		msgs = append(msgs, testMsg{csid: csidAudio, typeID: msgAudio, streamID: 1, ts: ts[i] + 3, data: pattern(200+i, byte(100+i))})
	}
	for _, chunkSize := range []uint32{128, 4096, 65536} {
		t.Run(fmt.Sprint(chunkSize), func(t *testing.T) {
			wire := writeWithGoRTMP(t, chunkSize, msgs)
			cr := newChunkReader(bufio.NewReader(bytes.NewReader(wire)))
			if err := cr.setChunkSize(chunkSize); err != nil {
				t.Fatal(err)
			}
			next := map[uint8]int{} // per type: index of the next expected message
			for range msgs {
				m, err := cr.readMessage()
				if err != nil {
					t.Fatalf("readMessage: %v", err)
				}
				// Messages on different chunk streams interleave; each
				// stream keeps its order.
				var want *testMsg
				for i, n := 0, next[m.TypeID]; i < len(msgs); i++ {
					if msgs[i].typeID == m.TypeID {
						if n == 0 {
							want = &msgs[i]
							break
						}
						n--
					}
				}
				if want == nil {
					t.Fatalf("unexpected message type %d", m.TypeID)
				}
				next[m.TypeID]++
				if m.StreamID != want.streamID || m.Timestamp != want.ts || !bytes.Equal(m.Data, want.data) {
					t.Fatalf("message type %d #%d: stream %d ts %#x len %d; want stream %d ts %#x len %d",
						m.TypeID, next[m.TypeID], m.StreamID, m.Timestamp, len(m.Data), want.streamID, want.ts, len(want.data))
				}
			}
			if _, err := cr.readMessage(); !errors.Is(err, io.EOF) {
				t.Errorf("after the last message: %v, want EOF", err)
			}
		})
	}
}

func TestChunkReaderHandBuilt(t *testing.T) {
	tests := []struct {
		name    string
		wire    []byte
		want    []rtmpMessage
		wantErr bool
	}{
		{
			name: "fmt0 then fmt3 continuation and fmt3 new message",
			wire: concat(
				[]byte{0x04, 0, 0, 10, 0, 0, 3, 8, 1, 0, 0, 0}, []byte{1, 2, 3}, // ts 10, len 3, audio, stream 1
				[]byte{0xC4, 9, 9, 9},                            // type 3 new message: same header, ts += 0 (no delta yet)
				[]byte{0x44, 0, 0, 20, 0, 0, 2, 9}, []byte{7, 7}, // type 1: delta 20, len 2, video
				[]byte{0xC4}, []byte{8, 8}, // type 3 new message: ts += 20 again
			),
			want: []rtmpMessage{
				{TypeID: 8, StreamID: 1, Timestamp: 10, Data: []byte{1, 2, 3}},
				{TypeID: 8, StreamID: 1, Timestamp: 10, Data: []byte{9, 9, 9}},
				{TypeID: 9, StreamID: 1, Timestamp: 30, Data: []byte{7, 7}},
				{TypeID: 9, StreamID: 1, Timestamp: 50, Data: []byte{8, 8}},
			},
		},
		{
			name: "two-byte and three-byte chunk stream ids",
			wire: concat(
				[]byte{0x00, 10, 0, 0, 1, 0, 0, 1, 8, 0, 0, 0, 0}, []byte{0xAA}, // csid 74
				[]byte{0x01, 0, 1, 0, 0, 2, 0, 0, 1, 9, 0, 0, 0, 0}, []byte{0xBB}, // csid 320
			),
			want: []rtmpMessage{
				{TypeID: 8, Timestamp: 1, Data: []byte{0xAA}},
				{TypeID: 9, Timestamp: 2, Data: []byte{0xBB}},
			},
		},
		{
			name: "extended timestamp repeated on type 3 (FFmpeg style)",
			wire: concat(
				[]byte{0x06, 0xff, 0xff, 0xff, 0, 0, 130, 9, 1, 0, 0, 0}, []byte{0x01, 0x00, 0x00, 0x00}, pattern(128, 1),
				[]byte{0xC6}, []byte{0x01, 0x00, 0x00, 0x00}, pattern(2, 1+128*7%256),
			),
			want: []rtmpMessage{{TypeID: 9, StreamID: 1, Timestamp: 0x01000000, Data: append(pattern(128, 1), pattern(2, 1+128*7%256)...)}},
		},
		{name: "type 3 on a new chunk stream", wire: []byte{0xC5, 1, 2, 3}, wantErr: true},
		{name: "type 1 on a new chunk stream", wire: []byte{0x45, 0, 0, 1, 0, 0, 1, 8, 1}, wantErr: true},
		{name: "message too large", wire: []byte{0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0}, wantErr: true},
		{name: "truncated header", wire: []byte{0x04, 0, 0}, wantErr: true},
		{name: "truncated body", wire: []byte{0x04, 0, 0, 0, 0, 0, 5, 9, 0, 0, 0, 0, 1, 2}, wantErr: true},
		{
			name: "new header inside a message",
			wire: concat(
				[]byte{0x04, 0, 0, 0, 0, 1, 0, 9, 0, 0, 0, 0}, pattern(128, 0),
				[]byte{0x04, 0, 0, 0, 0, 0, 1, 9, 0, 0, 0, 0}, []byte{1},
			),
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := newChunkReader(bufio.NewReader(bytes.NewReader(tt.wire)))
			var got []rtmpMessage
			var err error
			for range 100 {
				var m rtmpMessage
				if m, err = cr.readMessage(); err != nil {
					break
				}
				m.Data = bytes.Clone(m.Data)
				got = append(got, m)
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d messages, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.TypeID != w.TypeID || g.StreamID != w.StreamID || g.Timestamp != w.Timestamp || !bytes.Equal(g.Data, w.Data) {
					t.Errorf("message %d: %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func FuzzChunkReader(f *testing.F) {
	f.Add(concat([]byte{0x04, 0, 0, 10, 0, 0, 3, 8, 1, 0, 0, 0}, []byte{1, 2, 3}, []byte{0xC4, 4, 5, 6}))
	f.Add(concat([]byte{0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0}, []byte{0, 0, 0, 16}, []byte{0x06, 0, 0, 0, 0, 0, 20, 9, 1, 0, 0, 0}, pattern(20, 3)))
	f.Add([]byte{0x06, 0xff, 0xff, 0xff, 0, 0, 2, 9, 1, 0, 0, 0, 1, 0, 0, 0, 5, 5})
	f.Add([]byte{0x01, 0xff, 0xff, 0x04, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, wire []byte) {
		cr := newChunkReader(bufio.NewReader(bytes.NewReader(wire)))
		for range 1000 {
			m, err := cr.readMessage()
			if err != nil {
				return
			}
			if uint32(len(m.Data)) > cr.maxMsg {
				t.Fatalf("message of %d bytes past the limit", len(m.Data))
			}
			if m.TypeID == msgSetChunkSize && len(m.Data) >= 4 {
				_ = cr.setChunkSize(uint32(m.Data[0])<<24 | uint32(m.Data[1])<<16 | uint32(m.Data[2])<<8 | uint32(m.Data[3]))
			}
		}
	})
}
