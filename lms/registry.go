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
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registry is the stream registry: the streams collection, whose items
// are JSON under KeyPrefix+"streams/APP/NAME", with the stream rules
// (validation, generated publish tokens, timestamps, key access) on its
// writes. Reads are lookups in the collection's copy, which its watch
// keeps current, so a change made through any node (or straight in etcd)
// applies everywhere without a restart.
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
	c        *Collection[Stream]

	mu sync.Mutex
	// openKeys lets a stream have encryption on without a play key (see
	// SetOpenKeyAccess).
	openKeys bool
	// encRefusal, when set, is why encryption cannot be turned on (see
	// SetEncryptionRefusal).
	encRefusal string
}

// NewRegistry returns a Registry over st. Call Start to load it.
func NewRegistry(st *Store, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		cli:      st.Client(),
		ready:    st.Ready,
		dir:      st.Prefix() + "streams/",
		unitsDir: st.Prefix() + "units/",
		log:      log,
		now:      time.Now,
	}
	c, err := NewCollection(st, "streams", CollectionOptions[Stream]{Decode: decodeStream, Log: log})
	if err != nil {
		panic(err) // a constant, valid kind
	}
	r.c = c
	return r
}

// Start loads every stream from etcd and starts following changes. The
// initial load is not reported to subscribers; read it with List.
func (r *Registry) Start(ctx context.Context) error { return r.c.Start(ctx) }

// Close stops following changes. Changes not yet delivered to subscribers
// are dropped.
func (r *Registry) Close() { r.c.Close() }

// Subscribe registers fn to be called for each change: old nil means
// created, new nil means deleted. Calls come from one goroutine, in etcd
// order, and never block the registry; fn may call Registry methods.
// Subscribe before Start, then read List, to miss nothing.
func (r *Registry) Subscribe(fn func(old, new *Stream)) {
	r.c.Subscribe(func(ch Change[Stream]) { fn(ch.Old, ch.New) })
}

// Get returns the stream app/name.
func (r *Registry) Get(app, name string) (Stream, bool) { return r.c.Get(app + "/" + name) }

// List returns every stream, sorted by app then name.
func (r *Registry) List() []Stream {
	out := r.c.List()
	slices.SortFunc(out, func(a, b Stream) int {
		return cmp.Or(strings.Compare(a.App, b.App), strings.Compare(a.Name, b.Name))
	})
	return out
}

// Ready reports whether the store behind the registry answers.
func (r *Registry) Ready(ctx context.Context) error { return r.ready(ctx) }

// Len returns the number of streams.
func (r *Registry) Len() int { return r.c.Len() }

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
	_, err := r.c.Update(ctx, s.Path(), func(cur *Stream) (*Stream, error) {
		n := s
		var created time.Time
		if cur != nil {
			created = cur.CreatedAt
		}
		if err := r.prepare(cur, &n, created); err != nil {
			return nil, err
		}
		return &n, nil
	})
	if err != nil && !errors.Is(err, ErrInvalid) {
		return fmt.Errorf("put stream %s: %w", s.Path(), err)
	}
	return err
}

// Create registers a new stream; it returns ErrExists when app/name is
// already registered. An empty publish token is generated.
func (r *Registry) Create(ctx context.Context, s Stream) (Stream, error) {
	if err := r.prepare(nil, &s, time.Time{}); err != nil {
		return s, err
	}
	if _, err := r.c.Create(ctx, s.Path(), s); err != nil {
		return s, fmt.Errorf("create stream %s: %w", s.Path(), err)
	}
	return s, nil
}

// Update changes app/name with fn atomically (compare-and-swap on the etcd
// revision, retried with backoff on a concurrent write; ErrConflict when
// writers still collide after the bounded attempts). fn gets the stored
// stream and changes it in place, and is called again on each retry; if fn
// or validation fails nothing is written. App, Name and CreatedAt cannot
// be changed by fn.
func (r *Registry) Update(ctx context.Context, app, name string, fn func(*Stream) error) (Stream, error) {
	n, err := r.c.Update(ctx, app+"/"+name, func(cur *Stream) (*Stream, error) {
		if cur == nil {
			return nil, fmt.Errorf("update stream %s/%s: %w", app, name, ErrNotFound)
		}
		s := *cur
		created, old := s.CreatedAt, s
		if err := fn(&s); err != nil {
			return nil, err
		}
		s.App, s.Name = app, name
		if err := r.prepare(&old, &s, created); err != nil {
			return nil, err
		}
		return &s, nil
	})
	if err != nil {
		return Stream{}, err
	}
	return *n, nil
}

// Delete removes app/name; it returns ErrNotFound when it is not registered.
func (r *Registry) Delete(ctx context.Context, app, name string) error {
	if err := r.c.Delete(ctx, app+"/"+name); err != nil {
		return fmt.Errorf("delete stream %s/%s: %w", app, name, err)
	}
	return nil
}

// Seed puts the streams declared in the config file that are not in the
// store yet. The store wins for streams it already has, so changes made
// through the API survive a restart with the same config file. Callers set
// Enabled themselves (the zero value is false). Invalid streams are skipped
// and reported in the returned error; the valid ones are still seeded.
func (r *Registry) Seed(ctx context.Context, streams []Stream) error {
	var errs []error
	seed := make(map[string]Stream, len(streams))
	for _, s := range streams {
		if err := r.prepare(nil, &s, time.Time{}); err != nil {
			errs = append(errs, fmt.Errorf("seed %s: %w", s.Path(), err))
			continue
		}
		seed[s.Path()] = s
	}
	created, err := r.c.Seed(ctx, seed)
	for _, name := range created {
		r.log.Info("lms: stream seeded from config", "stream", name)
	}
	return errors.Join(append(errs, err)...)
}

// NewToken returns a random token of 24 hex digits.
func NewToken() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// decodeStream parses a stored stream and checks it belongs at its key.
func decodeStream(name string, value []byte) (Stream, error) {
	var s Stream
	if err := json.Unmarshal(value, &s); err != nil {
		return s, fmt.Errorf("decode: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	if s.Path() != name {
		return s, fmt.Errorf("stream %s stored under the wrong key", s.Path())
	}
	return s, nil
}
