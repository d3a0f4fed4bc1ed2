package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// KafkaConfig configures a Kafka bus. Zero fields take the defaults in
// brackets. It decodes from YAML.
type KafkaConfig struct {
	// Brokers are host:port bootstrap addresses (required).
	Brokers []string `yaml:"brokers" json:"brokers"`
	// SpillDir holds events while the broker is away; empty keeps them in
	// memory only, and drops them when the queue is full.
	SpillDir string `yaml:"spill_dir" json:"spill_dir"`
	// SpillMaxBytes bounds the spill [1 GiB].
	SpillMaxBytes int64 `yaml:"spill_max_bytes" json:"spill_max_bytes"`
	// QueueSize is the memory queue, in events [10000]; past it Publish
	// spills directly.
	QueueSize int `yaml:"queue_size" json:"queue_size"`
	// BatchSize [500] and BatchTimeout [10ms] shape broker writes.
	BatchSize    int           `yaml:"batch_size" json:"batch_size"`
	BatchTimeout time.Duration `yaml:"batch_timeout" json:"batch_timeout"`
	// WriteTimeout bounds one broker write [10s].
	WriteTimeout time.Duration `yaml:"write_timeout" json:"write_timeout"`
	// RetryMin [250ms] and RetryMax [5s] bound the backoff while the
	// broker is away.
	RetryMin time.Duration `yaml:"retry_min" json:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max" json:"retry_max"`
	// StartOffset of a new consumer group: "first" [default] or "last".
	StartOffset string `yaml:"start_offset" json:"start_offset"`
	// Partitions [3] and ReplicationFactor [-1: the broker's default] of
	// topics that Subscribe creates when they do not exist yet.
	Partitions        int `yaml:"partitions" json:"partitions"`
	ReplicationFactor int `yaml:"replication_factor" json:"replication_factor"`

	Logger *slog.Logger `yaml:"-" json:"-"`
}

// Kafka is the bus over Kafka. Run sends; Publish only queues.
//
// The sender takes events from the memory queue in batches and writes them
// with RequiredAcks all. When a write fails, the batch goes to the spill,
// and until a retry succeeds every event goes there too; once the broker
// answers, the spill is sent oldest first, then the memory queue again.
// On shutdown whatever is left in memory is spilled, and a later Kafka
// with the same SpillDir sends it.
type Kafka struct {
	cfg   KafkaConfig
	log   *slog.Logger
	w     *kafka.Writer
	queue chan Message
	spill *spill // nil without SpillDir

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	done   chan struct{} // closed when Run has stopped

	published, sent, spilled, unspilled, dropped, failures, handlerErrors atomic.Int64
	down                                                                  atomic.Bool
}

// NewKafka checks cfg, opens the spill and returns the bus. Call Run to
// send.
func NewKafka(cfg KafkaConfig) (*Kafka, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("bus: kafka brokers are required")
	}
	if cfg.QueueSize < 0 || cfg.BatchSize < 0 || cfg.SpillMaxBytes < 0 || cfg.WriteTimeout < 0 ||
		cfg.BatchTimeout < 0 || cfg.RetryMin < 0 || cfg.RetryMax < 0 {
		return nil, errors.New("bus: kafka sizes and durations must not be negative")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 10000
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = -1
	}
	if cfg.SpillMaxBytes == 0 {
		cfg.SpillMaxBytes = 1 << 30
	}
	def(&cfg.BatchTimeout, 10*time.Millisecond)
	def(&cfg.WriteTimeout, 10*time.Second)
	def(&cfg.RetryMin, 250*time.Millisecond)
	def(&cfg.RetryMax, 5*time.Second)
	switch cfg.StartOffset {
	case "", "first", "last":
	default:
		return nil, fmt.Errorf("bus: start_offset %q: want first or last", cfg.StartOffset)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &Kafka{
		cfg:   cfg,
		log:   cfg.Logger.With("unit", "bus"),
		queue: make(chan Message, cfg.QueueSize),
		done:  make(chan struct{}),
		w: &kafka.Writer{
			Addr:                   kafka.TCP(cfg.Brokers...),
			Balancer:               &kafka.Hash{},
			RequiredAcks:           kafka.RequireAll,
			AllowAutoTopicCreation: true,
			BatchSize:              cfg.BatchSize,
			BatchTimeout:           time.Millisecond, // we batch ourselves
			WriteTimeout:           cfg.WriteTimeout,
			ReadTimeout:            cfg.WriteTimeout,
			MaxAttempts:            2,
			WriteBackoffMin:        50 * time.Millisecond,
			WriteBackoffMax:        200 * time.Millisecond,
		},
	}
	if cfg.SpillDir != "" {
		s, err := openSpill(cfg.SpillDir, cfg.SpillMaxBytes)
		if err != nil {
			return nil, fmt.Errorf("bus: %w", err)
		}
		k.spill = s
		if n := s.pending(); n > 0 {
			k.log.Info("spill has events from before", "events", n, "dir", cfg.SpillDir)
		}
	}
	return k, nil
}

