package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/livefuse/livefuse/av"
)

// SlateOff in Config.Slate turns the slate off: a stream whose feeds are
// all lost then ends at once.
const SlateOff = "off"

const (
	slateSeconds = 2
	slateFPS     = 25
	// maxSlates bounds the resolutions a node keeps a slate for.
	maxSlates      = 16
	slateMakeLimit = 30 * time.Second
)

// slateClip is a short still clip (one GOP: a keyframe then frames, with
// silent audio) that the switcher loops with continuous timestamps.
type slateClip struct {
	headers []*av.Packet // AVC and AAC sequence headers
	pkts    []*av.Packet // media, in DTS order, starting with the keyframe
	start   time.Duration
	dur     time.Duration // one loop
}

// slatePlay is the slate being played: where the loop stands.
type slatePlay struct {
	clip  *slateClip
	wall0 time.Time
	base  time.Duration // offset of loop 0
	loop  int
	i     int
}

// emitDue writes the slate packets whose time has come.
func (p *slatePlay) emitDue(s *switcher, now time.Time) {
	el := now.Sub(p.wall0)
	for n := 0; n < 10000; n++ {
		pk := p.clip.pkts[p.i]
		loopAt := time.Duration(p.loop) * p.clip.dur
		if pk.DTS-p.clip.start+loopAt > el {
			return
		}
		s.offset = p.base + loopAt
		s.emit(pk, now)
		p.i++
		if p.i == len(p.clip.pkts) {
			p.i = 0
			p.loop++
		}
	}
}

// slateCache makes and keeps slate clips per resolution, with ffmpeg, in
// the background: a stream asks for its resolution when it first sees it,
// so the clip is ready before a feed is lost.
type slateCache struct {
	src    string // "" or "on": generated; else an input file for ffmpeg
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // one ffmpeg at a time

	mu     sync.Mutex
	clips  map[[2]int]*slateClip
	making map[[2]int]bool
	failed int
}

func newSlateCache(src string, log *slog.Logger) *slateCache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &slateCache{src: src, log: log, ctx: ctx, cancel: cancel, sem: make(chan struct{}, 1),
		clips: map[[2]int]*slateClip{}, making: map[[2]int]bool{}}
}

func even(n int) int { return (n + 1) &^ 1 }

// prepare starts making the clip for w×h unless it exists or is on its way.
func (c *slateCache) prepare(w, h int) {
	if c.src == SlateOff || w <= 0 || h <= 0 || w > 8192 || h > 8192 {
		return
	}
	k := [2]int{even(w), even(h)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clips[k] != nil || c.making[k] || len(c.clips)+len(c.making) >= maxSlates || c.failed >= 3 {
		return
	}
	c.making[k] = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		clip, err := c.make(k[0], k[1])
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.making, k)
		if err != nil {
			c.failed++
			c.log.Warn("slate not made: streams without a feed will wait without a picture", "size", fmt.Sprintf("%dx%d", k[0], k[1]), "err", err)
			return
		}
		c.clips[k] = clip
		c.log.Debug("slate ready", "size", fmt.Sprintf("%dx%d", k[0], k[1]), "packets", len(clip.pkts))
	}()
}

// get returns the clip for w×h, or nil (and starts making it) when it is
// not ready yet.
func (c *slateCache) get(w, h int) *slateClip {
	k := [2]int{even(w), even(h)}
	c.mu.Lock()
	clip := c.clips[k]
	c.mu.Unlock()
	if clip == nil {
		c.prepare(w, h)
	}
	return clip
}

func (c *slateCache) close() {
	c.cancel()
	c.wg.Wait()
}

// slateArgs is the ffmpeg command line of a slate at w×h: a still picture
// ("please stand by", or the configured file scaled) with silent audio,
// one GOP, no B-frames, as FLV on stdout.
func slateArgs(src string, w, h int, text bool) []string {
	size := strconv.Itoa(w) + "x" + strconv.Itoa(h)
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error"}
	vf := "scale=" + strconv.Itoa(w) + ":" + strconv.Itoa(h) + ",format=yuv420p"
	if src == "" || src == "on" {
		args = append(args, "-f", "lavfi", "-i", "color=c=0x1c2433:s="+size+":r="+strconv.Itoa(slateFPS))
		if text {
			vf = "drawtext=text='Please stand by':fontcolor=white:fontsize=" + strconv.Itoa(max(12, h/12)) +
				":x=(w-text_w)/2:y=(h-text_h)/2," + vf
		}
	} else {
		args = append(args, "-loop", "1", "-i", src)
	}
	args = append(args,
		"-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo",
		"-map", "0:v:0", "-map", "1:a:0", "-t", strconv.Itoa(slateSeconds),
		"-vf", vf, "-r", strconv.Itoa(slateFPS),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage", "-bf", "0",
		"-g", strconv.Itoa(slateSeconds*slateFPS), "-keyint_min", strconv.Itoa(slateSeconds*slateFPS),
		"-c:a", "aac", "-b:a", "64k",
		"-f", "flv", "pipe:1")
	return args
}

func (c *slateCache) make(w, h int) (*slateClip, error) {
	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
	defer func() { <-c.sem }()
	clip, err := c.run(slateArgs(c.src, w, h, true))
	if err != nil && (c.src == "" || c.src == "on") {
		// drawtext needs a font; a plain picture is still a slate.
		clip, err = c.run(slateArgs(c.src, w, h, false))
	}
	return clip, err
}

func (c *slateCache) run(args []string) (*slateClip, error) {
	ctx, cancel := context.WithTimeout(c.ctx, slateMakeLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ffmpeg: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return parseSlate(bytes.NewReader(out))
}

// parseSlate reads a slate FLV into a clip.
func parseSlate(r io.Reader) (*slateClip, error) {
	fr, err := av.NewFLVReader(r)
	if err != nil {
		return nil, fmt.Errorf("slate: %w", err)
	}
	clip := &slateClip{}
	var avc, aac *av.Packet
	for n := 0; n < 100000; n++ {
		p, err := fr.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("slate: %w", err)
		}
		switch {
		case p.Kind == av.KindData:
		case p.Header && p.Kind == av.KindVideo:
			avc = p
		case p.Header:
			aac = p
		case len(clip.pkts) == 0 && !(p.Kind == av.KindVideo && p.Key):
			// before the first keyframe
		default:
			clip.pkts = append(clip.pkts, p)
		}
	}
	if avc == nil || len(clip.pkts) == 0 {
		return nil, errors.New("slate: no video")
	}
	clip.headers = append(clip.headers, avc)
	if aac != nil {
		clip.headers = append(clip.headers, aac)
	}
	clip.start = clip.pkts[0].DTS
	last := clip.pkts[len(clip.pkts)-1].DTS
	clip.dur = last - clip.start + time.Second/slateFPS
	return clip, nil
}
