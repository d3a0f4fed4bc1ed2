package recording

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
)

// openSegment is the spool file name of the segment being written.
const openSegment = "open-segment.ts"

// streamRec records one stream while recording is on for it.
type streamRec struct {
	r         *Recorder
	app, name string
	cancel    context.CancelFunc
	// stopReq is set (to the reason) to make the worker stop recording the
	// current session, e.g. when the spool is full.
	stopReq atomic.Pointer[string]

	// timeline is where the next run of the session starts on its MPEG-TS
	// clock (owned by the worker goroutine).
	timeline time.Duration

	mu         sync.Mutex
	state      string
	stopReason string
	sess       *session
}

func (st *streamRec) key() string { return st.app + "/" + st.name }

func (st *streamRec) setState(state string) {
	st.mu.Lock()
	st.state = state
	st.mu.Unlock()
}

// run waits for the stream to be live and records each publisher run;
// runs within session_gap of each other share a session.
func (st *streamRec) run(ctx context.Context) {
	r := st.r
	log := r.log.With("stream", st.key())
	var lastSeen time.Time
	// notLive is when the recorder last saw the stream not live (a
	// subscription refused, or the end of the previous run): a run's
	// packets cannot have gone out before it. Zero when the stream was
	// live from the recorder's start.
	var notLive time.Time
	st.setState("waiting")
	defer func() {
		if s := st.current(); s != nil {
			st.endSession(s, "")
		}
	}()
	for ctx.Err() == nil {
		rd, err := r.src.Subscribe(st.app, st.name)
		if err != nil {
			notLive = time.Now()
			if s := st.current(); s != nil && time.Since(lastSeen) > r.cfg.SessionGap {
				st.endSession(s, "")
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pollInterval):
			}
			continue
		}
		st.record(ctx, rd, notLive, log)
		rd.Close()
		lastSeen = time.Now()
		notLive = lastSeen
		st.setState("waiting")
	}
}

func (st *streamRec) current() *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sess
}

// record reads one publisher run into the current session (a new one when
// there is none). notLive is when the stream was last seen not live (zero:
// unknown).
//
// A segment's program date-time is the wall-clock time its first frame went
// out live at this unit. The recorder sees frames arrive from its
// subscription on; the cached GOP it starts with went out earlier, at a
// time it cannot observe. They are dated back from the newest frame of the
// batch by their media age, which is their wall age for a stream played in
// real time, but never before notLive: a frame of this run cannot have gone
// out before the run began. (A stream that arrives faster than real time,
// an encoder catching up or a relay's backlog, would otherwise be dated
// back by more than the wall time it took, up to a GOP's worth.)
func (st *streamRec) record(ctx context.Context, rd PacketReader, notLive time.Time, log interface {
	Error(string, ...any)
	Info(string, ...any)
}) {
	r := st.r
	s := st.current()
	cont := s != nil
	if s == nil {
		var err error
		s, err = r.newSession(st.app, st.name, time.Now())
		if err != nil {
			log.Error("ALERT recording not started: spool", "err", err)
			st.mu.Lock()
			st.stopReason = err.Error()
			st.mu.Unlock()
			drain(ctx, rd)
			return
		}
		st.mu.Lock()
		st.sess, st.stopReason = s, ""
		st.mu.Unlock()
		st.stopReq.Store(nil)
		st.timeline = 0
	}
	st.setState("recording")
	seg := &segmenter{
		target: r.cfg.SegmentDuration,
		next:   func() string { return filepath.Join(s.dir, openSegment) },
		done:   s.addSegment,
		disc:   cont,
		base:   st.timeline,
	}
	defer func() { st.timeline = seg.end() + time.Second }()
	pkts := make([]*av.Packet, 0, 128)
	var err error
	for {
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		now := time.Now()
		// The newest packet of a batch is taken as "now"; older ones (the
		// cached GOP a reader starts with) get their age, but not past
		// notLive (see above).
		var newest time.Duration
		for _, p := range pkts {
			if !p.Header && p.Kind != av.KindData {
				newest = max(newest, p.DTS)
			}
		}
		var werr error
		for _, p := range pkts {
			if werr = seg.write(p, wentOut(p.DTS, newest, now, notLive)); werr != nil {
				break
			}
		}
		clear(pkts)
		if werr != nil {
			seg.abort()
			st.stop(s, fmt.Sprintf("spool write failed: %v", werr))
			drain(ctx, rd)
			return
		}
		if reason := st.stopReq.Load(); reason != nil {
			if ferr := seg.finish(); ferr != nil {
				seg.abort()
			}
			st.stop(s, *reason)
			drain(ctx, rd)
			return
		}
		if err != nil {
			break
		}
	}
	if ferr := seg.finish(); ferr != nil {
		seg.abort()
		st.stop(s, fmt.Sprintf("spool write failed: %v", ferr))
		return
	}
	if ctx.Err() == nil {
		log.Info("recording: publisher run ended", "session", s.m.Session, "err", err)
	}
}

