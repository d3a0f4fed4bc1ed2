package lms

import (
	"context"
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

// A Collection is one run-time collection of livefuse kept in the lms
// store: the streams, the transcode profiles, the CDN vendors, the manual
// CDN blacklist. Its items are values of T stored as JSON under
// KeyPrefix+KIND/NAME, one key per item, so that changes to different
// items never collide. Every node keeps an in-memory copy that one watch
// keeps current (the only watch implementation of lms: it requires an
// etcd leader, reloads the whole collection when the history it needs was
// compacted, and retries with bounded exponential backoff and jitter), so
// reads are map lookups and a change made through any node applies
// everywhere.
//
// Writes are compare-and-swap on the item's etcd mod revision: CAS (and
// Create, Delete with a revision) fail with ErrConflict when another write
// came first; Update and UpdateAll read, apply a function and retry a
// bounded number of times. Every write returns once this node's copy shows
// it, so a read after a write sees it. Values are never logged (vendors
// hold signing keys).
type Collection[T any] struct {
	cli    *clientv3.Client
	kind   string
	dir    string // KeyPrefix + kind + "/"
	decode func(name string, value []byte) (T, error)
	encode func(T) ([]byte, error)
	log    *slog.Logger
	retry  Backoff // pause between attempts to re-establish the watch

	mu      sync.Mutex
	items   map[string]item[T]
	applied int64         // etcd revision the copy reflects
	advance chan struct{} // closed and replaced when applied grows
	subs    []func(Change[T])
	batch   []func()    // called once after each batch of changes
	queue   []Change[T] // changes waiting for delivery to subs
	wake    chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type item[T any] struct {
	v      T
	modRev int64
}

// Change is one change of a collection item: Old nil means created, New
// nil means deleted.
type Change[T any] struct {
	Name     string
	Old, New *T
}

// CollectionOptions adjusts a Collection. Every field has a default.
type CollectionOptions[T any] struct {
	// Decode parses a stored value (default: encoding/json). An item
	// that does not decode is left out of the copy and logged (without
	// its value): a bad value replacing a good one deletes the item.
	Decode func(name string, value []byte) (T, error)
	// Encode stores a value (default: encoding/json).
	Encode func(T) ([]byte, error)
	// Log gets the watch's warnings (default: discarded).
	Log *slog.Logger
	// Retry bounds the pauses of the watch after an error (default
	// 100 ms doubling up to 5 s, with jitter).
	Retry Backoff
}

// MaxItem bounds one stored item (etcd refuses requests over 1.5 MiB).
const MaxItem = 1 << 20

// Bounds of the compare-and-swap retries of Update and UpdateAll: between
// attempts they back off from 1 ms, doubling up to 100 ms, with jitter so
// that racing writers spread out. 48 attempts wait at most about 4 s in
// all, under the control API's 10 s request timeout.
const (
	updateAttempts = 48
	waitAppliedMax = 5 * time.Second
)

// MaxAtomicItems bounds UpdateAll and SeedOnce, which read and write a
// whole collection in one transaction: etcd refuses more than 128
// operations in one (by default), so they work on collections of at most
// 127 items.
const MaxAtomicItems = 127

// ErrTooLarge: an item or an atomic update over the store's bounds.
var ErrTooLarge = errors.New("too large for one store write")

var updateBackoff = Backoff{Min: time.Millisecond, Max: 100 * time.Millisecond}

// NewCollection returns the collection kind (1 to 64 of a-z, 0-9, '.',
// '-', '_') on st. Call Start to load it.
func NewCollection[T any](st *Store, kind string, o CollectionOptions[T]) (*Collection[T], error) {
	if err := validKind(kind); err != nil {
		return nil, err
	}
	if o.Decode == nil {
		o.Decode = func(_ string, b []byte) (T, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		}
	}
	if o.Encode == nil {
		o.Encode = func(v T) ([]byte, error) { return json.Marshal(v) }
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Retry.Min <= 0 {
		o.Retry.Min = 100 * time.Millisecond
	}
	if o.Retry.Max < o.Retry.Min {
		o.Retry.Max = max(5*time.Second, o.Retry.Min)
	}
	return &Collection[T]{
		cli:     st.Client(),
		kind:    kind,
		dir:     st.Prefix() + kind + "/",
		decode:  o.Decode,
		encode:  o.Encode,
		log:     o.Log,
		retry:   o.Retry,
		items:   map[string]item[T]{},
		advance: make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}, nil
}

// Kind returns the collection's name.
func (c *Collection[T]) Kind() string { return c.kind }

// Start loads every item and starts following changes. The initial load
// is not reported to subscribers; read it with List or All.
func (c *Collection[T]) Start(ctx context.Context) error {
	rev, err := c.reload(ctx, false)
	if err != nil {
		return err
	}
	c.follow(ctx, rev)
	return nil
}

// follow starts the watch from rev+1 and the delivery to subscribers.
func (c *Collection[T]) follow(ctx context.Context, rev int64) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.watch(rctx, rev) }()
	go func() { defer c.wg.Done(); c.deliver(rctx) }()
}

// Close stops following changes. Changes not yet delivered to subscribers
// are dropped.
func (c *Collection[T]) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// Subscribe registers fn to be called for each change. Calls come from one
// goroutine, in etcd order, and never block the collection; fn may call
// the collection's methods. Subscribe before Start, then read List, to
// miss nothing.
func (c *Collection[T]) Subscribe(fn func(Change[T])) {
	c.mu.Lock()
	c.subs = append(c.subs, fn)
	c.mu.Unlock()
}

// OnChange registers fn to be called after changes, once per batch of
// changes delivered together (a burst of writes costs a few calls, not one
// each), from the goroutine that calls the subscribers, after them. It
// suits a consumer that rebuilds its state from List or All. Register it
// before Start.
func (c *Collection[T]) OnChange(fn func()) {
	c.mu.Lock()
	c.batch = append(c.batch, fn)
	c.mu.Unlock()
}

// Get returns the item name.
func (c *Collection[T]) Get(name string) (T, bool) {
	c.mu.Lock()
	it, ok := c.items[name]
	c.mu.Unlock()
	return it.v, ok
}

// Len returns the number of items.
func (c *Collection[T]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// All returns a copy of the items by name.
func (c *Collection[T]) All() map[string]T {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]T, len(c.items))
	for k, it := range c.items {
		out[k] = it.v
	}
	return out
}

