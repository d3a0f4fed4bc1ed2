package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rtmpPlayer is an RTMP player made of the raw client (rawRTMP): it plays
// live/<name> and records when each video frame arrives; every message is
// parsed as chunks, so a corrupted chunk stream ends it with an error.
type rtmpPlayer struct {
	c       *rawRTMP
	mu      sync.Mutex
	arrived []time.Time
	badBody int // video messages that are not an AVC tag body
	err     error
	done    chan struct{}
	pause   atomic.Int64 // nanoseconds to stop reading for, from the next message on
}

const rtmpTypeVideo = 9

// dialRTMPPlay connects, creates a stream and asks to play live/<name>;
// readBuf > 0 makes the socket's receive buffer that small (a player on a
// slow line). It reads nothing after createStream's answer.
func dialRTMPPlay(t *testing.T, addr, name string, readBuf int) *rawRTMP {
	t.Helper()
	d := loopbackDialer(0)
	if readBuf > 0 {
		// Set before the connection is made: shrinking the buffer after
		// makes the kernel drop what the window already allowed, and
		// TCP's retransmission back-off then stalls the stream.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, readBuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("rtmp play: %v", err)
	}
	c := &rawRTMP{nc: nc, cr: newChunkReader(nc), chunk: 128}
	t.Cleanup(func() { c.Close() })
	if err := c.handshake(); err != nil {
		t.Fatalf("rtmp play: handshake: %v", err)
	}
	sid, err := c.connectAndCreate("rtmp://" + addr + "/live")
	if err != nil {
		t.Fatalf("rtmp play: %v", err)
	}
	if err := c.send(8, rtmpTypeCommandAMF0, sid, concat(amfString("play"), amfNumber(3), amfNull, amfString(name))); err != nil {
		t.Fatalf("rtmp play: %v", err)
	}
	return c
}

// playRTMP plays live/<name> from addr until the test ends.
func playRTMP(t *testing.T, addr, name string, readBuf int) *rtmpPlayer {
	t.Helper()
	p := &rtmpPlayer{c: dialRTMPPlay(t, addr, name, readBuf), done: make(chan struct{})}
	go p.read()
	t.Cleanup(func() {
		p.c.Close()
		<-p.done
	})
	return p
}

func (p *rtmpPlayer) read() {
	defer close(p.done)
	for {
		if d := p.pause.Swap(0); d > 0 {
			time.Sleep(time.Duration(d))
		}
		m, err := p.c.cr.read()
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			return
		}
		if m.typeID != rtmpTypeVideo {
			continue
		}
		b := m.payload
		p.mu.Lock()
		switch {
		case len(b) < 5 || b[0]&0x0f != 7 || b[0]>>4 < 1 || b[0]>>4 > 2 || b[1] > 2:
			p.badBody++
		case b[1] == 1: // a frame, not the sequence header
			p.arrived = append(p.arrived, time.Now())
		}
		p.mu.Unlock()
	}
}

// framesSince is the number of video frames that arrived after from.
func (p *rtmpPlayer) framesSince(from time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, a := range p.arrived {
		if a.After(from) {
			n++
		}
	}
	return n
}

// maxGap is the largest interval between video frames after from (until
// now).
func (p *rtmpPlayer) maxGap(from time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return largestGap(p.arrived, from)
}

// state is the player's error and count of malformed video messages.
func (p *rtmpPlayer) state() (error, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err, p.badBody
}

func (p *rtmpPlayer) waitFrames(t *testing.T, n int, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if p.framesSince(time.Time{}) >= n {
			return
		}
	}
	err, _ := p.state()
	t.Fatalf("rtmp player got %d video frames in %v, want %d (err %v)", p.framesSince(time.Time{}), within, n, err)
}

// TestSlowRTMPReader: RTMP players that stop reading slow neither the
// publisher nor the other players, are let go, and one that pauses for
// 2 s (its socket fills, so its writer leaves the stream's group writer
// and finishes the write alone) resumes with a chunk stream intact.
func TestSlowRTMPReader(t *testing.T) {
	s := startServer(t, demoStreams)
	pub := push(t, s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, s.flvURL("demo"), 10*time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", s.rtmp)
	good1 := playRTMP(t, addr, "demo", 0)
	good1.waitFrames(t, 5, 5*time.Second)
	paused := playRTMP(t, addr, "demo", 16<<10)
	paused.waitFrames(t, 5, 5*time.Second)

	for range 3 { // play, then never read (closed at the test's end)
		dialRTMPPlay(t, addr, "demo", 4096)
	}
	from := time.Now()
	good2 := playRTMP(t, addr, "demo", 0)
	paused.pause.Store(int64(2 * time.Second))
	time.Sleep(12 * time.Second)

	for i, p := range []*rtmpPlayer{good1, good2} {
		gap := p.maxGap(from)
		err, bad := p.state()
		t.Logf("player %d: %d frames, largest gap %v", i, p.framesSince(from), gap)
		if gap > time.Second || err != nil || bad > 0 {
			t.Errorf("player %d: largest gap %v with stalled readers (want < 1 s), error %v, %d malformed video messages", i, gap, err, bad)
		}
	}
	// 12 s at 25 fps: the second player must have about 300 frames.
	if n := good2.framesSince(from); n < 12*25*8/10 {
		t.Errorf("player 2 got %d frames in 12 s; the stream was slowed", n)
	}
	resumed := from.Add(2500 * time.Millisecond)
	err, bad := paused.state()
	t.Logf("paused player: %d frames after resuming, largest gap since %v", paused.framesSince(resumed), paused.maxGap(resumed))
	if err != nil || bad > 0 || paused.framesSince(resumed) < 9*25*7/10 || paused.maxGap(resumed) > time.Second {
		t.Errorf("paused player after resuming: %d frames (want about %d), largest gap %v, error %v, %d malformed video messages",
			paused.framesSince(resumed), 9*25, paused.maxGap(resumed), err, bad)
	}
	if pub.ProcessState != nil {
		t.Errorf("publisher exited: %v", pub.ProcessState)
	}
}
