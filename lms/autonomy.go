package lms

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Edge autonomy: a unit cut off from the store's quorum serves on with its
// last known registry (publishers, players, switches, encryption are all
// decided from the copy in memory). Its API answers reads from that copy,
// marked stale (header X-Livefuse-Stale), and an emergency switch applies
// to this unit at once as a local override (202, header
// X-Livefuse-Local-Override), written to the registry when the quorum
// returns. Writes other than the switch need the quorum and fail with 503.

// LocalSwitcher is implemented by a LiveSource that can force a feed on
// this unit alone, without the registry.
type LocalSwitcher interface {
	SetLocalFeed(app, name, feed string) error
}

const (
	// switchStoreWait is how long a switch waits for the store before it
	// applies as a local override.
	switchStoreWait = time.Second
	// storeProbe is how often the API checks that the store has a quorum.
	storeProbe = time.Second
	// Headers of answers from the local copy.
	staleHeader    = "X-Livefuse-Stale"
	overrideHeader = "X-Livefuse-Local-Override"
)

// autonomy is the Server's view of the store's health and its pending
// local overrides.
type autonomy struct {
	unreachable atomic.Bool
	mu          sync.Mutex
	override    map[string]localOverride // by app/name
	running     bool
}

type localOverride struct {
	app, name, feed string
	at              time.Time
}

// probeStore keeps s.auto.unreachable current until done closes.
func (s *Server) probeStore(done <-chan struct{}) {
	t := time.NewTicker(storeProbe)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeProbe)
		err := s.reg.Ready(clientv3.WithRequireLeader(ctx))
		cancel()
		if was := s.auto.unreachable.Swap(err != nil); was != (err != nil) {
			if err != nil {
				s.log.Warn("lms: store has no quorum here: serving from the last known registry", "err", err)
			} else {
				s.log.Info("lms: store reachable again")
			}
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// storeReachable reports the last probe's result (true before the first).
func (s *Server) storeReachable() bool { return !s.auto.unreachable.Load() }

// markStale flags answers to reads made while the store is unreachable.
func (s *Server) markStale(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && !s.storeReachable() {
			w.Header().Set(staleHeader, "store unreachable: answered from this unit's last known registry")
		}
		next.ServeHTTP(w, r)
	})
}

// storeUnavailable tells a store outage from an answer of the registry.
func storeUnavailable(err error) bool {
	return err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotFound) &&
		!errors.Is(err, ErrExists) && !errors.Is(err, ErrConflict) && !errors.Is(err, context.Canceled)
}

// switchLocally applies feed to app/name on this unit alone and keeps it
// as a local override until the registry takes it. It reports false when
// this node cannot (no LocalSwitcher, or the stream is unknown here).
func (s *Server) switchLocally(w http.ResponseWriter, r *http.Request, app, name, feed string) bool {
	ls, ok := s.live.(LocalSwitcher)
	if !ok {
		return false
	}
	st, ok := s.reg.Get(app, name)
	if !ok {
		return false
	}
	if err := ls.SetLocalFeed(app, name, feed); err != nil {
		s.log.Error("lms api: local switch failed", "stream", app+"/"+name, "err", err)
		return false
	}
	s.auto.mu.Lock()
	if s.auto.override == nil {
		s.auto.override = map[string]localOverride{}
	}
	s.auto.override[app+"/"+name] = localOverride{app: app, name: name, feed: feed, at: time.Now()}
	start := !s.auto.running
	s.auto.running = true
	s.auto.mu.Unlock()
	if start {
		go s.reconcile()
	}
	s.audit(r, "switch", app+"/"+name, "feed", feed, "local_override", true)
	s.log.Warn("lms: switch applied on this unit only (store has no quorum); written to the registry when it returns",
		"stream", app+"/"+name, "feed", feed)
	st.FeedPolicy = feed
	w.Header().Set(overrideHeader, "applied on this unit; written to the registry when the store has a quorum again")
	writeJSON(w, http.StatusAccepted, s.info(st, nil))
	return true
}

// reconcile writes pending local overrides to the registry once the store
// takes writes again; an override of a stream deleted meanwhile is dropped.
func (s *Server) reconcile() {
	t := time.NewTicker(storeProbe)
	defer t.Stop()
	for range t.C {
		if s.closing.Load() {
			return
		}
		s.auto.mu.Lock()
		pending := make([]localOverride, 0, len(s.auto.override))
		for _, o := range s.auto.override {
			pending = append(pending, o)
		}
		s.auto.mu.Unlock()
		for _, o := range pending {
			ctx, cancel := context.WithTimeout(context.Background(), switchStoreWait)
			_, err := s.reg.Update(clientv3.WithRequireLeader(ctx), o.app, o.name, func(st *Stream) error {
				st.FeedPolicy = o.feed
				return nil
			})
			cancel()
			if storeUnavailable(err) {
				continue
			}
			s.auto.mu.Lock()
			if cur, ok := s.auto.override[o.app+"/"+o.name]; ok && cur.at.Equal(o.at) {
				delete(s.auto.override, o.app+"/"+o.name)
			}
			s.auto.mu.Unlock()
			if err != nil {
				s.log.Warn("lms: local override dropped", "stream", o.app+"/"+o.name, "err", err)
			} else {
				s.log.Info("lms: local override written to the registry", "stream", o.app+"/"+o.name, "feed", o.feed,
					"after", time.Since(o.at).Round(time.Millisecond))
			}
		}
		s.auto.mu.Lock()
		if len(s.auto.override) == 0 {
			s.auto.running = false
			s.auto.mu.Unlock()
			return
		}
		s.auto.mu.Unlock()
	}
}