// Publish implements Publisher: it queues the event in memory, or spills
// it when the queue is full, and never waits for the broker.
func (k *Kafka) Publish(topic string, key, value []byte) error {
	m := Message{Topic: topic, Key: append([]byte(nil), key...), Value: append([]byte(nil), value...), Time: time.Now()}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		k.dropped.Add(1)
		return ErrClosed
	}
	select {
	case k.queue <- m:
		k.published.Add(1)
		return nil
	default:
	}
	if k.spill != nil {
		if err := k.spill.append(m); err == nil {
			k.published.Add(1)
			k.spilled.Add(1)
			return nil
		}
	}
	k.dropped.Add(1)
	return ErrFull
}

// Run sends queued and spilled events until ctx ends, then spills what is
// left in memory and returns. Publish after Run returns fails.
func (k *Kafka) Run(ctx context.Context) error {
	defer close(k.done)
	defer k.shutdown()
	backoff := k.cfg.RetryMin
	var retry <-chan time.Time
	fail := func(err error, n int) {
		k.failures.Add(1)
		if !k.down.Swap(true) {
			k.log.Warn("broker write failed; spilling until it answers", "events", n, "err", err)
		}
		retry = time.After(backoff)
		backoff = min(2*backoff, k.cfg.RetryMax)
	}
	ok := func() {
		if k.down.Swap(false) {
			k.log.Info("broker answers again", "spilled", k.spilledPending())
		}
		backoff = k.cfg.RetryMin
		retry = nil
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if k.down.Load() {
			// Broker away: move the memory queue to the spill until the
			// retry is due.
			select {
			case <-ctx.Done():
				return nil
			case m := <-k.queue:
				k.toSpill([]Message{m})
				continue
			case <-retry:
			}
			// Probe with the oldest events.
			if err := k.sendSpill(ctx); err != nil {
				fail(err, 0)
				continue
			}
			if k.spill == nil || k.spill.pending() == 0 {
				// Probe the broker with the memory queue.
				batch := k.collect(ctx, false)
				if len(batch) == 0 {
					ok() // nothing to send; assume the broker is back
					continue
				}
				if err := k.write(ctx, batch); err != nil {
					fail(err, len(batch))
					continue
				}
			}
			ok()
			continue
		}
		if k.spill != nil && k.spill.pending() > 0 {
			if err := k.sendSpill(ctx); err != nil {
				fail(err, 0)
			}
			continue
		}
		batch := k.collect(ctx, true)
		if len(batch) == 0 {
			continue
		}
		if err := k.write(ctx, batch); err != nil {
			fail(err, len(batch))
		}
	}
}

func (k *Kafka) spilledPending() int64 {
	if k.spill == nil {
		return 0
	}
	return k.spill.pending()
}

