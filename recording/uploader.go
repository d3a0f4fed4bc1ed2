package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// job uploads segment seq of s, or (seq 0) its playlist and manifest.
type job struct {
	s   *session
	seq int
}

// uploader runs the upload workers over an unbounded FIFO, so that adding
// work never blocks a recorder.
type uploader struct {
	r *Recorder

	mu      sync.Mutex
	cond    *sync.Cond
	q       []job
	busy    int
	stopped bool
	wg      sync.WaitGroup
}

func newUploader(r *Recorder) *uploader {
	u := &uploader{r: r}
	u.cond = sync.NewCond(&u.mu)
	return u
}

func (u *uploader) add(j job) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if j.seq == 0 {
		j.s.mu.Lock()
		queued := j.s.playlistQueued
		j.s.playlistQueued = true
		j.s.mu.Unlock()
		if queued {
			return
		}
	}
	u.q = append(u.q, j)
	u.cond.Signal()
}

func (u *uploader) queued() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.q) + u.busy
}

func (u *uploader) start(ctx context.Context) {
	go func() {
		<-ctx.Done()
		u.mu.Lock()
		u.stopped = true
		u.cond.Broadcast()
		u.mu.Unlock()
	}()
	for i := 0; i < u.r.cfg.Uploaders; i++ {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.work(ctx)
		}()
	}
}

// drain waits until the queue is empty or d has passed.
func (u *uploader) drain(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if u.queued() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *uploader) wait() { u.wg.Wait() }

func (u *uploader) next() (job, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for len(u.q) == 0 && !u.stopped {
		u.cond.Wait()
	}
	if u.stopped {
		return job{}, false
	}
	j := u.q[0]
	u.q[0] = job{}
	u.q = u.q[1:]
	u.busy++
	if j.seq == 0 {
		j.s.mu.Lock()
		j.s.playlistQueued = false
		j.s.mu.Unlock()
	}
	return j, true
}

func (u *uploader) work(ctx context.Context) {
	for {
		j, ok := u.next()
		if !ok {
			return
		}
		u.do(ctx, j)
		u.mu.Lock()
		u.busy--
		u.mu.Unlock()
	}
}

// do runs j until it succeeds or ctx ends, backing off between attempts.
func (u *uploader) do(ctx context.Context, j job) {
	r := u.r
	delay := r.cfg.RetryMin
	for attempt := 1; ctx.Err() == nil; attempt++ {
		var err error
		if j.seq == 0 {
			err = u.putPlaylist(ctx, j.s)
		} else {
			err = u.putSegment(ctx, j.s, j.seq)
		}
		if err == nil {
			r.setSinkErr(nil)
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.setSinkErr(err)
		r.count.failures.Add(1)
		if attempt == 1 || attempt%10 == 0 {
			r.log.Warn("recording upload failed; retrying", "stream", j.s.m.App+"/"+j.s.m.Name,
				"session", j.s.m.Session, "seq", j.seq, "attempt", attempt, "retry_in", delay, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, r.cfg.RetryMax)
	}
}

func (u *uploader) putSegment(ctx context.Context, s *session, seq int) error {
	seg, ok := s.segment(seq)
	if !ok || seg.Uploaded {
		return nil
	}
	f, err := os.Open(filepath.Join(s.dir, seg.File))
	if err != nil {
		// Not retryable: the spool lost it. Say so once and move on.
		u.r.log.Error("recording: spooled segment missing", "dir", s.dir, "seq", seq, "err", err)
		return nil
	}
	defer f.Close()
	err = u.r.sink.Put(ctx, Object{Key: s.key(seg.File), Body: f, Size: seg.Size, SHA256: seg.SHA256, MD5: seg.MD5,
		ContentType: contentTypeTS, CacheControl: u.r.cfg.S3.SegmentCacheControl})
	if err != nil {
		return err
	}
	if err := s.uploaded(seq); err != nil {
		u.r.log.Error("recording: spool bookkeeping", "dir", s.dir, "seq", seq, "err", err)
	}
	u.add(job{s: s})
	return nil
}

// putPlaylist uploads the playlist of the confirmed segments and the
// manifest. Once the session is over and complete, the spool directory
// goes.
func (u *uploader) putPlaylist(ctx context.Context, s *session) error {
	// One playlist upload per session at a time, each from a fresh
	// snapshot, so an older playlist never overwrites a newer one.
	s.putMu.Lock()
	defer s.putMu.Unlock()
	if s.finished {
		return nil
	}
	m := s.snapshot()
	n := m.uploadedPrefix()
	pl := m.Playlist(n, nil)
	cc := u.r.cfg.S3.PlaylistCacheControl
	if m.complete() {
		cc = u.r.cfg.S3.SegmentCacheControl
	}
	if err := u.putBytes(ctx, s.key(playlistName), pl, contentTypePlaylist, cc); err != nil {
		return err
	}
	mj, err := json.MarshalIndent(&m, "", " ")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := u.putBytes(ctx, s.key(manifestName), mj, contentTypeJSON, "no-cache"); err != nil {
		return err
	}
	if !m.complete() {
		return nil
	}
	s.finished = true
	u.r.forget(s)
	if err := os.RemoveAll(s.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		u.r.log.Error("recording: remove spooled session", "dir", s.dir, "err", err)
	}
	// Drop the stream and app directories when they are empty now.
	os.Remove(filepath.Dir(s.dir))
	os.Remove(filepath.Dir(filepath.Dir(s.dir)))
	u.r.log.Info("recording session complete", "stream", m.App+"/"+m.Name, "session", m.Session,
		"segments", len(m.Segments), "duration_s", m.Duration())
	u.r.emit(Event{Type: EventSessionComplete, App: m.App, Name: m.Name, Session: m.Session, Seq: len(m.Segments)})
	return nil
}

func (u *uploader) putBytes(ctx context.Context, key string, b []byte, ct, cc string) error {
	sha, md := digests(b)
	return u.r.sink.Put(ctx, Object{Key: key, Body: bytes.NewReader(b), Size: int64(len(b)), SHA256: sha, MD5: md,
		ContentType: ct, CacheControl: cc})
}
