package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp/handshake"

	"github.com/livefuse/livefuse/av"
)

// rtmpGroupReader is a reader that group writers may serve, as origin's
// readers are: while joined, packets pushed to it are written by calling
// the player's step from one goroutine (the group's), never by waking
// ReadPackets.
type rtmpGroupReader struct {
	mu     sync.Mutex
	q      []*av.Packet
	step   func() // set while the player is in the group
	joins  int
	leaves int
	closed bool
	wake   chan struct{}
	kick   chan struct{}
}

func newRTMPGroupReader() *rtmpGroupReader {
	r := &rtmpGroupReader{wake: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	return r
}

// runGroup is the group writer: it gives the player its turn at every
// kick until ctx ends.
func (r *rtmpGroupReader) runGroup(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.mu.Lock()
		step := r.step
		r.mu.Unlock()
		if step != nil {
			step()
		}
	}
}

func (r *rtmpGroupReader) signal() {
	r.mu.Lock()
	grouped := r.step != nil
	r.mu.Unlock()
	ch := r.wake
	if grouped {
		ch = r.kick
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (r *rtmpGroupReader) push(p *av.Packet) {
	r.mu.Lock()
	r.q = append(r.q, p)
	r.mu.Unlock()
	r.signal()
}

func (r *rtmpGroupReader) Poll(dst []*av.Packet) ([]*av.Packet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return dst, errors.New("reader closed")
	}
	dst = append(dst, r.q...)
	r.q = r.q[:0]
	return dst, nil
}

func (r *rtmpGroupReader) ReadPackets(_ context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	for {
		n := len(dst)
		var err error
		if dst, err = r.Poll(dst); err != nil || len(dst) > n {
			return dst, err
		}
		<-r.wake
	}
}

func (r *rtmpGroupReader) JoinGroup(step func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.q) > 0 || r.closed {
		return false
	}
	r.step = step
	r.joins++
	return true
}

func (r *rtmpGroupReader) LeaveGroup() {
	r.mu.Lock()
	r.step = nil
	r.leaves++
	r.mu.Unlock()
}

func (r *rtmpGroupReader) StepDone() {}

func (r *rtmpGroupReader) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.signal()
}

func (r *rtmpGroupReader) counts() (joins, leaves int, closed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.joins, r.leaves, r.closed
}

type rtmpGroupPlay struct{ r *rtmpGroupReader }

func (p rtmpGroupPlay) Subscribe(app, name string) (PacketReader, error) { return p.r, nil }

// TestRTMPPlayGroupWriter: a caught-up RTMP player is served by its
// stream's group writer; when its socket fills (it stops reading while
// 12 MiB are queued) its writer leaves the group, finishes the write in a
// goroutine of its own and joins again once caught up; the player gets
// every message whole, in order; its end closes the reader.
func TestRTMPPlayGroupWriter(t *testing.T) {
	gr := newRTMPGroupReader()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go gr.runGroup(ctx)
	deps := Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{token: "T"}, Play: rtmpGroupPlay{gr}}
	s, _ := rtmpTestServer(t, RTMPConfig{}, deps, nil)

	// A player on a slow line: a small receive buffer, set before the
	// connection is made (shrinking it after makes the kernel drop what
	// the window already allowed, and TCP's retransmission back-off
	// stalls the stream).
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := handshake.HandshakeWithServer(nc, nc, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_ = nc.SetDeadline(time.Time{})
	send := func(csid, sid uint32, name string, txID int64, args ...any) {
		typeID, payload, err := rtmpEncodeCommand(name, txID, rtmpTestArgs(args))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(rtmpAppendMessage(nil, csid, typeID, sid, 0, payload, 128)); err != nil {
			t.Fatal(err)
		}
	}
	send(3, 0, "connect", 1, map[string]any{"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
	send(3, 0, "createStream", 2, nil)
	send(8, 1, "play", 3, nil, "x")

	const frames, size = 192, 64 << 10
	frame := func(i int) *av.Packet {
		data := rtmpPattern(size)
		binary.BigEndian.PutUint32(data, uint32(i))
		return &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i == 0, DTS: time.Duration(i) * 40 * time.Millisecond, Data: data}
	}
	gr.push(frame(0))
	rtmpWaitFor(t, 5*time.Second, "the player in the group", func() bool { j, _, _ := gr.counts(); return j == 1 })
	for i := 1; i < frames; i++ {
		gr.push(frame(i))
	}
	rtmpWaitFor(t, 5*time.Second, "the full socket taking the player out of the group", func() bool { _, l, _ := gr.counts(); return l >= 1 })

	p := newRTMPChunkParser(0)
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	next := 0
	for next < frames {
		cs, err := p.readMessage(nc)
		if err != nil {
			t.Fatalf("after %d of %d frames: %v", next, frames, err)
		}
		if cs.typeID != av.TagVideo {
			continue
		}
		want, _, _ := av.AppendTagBody(nil, frame(next))
		if !bytes.Equal(cs.buf, want) {
			t.Fatalf("frame %d: %d bytes differ from the %d sent", next, len(cs.buf), len(want))
		}
		next++
	}
	rtmpWaitFor(t, 5*time.Second, "the player back in the group", func() bool { j, _, _ := gr.counts(); return j >= 2 })
	gr.push(frame(frames))
	if cs, err := p.readMessage(nc); err != nil || cs.typeID != av.TagVideo {
		t.Fatalf("a frame after rejoining: %v", err)
	}
	nc.Close()
	rtmpWaitFor(t, 5*time.Second, "reader closed", func() bool { _, _, c := gr.counts(); return c })
}
