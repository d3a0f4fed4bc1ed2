package lms

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registry is the stream registry. The streams live in etcd as JSON under
// KeyPrefix+"streams/APP/NAME"; the Registry keeps an in-memory copy that a
// watch keeps current, so reads are map lookups and a change made through
// any node (or straight in etcd) applies everywhere without a restart.
//
// Writes (Put, Create, Update, Delete) go to etcd and return once this
// Registry's copy shows them, so a read after a write sees it.
type Registry struct {
	cli   *clientv3.Client
	ready func(context.Context) error
	dir   string // KeyPrefix + "streams/"
	// unitsDir holds the units' live reports (KeyPrefix + "units/").
	unitsDir string
	log      *slog.Logger
	now      func() time.Time
	// openKeys lets a stream have encryption on without a play key (see
	// SetOpenKeyAccess).
	openKeys bool
	// encRefusal, when set, is why encryption cannot be turned on (see
	// SetEncryptionRefusal).
	encRefusal string

	mu      sync.Mutex
	streams map[string]entry // by "app/name"
	applied int64            // etcd revision the copy reflects
	advance chan struct{}    // closed and replaced when applied grows
	subs    []func(old, new *Stream)
	queue   []change // changes waiting for delivery to subs
	wake    chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type entry struct {
	s      Stream
	modRev int64
}

type change struct{ old, new *Stream }

// watchRetry bounds the pause between attempts to re-establish the watch.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
	// waitApplied bounds how long a write waits for the watch to show it.
	waitAppliedMax = 5 * time.Second
	// updateAttempts bounds the compare-and-swap attempts of Update;
	// between attempts it backs off from updateBackoffMin, doubling up
	// to updateBackoffMax, with jitter so that racing writers spread out.
	// 48 attempts wait at most about 4 s in all, under the API's 10 s
	// request timeout.
	updateAttempts   = 48
	updateBackoffMin = time.Millisecond
	updateBackoffMax = 100 * time.Millisecond
)

// NewRegistry returns a Registry over st. Call Start to load it.
func NewRegistry(st *Store, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		cli:      st.Client(),
		ready:    st.Ready,
		dir:      st.Prefix() + "streams/",
		unitsDir: st.Prefix() + "units/",
		log:      log,
		now:      time.Now,
		streams:  map[string]entry{},
		advance:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}
}

// Start loads every stream from etcd and starts following changes. The
// initial load is not reported to subscribers; read it with List.
func (r *Registry) Start(ctx context.Context) error {
	rev, err := r.reload(ctx, false)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.watch(rctx, rev) }()
	go func() { defer r.wg.Done(); r.deliver(rctx) }()
	return nil
}

// Close stops following changes. Changes not yet delivered to subscribers
// are dropped.
func (r *Registry) Close() {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
}

// Subscribe registers fn to be called for each change: old nil means
// created, new nil means deleted. Calls come from one goroutine, in etcd
// order, and never block the registry; fn may call Registry methods.
// Subscribe before Start, then read List, to miss nothing.
func (r *Registry) Subscribe(fn func(old, new *Stream)) {
	r.mu.Lock()
	r.subs = append(r.subs, fn)
	r.mu.Unlock()
}

// Get returns the stream app/name.
func (r *Registry) Get(app, name string) (Stream, bool) {
	r.mu.Lock()
	e, ok := r.streams[app+"/"+name]
	r.mu.Unlock()
	return e.s, ok
}

// List returns every stream, sorted by app then name.
func (r *Registry) List() []Stream {
	r.mu.Lock()
	out := make([]Stream, 0, len(r.streams))
	for _, e := range r.streams {
		out = append(out, e.s)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Stream) int {
		return cmp.Or(strings.Compare(a.App, b.App), strings.Compare(a.Name, b.Name))
	})
	return out
}

// Ready reports whether the store behind the registry answers.
func (r *Registry) Ready(ctx context.Context) error { return r.ready(ctx) }

// Len returns the number of streams.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.streams)
}

func (r *Registry) key(app, name string) string { return r.dir + app + "/" + name }

// SetOpenKeyAccess chooses whether a stream may have encryption on without
// a play key. Without a play key the key delivery (/keys/) cannot tell a
// player from anyone else, so the content keys go to whoever asks: the
// registry refuses to turn encryption on (or to remove the play key of an
// encrypted stream) unless the operator allowed open key access. Call it
// before the first write.
func (r *Registry) SetOpenKeyAccess(open bool) {
	r.mu.Lock()
	r.openKeys = open
	r.mu.Unlock()
}

