package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Record is a message with its place in its partition's log.
type Record struct {
	Message
	Partition int
	Offset    int64
	// HighWater is the partition's end when the record was fetched: the
	// record is the newest one when Offset+1 == HighWater.
	HighWater int64
}

// PartitionOwner processes one partition while its group gives it to this
// member. Handle gets the records in offset order, from the group's
// committed offset; Checkpoint says where a later owner should start (the
// oldest record the owner's state still needs), and is committed as the
// group's offset every commit interval and when the partition is taken
// away. Close ends the ownership.
type PartitionOwner interface {
	Handle(r Record)
	Checkpoint() (offset int64, ok bool)
	Close()
}

// PartitionConsumer gives the partitions of topics to the members of a
// group, each partition to one member at a time.
type PartitionConsumer interface {
	// Own joins group on topics and, for each partition this member is
	// given, calls open and feeds the owner until the partition moves to
	// another member (rebalance) or ctx ends. It returns when ctx ends.
	Own(ctx context.Context, topics []string, group string, open func(topic string, partition int) PartitionOwner) error
}

// Tailer reads every partition of a topic without a group.
type Tailer interface {
	// Tail calls h for each record of topic published from about from on,
	// all partitions, until ctx ends. h is called from one goroutine per
	// partition.
	Tail(ctx context.Context, topic string, from time.Time, h func(Record)) error
}

// CommitInterval is how often Own commits its owners' checkpoints.
const CommitInterval = time.Second

// Own implements PartitionConsumer with a kafka-go consumer group: on each
// generation, one reader per assigned partition starts at the committed
// offset (the previous owner's last checkpoint) and the owner's
// checkpoints are committed every CommitInterval and when the generation
// ends.
func (k *Kafka) Own(ctx context.Context, topics []string, group string, open func(topic string, partition int) PartitionOwner) error {
	if group == "" {
		return errors.New("bus: kafka own needs a group")
	}
	for _, t := range topics {
		k.ensureTopic(ctx, t)
	}
	start := kafka.FirstOffset
	if k.cfg.StartOffset == "last" {
		start = kafka.LastOffset
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: k.cfg.Brokers, Topics: topics, StartOffset: start,
		HeartbeatInterval: time.Second, SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second,
		JoinGroupBackoff: time.Second, WatchPartitionChanges: true, PartitionWatchInterval: 5 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("bus: consumer group %s: %w", group, err)
	}
	defer cg.Close()
	log := k.log.With("group", group)
	backoff := k.cfg.RetryMin
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("kafka group join", "err", err)
			if !k.retryWait(ctx, &backoff) {
				return nil
			}
			continue
		}
		backoff = k.cfg.RetryMin
		k.runGeneration(ctx, gen, open)
	}
}

// runGeneration feeds the owners of one generation until it ends.
func (k *Kafka) runGeneration(ctx context.Context, gen *kafka.Generation, open func(string, int) PartitionOwner) {
	type owned struct {
		topic string
		part  int
		owner PartitionOwner
	}
	var mu sync.Mutex
	var owners []owned
	var n int
	for topic, parts := range gen.Assignments {
		for _, pa := range parts {
			n++
			o := owned{topic, pa.ID, open(topic, pa.ID)}
			mu.Lock()
			owners = append(owners, o)
			mu.Unlock()
			offset := pa.Offset
			gen.Start(func(gctx context.Context) {
				k.feed(gctx, ctx, o.topic, o.part, offset, o.owner)
			})
		}
	}
	k.log.Info("kafka partitions owned", "group", gen.GroupID, "generation", gen.ID, "partitions", n)
	commit := func() {
		offs := map[string]map[int]int64{}
		mu.Lock()
		for _, o := range owners {
			if off, ok := o.owner.Checkpoint(); ok {
				if offs[o.topic] == nil {
					offs[o.topic] = map[int]int64{}
				}
				offs[o.topic][o.part] = off
			}
		}
		mu.Unlock()
		if err := gen.CommitOffsets(offs); err != nil && ctx.Err() == nil {
			k.log.Debug("kafka commit", "group", gen.GroupID, "err", err)
		}
	}
	done := make(chan struct{})
	gen.Start(func(gctx context.Context) {
		defer close(done)
		t := time.NewTicker(CommitInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return
			case <-ctx.Done():
				return
			case <-t.C:
				commit()
			}
		}
	})
	<-done
	commit() // best effort: the generation may be over already
	mu.Lock()
	for _, o := range owners {
		o.owner.Close()
	}
	mu.Unlock()
}

// feed reads one partition from offset into owner until gctx (the
// generation) or ctx ends.
func (k *Kafka) feed(gctx, ctx context.Context, topic string, part int, offset int64, owner PartitionOwner) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-gctx.Done():
			cancel()
		case <-rctx.Done():
		}
	}()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.cfg.Brokers, Topic: topic, Partition: part,
		MaxWait: 100 * time.Millisecond, ReadBackoffMin: 100 * time.Millisecond, ReadBackoffMax: time.Second,
		MaxBytes: 4 << 20})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		k.log.Warn("kafka set offset", "topic", topic, "partition", part, "err", err)
		return
	}
	k.readInto(rctx, r, topic, owner.Handle)
}

// readInto reads r until ctx ends, retrying fetch errors.
func (k *Kafka) readInto(ctx context.Context, r *kafka.Reader, topic string, h func(Record)) {
	backoff := k.cfg.RetryMin
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			k.log.Warn("kafka fetch", "topic", topic, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, k.cfg.RetryMax)
			continue
		}
		backoff = k.cfg.RetryMin
		h(Record{Message: Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Time: m.Time},
			Partition: m.Partition, Offset: m.Offset, HighWater: m.HighWaterMark})
	}
}

// Tail implements Tailer: one reader per partition of topic, each
// starting at the first offset published at or after from. A topic it
// creates is compacted: its readers need only the newest record of each
// key.
func (k *Kafka) Tail(ctx context.Context, topic string, from time.Time, h func(Record)) error {
	k.ensureTopic(ctx, topic, kafka.ConfigEntry{ConfigName: "cleanup.policy", ConfigValue: "compact"})
	var parts []kafka.Partition
	backoff := k.cfg.RetryMin
	for {
		var err error
		parts, err = k.partitions(ctx, topic)
		if err == nil && len(parts) > 0 {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		k.log.Warn("kafka partitions", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, k.cfg.RetryMax)
	}
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.cfg.Brokers, Topic: topic, Partition: p.ID,
				MaxWait: 100 * time.Millisecond, ReadBackoffMin: 100 * time.Millisecond, ReadBackoffMax: time.Second})
			defer r.Close()
			for ctx.Err() == nil {
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := r.SetOffsetAt(sctx, from)
				cancel()
				if err == nil {
					break
				}
				k.log.Debug("kafka offset by time", "topic", topic, "partition", p.ID, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			k.readInto(ctx, r, topic, h)
		})
	}
	wg.Wait()
	return nil
}

func (k *Kafka) partitions(ctx context.Context, topic string) ([]kafka.Partition, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d kafka.Dialer
	var lastErr error
	for _, b := range k.cfg.Brokers {
		c, err := d.DialContext(cctx, "tcp", b)
		if err != nil {
			lastErr = err
			continue
		}
		ps, err := c.ReadPartitions(topic)
		c.Close()
		if err == nil {
			return ps, nil
		}
		lastErr = err
	}
	return nil, lastErr
}