// List returns the items sorted by name.
func (c *Collection[T]) List() []T {
	c.mu.Lock()
	names := make([]string, 0, len(c.items))
	for k := range c.items {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]T, len(names))
	for i, k := range names {
		out[i] = c.items[k].v
	}
	c.mu.Unlock()
	return out
}

func (c *Collection[T]) key(name string) (string, error) {
	if name == "" || len(name) > 256 || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%s %q: want a name of 1 to 256 bytes", c.kind, name)
	}
	return c.dir + name, nil
}

func (c *Collection[T]) value(name string, v T) (string, error) {
	b, err := c.encode(v)
	if err != nil {
		return "", fmt.Errorf("%s %q: encode: %w", c.kind, name, err)
	}
	if len(b) > MaxItem {
		return "", fmt.Errorf("%s %q: %w: %d bytes, at most %d", c.kind, name, ErrTooLarge, len(b), MaxItem)
	}
	return string(b), nil
}

// Put stores v as name whatever was there, and returns the store revision.
func (c *Collection[T]) Put(ctx context.Context, name string, v T) (int64, error) {
	k, err := c.key(name)
	if err != nil {
		return 0, err
	}
	val, err := c.value(name, v)
	if err != nil {
		return 0, err
	}
	resp, err := c.cli.Put(ctx, k, val)
	if err != nil {
		return 0, fmt.Errorf("put %s %q: %w", c.kind, name, err)
	}
	c.waitApplied(ctx, resp.Header.Revision)
	return resp.Header.Revision, nil
}

// CAS stores v as name only if the stored item still has mod revision
// modRev (0: only if there is none); otherwise it returns ErrConflict (or
// ErrExists for modRev 0) and writes nothing.
func (c *Collection[T]) CAS(ctx context.Context, name string, v T, modRev int64) (int64, error) {
	k, err := c.key(name)
	if err != nil {
		return 0, err
	}
	val, err := c.value(name, v)
	if err != nil {
		return 0, err
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
		Then(clientv3.OpPut(k, val)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("put %s %q: %w", c.kind, name, err)
	}
	if !resp.Succeeded {
		if modRev == 0 {
			return 0, fmt.Errorf("create %s %q: %w", c.kind, name, ErrExists)
		}
		return 0, fmt.Errorf("put %s %q: %w", c.kind, name, ErrConflict)
	}
	c.waitApplied(ctx, resp.Header.Revision)
	return resp.Header.Revision, nil
}

// Create stores v as name only if there is no such item (ErrExists).
func (c *Collection[T]) Create(ctx context.Context, name string, v T) (int64, error) {
	return c.CAS(ctx, name, v, 0)
}

// Delete removes name; ErrNotFound when there is none.
func (c *Collection[T]) Delete(ctx context.Context, name string) error {
	k, err := c.key(name)
	if err != nil {
		return err
	}
	resp, err := c.cli.Delete(ctx, k)
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", c.kind, name, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("delete %s %q: %w", c.kind, name, ErrNotFound)
	}
	c.waitApplied(ctx, resp.Header.Revision)
	return nil
}

