package origin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
)

// Ingest health: what arrives on each feed, measured by the switcher on
// every media packet it takes (before it decides what to show), over a
// sliding window (Config.HealthWindow, default 5 s): frame rate, bitrate
// (audio and video payload) and audio bitrate, the mean keyframe interval
// (in stream time, between keyframes that arrived in the window), whether
// B-frames are present (a video frame presented before one decoded
// earlier) and whether audio arrives. Resolution, RTT and the age of the
// last packet come from the feed's state.
//
// The window is a ring of healthBuckets fixed buckets, each a tenth of
// the window: adding a packet is a few integer operations and allocates
// nothing; reading sums the buckets inside the window and divides by the
// span they cover (shorter for a young feed), so figures are exact to
// within one bucket at the window's far edge.

const healthBuckets = 10

// maxHealthWindow bounds Config.HealthWindow.
const maxHealthWindow = 5 * time.Minute

type healthBucket struct {
	slot       int64 // bucket number + 1 (0: empty)
	bytes      int64
	audioBytes int64
	frames     int64
	keySum     time.Duration // sum of keyframe intervals ending in this bucket
	keys       int64
	reorder    bool // a B-frame was seen
}

// feedHealth is one feed's sliding window. The zero value is not ready:
// use reset.
type feedHealth struct {
	window  time.Duration
	bucket  time.Duration
	b       [healthBuckets]healthBucket
	first   time.Duration // arrival of the first packet
	started bool

	lastDTS     time.Duration // of the last video frame
	haveDTS     bool
	lastKeyDTS  time.Duration
	haveKey     bool
	lastKeyGap  time.Duration // the last keyframe interval (kept beyond the window)
	maxPTS      time.Duration
	havePTS     bool
	lastAudio   time.Duration // arrival of the last audio packet
	audioSeen   bool
	lastReorder time.Duration
	reordered   bool
}

// reset empties the window (a new publisher) with window w.
func (h *feedHealth) reset(w time.Duration) {
	if w <= 0 {
		w = DefaultConfig().HealthWindow
	}
	*h = feedHealth{window: w, bucket: w / healthBuckets}
}

func (h *feedHealth) slot(now time.Duration) (int64, *healthBucket) {
	s := int64(now / h.bucket)
	b := &h.b[s%healthBuckets]
	if b.slot != s+1 {
		*b = healthBucket{slot: s + 1}
	}
	return s, b
}

// add counts media packet p (not a header or data packet) that arrived at
// now (a monotonic clock reading).
func (h *feedHealth) add(now time.Duration, p *av.Packet) {
	if h.bucket <= 0 {
		h.reset(0)
	}
	if !h.started {
		h.started, h.first = true, now
	}
	_, b := h.slot(now)
	b.bytes += int64(len(p.Data))
	switch p.Kind {
	case av.KindAudio:
		b.audioBytes += int64(len(p.Data))
		h.lastAudio, h.audioSeen = now, true
	case av.KindVideo:
		b.frames++
		if h.haveDTS && p.DTS < h.lastDTS {
			// A new timeline (an encoder restarted its clock): what was
			// presented before says nothing about order now.
			h.havePTS, h.haveKey = false, false
		}
		h.lastDTS, h.haveDTS = p.DTS, true
		pts := p.DTS + p.CTS
		if h.havePTS && pts < h.maxPTS {
			b.reorder = true
			h.lastReorder, h.reordered = now, true
		}
		if !h.havePTS || pts > h.maxPTS {
			h.maxPTS, h.havePTS = pts, true
		}
		if p.Key {
			if h.haveKey {
				if gap := p.DTS - h.lastKeyDTS; gap > 0 && gap < time.Hour {
					b.keySum += gap
					b.keys++
					h.lastKeyGap = gap
				}
			}
			h.lastKeyDTS, h.haveKey = p.DTS, true
		}
	}
}

// healthFigures are a feed's figures over the window.
type healthFigures struct {
	fps              float64
	bitrate          int64 // bits per second, audio and video
	audioBitrate     int64
	keyframeInterval time.Duration // mean over the window (else the last one)
	bframes          bool
	audio            bool
}