// SetEncryptionRefusal makes the registry refuse to turn encryption on
// (a write with encryption on over a stream without it, or a new
// encrypted stream) with reason, for a node whose outputs cannot be
// encrypted (its HLS variant has no encrypted form); "" accepts it. Call
// it before the first write.
func (r *Registry) SetEncryptionRefusal(reason string) {
	r.mu.Lock()
	r.encRefusal = reason
	r.mu.Unlock()
}

// checkEncryption refuses a write that turns encryption on when the node
// cannot encrypt its outputs.
func (r *Registry) checkEncryption(old *Stream, s *Stream) error {
	if !s.Encryption || (old != nil && old.Encryption) {
		return nil
	}
	r.mu.Lock()
	reason := r.encRefusal
	r.mu.Unlock()
	if reason == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalid, reason)
}

// errKeyAccess explains why encryption without a play key is refused.
const errKeyAccess = "encryption needs a play_key: without one, players fetch content keys unsigned and so can anyone; " +
	"set play_key (or leave encryption off), or allow open key access with encryption.open_key_access: true"

// checkKeyAccess refuses a write that makes s encrypted without a play key
// (from old, nil when s is new), unless open key access is allowed. A
// stream stored so before stays writable in its other fields.
func (r *Registry) checkKeyAccess(old *Stream, s *Stream) error {
	if !s.Encryption || s.PlayKey != "" {
		return nil
	}
	r.mu.Lock()
	open := r.openKeys
	r.mu.Unlock()
	if open || (old != nil && old.Encryption && old.PlayKey == "") {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalid, errKeyAccess)
}

// prepare fills a stream about to be written: a generated publish token when
// empty, timestamps, then validation; old is the stored stream (nil when
// there is none).
func (r *Registry) prepare(old, s *Stream, created time.Time) error {
	if err := r.checkKeyAccess(old, s); err != nil {
		return err
	}
	if err := r.checkEncryption(old, s); err != nil {
		return err
	}
	if s.PublishToken == "" {
		tok, err := NewToken()
		if err != nil {
			return err
		}
		s.PublishToken = tok
	}
	now := r.now().UTC()
	if created.IsZero() {
		created = now
	}
	s.CreatedAt, s.UpdatedAt = created, now
	return s.Validate()
}

// Put creates or replaces a stream; an empty publish token is generated
// (read it back with Get). CreatedAt is kept from the stored stream.
func (r *Registry) Put(ctx context.Context, s Stream) error {
	var created time.Time
	var prev *Stream
	if old, ok := r.Get(s.App, s.Name); ok {
		created, prev = old.CreatedAt, &old
	}
	if err := r.prepare(prev, &s, created); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("put stream %s: %w", s.Path(), err)
	}
	resp, err := r.cli.Put(ctx, r.key(s.App, s.Name), string(b))
	if err != nil {
		return fmt.Errorf("put stream %s: %w", s.Path(), err)
	}
	r.waitApplied(ctx, resp.Header.Revision)
	return nil
}

// Create registers a new stream; it returns ErrExists when app/name is
// already registered. An empty publish token is generated.
func (r *Registry) Create(ctx context.Context, s Stream) (Stream, error) {
	if err := r.prepare(nil, &s, time.Time{}); err != nil {
		return s, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return s, fmt.Errorf("create stream %s: %w", s.Path(), err)
	}
	k := r.key(s.App, s.Name)
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Commit()
	if err != nil {
		return s, fmt.Errorf("create stream %s: %w", s.Path(), err)
	}
	if !resp.Succeeded {
		return s, fmt.Errorf("create stream %s: %w", s.Path(), ErrExists)
	}
	r.waitApplied(ctx, resp.Header.Revision)
	return s, nil
}

