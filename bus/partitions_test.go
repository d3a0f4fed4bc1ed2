package bus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// testOwner records what one partition owner got; its checkpoint is the
// offset after the last record, unless hold is set (then nothing is
// committed, as an owner that dies before it commits).
type testOwner struct {
	mu      sync.Mutex
	member  string
	records []Record
	hold    bool
	closed  bool
}

func (o *testOwner) Handle(r Record) {
	o.mu.Lock()
	o.records = append(o.records, r)
	o.mu.Unlock()
}

func (o *testOwner) Checkpoint() (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.hold || len(o.records) == 0 {
		return 0, false
	}
	return o.records[len(o.records)-1].Offset + 1, true
}

func (o *testOwner) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

type ownLog struct {
	mu     sync.Mutex
	owners []*testOwner
}

func (l *ownLog) open(member string, hold bool) func(string, int) PartitionOwner {
	return func(topic string, p int) PartitionOwner {
		o := &testOwner{member: member, hold: hold}
		l.mu.Lock()
		l.owners = append(l.owners, o)
		l.mu.Unlock()
		return o
	}
}

// owning reports whether member has a partition open now.
func (l *ownLog) owning(member string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.owners {
		o.mu.Lock()
		open := o.member == member && !o.closed
		o.mu.Unlock()
		if open {
			return true
		}
	}
	return false
}

// offsets returns, per offset of the topic, how many owners of member (all
// members when "") got it.
func (l *ownLog) offsets(member string) map[[2]int64]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[[2]int64]int{}
	for _, o := range l.owners {
		if member != "" && o.member != member {
			continue
		}
		o.mu.Lock()
		for _, r := range o.records {
			out[[2]int64{int64(r.Partition), r.Offset}]++
		}
		o.mu.Unlock()
	}
	return out
}

// TestKafkaOwnPartitions: two members of a group split the partitions;
// when one leaves, the other owns them all and resumes each at the
// checkpoint committed for it; an owner that never committed has its
// partitions read again from the start. Tail reads every partition.
func TestKafkaOwnPartitions(t *testing.T) {
	b := startBroker(t, freePort(t), t.TempDir())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	k, err := NewKafka(KafkaConfig{Brokers: []string{b.addr}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { k.Run(ctx) })
	const topic = "own.test"
	send := func(from, n int) {
		for i := from; i < from+n; i++ {
			if err := k.Publish(topic, fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("%s: not within 30 s", what)
	}
	total := func(m map[[2]int64]int) (n int) {
		for _, c := range m {
			n += c
		}
		return n
	}
	var log ownLog
	ctxA, stopA := context.WithCancel(ctx)
	var members sync.WaitGroup
	members.Go(func() { k.Own(ctxA, []string{topic}, "g", log.open("a", false)) })
	members.Go(func() { k.Own(ctx, []string{topic}, "g", log.open("b", true)) })
	// The split needs both members in one generation: wait for it, else
	// the first to join reads everything before the rebalance (a busy
	// machine, -race).
	waitFor("both members own partitions", func() bool { return log.owning("a") && log.owning("b") })
	send(0, 300)
	waitFor("300 records owned", func() bool { return len(log.offsets("")) == 300 })
	a, bm := log.offsets("a"), log.offsets("b")
	if len(a) == 0 || len(bm) == 0 {
		t.Fatalf("partitions not split: a %d records, b %d", len(a), len(bm))
	}
	if n := total(log.offsets("")); n != 300 {
		t.Fatalf("%d deliveries of 300 records while both own", n)
	}
	time.Sleep(2 * CommitInterval) // a commits its checkpoints
	stopA()
	send(300, 300)
	waitFor("b owns all: every record read", func() bool { return len(log.offsets("")) == 600 })
	if n := len(log.offsets("a")) + len(log.offsets("b")); n != 600 {
		t.Fatalf("a and b read %d distinct records together, want 600 (a read none twice, b none of a's)", n)
	}
	// a's partitions resume at a's checkpoints: b gets none of a's
	// records again. b's own partitions were never committed.
	for off := range a {
		if log.offsets("b")[off] != 0 {
			t.Fatalf("record %v of a's committed partitions read again by b", off)
		}
	}
	// Tail sees every record of every partition from a time.
	var mu sync.Mutex
	tailed := map[[2]int64]bool{}
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	wg.Go(func() {
		k.Tail(tctx, topic, time.Now().Add(-time.Hour), func(r Record) {
			mu.Lock()
			tailed[[2]int64{int64(r.Partition), r.Offset}] = true
			mu.Unlock()
		})
	})
	waitFor("tail reads all 600", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(tailed) == 600
	})
	tcancel()
	cancel()
	members.Wait()
}