// wentOut dates a packet of DTS dts read at now in a batch whose newest
// packet has DTS newest: back by its media age (up to a minute; beyond, the
// timestamps are not a real-time clock), but not before notLive.
func wentOut(dts, newest time.Duration, now, notLive time.Time) time.Time {
	at := now
	if age := newest - dts; age > 0 && age < time.Minute {
		at = now.Add(-age)
	}
	if at.Before(notLive) {
		at = notLive
	}
	return at
}

// stop ends the session early with reason, keeping what was recorded.
func (st *streamRec) stop(s *session, reason string) {
	st.r.log.Error("ALERT recording stopped", "stream", st.key(), "session", s.id(), "reason", reason)
	st.mu.Lock()
	st.state, st.stopReason = "stopped", reason
	st.mu.Unlock()
	st.endSession(s, reason)
	st.r.count.stopped.Add(1)
	st.r.emit(Event{Type: EventRecordingStopped, App: st.app, Name: st.name, Session: s.id(), Error: reason})
}

func (st *streamRec) endSession(s *session, reason string) {
	st.mu.Lock()
	if st.sess == s {
		st.sess = nil
	}
	st.mu.Unlock()
	s.end(reason)
}

// drain reads and drops packets until the run ends, so the recorder stays
// an orderly reader while it does not record.
func drain(ctx context.Context, rd PacketReader) {
	pkts := make([]*av.Packet, 0, 128)
	for {
		var err error
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		clear(pkts)
		if err != nil {
			return
		}
	}
}

// session is one recording session: its spool directory and manifest.
type session struct {
	r         *Recorder
	dir       string
	putMu     sync.Mutex // serialises playlist uploads
	finished  bool       // complete and removed from the spool (putMu)
	persistMu sync.Mutex // serialises manifest saves

	mu             sync.Mutex
	m              Manifest
	uploadedCount  int
	playlistQueued bool
}

func (s *session) id() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.Session
}

// key is the sink key of a file of the session.
func (s *session) key(file string) string {
	return s.m.App + "/" + s.m.Name + "/" + s.m.Session + "/" + file
}

// newSession creates the spool directory and manifest of a new session.
func (r *Recorder) newSession(app, name string, now time.Time) (*session, error) {
	now = now.UTC().Truncate(time.Second)
	id := sessionID(now, r.cfg.Unit)
	dir := filepath.Join(r.cfg.SpoolDir, app, name, id)
	r.mu.Lock()
	if r.sessions[dir] != nil {
		// Same second as the previous session of this stream: take the next.
		for r.sessions[dir] != nil {
			now = now.Add(time.Second)
			id = sessionID(now, r.cfg.Unit)
			dir = filepath.Join(r.cfg.SpoolDir, app, name, id)
		}
	}
	s := &session{r: r, dir: dir, m: Manifest{App: app, Name: name, Session: id, Start: now, Segments: []Segment{}}}
	r.sessions[dir] = s
	r.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.forget(s)
		return nil, fmt.Errorf("spool session dir: %w", err)
	}
	if err := s.persist(); err != nil {
		r.forget(s)
		return nil, err
	}
	r.log.Info("recording session started", "stream", app+"/"+name, "session", id)
	r.emit(Event{Type: EventSessionStarted, App: app, Name: name, Session: id})
	return s, nil
}

func (r *Recorder) forget(s *session) {
	r.mu.Lock()
	if r.sessions[s.dir] == s {
		delete(r.sessions, s.dir)
	}
	r.mu.Unlock()
}