// figures reads the window at now.
func (h *feedHealth) figures(now time.Duration) healthFigures {
	var f healthFigures
	if !h.started || h.bucket <= 0 {
		return f
	}
	cur := int64(now / h.bucket)
	oldest := cur - healthBuckets + 1
	var bytes, abytes, frames, keys int64
	var keySum time.Duration
	for i := range h.b {
		b := &h.b[i]
		if s := b.slot - 1; b.slot != 0 && s >= oldest && s <= cur {
			bytes += b.bytes
			abytes += b.audioBytes
			frames += b.frames
			keySum += b.keySum
			keys += b.keys
			f.bframes = f.bframes || b.reorder
		}
	}
	span := now - time.Duration(oldest)*h.bucket
	if d := now - h.first; d < span {
		span = d
	}
	// A young feed is measured over at least a second: one frame in its
	// first 100 ms is not 10 fps.
	span = max(span, min(time.Second, h.window))
	sec := span.Seconds()
	f.fps = float64(frames) / sec
	f.bitrate = int64(float64(bytes*8) / sec)
	f.audioBitrate = int64(float64(abytes*8) / sec)
	if keys > 0 {
		f.keyframeInterval = keySum / time.Duration(keys)
	} else if frames > 0 {
		// A GOP longer than the window: the last interval measured.
		f.keyframeInterval = h.lastKeyGap
	}
	f.audio = h.audioSeen && now-h.lastAudio < h.window
	return f
}

// feedCollector exports every live stream's feeds at each scrape, labelled
// by stream and feed only: the series follow the streams the unit serves
// and vanish with them (nothing to delete, nothing kept).
type feedCollector struct {
	h *Hub

	up, active, fps, bitrate, audioBitrate, keyInt, bframes, audio, width, height, rtt, age *prometheus.Desc
}

func newFeedCollector(h *Hub) *feedCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"stream", "feed"}, nil)
	}
	return &feedCollector{h: h,
		up:           d("livefuse_origin_feed_up", "1 when the feed has a publisher and media arrived within origin.feed_timeout."),
		active:       d("livefuse_origin_feed_active", "1 when the feed is the one shown."),
		fps:          d("livefuse_origin_feed_fps", "Video frames per second arriving on the feed, over origin.health_window."),
		bitrate:      d("livefuse_origin_feed_bitrate_kbps", "Audio and video payload arriving on the feed, kbit/s over origin.health_window."),
		audioBitrate: d("livefuse_origin_feed_audio_bitrate_kbps", "Audio payload arriving on the feed, kbit/s over origin.health_window."),
		keyInt:       d("livefuse_origin_feed_keyframe_interval_seconds", "Mean interval between the feed's keyframes (stream time) over origin.health_window."),
		bframes:      d("livefuse_origin_feed_bframes", "1 when the feed's video has B-frames (frames presented out of decode order) within origin.health_window."),
		audio:        d("livefuse_origin_feed_audio", "1 when audio arrived on the feed within origin.health_window."),
		width:        d("livefuse_origin_feed_width", "Width of the feed's video, from its sequence header."),
		height:       d("livefuse_origin_feed_height", "Height of the feed's video, from its sequence header."),
		rtt:          d("livefuse_origin_feed_rtt_seconds", "Round-trip time to the feed's publisher (when the protocol measures it)."),
		age:          d("livefuse_origin_feed_last_packet_age_seconds", "Time since the feed's last media packet arrived."),
	}
}

func (c *feedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.active, c.fps, c.bitrate, c.audioBitrate, c.keyInt, c.bframes, c.audio, c.width, c.height, c.rtt, c.age} {
		ch <- d
	}
}

func (c *feedCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, st := range c.h.List() {
		stream := st.App + "/" + st.Name
		for _, f := range st.Switch.Feeds {
			if f.State == "offline" && f.LastPacketAgeMillis == 0 {
				continue // never published: no series
			}
			g := func(d *prometheus.Desc, v float64) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, stream, f.Feed)
			}
			g(c.up, b(f.State == "live"))
			g(c.active, b(f.Active))
			g(c.fps, f.FPS)
			g(c.bitrate, float64(f.Bitrate)/1000)
			g(c.audioBitrate, float64(f.AudioBitrate)/1000)
			g(c.keyInt, f.KeyframeIntervalMillis/1000)
			g(c.bframes, b(f.BFrames))
			g(c.audio, b(f.Audio))
			g(c.width, float64(f.Width))
			g(c.height, float64(f.Height))
			if f.RTTMillis > 0 {
				g(c.rtt, f.RTTMillis/1000)
			}
			g(c.age, float64(f.LastPacketAgeMillis)/1000)
		}
	}
}