// collect takes up to BatchSize events from the queue: it waits for the
// first (when wait is set) and then up to BatchTimeout for more.
func (k *Kafka) collect(ctx context.Context, wait bool) []Message {
	var batch []Message
	if wait {
		select {
		case <-ctx.Done():
			return nil
		case m := <-k.queue:
			batch = append(batch, m)
		}
	}
	t := time.NewTimer(k.cfg.BatchTimeout)
	defer t.Stop()
	for len(batch) < k.cfg.BatchSize {
		select {
		case m := <-k.queue:
			batch = append(batch, m)
			continue
		default:
		}
		if !wait && len(batch) == 0 {
			return nil
		}
		select {
		case m := <-k.queue:
			batch = append(batch, m)
		case <-t.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// write sends a batch from memory; failed events go to the spill (or are
// dropped without one) and the error is returned.
func (k *Kafka) write(ctx context.Context, batch []Message) error {
	err := k.writeMessages(ctx, batch)
	if err == nil {
		k.sent.Add(int64(len(batch)))
		return nil
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) && len(werrs) == len(batch) {
		var failed []Message
		for i, e := range werrs {
			if e != nil {
				failed = append(failed, batch[i])
			}
		}
		k.sent.Add(int64(len(batch) - len(failed)))
		batch = failed
	}
	k.toSpill(batch)
	return err
}

// sendSpill sends one batch from the spill.
func (k *Kafka) sendSpill(ctx context.Context) error {
	if k.spill == nil {
		return nil
	}
	if err := k.spill.flush(); err != nil {
		return err
	}
	batch, err := k.spill.peek(k.cfg.BatchSize)
	if err != nil || len(batch) == 0 {
		return err
	}
	if err := k.writeMessages(ctx, batch); err != nil {
		k.spill.rewind() // all again, later: at-least-once
		return err
	}
	if err := k.spill.commit(len(batch)); err != nil {
		k.log.Error("spill commit", "err", err)
	}
	k.sent.Add(int64(len(batch)))
	k.unspilled.Add(int64(len(batch)))
	return nil
}

func (k *Kafka) writeMessages(ctx context.Context, batch []Message) error {
	msgs := make([]kafka.Message, len(batch))
	for i, m := range batch {
		msgs[i] = kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Time: m.Time}
	}
	// Shutdown cancels a write in flight: its events stay in (or go to) the
	// spill and are sent by the next run, perhaps twice, never lost.
	wctx, cancel := context.WithTimeout(ctx, k.cfg.WriteTimeout)
	defer cancel()
	if err := k.w.WriteMessages(wctx, msgs...); err != nil {
		return fmt.Errorf("bus: kafka write %d events: %w", len(batch), err)
	}
	return nil
}

func (k *Kafka) toSpill(batch []Message) {
	for _, m := range batch {
		if k.spill == nil || k.spill.append(m) != nil {
			k.dropped.Add(1)
			continue
		}
		k.spilled.Add(1)
	}
}

// shutdown refuses new events and spills the memory queue.
func (k *Kafka) shutdown() {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	for {
		select {
		case m := <-k.queue:
			k.toSpill([]Message{m})
			continue
		default:
		}
		break
	}
	if k.spill != nil {
		if err := k.spill.close(); err != nil {
			k.log.Error("spill close", "err", err)
		}
	}
	if err := k.w.Close(); err != nil {
		k.log.Debug("kafka writer close", "err", err)
	}
}

// Wait blocks until Run has returned.
func (k *Kafka) Wait() { <-k.done }

// Subscribe implements Subscriber with a kafka-go consumer group reader;
// each message is committed after h returns.
func (k *Kafka) Subscribe(ctx context.Context, topic, group string, h Handler) error {
	if group == "" {
		return errors.New("bus: kafka subscribe needs a group")
	}
	k.ensureTopic(ctx, topic)
	start := kafka.FirstOffset
	if k.cfg.StartOffset == "last" {
		start = kafka.LastOffset
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: k.cfg.Brokers, GroupID: group, Topic: topic,
		MaxWait: 250 * time.Millisecond, HeartbeatInterval: time.Second,
		SessionTimeout: 10 * time.Second, RebalanceTimeout: 5 * time.Second,
		JoinGroupBackoff: time.Second, ReadBackoffMin: 100 * time.Millisecond, ReadBackoffMax: time.Second,
		StartOffset: start,
	})
	defer r.Close()
	log := k.log.With("topic", topic, "group", group)
	backoff := k.cfg.RetryMin
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("kafka fetch", "err", err)
			if !k.retryWait(ctx, &backoff) {
				return nil
			}
			continue
		}
		backoff = k.cfg.RetryMin
		if err := h(ctx, Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Time: m.Time}); err != nil {
			k.handlerErrors.Add(1)
			log.Debug("handler", "err", err)
		}
		// Commit until it succeeds or ctx ends: an uncommitted message
		// comes again after a rebalance, which is a duplicate, not a loss.
		for ctx.Err() == nil {
			if err := r.CommitMessages(ctx, m); err == nil {
				break
			} else if ctx.Err() == nil {
				log.Warn("kafka commit", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, k.cfg.RetryMax)
			}
		}
	}
}

// ensureTopic creates topic if the broker does not have it; failures are
// only logged, since the reader retries on its own.
func (k *Kafka) ensureTopic(ctx context.Context, topic string, configs ...kafka.ConfigEntry) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(k.cfg.Brokers...), Timeout: 5 * time.Second}
	res, err := c.CreateTopics(cctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: k.cfg.Partitions, ReplicationFactor: k.cfg.ReplicationFactor, ConfigEntries: configs}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		k.log.Debug("create topic", "topic", topic, "err", err)
	}
}

// Stats implements Bus.
func (k *Kafka) Stats() Stats {
	return Stats{
		Published: k.published.Load(), Sent: k.sent.Load(), Spilled: k.spilled.Load(),
		Unspilled: k.unspilled.Load(), Dropped: k.dropped.Load(), Failures: k.failures.Load(),
		Queued: int64(len(k.queue)), Pending: k.spilledPending(), Corrupt: k.corrupt(),
		HandlerErrors: k.handlerErrors.Load(),
	}
}

func (k *Kafka) corrupt() int64 {
	if k.spill == nil {
		return 0
	}
	k.spill.mu.Lock()
	defer k.spill.mu.Unlock()
	return k.spill.corrupt
}

// Down reports whether the last broker write failed.
func (k *Kafka) Down() bool { return k.down.Load() }

// retryWait waits *backoff (false when ctx ends first), then doubles it up
// to RetryMax.
func (k *Kafka) retryWait(ctx context.Context, backoff *time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, k.cfg.RetryMax)
	return true
}
