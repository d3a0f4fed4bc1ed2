package bus

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryConfig configures a Memory bus. Zero fields take the defaults in
// brackets.
type MemoryConfig struct {
	// QueueSize bounds each group's backlog [65536]; when a group falls
	// that far behind, its oldest messages are dropped and counted.
	QueueSize int
	Logger    *slog.Logger
}

// Memory is the in-process bus. Each group of each topic has its own
// bounded backlog, so a slow consumer never blocks a producer. Messages
// published before a group's first Subscribe are not kept for it.
type Memory struct {
	cfg MemoryConfig
	log *slog.Logger

	mu     sync.Mutex
	groups map[string]map[string]*memGroup // topic → group
	// early holds what was published to a topic before its first group
	// subscribed (at most QueueSize, oldest dropped first); that group
	// starts with it, as a Kafka consumer would from the first offset, so
	// events sent while a node starts are not lost.
	early  map[string][]Message
	closed bool

	published, sent, dropped, handlerErrors atomic.Int64
}

type memGroup struct {
	mu     sync.Mutex
	q      []Message
	head   int // q[head:] is the backlog
	wake   chan struct{}
	closed chan struct{}
}

// NewMemory returns an in-process bus.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 65536
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Memory{cfg: cfg, log: cfg.Logger.With("unit", "bus"), groups: make(map[string]map[string]*memGroup),
		early: make(map[string][]Message)}
}

// Publish implements Publisher.
func (m *Memory) Publish(topic string, key, value []byte) error {
	msg := Message{Topic: topic, Key: slices.Clone(key), Value: slices.Clone(value), Time: time.Now()}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.dropped.Add(1)
		return ErrClosed
	}
	groups := m.groups[topic]
	m.published.Add(1)
	if len(groups) == 0 {
		q := m.early[topic]
		if len(q) >= m.cfg.QueueSize {
			q = q[1:]
			m.dropped.Add(1)
		}
		m.early[topic] = append(q, msg)
	}
	for _, g := range groups {
		g.mu.Lock()
		if len(g.q)-g.head >= m.cfg.QueueSize {
			g.head++
			m.dropped.Add(1)
		}
		if g.head > 0 && g.head >= len(g.q)/2 {
			g.q = append(g.q[:0], g.q[g.head:]...)
			g.head = 0
		}
		g.q = append(g.q, msg)
		g.mu.Unlock()
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	m.mu.Unlock()
	return nil
}

func (m *Memory) group(topic, group string) *memGroup {
	m.mu.Lock()
	defer m.mu.Unlock()
	gs := m.groups[topic]
	if gs == nil {
		gs = make(map[string]*memGroup)
		m.groups[topic] = gs
	}
	g := gs[group]
	if g == nil {
		g = &memGroup{wake: make(chan struct{}, 1), closed: make(chan struct{})}
		if m.closed {
			close(g.closed)
		}
		if len(gs) == 0 && len(m.early[topic]) > 0 {
			g.q = m.early[topic]
			delete(m.early, topic)
			g.wake <- struct{}{}
		}
		gs[group] = g
	}
	return g
}

func (g *memGroup) pop() (Message, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.head >= len(g.q) {
		return Message{}, false
	}
	msg := g.q[g.head]
	g.q[g.head] = Message{}
	g.head++
	if g.head < len(g.q) {
		select { // let a competing subscriber of the group in
		case g.wake <- struct{}{}:
		default:
		}
	}
	return msg, true
}

// Subscribe implements Subscriber. It returns when ctx ends or the bus is
// closed.
func (m *Memory) Subscribe(ctx context.Context, topic, group string, h Handler) error {
	g := m.group(topic, group)
	for {
		msg, ok := g.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-g.closed:
				return nil
			case <-g.wake:
				continue
			}
		}
		if err := h(ctx, msg); err != nil {
			m.handlerErrors.Add(1)
			m.log.Debug("handler", "topic", topic, "group", group, "err", err)
		}
		m.sent.Add(1)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// Close stops subscribers and refuses further events.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	for _, gs := range m.groups {
		for _, g := range gs {
			close(g.closed)
		}
	}
	return nil
}

// Stats implements Bus. Sent counts deliveries to handlers.
func (m *Memory) Stats() Stats {
	s := Stats{Published: m.published.Load(), Sent: m.sent.Load(), Dropped: m.dropped.Load(), HandlerErrors: m.handlerErrors.Load()}
	m.mu.Lock()
	for _, gs := range m.groups {
		for _, g := range gs {
			g.mu.Lock()
			s.Queued += int64(len(g.q) - g.head)
			g.mu.Unlock()
		}
	}
	m.mu.Unlock()
	return s
}
