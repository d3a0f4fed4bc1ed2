package bus

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// spill is an append-only on-disk FIFO of messages, in numbered segment
// files "NNNNNNNNNNNNNNNNNNNN.spill" under one directory, plus a "cursor"
// file with the segment and offset read up to. Records are framed as
//
//	len uint32 | crc32c(payload) uint32 | payload
//	payload: topicLen uint16 | topic | keyLen uint32 | key | unixNano int64 | value
//
// Appends go to the newest segment; reads come from the oldest closed one
// (the newest is closed before it is read). A torn or corrupt record ends
// its segment: the rest is skipped and counted.
type spill struct {
	mu       sync.Mutex
	dir      string
	maxBytes int64
	segBytes int64

	segs  []uint64 // closed segments, oldest first
	bytes int64    // on disk, all segments
	count int64    // records not yet committed (approximate after corruption)

	w     *os.File
	bw    *bufio.Writer
	wSeq  uint64
	wSize int64

	r     *os.File
	br    *bufio.Reader
	rSeq  uint64
	rOff  int64 // committed offset in rSeq
	peekN int   // records read ahead of rOff
	peekO int64 // offset after them

	corrupt int64
}

const (
	spillExt      = ".spill"
	maxRecord     = 16 << 20
	spillHeader   = 8
	defaultSegLen = 8 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// openSpill opens or creates the spill in dir, counting what is there.
func openSpill(dir string, maxBytes int64) (*spill, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spill: %w", err)
	}
	s := &spill{dir: dir, maxBytes: maxBytes, segBytes: min(defaultSegLen, max(maxBytes/4, 4096))}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spill: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), spillExt)
		if !ok || e.IsDir() {
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		s.segs = append(s.segs, seq)
	}
	slices.Sort(s.segs)
	if b, err := os.ReadFile(filepath.Join(dir, "cursor")); err == nil {
		var seq uint64
		var off int64
		if _, err := fmt.Sscanf(string(b), "%d %d", &seq, &off); err == nil && len(s.segs) > 0 && s.segs[0] == seq {
			s.rSeq, s.rOff = seq, off
		}
	}
	for _, seq := range s.segs {
		n, size, err := s.countSegment(seq)
		if err != nil {
			return nil, err
		}
		s.count += n
		s.bytes += size
	}
	if len(s.segs) > 0 {
		s.wSeq = s.segs[len(s.segs)-1]
	}
	return s, nil
}

func (s *spill) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spillExt))
}

