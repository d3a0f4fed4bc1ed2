package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/livefuse/livefuse/av"
)

// clipSeconds is the length of the generated clip; the publisher loops it.
const clipSeconds = 20

// generateClip encodes the test clip with ffmpeg: 1280x720 25 fps H.264 at a
// constant 2.5 Mbit/s (filler data pads easy frames), a keyframe every 2 s,
// two B-frames, and stereo AAC, as FLV.
func generateClip(ctx context.Context, path string) error {
	args := []string{
		"-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
		"-t", fmt.Sprint(clipSeconds), "-map", "0:v", "-map", "1:a",
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "2",
		"-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k", "-x264-params", "nal-hrd=cbr",
		"-c:a", "aac", "-b:a", "128k", "-ac", "2",
		"-f", "flv", path,
	}
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ffmpeg clip: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// clip is the test clip in memory, ready to be sent in a loop.
type clip struct {
	headers []*av.Packet // script data and sequence headers, sent once
	media   []*av.Packet // frames in file order
	// period is how far timestamps move on each loop: past the last
	// packet by one video frame, so DTS keeps increasing.
	period time.Duration
	// videoFrames is the number of video frames per loop.
	videoFrames int
}

// loadClip reads the FLV clip with av.FLVReader.
func loadClip(path string) (*clip, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	defer f.Close()
	r, err := av.NewFLVReader(f)
	if err != nil {
		return nil, fmt.Errorf("clip %s: %w", path, err)
	}
	c := &clip{}
	var all []*av.Packet
	for {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("clip %s: %w", path, err)
		}
		if p.Header || p.Kind == av.KindData {
			c.headers = append(c.headers, p)
			continue
		}
		all = append(all, p)
	}
	// The loop follows the video: it starts at the first video frame and
	// lasts as many frame intervals as there are frames, so the video
	// cadence runs on across loops. Audio outside that span is dropped.
	var first, last time.Duration = -1, 0
	for _, p := range all {
		if p.Kind == av.KindVideo {
			if first < 0 {
				first = p.DTS
			}
			last = max(last, p.DTS)
			c.videoFrames++
		}
	}
	if c.videoFrames < 2 {
		return nil, fmt.Errorf("clip %s: %d video frames, want at least 2", path, c.videoFrames)
	}
	frame := (last - first) / time.Duration(c.videoFrames-1)
	c.period = last - first + frame
	for _, p := range all {
		p.DTS -= first
		if p.DTS >= 0 && p.DTS < c.period {
			c.media = append(c.media, p)
		}
	}
	return c, nil
}
