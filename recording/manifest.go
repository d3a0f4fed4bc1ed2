package recording

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/livefuse/livefuse/av"
)

// File names inside a session, in the spool and in the sink.
const (
	playlistName = "index.m3u8"
	manifestName = "session.json"
	sessionFmt   = "20060102T150405Z"
)

// Manifest is the record of one session: what was spooled, with sizes and
// checksums, and what the sink has confirmed. It is kept in the spool (and
// replayed at start) and uploaded next to the playlist.
type Manifest struct {
	App     string    `json:"app"`
	Name    string    `json:"name"`
	Session string    `json:"session"` // start time (sessionFmt), then "-UNIT" with several units
	Start   time.Time `json:"start"`
	// Ended is set when the session is over (publisher gone longer than
	// session_gap, recording switched off or stopped, node restarted).
	Ended   bool      `json:"ended"`
	EndedAt time.Time `json:"ended_at,omitzero"`
	// Stopped says why recording stopped before the stream ended.
	Stopped  string    `json:"stopped,omitempty"`
	Segments []Segment `json:"segments"`
}

// Segment is one MPEG-TS segment of a session.
type Segment struct {
	Seq  int    `json:"seq"`
	File string `json:"file"`
	Size int64  `json:"size"`
	// SHA256 and MD5 are hex digests of the spooled file.
	SHA256 string `json:"sha256"`
	MD5    string `json:"md5"`
	// Duration in seconds; Time is the wall clock of its first frame.
	Duration      float64   `json:"duration"`
	Time          time.Time `json:"time"`
	Discontinuity bool      `json:"discontinuity,omitempty"`
	// Uploaded is set once the sink confirmed the segment.
	Uploaded bool `json:"uploaded,omitempty"`
}

// maxManifestSegments bounds a manifest read from disk or a sink
// (a year of 6 s segments).
const maxManifestSegments = 6 * 1000 * 1000

// parseManifest decodes and checks a manifest.
func parseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("manifest %s/%s/%s: %w", m.App, m.Name, m.Session, err)
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	if !av.ValidName(m.App) || !av.ValidName(m.Name) {
		return errors.New("invalid app or name")
	}
	if _, err := parseSessionID(m.Session); err != nil {
		return fmt.Errorf("session id: %w", err)
	}
	if len(m.Segments) > maxManifestSegments {
		return fmt.Errorf("%d segments", len(m.Segments))
	}
	prev := 0
	for _, s := range m.Segments {
		if s.Seq <= prev {
			return fmt.Errorf("segment seq %d after %d", s.Seq, prev)
		}
		prev = s.Seq
		if s.File != segmentFile(s.Seq) {
			return fmt.Errorf("segment %d: file %q", s.Seq, s.File)
		}
		if s.Size <= 0 || len(s.SHA256) != 64 || len(s.MD5) != 32 {
			return fmt.Errorf("segment %d: size or checksum missing", s.Seq)
		}
		if math.IsNaN(s.Duration) || s.Duration < 0 || s.Duration > 24*3600 {
			return fmt.Errorf("segment %d: duration %v", s.Seq, s.Duration)
		}
	}
	return nil
}

func segmentFile(seq int) string { return fmt.Sprintf("seg-%06d.ts", seq) }

// sessionID formats a session start, with the recording unit (if any) after
// it, so that the units of one deployment never write the same keys.
func sessionID(t time.Time, unit string) string {
	id := t.UTC().Format(sessionFmt)
	if unit != "" {
		id += "-" + unit
	}
	return id
}

// parseSessionID returns the start time of a session id.
func parseSessionID(id string) (time.Time, error) {
	ts, unit, found := strings.Cut(id, "-")
	if found && !av.ValidName(unit) {
		return time.Time{}, fmt.Errorf("session id %q: bad unit", id)
	}
	return time.Parse(sessionFmt, ts)
}

// Duration is the total of the segment durations.
func (m *Manifest) Duration() float64 {
	var d float64
	for _, s := range m.Segments {
		d += s.Duration
	}
	return d
}

// uploadedPrefix is how many segments from the start are confirmed by the
// sink; a playlist lists only those.
func (m *Manifest) uploadedPrefix() int {
	for i, s := range m.Segments {
		if !s.Uploaded {
			return i
		}
	}
	return len(m.Segments)
}

// complete reports whether the session is over and every segment is up.
func (m *Manifest) complete() bool {
	return m.Ended && m.uploadedPrefix() == len(m.Segments)
}

// Playlist renders the HLS media playlist of the first n segments: EVENT
// while the session goes on, VOD with ENDLIST once it is complete. uri maps
// a segment file name to its URI (nil: the bare name, relative to the
// playlist).
func (m *Manifest) Playlist(n int, uri func(file string) string) []byte {
	if n > len(m.Segments) {
		n = len(m.Segments)
	}
	segs := m.Segments[:n]
	target := 1
	for _, s := range segs {
		if d := int(math.Ceil(s.Duration)); d > target {
			target = d
		}
	}
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n")
	b.WriteString("#EXT-X-TARGETDURATION:" + strconv.Itoa(target) + "\n")
	b.WriteString("#EXT-X-MEDIA-SEQUENCE:0\n")
	end := m.Ended && n == len(m.Segments)
	if end {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	} else {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:EVENT\n")
	}
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	for i, s := range segs {
		if s.Discontinuity && i > 0 {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		b.WriteString("#EXT-X-PROGRAM-DATE-TIME:" + s.Time.UTC().Format("2006-01-02T15:04:05.000Z") + "\n")
		b.WriteString("#EXTINF:" + strconv.FormatFloat(s.Duration, 'f', 3, 64) + ",\n")
		u := s.File
		if uri != nil {
			u = uri(s.File)
		}
		b.WriteString(u + "\n")
	}
	if end {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return []byte(b.String())
}
