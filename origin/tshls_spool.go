package origin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
)

// tsSpool moves the finished segments of one tshls packager out of the
// process heap into files of a directory of its own, as SRS and nginx-rtmp
// keep theirs: the kernel's page cache then holds them (shared and
// reclaimable, and served with sendfile), and the heap keeps only the
// segment being built. Since the garbage collector lets the heap grow to
// about twice what is live, each megabyte moved out saves about two of RSS.
//
// It runs on its own goroutine, so the packager never waits for the disk:
// each finished segment wakes it, and it writes every kept segment still in
// memory. A segment it cannot write stays in memory, is served from there,
// and is tried again at the next wake-up.
type tsSpool struct {
	h      *tshls
	parent string // the packagers' directory (Config.HLSDir)
	prefix string // the start of this packager's directory name
	wake   chan struct{}
	done   chan struct{}

	// Owned by run.
	dir   string
	files []tsSpooled // written and not yet removed, oldest first
	errs  tshlsLimiter
}

type tsSpooled struct {
	seq  uint64
	path string
}

// tsSegFileGlob matches the files a spool writes, for the sweep of a
// directory left by a process that did not exit cleanly.
const tsSegFileGlob = "seg[0-9]*.ts"

func newTSSpool(h *tshls, parent, prefix string) *tsSpool {
	s := &tsSpool{h: h, parent: parent, prefix: prefix,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

// offer wakes the spool without waiting.
func (s *tsSpool) offer() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close stops the spool and removes its files and directory. Segments
// already moved to disk are then gone (the stream has ended).
func (s *tsSpool) close() {
	close(s.wake)
	<-s.done
}

func (s *tsSpool) run() {
	defer close(s.done)
	defer s.removeAll()
	for range s.wake {
		if s.dir == "" {
			dir, err := os.MkdirTemp(s.parent, s.prefix+".*")
			if err != nil {
				s.errs.log(s.h.log, "hls: cannot make the segment directory; segments stay in memory", err)
				continue
			}
			s.dir = dir
		}
		for _, seg := range s.inMemory() {
			s.write(seg)
		}
		s.prune()
	}
}

// inMemory returns the finished segments the packager keeps in memory.
func (s *tsSpool) inMemory() []*tshlsSegment {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*tshlsSegment
	for _, seg := range h.segs {
		if seg.data != nil {
			out = append(out, seg)
		}
	}
	return out
}

// write puts seg in a file and, if the packager still keeps it, lets go of
// its bytes in memory.
func (s *tsSpool) write(seg *tshlsSegment) {
	h := s.h
	h.mu.Lock()
	data, kept := seg.data, h.keeps(seg.seq)
	h.mu.Unlock()
	if !kept || data == nil {
		return
	}
	name := filepath.Join(s.dir, "seg"+strconv.FormatUint(seg.seq, 10)+".ts")
	if err := os.WriteFile(name, data, 0o600); err != nil {
		_ = os.Remove(name)
		s.errs.log(h.log, "hls: cannot write a segment to disk; it stays in memory", err)
		return
	}
	h.mu.Lock()
	kept = h.keeps(seg.seq)
	if kept {
		seg.file, seg.data = name, nil
	}
	h.mu.Unlock()
	if !kept {
		_ = os.Remove(name)
		return
	}
	s.files = append(s.files, tsSpooled{seq: seg.seq, path: name})
}

// prune removes the files of segments the packager no longer keeps. A
// player still reading one keeps its open file until it is done.
func (s *tsSpool) prune() {
	h := s.h
	h.mu.Lock()
	first := h.nextSeq
	if len(h.segs) > 0 {
		first = h.segs[0].seq
	}
	h.mu.Unlock()
	n := 0
	for n < len(s.files) && s.files[n].seq < first {
		_ = os.Remove(s.files[n].path)
		n++
	}
	s.files = append(s.files[:0], s.files[n:]...)
}

func (s *tsSpool) removeAll() {
	if s.dir == "" {
		return
	}
	if err := os.RemoveAll(s.dir); err != nil {
		s.h.log.Warn("hls: cannot remove the segment directory", "dir", s.dir, "err", err)
	}
}

// sweepTSSpools removes what spools of an earlier process left in dir (it
// exited without closing them): their segment files and then their
// directories, if empty. Nothing else in dir is touched.
func sweepTSSpools(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*", tsSegFileGlob))
	if err != nil {
		return fmt.Errorf("sweep %s: %w", dir, err)
	}
	var errs []error
	subs := map[string]bool{}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		subs[filepath.Dir(f)] = true
	}
	for d := range subs {
		_ = os.Remove(d) // only when empty: nothing of anyone else's goes
	}
	return errors.Join(errs...)
}

// serveSegmentFile writes the spooled segment at name (size bytes) to w,
// or 404 when it is gone (the packager let it go meanwhile).
func serveSegmentFile(w http.ResponseWriter, r *http.Request, name string, size int, log *slog.Logger) {
	f, err := os.Open(name)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("hls: cannot open a segment on disk", "err", err)
		}
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	setSegmentHeaders(w, size)
	if r.Method != http.MethodHead {
		// The response writer sends a file with sendfile.
		_, _ = io.CopyN(w, f, int64(size))
	}
}

func setSegmentHeaders(w http.ResponseWriter, size int) {
	hd := w.Header()
	hd.Set("Content-Type", "video/mp2t")
	hd.Set("Cache-Control", "max-age=3600")
	hd.Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
}