// Update changes name atomically: fn gets the stored item (nil when there
// is none) and returns the new one (nil: delete it, or leave it absent).
// The write is a compare-and-swap on what fn saw; on a concurrent write
// Update reads again and calls fn again, with backoff, up to a bounded
// number of attempts (then ErrConflict). If fn fails nothing is written
// and its error is returned as it is. Update returns what it stored.
func (c *Collection[T]) Update(ctx context.Context, name string, fn func(cur *T) (*T, error)) (*T, error) {
	k, err := c.key(name)
	if err != nil {
		return nil, err
	}
	pause := updateBackoff.Min
	for attempt := range updateAttempts {
		if attempt > 0 {
			if err := sleepCtx(ctx, jitter(pause)); err != nil {
				return nil, fmt.Errorf("update %s %q: %w", c.kind, name, err)
			}
			pause = min(2*pause, updateBackoff.Max)
		}
		gr, err := c.cli.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("update %s %q: %w", c.kind, name, err)
		}
		var cur *T
		var modRev int64
		if len(gr.Kvs) > 0 {
			// A value that does not decode counts as no item (as in
			// the copy), and may be replaced.
			kv := gr.Kvs[0]
			modRev = kv.ModRevision
			if v, err := c.decode(name, kv.Value); err == nil {
				cur = &v
			}
		}
		next, err := fn(cur)
		if err != nil {
			return nil, err
		}
		var op clientv3.Op
		switch {
		case next != nil:
			val, err := c.value(name, *next)
			if err != nil {
				return nil, err
			}
			op = clientv3.OpPut(k, val)
		case modRev == 0:
			return nil, nil
		default:
			op = clientv3.OpDelete(k)
		}
		tr, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
			Then(op).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("update %s %q: %w", c.kind, name, err)
		}
		if tr.Succeeded {
			c.waitApplied(ctx, tr.Header.Revision)
			return next, nil
		}
	}
	return nil, fmt.Errorf("update %s %q: %w", c.kind, name, ErrConflict)
}

// UpdateAll changes the whole collection atomically: fn gets every stored
// item by name and returns the collection it wants (items left out are
// deleted). The write succeeds only if no item changed, appeared or
// vanished since the read; otherwise UpdateAll reads and calls fn again,
// like Update.
func (c *Collection[T]) UpdateAll(ctx context.Context, fn func(cur map[string]T) (map[string]T, error)) error {
	pause := updateBackoff.Min
	for attempt := range updateAttempts {
		if attempt > 0 {
			if err := sleepCtx(ctx, jitter(pause)); err != nil {
				return fmt.Errorf("update %s: %w", c.kind, err)
			}
			pause = min(2*pause, updateBackoff.Max)
		}
		gr, err := c.cli.Get(ctx, c.dir, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("update %s: %w", c.kind, err)
		}
		cur := make(map[string]T, len(gr.Kvs))
		// Nothing under the prefix was written after the read, and every
		// key read is still there: the snapshot is intact.
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(c.dir), "<", gr.Header.Revision+1).WithPrefix()}
		for _, kv := range gr.Kvs {
			name := strings.TrimPrefix(string(kv.Key), c.dir)
			if v, err := c.decode(name, kv.Value); err == nil {
				cur[name] = v
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
		}
		old := make(map[string]bool, len(gr.Kvs))
		for _, kv := range gr.Kvs {
			old[strings.TrimPrefix(string(kv.Key), c.dir)] = true
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		var ops []clientv3.Op
		for name := range old {
			if _, ok := next[name]; !ok {
				ops = append(ops, clientv3.OpDelete(c.dir+name))
			}
		}
		for name, v := range next {
			k, err := c.key(name)
			if err != nil {
				return err
			}
			val, err := c.value(name, v)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(k, val))
		}
		if len(ops) == 0 {
			return nil // nothing stored, nothing wanted
		}
		if len(cmps) > MaxAtomicItems+1 || len(ops) > MaxAtomicItems {
			return fmt.Errorf("update %s: %w (at most %d items)", c.kind, ErrTooLarge, MaxAtomicItems)
		}
		tr, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("update %s: %w", c.kind, err)
		}
		if tr.Succeeded {
			c.waitApplied(ctx, tr.Header.Revision)
			return nil
		}
	}
	return fmt.Errorf("update %s: %w", c.kind, ErrConflict)
}

