package recording

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	mcodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/livefuse/livefuse/av"
)

// audioOnlyAfter is how many audio frames the segmenter waits for video
// before it records audio only.
const audioOnlyAfter = 50

// tsOffset is added to every timestamp so that the PCR, which runs a
// little ahead of the DTS, never goes below zero.
const tsOffset = 90000

// finished is a segment the segmenter closed: its file in the spool and
// what the manifest needs.
type finished struct {
	path          string
	size          int64
	sha256, md5   string
	duration      time.Duration
	start         time.Time
	discontinuity bool
}

// segmenter turns the packets of one publisher run into MPEG-TS segment
// files that start at keyframes. It is used by one goroutine.
type segmenter struct {
	target time.Duration
	// next returns the path for the next segment file.
	next func() string
	// done takes each closed segment.
	done func(finished) error
	// disc marks the first segment of this run as a discontinuity.
	disc bool
	// base is where this run starts on the session's MPEG-TS timeline, so
	// that timestamps keep rising across the runs of a session (players
	// and ffmpeg cope with that better than with a reset).
	base   time.Duration
	offset time.Duration // added to packet times: base - first DTS

	avc       *av.AVCConfig
	asc       *mpeg4audio.AudioSpecificConfig
	audioWait int

	w            *mpegts.Writer
	video, audio *mpegts.Track
	out          switchWriter

	// current segment
	f          *os.File
	bw         *bufio.Writer
	sha, md    hash.Hash
	count      *countWriter
	path       string
	segStart   time.Duration // DTS of the first packet
	lastDTS    time.Duration
	frameDur   time.Duration // last video (or audio) DTS step
	wallStart  time.Time     // wall clock of the run's first packet
	dtsStart   time.Duration // its DTS
	segWall    time.Time
	open, init bool
	au         [][]byte
}

type switchWriter struct{ w io.Writer }

func (s *switchWriter) Write(p []byte) (int, error) { return s.w.Write(p) }

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func ticks(d time.Duration) int64 { return int64(d)*9/100000 + tsOffset }

// write takes one packet. An error means the spool failed; the run must
// stop recording.
func (s *segmenter) write(p *av.Packet, now time.Time) error {
	switch p.Kind {
	case av.KindVideo:
		if p.Codec != av.CodecH264 {
			return nil
		}
		if p.Header {
			c, err := av.ParseAVCConfig(p.Data)
			if err != nil || len(c.SPS) == 0 || len(c.PPS) == 0 {
				return nil // keep the previous one; the stream's problem, not ours
			}
			s.avc = c
			return nil
		}
		if s.avc == nil {
			return nil
		}
		return s.writeVideo(p, now)
	case av.KindAudio:
		if p.Codec != av.CodecAAC {
			return nil
		}
		if p.Header {
			var asc mpeg4audio.AudioSpecificConfig
			if err := asc.Unmarshal(p.Data); err != nil {
				return nil
			}
			s.asc = &asc
			return nil
		}
		if s.asc == nil {
			return nil
		}
		return s.writeAudio(p, now)
	}
	return nil
}

// start creates the TS writer once the tracks are known.
func (s *segmenter) start(p *av.Packet, now time.Time) {
	var tracks []*mpegts.Track
	if s.avc != nil {
		s.video = &mpegts.Track{Codec: &mcodecs.H264{}}
		tracks = append(tracks, s.video)
	}
	if s.asc != nil {
		s.audio = &mpegts.Track{Codec: &mcodecs.MPEG4Audio{Config: *s.asc}}
		tracks = append(tracks, s.audio)
	}
	s.w = &mpegts.Writer{W: &s.out, Tracks: tracks}
	s.w.Initialize() // only fails for unsupported codecs
	s.init = true
	s.wallStart, s.dtsStart = now, p.DTS
	s.offset = s.base - p.DTS
}

// end is the session timeline position after the last packet written.
func (s *segmenter) end() time.Duration {
	if !s.init {
		return s.base
	}
	return s.lastDTS + s.frameDur + s.offset
}