// countSegment counts the readable records of a segment past the cursor.
func (s *spill) countSegment(seq uint64) (n, size int64, err error) {
	f, err := os.Open(s.path(seq))
	if err != nil {
		return 0, 0, fmt.Errorf("spill: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("spill: %w", err)
	}
	off := int64(0)
	if seq == s.rSeq {
		off = s.rOff
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, 0, fmt.Errorf("spill: %w", err)
	}
	br := bufio.NewReader(f)
	for {
		if _, _, err := readRecord(br); err != nil {
			break
		}
		n++
	}
	return n, st.Size(), nil
}

// append writes one message; it fails when the spill is full.
func (s *spill) append(m Message) error {
	rec := encodeRecord(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes+int64(len(rec)) > s.maxBytes {
		return ErrFull
	}
	if s.w == nil || s.wSize+int64(len(rec)) > s.segBytes && s.wSize > 0 {
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	if _, err := s.bw.Write(rec); err != nil {
		return fmt.Errorf("spill: write: %w", err)
	}
	s.wSize += int64(len(rec))
	s.bytes += int64(len(rec))
	s.count++
	return nil
}

// flush pushes buffered appends to the file (the OS, not the disk).
func (s *spill) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bw == nil {
		return nil
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("spill: flush: %w", err)
	}
	return nil
}

// rotateLocked closes the write segment (making it readable) and opens a
// new one.
func (s *spill) rotateLocked() error {
	if err := s.closeWriterLocked(); err != nil {
		return err
	}
	s.wSeq++
	f, err := os.OpenFile(s.path(s.wSeq), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	s.w, s.bw, s.wSize = f, bufio.NewWriterSize(f, 64<<10), 0
	return nil
}

func (s *spill) closeWriterLocked() error {
	if s.w == nil {
		return nil
	}
	err := s.bw.Flush()
	if err2 := s.w.Close(); err == nil {
		err = err2
	}
	s.segs = append(s.segs, s.wSeq)
	s.w, s.bw = nil, nil
	if err != nil {
		return fmt.Errorf("spill: close segment: %w", err)
	}
	return nil
}

// pending returns the records not yet committed.
func (s *spill) pending() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// peek returns up to n records after the committed position and after
// those of an earlier peek not yet committed; the caller commits or
// rewinds them. A batch never spans two segments.
func (s *spill) peek(n int) ([]Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count == 0 {
		return nil, nil
	}
	var out []Message
	for len(out) < n {
		if len(s.segs) == 0 {
			if s.w == nil || s.wSize == 0 {
				break
			}
			// Only the write segment has data: close it to read it.
			if err := s.closeWriterLocked(); err != nil {
				return nil, err
			}
		}
		if s.r == nil || s.rSeq != s.segs[0] {
			if err := s.openReaderLocked(); err != nil {
				return nil, err
			}
		}
		rec, size, err := readRecord(s.br)
		if err == nil {
			out = append(out, rec)
			s.peekN++
			s.peekO += size
			continue
		}
		if !errors.Is(err, io.EOF) {
			s.corrupt++
		}
		if len(out) > 0 {
			break // commit these first, then move to the next segment
		}
		// End of this segment (or a torn tail): drop it.
		if err := s.dropHeadLocked(); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 && len(s.segs) == 0 && s.w == nil {
		s.count, s.bytes = 0, 0 // a corrupt tail took the rest
	}
	return out, nil
}

func (s *spill) openReaderLocked() error {
	if s.r != nil {
		s.r.Close()
	}
	seq := s.segs[0]
	f, err := os.Open(s.path(seq))
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	off := int64(0)
	if seq == s.rSeq {
		off = s.rOff
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("spill: %w", err)
	}
	s.r, s.br, s.rSeq, s.rOff = f, bufio.NewReaderSize(f, 64<<10), seq, off
	s.peekN, s.peekO = 0, off
	return nil
}

// dropHeadLocked removes the oldest segment.
func (s *spill) dropHeadLocked() error {
	seq := s.segs[0]
	if s.r != nil {
		s.r.Close()
		s.r, s.br = nil, nil
	}
	if st, err := os.Stat(s.path(seq)); err == nil {
		s.bytes -= st.Size()
	}
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spill: %w", err)
	}
	s.segs = s.segs[1:]
	s.rSeq, s.rOff, s.peekN, s.peekO = 0, 0, 0, 0
	os.Remove(filepath.Join(s.dir, "cursor"))
	return nil
}

// commit marks the last n peeked records as sent.
func (s *spill) commit(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 || s.r == nil {
		return nil
	}
	if n != s.peekN {
		// Partial commit: re-read from the committed offset next time.
		return s.recommitLocked(n)
	}
	s.rOff = s.peekO
	s.peekN = 0
	s.count = max(0, s.count-int64(n))
	return os.WriteFile(filepath.Join(s.dir, "cursor"), []byte(fmt.Sprintf("%d %d\n", s.rSeq, s.rOff)), 0o644)
}

// recommitLocked commits the first n of the peeked records by reading
// them again from the committed offset.
func (s *spill) recommitLocked(n int) error {
	if err := s.openReaderLocked(); err != nil {
		return err
	}
	for range n {
		_, size, err := readRecord(s.br)
		if err != nil {
			break
		}
		s.rOff += size
		s.count = max(0, s.count-1)
	}
	if err := s.openReaderLocked(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "cursor"), []byte(fmt.Sprintf("%d %d\n", s.rSeq, s.rOff)), 0o644)
}

// rewind forgets peeked records, so the next peek returns them again.
func (s *spill) rewind() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r != nil {
		s.r.Close()
		s.r, s.br = nil, nil
	}
	s.peekN = 0
}

// close flushes and closes the files.
func (s *spill) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.w != nil {
		err = s.bw.Flush()
		if err2 := s.w.Close(); err == nil {
			err = err2
		}
		s.segs = append(s.segs, s.wSeq)
		s.w, s.bw = nil, nil
	}
	if s.r != nil {
		s.r.Close()
		s.r, s.br = nil, nil
	}
	return err
}

func encodeRecord(m Message) []byte {
	plen := 2 + len(m.Topic) + 4 + len(m.Key) + 8 + len(m.Value)
	b := make([]byte, spillHeader, spillHeader+plen)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Topic)))
	b = append(b, m.Topic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Key)))
	b = append(b, m.Key...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixNano()))
	b = append(b, m.Value...)
	binary.BigEndian.PutUint32(b[0:], uint32(plen))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[spillHeader:], crcTable))
	return b
}

var errCorrupt = errors.New("spill: corrupt record")

// readRecord reads one framed record and returns it with its size on disk.
// io.EOF means a clean end; any other error a torn or corrupt record.
func readRecord(r io.Reader) (Message, int64, error) {
	var hdr [spillHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Message{}, 0, io.EOF
		}
		return Message{}, 0, errCorrupt
	}
	plen := binary.BigEndian.Uint32(hdr[0:])
	if plen < 14 || plen > maxRecord {
		return Message{}, 0, errCorrupt
	}
	p := make([]byte, plen)
	if _, err := io.ReadFull(r, p); err != nil {
		return Message{}, 0, errCorrupt
	}
	if crc32.Checksum(p, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
		return Message{}, 0, errCorrupt
	}
	m, err := decodePayload(p)
	if err != nil {
		return Message{}, 0, err
	}
	return m, spillHeader + int64(plen), nil
}

func decodePayload(p []byte) (Message, error) {
	tl := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if len(p) < tl+4 {
		return Message{}, errCorrupt
	}
	m := Message{Topic: string(p[:tl])}
	p = p[tl:]
	kl := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(len(p)) < uint64(kl)+8 {
		return Message{}, errCorrupt
	}
	if kl > 0 {
		m.Key = p[:kl]
	}
	p = p[kl:]
	m.Time = time.Unix(0, int64(binary.BigEndian.Uint64(p)))
	m.Value = p[8:]
	return m, nil
}