// Seed creates the items of seed that are not stored yet (the store wins
// for the others, so changes made through the API survive a restart with
// the same config file). It returns the names it created.
func (c *Collection[T]) Seed(ctx context.Context, seed map[string]T) ([]string, error) {
	var created []string
	var errs []error
	names := make([]string, 0, len(seed))
	for name := range seed {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		_, err := c.Create(ctx, name, seed[name])
		switch {
		case err == nil:
			created = append(created, name)
		case !errors.Is(err, ErrExists):
			errs = append(errs, fmt.Errorf("seed %w", err))
		}
	}
	return created, errors.Join(errs...)
}

// SeedOnce stores seed only if the collection was never seeded before (a
// marker key beside it records that it was), so that a collection emptied
// through the API stays empty. It reports whether it wrote.
func (c *Collection[T]) SeedOnce(ctx context.Context, seed map[string]T) (bool, error) {
	if len(seed) > MaxAtomicItems {
		return false, fmt.Errorf("seed %s: %w (at most %d items)", c.kind, ErrTooLarge, MaxAtomicItems)
	}
	marker := strings.TrimSuffix(c.dir, "/") + ".seeded"
	ops := []clientv3.Op{clientv3.OpPut(marker, time.Now().UTC().Format(time.RFC3339))}
	for name, v := range seed {
		k, err := c.key(name)
		if err != nil {
			return false, err
		}
		val, err := c.value(name, v)
		if err != nil {
			return false, err
		}
		ops = append(ops, clientv3.OpPut(k, val))
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(marker), "=", 0)).
		Then(ops...).
		Commit()
	if err != nil {
		return false, fmt.Errorf("seed %s: %w", c.kind, err)
	}
	if resp.Succeeded && len(seed) > 0 {
		// (The marker alone is outside the watched prefix: no event
		// would show it.)
		c.waitApplied(ctx, resp.Header.Revision)
	}
	return resp.Succeeded, nil
}

// Seeded reports whether SeedOnce wrote (here or on another node) before.
func (c *Collection[T]) Seeded(ctx context.Context) (bool, error) {
	resp, err := c.cli.Get(ctx, strings.TrimSuffix(c.dir, "/")+".seeded", clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("read %s: %w", c.kind, err)
	}
	return resp.Count > 0, nil
}

// WaitFresh returns once the copy reflects every write the store had
// committed when WaitFresh was called (bounded: a read of a quorum, then
// a progress notice asked of the watch, which carries the revision even
// when nothing under the collection changed).
func (c *Collection[T]) WaitFresh(ctx context.Context) error {
	resp, err := c.cli.Get(ctx, c.dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("read %s: %w", c.kind, err)
	}
	// The watch runs on the stream of leader-requiring contexts.
	if err := c.cli.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil {
		return fmt.Errorf("read %s: %w", c.kind, err)
	}
	c.waitApplied(ctx, resp.Header.Revision)
	return nil
}

// waitApplied waits (bounded) until the copy reflects rev. The write is
// durable already, so a timeout only means a stale read is possible.
func (c *Collection[T]) waitApplied(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, waitAppliedMax)
	defer cancel()
	for {
		c.mu.Lock()
		if c.applied >= rev {
			c.mu.Unlock()
			return
		}
		ch := c.advance
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			c.log.Warn("lms: collection copy lags behind etcd", "kind", c.kind, "revision", rev)
			return
		}
	}
}

// setApplied records that the copy reflects rev; c.mu must be held.
func (c *Collection[T]) setApplied(rev int64) {
	if rev <= c.applied {
		return
	}
	c.applied = rev
	close(c.advance)
	c.advance = make(chan struct{})
}

