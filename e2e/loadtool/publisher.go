package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/livefuse/livefuse/av"
)

// publisher sends the clip over RTMP in real time, looping it with
// increasing timestamps, and stamps every video frame with an SEI NAL unit
// holding its send time.
type publisher struct {
	addr   string // host:port
	app    string
	stream string // stream name with ?token=…
	clip   *clip
	win    window
	log    *slog.Logger

	// Results, read after run returns.
	framesSent     int
	framesInWindow int
	maxLate        time.Duration // how far behind schedule a send started
	unstamped      int           // frames appendStamped could not parse
}

// publishChunkSize is the chunk size we write with: one chunk per frame for
// most frames, so a frame costs one write.
const publishChunkSize = 64 << 10

// connect opens the connection and publishes, retrying while the server
// refuses (the stream registry may still be loading right after start).
func (p *publisher) connect(ctx context.Context) (*rtmpConn, uint32, error) {
	var lastErr error
	for attempt := 0; attempt < 15; attempt++ {
		if attempt > 0 && !sleepUntil(ctx, time.Now().Add(time.Second)) {
			break
		}
		c, sid, err := p.connectOnce(ctx)
		if err == nil {
			return c, sid, nil
		}
		lastErr = err
		p.log.Debug("publish attempt failed", "stream", p.app+"/"+p.stream, "err", err)
	}
	if ctx.Err() != nil {
		return nil, 0, ctx.Err()
	}
	return nil, 0, fmt.Errorf("publish %s/%s: %w", p.app, p.stream, lastErr)
}

func (p *publisher) connectOnce(ctx context.Context) (*rtmpConn, uint32, error) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialRTMP(sctx, p.addr)
	if err != nil {
		return nil, 0, err
	}
	if err := c.setChunkSize(sctx, publishChunkSize); err != nil {
		c.Close()
		return nil, 0, err
	}
	sid, err := c.open(sctx, p.app, "rtmp://"+p.addr+"/"+p.app)
	if err == nil {
		err = c.publish(sctx, sid, p.stream)
	}
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	return c, sid, nil
}

// run publishes until ctx ends. ready is closed once the server accepted
// the publish. It returns nil when ctx ends.
func (p *publisher) run(ctx context.Context, ready chan<- struct{}) error {
	c, sid, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := c.closeOnDone(ctx)
	defer stop()
	p.log.Info("publishing", "stream", p.app+"/"+p.stream, "remote", p.addr)

	// Keep reading what the server sends (acks, status) so it never
	// blocks on us; a read error means the server dropped the publisher.
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, err := c.readMessage(ctx); err != nil {
				readErr <- err
				return
			}
		}
	}()

	var buf []byte
	for _, h := range p.clip.headers {
		var typ uint8
		buf, typ, _ = av.AppendTagBody(buf[:0], h)
		if err := c.writeMedia(ctx, sid, typ, 0, buf); err != nil {
			return fmt.Errorf("publish headers: %w", ctxErr(ctx, err))
		}
	}
	close(ready)

	t0 := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for loop := time.Duration(0); ; loop++ {
		for _, pk := range p.clip.media {
			dts := pk.DTS + loop*p.clip.period
			due := t0.Add(dts)
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return nil
				case err := <-readErr:
					return fmt.Errorf("publish: server connection: %w", ctxErr(ctx, err))
				case <-timer.C:
				}
			}
			now := time.Now()
			p.maxLate = max(p.maxLate, now.Sub(due))
			var typ uint8
			if pk.Kind == av.KindVideo {
				hdr := *pk
				hdr.Data, hdr.DTS = nil, dts
				buf, typ, _ = av.AppendTagBody(buf[:0], &hdr) // the 5-byte AVC tag header
				var ok bool
				if buf, ok = appendStamped(buf, pk.Data, now.UnixNano()); !ok {
					p.unstamped++
				}
				p.framesSent++
				if p.win.contains(now) {
					p.framesInWindow++
				}
			} else {
				buf, typ, _ = av.AppendTagBody(buf[:0], pk)
			}
			if err := c.writeMedia(ctx, sid, typ, uint32(dts.Milliseconds()), buf); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("publish: %w", err)
			}
		}
	}
}
