package lms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/lms/api"
)

// The console's push channel: GET /api/v1/events (viewer and up) streams
// server-sent events, one event per topic ("streams", "cdn", "audience",
// "alerts", "plans", "audit"), each carrying the full JSON snapshot of that
// view. The sources are registered by the node wiring (lms imports no
// media or CDN package): a source is a topic and a function returning the
// view.
//
// One goroutine (Events.run) samples every source each tick (default
// 250 ms) while at least one client listens, serialises the snapshot and
// compares it with the last one sent: only topics whose bytes changed go
// out, so an idle war room costs one marshal per topic and tick and no
// traffic. A new client gets every topic at the next tick. Each client has
// a small queue of frames; a client whose queue is full (a slow reader) is
// dropped, never waited for, so neither the sampler nor other clients
// slow down. Concurrent streams are capped (max_clients; 503 beyond), and
// a comment line every heartbeat keeps proxies from closing an idle stream.
//
// The page reads the stream with fetch (not EventSource), so the bearer
// token travels in the Authorization header and never in a URL.

// ConsoleSource is one topic of the console's push channel. Snapshot is
// called from the sampler's goroutine only, once per tick while a client
// listens; it must be quick and must not block on the network for long
// (it delays every topic's tick, never media).
type ConsoleSource struct {
	Topic    string
	Snapshot func() any
}

// EventsConfig bounds the push channel (config section console).
type EventsConfig struct {
	// MaxClients caps concurrent event streams (503 beyond).
	MaxClients int `yaml:"max_clients"`
	// Tick is how often the sources are sampled.
	Tick time.Duration `yaml:"tick"`
	// Heartbeat is the period of the keep-alive comment on an idle stream.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// WriteTimeout drops a client that takes longer to take one write.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// DefaultEventsConfig returns the defaults: 32 clients, 250 ms tick, 15 s
// heartbeat, 10 s write timeout.
func DefaultEventsConfig() EventsConfig {
	return EventsConfig{MaxClients: 32, Tick: 250 * time.Millisecond, Heartbeat: 15 * time.Second,
		WriteTimeout: 10 * time.Second}
}

// Validate checks the bounds.
func (c EventsConfig) Validate() error {
	switch {
	case c.MaxClients < 1 || c.MaxClients > 10000:
		return fmt.Errorf("max_clients %d: want 1 to 10000", c.MaxClients)
	case c.Tick < 10*time.Millisecond || c.Tick > 10*time.Second:
		return fmt.Errorf("tick %s: want 10ms to 10s", c.Tick)
	case c.Heartbeat < time.Second || c.Heartbeat > 5*time.Minute:
		return fmt.Errorf("heartbeat %s: want 1s to 5m", c.Heartbeat)
	case c.WriteTimeout < time.Second || c.WriteTimeout > time.Minute:
		return fmt.Errorf("write_timeout %s: want 1s to 1m", c.WriteTimeout)
	}
	return nil
}

// eventQueue is how many frames a client may have waiting: a tick sends
// at most one frame per topic, so a client this far behind is slow.
const eventQueue = 32

// maxTopics bounds the sources (a console has a handful of views).
const maxTopics = 32

// Events is the push channel's hub: the sources, the sampler and the
// connected clients.
type Events struct {
	cfg     EventsConfig
	log     *slog.Logger
	sources []ConsoleSource
	clients atomic.Int64

	mu    sync.Mutex
	subs  map[*eventSub]struct{}
	last  map[string][]byte      // serialised snapshot last sent, by topic
	keyed map[string]*keyedState // the same for keyed topics

	wake      chan struct{} // a client joined: sample now
	done      chan struct{}
	closeOnce sync.Once
	ran       chan struct{}

	mClients prometheus.Gauge
	mDropped prometheus.Counter
	mEvents  prometheus.Counter
	mSample  prometheus.Histogram
}

// eventSub is one connected client.
type eventSub struct {
	topics map[string]bool // nil: every topic
	fresh  bool            // sent nothing yet: wants every topic
	ch     chan []byte
	gone   chan struct{} // closed when the hub dropped it (slow)
}

// NewEvents builds the hub over sources (topics must be unique names).
// reg, if not nil, gets its metrics. Run it with Run; serve it with
// ServeHTTP behind the control API's authentication.
func NewEvents(cfg EventsConfig, sources []ConsoleSource, log *slog.Logger, reg prometheus.Registerer) (*Events, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if len(sources) > maxTopics {
		return nil, fmt.Errorf("console: %d sources, at most %d", len(sources), maxTopics)
	}
	seen := map[string]bool{}
	for _, s := range sources {
		if err := api.ValidateName(s.Topic); err != nil || s.Snapshot == nil {
			return nil, fmt.Errorf("console: source %q: want a name and a snapshot function", s.Topic)
		}
		if seen[s.Topic] {
			return nil, fmt.Errorf("console: source %q registered twice", s.Topic)
		}
		seen[s.Topic] = true
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Events{cfg: cfg, log: log, sources: append([]ConsoleSource(nil), sources...),
		subs: map[*eventSub]struct{}{}, last: map[string][]byte{}, keyed: map[string]*keyedState{},
		wake: make(chan struct{}, 1), done: make(chan struct{}), ran: make(chan struct{}),
		mClients: prometheus.NewGauge(prometheus.GaugeOpts{Name: "livefuse_console_clients",
			Help: "Console event streams open."}),
		mDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "livefuse_console_dropped_total",
			Help: "Console event streams dropped because the client did not keep up."}),
		mEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "livefuse_console_events_total",
			Help: "Console events sent (one per changed topic and client)."}),
		mSample: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "livefuse_console_sample_seconds",
			Help:    "Time to sample, serialise and compare every console source once.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5}}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{e.mClients, e.mDropped, e.mEvents, e.mSample} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("console metrics: %w", err)
				}
			}
		}
	}
	return e, nil
}