// Update changes app/name with fn atomically (compare-and-swap on the etcd
// revision, retried with backoff on a concurrent write; ErrConflict when
// writers still collide after updateAttempts). fn gets the stored stream
// and changes it in place, and is called again on each retry; if fn or
// validation fails nothing is written. App, Name and CreatedAt cannot be
// changed by fn.
func (r *Registry) Update(ctx context.Context, app, name string, fn func(*Stream) error) (Stream, error) {
	k := r.key(app, name)
	pause := updateBackoffMin
	for attempt := range updateAttempts {
		if attempt > 0 {
			if err := sleepCtx(ctx, jitter(pause)); err != nil {
				return Stream{}, fmt.Errorf("update stream %s/%s: %w", app, name, err)
			}
			pause = min(2*pause, updateBackoffMax)
		}
		gr, err := r.cli.Get(ctx, k)
		if err != nil {
			return Stream{}, fmt.Errorf("update stream %s/%s: %w", app, name, err)
		}
		if len(gr.Kvs) == 0 {
			return Stream{}, fmt.Errorf("update stream %s/%s: %w", app, name, ErrNotFound)
		}
		kv := gr.Kvs[0]
		var s Stream
		if err := json.Unmarshal(kv.Value, &s); err != nil {
			return Stream{}, fmt.Errorf("update stream %s/%s: stored value: %w", app, name, err)
		}
		created, old := s.CreatedAt, s
		if err := fn(&s); err != nil {
			return Stream{}, err
		}
		s.App, s.Name = app, name
		if err := r.prepare(&old, &s, created); err != nil {
			return Stream{}, err
		}
		b, err := json.Marshal(s)
		if err != nil {
			return Stream{}, fmt.Errorf("update stream %s/%s: %w", app, name, err)
		}
		tr, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision)).
			Then(clientv3.OpPut(k, string(b))).
			Commit()
		if err != nil {
			return Stream{}, fmt.Errorf("update stream %s/%s: %w", app, name, err)
		}
		if tr.Succeeded {
			r.waitApplied(ctx, tr.Header.Revision)
			return s, nil
		}
	}
	return Stream{}, fmt.Errorf("update stream %s/%s: %w", app, name, ErrConflict)
}

// jitter returns a duration drawn uniformly from [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(mrand.Int64N(int64(d)))
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Delete removes app/name; it returns ErrNotFound when it is not registered.
func (r *Registry) Delete(ctx context.Context, app, name string) error {
	resp, err := r.cli.Delete(ctx, r.key(app, name))
	if err != nil {
		return fmt.Errorf("delete stream %s/%s: %w", app, name, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("delete stream %s/%s: %w", app, name, ErrNotFound)
	}
	r.waitApplied(ctx, resp.Header.Revision)
	return nil
}

// Seed puts the streams declared in the config file that are not in the
// store yet. The store wins for streams it already has, so changes made
// through the API survive a restart with the same config file. Callers set
// Enabled themselves (the zero value is false). Invalid streams are skipped
// and reported in the returned error; the valid ones are still seeded.
func (r *Registry) Seed(ctx context.Context, streams []Stream) error {
	var errs []error
	var last int64
	for _, s := range streams {
		if err := r.prepare(nil, &s, time.Time{}); err != nil {
			errs = append(errs, fmt.Errorf("seed %s: %w", s.Path(), err))
			continue
		}
		b, err := json.Marshal(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("seed %s: %w", s.Path(), err))
			continue
		}
		k := r.key(s.App, s.Name)
		resp, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(b))).
			Commit()
		if err != nil {
			errs = append(errs, fmt.Errorf("seed %s: %w", s.Path(), err))
			continue
		}
		if resp.Succeeded {
			r.log.Info("lms: stream seeded from config", "stream", s.Path())
			last = resp.Header.Revision
		}
	}
	if last > 0 {
		r.waitApplied(ctx, last)
	}
	return errors.Join(errs...)
}

// NewToken returns a random token of 24 hex digits.
func NewToken() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// waitApplied waits (bounded) until the in-memory copy reflects rev. The
// write is already durable, so a timeout only means a stale read is possible.
func (r *Registry) waitApplied(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, waitAppliedMax)
	defer cancel()
	for {
		r.mu.Lock()
		if r.applied >= rev {
			r.mu.Unlock()
			return
		}
		ch := r.advance
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			r.log.Warn("lms: registry copy lags behind etcd", "revision", rev)
			return
		}
	}
}

// setApplied records that the copy reflects rev; r.mu must be held.
func (r *Registry) setApplied(rev int64) {
	if rev <= r.applied {
		return
	}
	r.applied = rev
	close(r.advance)
	r.advance = make(chan struct{})
}

