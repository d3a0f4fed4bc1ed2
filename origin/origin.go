// Package origin holds the live streams of one origin unit and serves them
// to players.
//
// A publisher's packets enter through a Feed of the Hub and are written to
// the stream's Stream, the only fan-out point: every player, packager,
// recorder or relay is a Reader of it, with its own bounded queue, so a slow
// reader never slows the writer or any other reader. The Hub also serves the
// HTTP outputs: HTTP-FLV (/{app}/{name}.flv) and HLS
// (/{app}/{name}/index.m3u8 and its segments, packaged by tshls, or by
// gohlslib for fmp4 and low-latency); for a stream with renditions
// index.m3u8 is a multivariant playlist (abr.go). The HTTP handler is the
// only play router of the media listener, and Hub.Play gives RTMP players
// their reader: origin alone decides which stream and which output serve
// a player.
//
// What a stream's outputs should be (feed policy, encryption, play alias,
// renditions) is its StreamPolicy, pushed by the wiring from the registry
// (policy.go). Encryption is a property of the outputs (crypt.go): the
// MPEG-TS packager does SAMPLE-AES itself, and HTTP-FLV and RTMP players
// of an encrypted stream read its encrypted FLV output, fed by one
// internal reader that encrypts each packet once. Every reader is
// counted: players by protocol (HLS players by distinct client,
// viewers.go), and internal readers apart.
package origin

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"time"
)

// Errors returned by the Hub and by readers.
var (
	// ErrBusy is returned by Publish when the feed already has a live publisher.
	ErrBusy = errors.New("feed already has a publisher")
	// ErrNotFound is returned for a stream that is not live.
	ErrNotFound = errors.New("stream not live")
	// ErrClosed is returned by a Hub after Close.
	ErrClosed = errors.New("origin closed")

	// ErrEnded is returned by ReadPackets after the last packet of a stream
	// that ended (its publishers left, or it was kicked).
	ErrEnded = errors.New("stream ended")
	// ErrNotServed: another unit serves the stream's players
	// (StreamPolicy.Refuse).
	ErrNotServed = errors.New("stream not served by this unit")
	// ErrDropped is returned by ReadPackets when the reader fell too far
	// behind and was disconnected.
	ErrDropped = errors.New("reader dropped: too far behind")
	// ErrReaderClosed is returned by ReadPackets after Close.
	ErrReaderClosed = errors.New("reader closed")
)

// HLS variants accepted in Config.HLSVariant.
const (
	HLSMPEGTS     = "mpegts"
	HLSFMP4       = "fmp4"
	HLSLowLatency = "lowlatency"
	HLSOff        = "off"
)

// Values of Config.HLSStore.
const (
	HLSStoreDisk   = "disk"
	HLSStoreMemory = "memory"
)

