package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
)

// window is the steady measuring window: after every player has started
// and settled, before the end of the run.
type window struct{ start, end time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// Player protocols.
const (
	protoFLV  = "http-flv"
	protoRTMP = "rtmp"
)

// player is one simulated viewer and what it measured. Only its own
// goroutine touches it until that goroutine ends.
type player struct {
	proto string
	win   window

	start      time.Time     // connect start
	gotFirst   bool          // a video frame arrived
	firstFrame time.Duration // connect start to the first video frame
	firstKey   bool          // that frame was a keyframe
	keyframes  int
	frames     int   // video frames in the window
	bytes      int64 // tag bytes in the window
	unstamped  int   // frames in the window without our SEI stamp
	lat        []int32
	last       time.Time // arrival of the previous video frame
	// lastBeforeEnd is the arrival of the last video frame before the
	// window ended.
	lastBeforeEnd time.Time
	maxGap        time.Duration
	err           error
	errAt         time.Time
	finished      atomic.Bool // set last by finish: the fields above are final
}

// framesPerLatencyBuffer sizes the latency slice up front (30 s at 25 fps).
const framesPerLatencyBuffer = 800

func newPlayer(proto string, win window) *player {
	return &player{proto: proto, win: win, lat: make([]int32, 0, framesPerLatencyBuffer)}
}

// onTag records one FLV tag body (audio, video or script data) that
// arrived at now. It does not keep body.
func (p *player) onTag(tagType uint8, body []byte, now time.Time) {
	in := p.win.contains(now)
	if in {
		p.bytes += int64(len(body))
	}
	// Video, AVC (codec id 7), NAL units (AVC packet type 1).
	if tagType != av.TagVideo || len(body) < 5 || body[0]&0x0f != 7 || body[1] != 1 {
		return
	}
	key := body[0]>>4 == 1
	if !p.gotFirst {
		p.gotFirst, p.firstFrame, p.firstKey = true, now.Sub(p.start), key
	}
	if key {
		p.keyframes++
	}
	if in {
		p.frames++
		if !p.last.IsZero() {
			p.maxGap = max(p.maxGap, now.Sub(p.last))
		}
		// Frames of the first GOP come out of the server's cache in a
		// burst, stamped up to a GOP ago: count latency from the second
		// keyframe on.
		if p.keyframes >= 2 {
			if ns, ok := stampFromAVCC(body[5:]); ok {
				us := now.Sub(time.Unix(0, ns)).Microseconds()
				p.lat = append(p.lat, int32(min(max(us, 0), 1<<31-1)))
			} else {
				p.unstamped++
			}
		}
	}
	p.last = now
	if now.Before(p.win.end) {
		p.lastBeforeEnd = now
	}
}

// finish records how the player ended. err is nil when it ran to the end
// of the run.
func (p *player) finish(err error, now time.Time) {
	p.err, p.errAt = err, now
	// A player that stopped receiving before the end has a gap up to the
	// end of the window (or up to when it ended, if earlier).
	end := p.win.end
	if now.Before(end) {
		end = now
	}
	from := p.lastBeforeEnd
	if from.Before(p.win.start) {
		from = p.win.start
	}
	if p.gotFirst && from.Before(end) {
		p.maxGap = max(p.maxGap, end.Sub(from))
	}
	p.finished.Store(true)
}

// disconnected reports whether the player failed before the window ended.
func (p *player) disconnected() bool {
	return p.err != nil && p.errAt.Before(p.win.end)
}

// keptUp: connected through the window and received at least 95% of the
// frames the publisher sent in it (a player the server makes skip to the
// next keyframe loses up to a GOP, 50 frames).
func (p *player) keptUp(expected int) bool {
	return p.gotFirst && !p.disconnected() && float64(p.frames) >= 0.95*float64(expected)
}

// setupTimeout bounds connecting and the protocol exchange before media.
const setupTimeout = 15 * time.Second

// runFLV plays http://addr/path as HTTP-FLV until ctx ends.
func runFLV(ctx context.Context, p *player, addr, path string) error {
	p.start = time.Now()
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(sctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("http-flv dial %s: %w", addr, err)
	}
	defer conn.Close()
	stopSetup := context.AfterFunc(sctx, func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: livefuse-loadtool\r\nAccept: */*\r\n\r\n", path, addr); err != nil {
		return fmt.Errorf("http-flv request: %w", ctxErr(sctx, err))
	}
	// Small: the FLV reader has its own buffer, and bufio passes large
	// reads straight through.
	br := bufio.NewReaderSize(conn, 4<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("http-flv response: %w", ctxErr(sctx, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("http-flv GET %s: %s", path, resp.Status)
	}
	fr, err := av.NewFLVReader(resp.Body)
	if err != nil {
		return fmt.Errorf("http-flv: %w", ctxErr(sctx, err))
	}
	if !stopSetup() {
		return fmt.Errorf("http-flv setup: %w", sctx.Err())
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		tagType, _, body, err := fr.ReadTag()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // a live stream does not end
			}
			return fmt.Errorf("http-flv read: %w", ctxErr(ctx, err))
		}
		p.onTag(tagType, body, time.Now())
	}
}

// runRTMP plays rtmp://addr/app/name until ctx ends.
func runRTMP(ctx context.Context, p *player, addr, app, name string) error {
	p.start = time.Now()
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	c, err := dialRTMP(sctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	sid, err := c.open(sctx, app, "rtmp://"+addr+"/"+app)
	if err != nil {
		return err
	}
	stopSetup := c.closeOnDone(sctx)
	if err := c.play(sctx, sid, name); err != nil {
		return err
	}
	stopSetup()
	stop := c.closeOnDone(ctx)
	defer stop()
	for {
		m, err := c.readMessage(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("rtmp read: %w", ctxErr(ctx, err))
		}
		switch m.TypeID {
		case msgAudio, msgVideo:
			p.onTag(m.TypeID, m.Data, time.Now())
		case msgCommandAMF0:
			cmd, err := decodeCommand(m.Data)
			if err != nil {
				return err
			}
			if _, err := onStatus("play", "NetStream.Play.Start")(cmd); err != nil {
				return err
			}
		}
	}
}
