package recording

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

const tsPacketSize = 188

// salvage is what can be kept of a segment cut short by a crash.
type salvage struct {
	n        int           // bytes to keep: whole TS packets up to the last complete frame
	duration time.Duration // from the first to past the last complete frame
}

// salvageTS looks at the MPEG-TS bytes of a segment whose writer died: it
// keeps whole packets up to the start of the last PES of the leading
// stream (video, else audio), whose frame may be incomplete, and measures
// the frames before it from their PES timestamps. ok is false when less
// than two frames are there.
func salvageTS(b []byte) (s salvage, ok bool) {
	type pesStart struct {
		off int
		ts  int64
	}
	var video, audio []pesStart
	for off := 0; off+tsPacketSize <= len(b); off += tsPacketSize {
		p := b[off : off+tsPacketSize]
		if p[0] != 0x47 {
			break // not TS from here on: keep what came before
		}
		if p[1]&0x40 == 0 { // no payload unit start
			continue
		}
		payload := 4
		switch p[3] >> 4 & 3 {
		case 0, 2: // no payload
			continue
		case 3:
			payload += 1 + int(p[4])
		}
		if payload+14 > tsPacketSize {
			continue
		}
		pes := p[payload:]
		if pes[0] != 0 || pes[1] != 0 || pes[2] != 1 {
			continue // a table section
		}
		sid := pes[3]
		flags := pes[7] >> 6
		if flags&2 == 0 {
			continue
		}
		ts := pesTime(pes[9:14]) // PTS
		if flags == 3 && len(pes) >= 19 {
			ts = pesTime(pes[14:19]) // DTS
		}
		switch {
		case sid >= 0xe0 && sid <= 0xef:
			video = append(video, pesStart{off, ts})
		case sid >= 0xc0 && sid <= 0xdf:
			audio = append(audio, pesStart{off, ts})
		}
	}
	lead := video
	if len(lead) == 0 {
		lead = audio
	}
	if len(lead) < 3 {
		return salvage{}, false
	}
	// Keep the frames before the last start; the frame step is the one
	// before the cut.
	last := lead[len(lead)-2]
	step := last.ts - lead[len(lead)-3].ts
	span := last.ts - lead[0].ts
	if span < 0 || step <= 0 || step > 90000 {
		return salvage{}, false
	}
	return salvage{n: lead[len(lead)-1].off, duration: time.Duration(span+step) * time.Second / 90000}, true
}

// pesTime decodes a 33-bit PES timestamp.
func pesTime(b []byte) int64 {
	return int64(b[0]>>1&7)<<30 | int64(b[1])<<22 | int64(b[2]>>1)<<15 | int64(b[3])<<7 | int64(b[4]>>1)
}

// salvageOpen turns the open segment a crash left in a session's spool
// directory into a finished segment of the manifest, when enough of it is
// there. It returns whether it did.
func (s *session) salvageOpen() (bool, error) {
	part := filepath.Join(s.dir, openSegment+".part")
	b, err := os.ReadFile(part)
	if err != nil {
		return false, nil
	}
	defer os.Remove(part)
	sv, ok := salvageTS(b)
	if !ok {
		return false, nil
	}
	b = b[:sv.n]
	sha, md := sha256.Sum256(b), md5.Sum(b)
	seq, start := 1, s.m.Start
	if n := len(s.m.Segments); n > 0 {
		last := s.m.Segments[n-1]
		seq = last.Seq + 1
		start = last.Time.Add(time.Duration(last.Duration * float64(time.Second)))
	}
	seg := Segment{Seq: seq, File: segmentFile(seq), Size: int64(len(b)), SHA256: hex.EncodeToString(sha[:]),
		MD5: hex.EncodeToString(md[:]), Duration: sv.duration.Seconds(), Time: start}
	if err := writeFileAtomic(filepath.Join(s.dir, seg.File), b); err != nil {
		return false, fmt.Errorf("salvage: %w", err)
	}
	s.m.Segments = append(s.m.Segments, seg)
	return true, nil
}