// Topics returns the registered topics in order.
func (e *Events) Topics() []string {
	out := make([]string, len(e.sources))
	for i, s := range e.sources {
		out[i] = s.Topic
	}
	return out
}

// Run samples the sources until Close. Call it once.
func (e *Events) Run() {
	defer close(e.ran)
	t := time.NewTicker(e.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
		case <-e.wake:
		}
		e.tick()
	}
}

// Close ends Run and every open stream.
func (e *Events) Close() {
	e.closeOnce.Do(func() { close(e.done) })
}

// ConsoleKeyed is a snapshot made of keyed items (the streams view: one
// item per stream). For such a source the push channel sends a client its
// full view once, then only what changed: the items whose JSON changed,
// the keys gone, the key order when it changed, and the head (the view's
// other fields). With 200 streams a tick typically changes a few items,
// so the page parses and draws a few, not all.
//
// On the wire: {"full":true,"head":H,"set":{KEY:ITEM...},"order":[KEY...]}
// first (and after a reconnect), then {"head":H,"set":{...},"del":[...],
// "order":[...]} with set, del and order present only when not empty.
type ConsoleKeyed struct {
	Head  any
	Items []ConsoleItem // in display order; keys unique
}

// ConsoleItem is one item of a ConsoleKeyed view.
type ConsoleItem struct {
	Key   string
	Value any
}

// keyedFrame is a ConsoleKeyed event on the wire.
type keyedFrame struct {
	Full  bool                       `json:"full,omitempty"`
	Head  json.RawMessage            `json:"head"`
	Set   map[string]json.RawMessage `json:"set,omitempty"`
	Del   []string                   `json:"del,omitempty"`
	Order []string                   `json:"order,omitempty"`
}

// keyedState is what was last sent of a keyed topic.
type keyedState struct {
	head  []byte
	items map[string][]byte
	order []string
}

// sampled is one source's serialised snapshot: b for a plain view; for a
// keyed one, its head, items and order.
type sampled struct {
	b     []byte
	keyed bool
	head  []byte
	items map[string][]byte
	order []string
}