// Config tunes the origin. Every field has a default (DefaultConfig); a zero
// field is replaced by its default.
type Config struct {
	// GOPCacheBytes bounds the cached GOP in payload bytes; a longer GOP is
	// not cached and new readers then wait for the next keyframe.
	GOPCacheBytes int `yaml:"gop_cache_bytes"`
	// GOPCachePackets bounds the cached GOP in packets.
	GOPCachePackets int `yaml:"gop_cache_packets"`
	// ReaderQueue is the number of packets a reader may have queued before
	// it is moved to skip (drop until the next keyframe).
	ReaderQueue int `yaml:"reader_queue"`
	// MaxLag is how long a reader may stay behind (skipping with its queue
	// still more than half full) before it is disconnected.
	MaxLag time.Duration `yaml:"max_lag"`
	// MaxOverflows is how many times a reader may overflow its queue within
	// a minute before it is disconnected.
	MaxOverflows int `yaml:"max_overflows"`
	// FLVCoalesce is the latency-versus-CPU setting of HTTP-FLV and RTMP
	// players: about the longest a packet waits so that a player writes
	// several at once. Below two video frame intervals (the default 40ms
	// at 25-30 fps) only audio waits, for the next video frame: one write
	// per frame, video never delayed. From two frame intervals on, video
	// frames wait too while the next one is due within it (100ms at 30 fps:
	// about 3 frames a write). 0 turns it off (every packet is written
	// as it comes).
	FLVCoalesce time.Duration `yaml:"flv_coalesce"`
	// HLSVariant is "mpegts" (default), "fmp4", "lowlatency" or "off".
	HLSVariant string `yaml:"hls_variant"`
	// HLSSegmentDuration is the minimum segment duration (segments end at
	// the first keyframe after it).
	HLSSegmentDuration time.Duration `yaml:"hls_segment_duration"`
	// HLSSegmentCount is the number of segments in the playlist.
	HLSSegmentCount int `yaml:"hls_segment_count"`
	// HLSStore is where finished MPEG-TS HLS segments are kept: "disk"
	// (default: files under HLSDir, as SRS and nginx-rtmp keep theirs,
	// so the kernel's page cache holds them and not the process heap)
	// or "memory". A segment the disk cannot take stays in memory.
	HLSStore string `yaml:"hls_store"`
	// HLSDir is the directory of the "disk" store; the livefuse wiring
	// sets it to data_dir/hls when empty. Empty here keeps segments in
	// memory. At start the hub removes segment files an earlier process
	// left in it.
	HLSDir string `yaml:"hls_dir"`

	// FeedTimeout is how long a feed may go without media before it is
	// taken as lost (the switcher then moves to the other feed or the slate).
	FeedTimeout time.Duration `yaml:"feed_timeout"`
	// ReturnAfter is how long main must be healthy before the auto policy
	// switches back to it (at its next keyframe).
	ReturnAfter time.Duration `yaml:"return_after"`
	// StartWindow is how long, at a stream's start, a backup feed that is
	// ready alone waits for main before it is shown (under the auto policy):
	// when main and backup arrive within it of each other the stream starts
	// on main, with no switch later. A lone main starts at once; a lone
	// backup starts this much later (from its cached GOP, so its first
	// picture is whole). A negative value turns the wait off (whichever feed
	// is first is shown, and main returns after ReturnAfter).
	StartWindow time.Duration `yaml:"start_window"`
	// Slate is what plays while no feed is healthy: "" or "on" for a
	// generated "please stand by" picture, a file path for ffmpeg to
	// scale, or "off" (the stream then ends when its feeds are gone).
	Slate string `yaml:"slate"`
	// SlateAfter is how long the only feed may stall before the slate
	// replaces it (with a healthy other feed the switch happens after
	// FeedTimeout).
	SlateAfter time.Duration `yaml:"slate_after"`
	// SlateMax ends a stream that has shown the slate this long with no
	// publisher connected.
	SlateMax time.Duration `yaml:"slate_max"`
	// HealthWindow is the sliding window of each feed's ingest health
	// (frame rate, bitrate, keyframe interval, B-frames, audio), in the
	// API and in /metrics: 500ms to 5m.
	HealthWindow time.Duration `yaml:"health_window"`

	// Authorize checks a play request: uri is the request path (for HLS,
	// the stream's index.m3u8 path for every file, since gohlslib passes the
	// playlist's query on to the files it lists), q its query. nil lets
	// everyone play. Set by the wiring, not by YAML.
	Authorize func(app, name, uri string, q url.Values) error `yaml:"-"`
	// CheckAddress checks a player's address against the IP lists (the
	// media listener's and the stream's) before Authorize; an error is
	// answered 403 with its reason logged. nil: no lists. Set by the wiring.
	CheckAddress func(app, name string, remote netip.Addr) error `yaml:"-"`
	// Encryption configures the encrypted outputs. Set by the wiring.
	Encryption EncryptionConfig `yaml:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		GOPCacheBytes:      16 << 20,
		GOPCachePackets:    4096,
		ReaderQueue:        1024,
		MaxLag:             5 * time.Second,
		MaxOverflows:       8,
		FLVCoalesce:        40 * time.Millisecond,
		HLSVariant:         HLSMPEGTS,
		HLSSegmentDuration: time.Second,
		HLSSegmentCount:    7,
		HLSStore:           HLSStoreDisk,
		FeedTimeout:        500 * time.Millisecond,
		ReturnAfter:        10 * time.Second,
		StartWindow:        time.Second,
		SlateAfter:         time.Second,
		SlateMax:           10 * time.Minute,
		HealthWindow:       5 * time.Second,
	}
}

// withDefaults fills zero fields from DefaultConfig and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.GOPCacheBytes <= 0 {
		c.GOPCacheBytes = d.GOPCacheBytes
	}
	if c.GOPCachePackets <= 0 {
		c.GOPCachePackets = d.GOPCachePackets
	}
	if c.ReaderQueue <= 0 {
		c.ReaderQueue = d.ReaderQueue
	}
	if c.MaxLag <= 0 {
		c.MaxLag = d.MaxLag
	}
	if c.MaxOverflows <= 0 {
		c.MaxOverflows = d.MaxOverflows
	}
	if c.FLVCoalesce < 0 {
		c.FLVCoalesce = 0
	}
	if c.HLSVariant == "" {
		c.HLSVariant = d.HLSVariant
	}
	if c.HLSSegmentDuration <= 0 {
		c.HLSSegmentDuration = d.HLSSegmentDuration
	}
	if c.HLSSegmentCount <= 0 {
		c.HLSSegmentCount = d.HLSSegmentCount
	}
	if c.HLSStore == "" {
		c.HLSStore = d.HLSStore
	}
	if c.HLSStore != HLSStoreDisk && c.HLSStore != HLSStoreMemory {
		return c, fmt.Errorf("origin: hls_store %q: want disk or memory", c.HLSStore)
	}
	if c.FeedTimeout <= 0 {
		c.FeedTimeout = d.FeedTimeout
	}
	if c.ReturnAfter <= 0 {
		c.ReturnAfter = d.ReturnAfter
	}
	if c.StartWindow == 0 {
		c.StartWindow = d.StartWindow // negative stays: the wait is off
	}
	if c.SlateAfter <= 0 {
		c.SlateAfter = d.SlateAfter
	}
	if c.SlateMax <= 0 {
		c.SlateMax = d.SlateMax
	}
	if c.HealthWindow <= 0 {
		c.HealthWindow = d.HealthWindow
	}
	if c.HealthWindow < 500*time.Millisecond || c.HealthWindow > maxHealthWindow {
		return c, fmt.Errorf("origin: health_window %s: want 500ms to %s", c.HealthWindow, maxHealthWindow)
	}
	switch c.HLSVariant {
	case HLSMPEGTS, HLSFMP4, HLSOff:
		if c.HLSSegmentCount < 3 {
			return c, fmt.Errorf("origin: hls_segment_count %d: want at least 3", c.HLSSegmentCount)
		}
	case HLSLowLatency:
		if c.HLSSegmentCount < 7 {
			return c, fmt.Errorf("origin: hls_segment_count %d: low-latency HLS wants at least 7", c.HLSSegmentCount)
		}
	default:
		return c, fmt.Errorf("origin: hls_variant %q: want mpegts, fmp4, lowlatency or off", c.HLSVariant)
	}
	if c.ReaderQueue > 1<<20 {
		return c, fmt.Errorf("origin: reader_queue %d: at most %d", c.ReaderQueue, 1<<20)
	}
	if c.GOPCachePackets > 1<<20 {
		return c, fmt.Errorf("origin: gop_cache_packets %d: at most %d", c.GOPCachePackets, 1<<20)
	}
	return c, nil
}

// spoolTS reports whether finished MPEG-TS segments go to disk.
func (c Config) spoolTS() bool { return c.HLSStore == HLSStoreDisk && c.HLSDir != "" }

// Validate checks c as NewHub does, so that a bad config is refused before
// anything starts.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}