// reload replaces the copy with a fresh read, queues the differences for
// subscribers (when notify) and returns the revision read.
func (c *Collection[T]) reload(ctx context.Context, notify bool) (int64, error) {
	resp, err := c.cli.Get(ctx, c.dir, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("load %s: %w", c.kind, err)
	}
	fresh := make(map[string]item[T], len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), c.dir)
		v, err := c.decode(name, kv.Value)
		if err != nil {
			c.log.Warn("lms: ignoring bad stored item", "kind", c.kind, "key", string(kv.Key), "err", err)
			continue
		}
		fresh[name] = item[T]{v: v, modRev: kv.ModRevision}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if notify {
		for k, it := range c.items {
			if n, ok := fresh[k]; !ok {
				c.queueLocked(k, &it.v, nil)
			} else if n.modRev != it.modRev {
				c.queueLocked(k, &it.v, &n.v)
			}
		}
		for k, n := range fresh {
			if _, ok := c.items[k]; !ok {
				c.queueLocked(k, nil, &n.v)
			}
		}
	}
	c.items = fresh
	c.setApplied(resp.Header.Revision)
	return resp.Header.Revision, nil
}

// queueLocked queues a change for subscribers; c.mu must be held.
func (c *Collection[T]) queueLocked(name string, old, new *T) {
	if len(c.subs) == 0 && len(c.batch) == 0 {
		return
	}
	ch := Change[T]{Name: name}
	if old != nil {
		o := *old
		ch.Old = &o
	}
	if new != nil {
		n := *new
		ch.New = &n
	}
	c.queue = append(c.queue, ch)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// apply applies one watch event to the copy; c.mu must be held.
func (c *Collection[T]) apply(ev *clientv3.Event) {
	name := strings.TrimPrefix(string(ev.Kv.Key), c.dir)
	old, had := c.items[name]
	if ev.Type == mvccpb.PUT {
		v, err := c.decode(name, ev.Kv.Value)
		if err == nil {
			c.items[name] = item[T]{v: v, modRev: ev.Kv.ModRevision}
			if had {
				c.queueLocked(name, &old.v, &v)
			} else {
				c.queueLocked(name, nil, &v)
			}
			return
		}
		// A bad value replaces a good one: the item is gone.
		c.log.Warn("lms: ignoring bad stored item", "kind", c.kind, "key", string(ev.Kv.Key), "err", err)
	}
	if had {
		delete(c.items, name)
		c.queueLocked(name, &old.v, nil)
	}
}

// watch follows etcd from rev+1 until ctx ends. A watch that breaks (an
// error, no leader, or history compacted past rev) is replaced after a
// reload of the whole collection, which reports the differences; failed
// reloads are retried with c.retry's backoff.
func (c *Collection[T]) watch(ctx context.Context, rev int64) {
	bo := c.retry.start()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range c.cli.Watch(wctx, c.dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.CompactRevision != 0 {
				c.log.Warn("lms: watch fell behind a compaction, reloading", "kind", c.kind, "revision", resp.CompactRevision)
				break
			}
			if err := resp.Err(); err != nil {
				c.log.Warn("lms: watch failed, reloading", "kind", c.kind, "err", err)
				break
			}
			c.mu.Lock()
			for _, ev := range resp.Events {
				c.apply(ev)
				rev = max(rev, ev.Kv.ModRevision)
			}
			rev = max(rev, resp.Header.Revision)
			c.setApplied(rev)
			c.mu.Unlock()
			bo.reset()
		}
		cancel()
		for ctx.Err() == nil {
			if sleepCtx(ctx, bo.next()) != nil {
				return
			}
			lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := c.reload(lctx, true)
			lcancel()
			if err == nil {
				rev = n
				break
			}
			if ctx.Err() == nil {
				c.log.Warn("lms: reload failed", "kind", c.kind, "err", err)
			}
		}
	}
}

// deliver calls the subscribers for queued changes, in order.
func (c *Collection[T]) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			q := c.queue
			c.queue = nil
			subs, batch := c.subs, c.batch
			c.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, ch := range q {
				if ctx.Err() != nil {
					return
				}
				for _, fn := range subs {
					fn(ch)
				}
			}
			for _, fn := range batch {
				fn()
			}
		}
	}
}

// Backoff is a bounded exponential backoff: pauses start at Min and double
// up to Max, each drawn with jitter from [d/2, 3d/2).
type Backoff struct {
	Min, Max time.Duration
}

type backoffState struct {
	b   Backoff
	cur time.Duration
}

func (b Backoff) start() *backoffState { return &backoffState{b: b, cur: b.Min} }

// next returns the next pause, at most 1.5 × Max.
func (s *backoffState) next() time.Duration {
	d := jitter(s.cur)
	s.cur = min(2*s.cur, s.b.Max)
	return d
}

func (s *backoffState) reset() { s.cur = s.b.Min }

// jitter returns a duration drawn uniformly from [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
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