// tick samples every source once while somebody listens and hands the
// changed topics to the clients.
func (e *Events) tick() {
	e.mu.Lock()
	n := len(e.subs)
	if n == 0 {
		// Nobody listens: forget what was sent, so the next client's
		// first tick samples afresh.
		clear(e.last)
		clear(e.keyed)
		e.mu.Unlock()
		return
	}
	fresh := false
	for sub := range e.subs {
		fresh = fresh || sub.fresh
	}
	e.mu.Unlock()
	start := time.Now()
	type frame struct {
		topic       string
		full, delta []byte // full: for a fresh client; delta: for the others (nil: nothing changed)
	}
	frames := make([]frame, 0, len(e.sources))
	at := start.UnixMilli()
	for _, s := range e.sources {
		v, err := sample(s)
		if err != nil {
			e.log.Warn("console: source failed", "topic", s.Topic, "err", err)
			continue
		}
		f := frame{topic: s.Topic}
		if !v.keyed {
			if !bytes.Equal(e.last[s.Topic], v.b) {
				e.last[s.Topic] = v.b
				f.delta = sseFrame(at, s.Topic, v.b)
			}
			f.full = f.delta
			if f.full == nil && fresh {
				f.full = sseFrame(at, s.Topic, v.b)
			}
		} else {
			f.full, f.delta = e.keyedFrames(at, s.Topic, v, fresh)
		}
		frames = append(frames, f)
	}
	e.mSample.Observe(time.Since(start).Seconds())
	e.mu.Lock()
	defer e.mu.Unlock()
	for sub := range e.subs {
		for _, f := range frames {
			b := f.delta
			if sub.fresh {
				b = f.full
			}
			if b == nil || (sub.topics != nil && !sub.topics[f.topic]) {
				continue
			}
			select {
			case sub.ch <- b:
				e.mEvents.Inc()
			default:
				// The client did not take what earlier ticks sent: drop it
				// rather than wait or let its queue grow.
				delete(e.subs, sub)
				close(sub.gone)
				e.mDropped.Inc()
				goto next
			}
		}
		sub.fresh = false
	next:
	}
}

// keyedFrames compares a keyed view with what was last sent and returns
// the full event (when a client needs it) and the delta (nil when
// nothing changed). Called from Run's goroutine only.
func (e *Events) keyedFrames(at int64, topic string, v sampled, fresh bool) (full, delta []byte) {
	last := e.keyed[topic]
	if last == nil {
		last = &keyedState{items: map[string][]byte{}}
		e.keyed[topic] = last
	}
	d := keyedFrame{Head: v.head, Set: map[string]json.RawMessage{}}
	for k, b := range v.items {
		if !bytes.Equal(last.items[k], b) {
			d.Set[k] = b
		}
	}
	for k := range last.items {
		if _, ok := v.items[k]; !ok {
			d.Del = append(d.Del, k)
		}
	}
	sort.Strings(d.Del)
	if !slices.Equal(last.order, v.order) {
		d.Order = v.order
	}
	if !bytes.Equal(last.head, v.head) || len(d.Set) > 0 || len(d.Del) > 0 || d.Order != nil {
		if b, err := json.Marshal(d); err == nil {
			delta = sseFrame(at, topic, b)
		}
	}
	last.head, last.items, last.order = v.head, v.items, v.order
	if fresh {
		f := keyedFrame{Full: true, Head: v.head, Set: make(map[string]json.RawMessage, len(v.items)), Order: v.order}
		for k, b := range v.items {
			f.Set[k] = b
		}
		if f.Order == nil {
			f.Order = []string{}
		}
		if b, err := json.Marshal(f); err == nil {
			full = sseFrame(at, topic, b)
		}
	}
	return full, delta
}

// sample serialises one source's snapshot; a panicking source is
// reported as an error, not a crash of the node.
func sample(s ConsoleSource) (v sampled, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("snapshot panicked: %v", r)
		}
	}()
	snap := s.Snapshot()
	kv, ok := snap.(ConsoleKeyed)
	if !ok {
		v.b, err = json.Marshal(snap)
		return v, err
	}
	v.keyed = true
	if v.head, err = json.Marshal(kv.Head); err != nil {
		return v, err
	}
	v.items = make(map[string][]byte, len(kv.Items))
	v.order = make([]string, 0, len(kv.Items))
	for _, it := range kv.Items {
		if _, dup := v.items[it.Key]; dup {
			continue
		}
		b, err := json.Marshal(it.Value)
		if err != nil {
			return v, err
		}
		v.items[it.Key] = b
		v.order = append(v.order, it.Key)
	}
	return v, nil
}