func (s *segmenter) writeVideo(p *av.Packet, now time.Time) error {
	key := p.Key || av.IsKeyframeAVCC(p.Data)
	if !s.init {
		if !key {
			return nil
		}
		s.start(p, now)
	}
	if s.video == nil {
		return nil // audio-only run; video appeared late
	}
	if !s.open && !key {
		return nil
	}
	if key && (!s.open || p.DTS-s.segStart >= s.target) {
		if err := s.cut(p); err != nil {
			return err
		}
	}
	nalus, err := av.SplitAVCC(p.Data)
	if err != nil {
		return nil
	}
	s.au = s.au[:0]
	if key {
		s.au = append(s.au, s.avc.SPS...)
		s.au = append(s.au, s.avc.PPS...)
	}
	for _, n := range nalus {
		switch av.NALUType(n) {
		case av.NALUTypeSPS, av.NALUTypePPS:
			if key {
				continue
			}
		case av.NALUTypeAUD:
			continue
		}
		s.au = append(s.au, n)
	}
	if len(s.au) == 0 {
		return nil
	}
	if d := p.DTS - s.lastDTS; d > 0 && d < time.Second {
		s.frameDur = d
	}
	s.lastDTS = p.DTS
	if err := s.guard(func() error { return s.w.WriteH264(s.video, ticks(p.PTS()+s.offset), ticks(p.DTS+s.offset), s.au) }); err != nil {
		return err
	}
	// Hand each frame to the OS (no fsync): a crash of the process then
	// loses at most the frame being written (see salvageTS).
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errSpoolWrite, err)
	}
	return nil
}

func (s *segmenter) writeAudio(p *av.Packet, now time.Time) error {
	if !s.init {
		if s.avc != nil || s.audioWait < audioOnlyAfter {
			s.audioWait++
			return nil
		}
		s.start(p, now)
	}
	if s.audio == nil || !s.open && s.video != nil {
		return nil
	}
	if s.video == nil && (!s.open || p.DTS-s.segStart >= s.target) {
		if err := s.cut(p); err != nil {
			return err
		}
	}
	if s.video == nil {
		if d := p.DTS - s.lastDTS; d > 0 && d < time.Second {
			s.frameDur = d
		}
		s.lastDTS = p.DTS
	}
	return s.guard(func() error { return s.w.WriteMPEG4Audio(s.audio, ticks(p.PTS()+s.offset), [][]byte{p.Data}) })
}

// guard turns a muxer error or panic on odd input into a skipped packet,
// but keeps spool write errors fatal.
func (s *segmenter) guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = nil
		}
	}()
	if err := f(); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) || errors.Is(err, errSpoolWrite) {
			return err
		}
	}
	return nil
}

var errSpoolWrite = errors.New("spool write")

// cut closes the open segment at p's DTS and opens the next one.
func (s *segmenter) cut(p *av.Packet) error {
	if s.open {
		if err := s.closeSegment(p.DTS - s.segStart); err != nil {
			return err
		}
	}
	s.path = s.next()
	f, err := os.OpenFile(s.path+".part", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", errSpoolWrite, err)
	}
	s.f = f
	s.sha, s.md, s.count = sha256.New(), md5.New(), &countWriter{}
	s.bw = bufio.NewWriterSize(io.MultiWriter(errWriter{f}, s.sha, s.md, s.count), 64<<10)
	s.out.w = s.bw
	s.open = true
	s.segStart = p.DTS
	s.segWall = s.wallStart.Add(p.DTS - s.dtsStart)
	return nil
}

// errWriter marks file write errors as spool errors.
type errWriter struct{ f *os.File }

func (e errWriter) Write(p []byte) (int, error) {
	n, err := e.f.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errSpoolWrite, err)
	}
	return n, err
}

// closeSegment flushes, syncs and renames the open segment, then hands it
// over.
func (s *segmenter) closeSegment(dur time.Duration) error {
	s.open = false
	s.out.w = io.Discard
	err := s.bw.Flush()
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(s.path+".part", s.path)
	}
	if err != nil {
		os.Remove(s.path + ".part")
		return fmt.Errorf("%w: close %s: %w", errSpoolWrite, filepath.Base(s.path), err)
	}
	if s.count.n == 0 {
		os.Remove(s.path)
		return nil
	}
	fin := finished{
		path: s.path, size: s.count.n,
		sha256: hex.EncodeToString(s.sha.Sum(nil)), md5: hex.EncodeToString(s.md.Sum(nil)),
		duration: dur, start: s.segWall, discontinuity: s.disc,
	}
	s.disc = false
	return s.done(fin)
}

// finish closes the last segment at the end of the run.
func (s *segmenter) finish() error {
	if !s.open {
		return nil
	}
	return s.closeSegment(s.lastDTS - s.segStart + s.frameDur)
}

// abort drops the open segment (its file is removed).
func (s *segmenter) abort() {
	if !s.open {
		return
	}
	s.open = false
	s.f.Close()
	os.Remove(s.path + ".part")
}