// persist writes the manifest atomically (s.mu must not be held). Saves
// are serialised and each marshals the state of its turn, so the file never
// goes back to an older state.
func (s *session) persist() error {
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	s.mu.Lock()
	b, err := json.MarshalIndent(&s.m, "", " ")
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, manifestName), b)
}

func writeFileAtomic(name string, b []byte) error {
	tmp := name + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// addSegment takes a closed segment from the segmenter: it gets the next
// sequence number, enters the manifest, and is queued for upload. The
// manifest is saved before the file gets its name, so a crash in between
// leaves a record that replaySpool matches with the open-segment file.
func (s *session) addSegment(f finished) error {
	s.mu.Lock()
	seq := 1
	if n := len(s.m.Segments); n > 0 {
		seq = s.m.Segments[n-1].Seq + 1
	}
	seg := Segment{Seq: seq, File: segmentFile(seq), Size: f.size, SHA256: f.sha256, MD5: f.md5,
		Duration: f.duration.Seconds(), Time: f.start.UTC(), Discontinuity: f.discontinuity}
	s.m.Segments = append(s.m.Segments, seg)
	s.mu.Unlock()
	err := s.persist()
	if err == nil {
		err = os.Rename(f.path, filepath.Join(s.dir, seg.File))
	}
	if err != nil {
		s.mu.Lock()
		s.m.Segments = s.m.Segments[:len(s.m.Segments)-1]
		s.mu.Unlock()
		os.Remove(f.path)
		return fmt.Errorf("%w: %w", errSpoolWrite, err)
	}
	s.r.count.spooled.Add(1)
	s.r.emit(Event{Type: EventSegmentSpooled, App: s.m.App, Name: s.m.Name, Session: s.m.Session, Seq: seq, Size: seg.Size, SHA256: seg.SHA256})
	s.r.up.add(job{s: s, seq: seq})
	s.r.spoolAdded(seg.Size)
	return nil
}

// segment returns a copy of segment seq.
func (s *session) segment(seq int) (Segment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seg := range s.m.Segments {
		if seg.Seq == seq {
			return seg, true
		}
	}
	return Segment{}, false
}

// uploaded records that the sink confirmed seq and frees its spool space.
func (s *session) uploaded(seq int) error {
	s.mu.Lock()
	var seg *Segment
	for i := range s.m.Segments {
		if s.m.Segments[i].Seq == seq {
			seg = &s.m.Segments[i]
		}
	}
	if seg == nil || seg.Uploaded {
		s.mu.Unlock()
		return nil
	}
	seg.Uploaded = true
	s.uploadedCount++
	size := seg.Size
	file := seg.File
	ev := Event{Type: EventSegmentUploaded, App: s.m.App, Name: s.m.Name, Session: s.m.Session, Seq: seq, Size: size, SHA256: seg.SHA256}
	s.mu.Unlock()
	// The manifest says uploaded before the file goes: a crash between
	// the two leaves a stray file, never a lost segment.
	err := s.persist()
	if err == nil {
		if rerr := os.Remove(filepath.Join(s.dir, file)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	s.r.spoolUsed.Add(-size)
	s.r.count.uploaded.Add(1)
	s.r.count.uploadedBytes.Add(size)
	s.r.emit(ev)
	return err
}

// end marks the session over; the playlist job then finishes it.
func (s *session) end(reason string) {
	s.mu.Lock()
	if s.m.Ended {
		s.mu.Unlock()
		return
	}
	s.m.Ended, s.m.EndedAt = true, time.Now().UTC()
	if reason != "" {
		s.m.Stopped = reason
	}
	ev := Event{Type: EventSessionEnded, App: s.m.App, Name: s.m.Name, Session: s.m.Session, Seq: len(s.m.Segments), Error: reason}
	s.mu.Unlock()
	if err := s.persist(); err != nil {
		s.r.log.Error("recording: save manifest", "dir", s.dir, "err", err)
	}
	s.r.log.Info("recording session ended", "stream", ev.App+"/"+ev.Name, "session", ev.Session, "segments", ev.Seq)
	s.r.emit(ev)
	s.r.up.add(job{s: s})
}

// snapshot returns a copy of the manifest.
func (s *session) snapshot() Manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m
	m.Segments = append([]Segment(nil), s.m.Segments...)
	return m
}