// sseFrame is one server-sent event: the sampling time (Unix ms) as its
// id, the topic as its name, the JSON on one data line (json.Marshal
// never writes a raw newline). The id is outside the compared snapshot,
// so a page can tell how old what it shows is without every tick
// becoming a change.
func sseFrame(sampled int64, topic string, data []byte) []byte {
	b := make([]byte, 0, len(topic)+len(data)+40)
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, sampled, 10)
	b = append(b, "\nevent: "...)
	b = append(b, topic...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

func (e *Events) subscribe(topics map[string]bool) *eventSub {
	sub := &eventSub{topics: topics, fresh: true, ch: make(chan []byte, eventQueue), gone: make(chan struct{})}
	e.mu.Lock()
	e.subs[sub] = struct{}{}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return sub
}

func (e *Events) unsubscribe(sub *eventSub) {
	e.mu.Lock()
	if _, ok := e.subs[sub]; ok {
		delete(e.subs, sub)
		close(sub.gone)
	}
	e.mu.Unlock()
}

// ServeHTTP streams the events: GET /api/v1/events[?topics=a,b]. It
// answers 503 when max_clients streams are open, 400 for an unknown topic.
func (e *Events) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var topics map[string]bool
	if v := r.URL.Query().Get("topics"); v != "" {
		known := map[string]bool{}
		for _, s := range e.sources {
			known[s.Topic] = true
		}
		topics = map[string]bool{}
		for _, t := range strings.Split(v, ",") {
			if !known[t] || len(topics) >= maxTopics {
				WriteError(w, http.StatusBadRequest, "topics: unknown topic (known: "+strings.Join(e.Topics(), ", ")+")")
				return
			}
			topics[t] = true
		}
	}
	if e.clients.Add(1) > int64(e.cfg.MaxClients) {
		e.clients.Add(-1)
		w.Header().Set("Retry-After", "5")
		WriteError(w, http.StatusServiceUnavailable, "too many console event streams open (console.max_clients)")
		return
	}
	defer e.clients.Add(-1)
	e.mClients.Inc()
	defer e.mClients.Dec()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(e.cfg.WriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 2000\n: " + strconv.Itoa(len(e.sources)) + " topics\n\n")) {
		return
	}
	sub := e.subscribe(topics)
	defer e.unsubscribe(sub)
	hb := time.NewTicker(e.cfg.Heartbeat)
	defer hb.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-e.done:
			return
		case <-sub.gone:
			e.log.Info("console: event stream dropped, client too slow", "remote", r.RemoteAddr, "reason", "slow")
			return
		case <-hb.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case f := <-sub.ch:
			// Batch what else is queued into one write.
			buf = append(buf[:0], f...)
		more:
			for {
				select {
				case f := <-sub.ch:
					buf = append(buf, f...)
				default:
					break more
				}
			}
			if !write(buf) {
				return
			}
		}
	}
}

// Whoami is the answer of GET /api/v1/whoami: the caller's token holder
// and role, so that a page can show only what the role allows.
type Whoami = api.Whoami

// handleWhoami answers GET /api/v1/whoami.
func handleWhoami(w http.ResponseWriter, r *http.Request) {
	p, _ := r.Context().Value(principalKey{}).(principal)
	WriteJSON(w, http.StatusOK, api.Whoami{Name: p.name, Role: p.role})
}

// MountConsole serves the console on the control API listener: the event
// stream at GET /api/v1/events (behind the bearer token, viewer and up),
// GET /api/v1/whoami, and page (static files, no token: the page asks for
// one) at / and /console/. Call it before Start.
func (s *Server) MountConsole(ev *Events, page http.Handler) {
	s.Handle("GET /api/v1/events", ev)
	s.Handle("GET /api/v1/whoami", http.HandlerFunc(handleWhoami))
	inner := s.handler
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; page != nil && (p == "/" || p == "/console" || strings.HasPrefix(p, "/console/")) {
			page.ServeHTTP(w, r)
			return
		}
		inner.ServeHTTP(w, r)
	})
}