// decode parses a stored stream and checks it belongs at its key.
func (r *Registry) decode(key, value []byte) (Stream, error) {
	var s Stream
	if err := json.Unmarshal(value, &s); err != nil {
		return s, fmt.Errorf("decode: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	if want := r.dir + s.Path(); string(key) != want {
		return s, fmt.Errorf("stream %s stored under the wrong key", s.Path())
	}
	return s, nil
}

// reload replaces the copy with a fresh read of etcd, queues the differences
// for subscribers (when notify) and returns the revision read.
func (r *Registry) reload(ctx context.Context, notify bool) (int64, error) {
	resp, err := r.cli.Get(ctx, r.dir, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("load streams: %w", err)
	}
	fresh := make(map[string]entry, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		s, err := r.decode(kv.Key, kv.Value)
		if err != nil {
			r.log.Warn("lms: ignoring bad registry entry", "key", string(kv.Key), "err", err)
			continue
		}
		fresh[s.Path()] = entry{s: s, modRev: kv.ModRevision}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !notify {
		r.streams = fresh
		r.setApplied(resp.Header.Revision)
		return resp.Header.Revision, nil
	}
	for k, e := range r.streams {
		if n, ok := fresh[k]; !ok {
			r.queueLocked(&e.s, nil)
		} else if n.modRev != e.modRev {
			r.queueLocked(&e.s, &n.s)
		}
	}
	for k, n := range fresh {
		if _, ok := r.streams[k]; !ok {
			r.queueLocked(nil, &n.s)
		}
	}
	r.streams = fresh
	r.setApplied(resp.Header.Revision)
	return resp.Header.Revision, nil
}

// queueLocked queues a change for subscribers; r.mu must be held.
func (r *Registry) queueLocked(old, new *Stream) {
	if len(r.subs) == 0 {
		return
	}
	var o, n *Stream
	if old != nil {
		c := *old
		o = &c
	}
	if new != nil {
		c := *new
		n = &c
	}
	r.queue = append(r.queue, change{old: o, new: n})
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// apply applies one watch event to the copy; r.mu must be held.
func (r *Registry) apply(ev *clientv3.Event) {
	k := strings.TrimPrefix(string(ev.Kv.Key), r.dir)
	old, had := r.streams[k]
	if ev.Type == mvccpb.PUT {
		s, err := r.decode(ev.Kv.Key, ev.Kv.Value)
		if err == nil {
			r.streams[k] = entry{s: s, modRev: ev.Kv.ModRevision}
			if had {
				r.queueLocked(&old.s, &s)
			} else {
				r.queueLocked(nil, &s)
			}
			return
		}
		// A bad value replaces a good one: the stream is gone.
		r.log.Warn("lms: ignoring bad registry entry", "key", string(ev.Kv.Key), "err", err)
	}
	if had {
		delete(r.streams, k)
		r.queueLocked(&old.s, nil)
	}
}

// watch follows etcd from rev+1. On a watch error or compaction it reloads
// the whole registry and watches again from there.
func (r *Registry) watch(ctx context.Context, rev int64) {
	pause := watchRetryMin
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := r.cli.Watch(wctx, r.dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if resp.CompactRevision != 0 {
				r.log.Warn("lms: registry watch compacted, reloading", "revision", resp.CompactRevision)
				break
			}
			if err := resp.Err(); err != nil {
				r.log.Warn("lms: registry watch failed, reloading", "err", err)
				break
			}
			r.mu.Lock()
			for _, ev := range resp.Events {
				r.apply(ev)
				rev = max(rev, ev.Kv.ModRevision)
			}
			rev = max(rev, resp.Header.Revision)
			r.setApplied(rev)
			r.mu.Unlock()
			pause = watchRetryMin
		}
		cancel()
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, watchRetryMax)
			lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := r.reload(lctx, true)
			lcancel()
			if err == nil {
				rev = n
				break
			}
			if ctx.Err() == nil {
				r.log.Warn("lms: registry reload failed", "err", err)
			}
		}
	}
}

// deliver calls the subscribers for queued changes, in order.
func (r *Registry) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		for {
			r.mu.Lock()
			q := r.queue
			r.queue = nil
			subs := r.subs
			r.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, c := range q {
				if ctx.Err() != nil {
					return
				}
				for _, fn := range subs {
					fn(c.old, c.new)
				}
			}
		}
	}
}
