package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func msg(i int) Message {
	return Message{Topic: TopicCDNLogs, Key: []byte("k"), Value: []byte(fmt.Sprintf(`{"n":%d}`, i)), Time: time.Unix(0, int64(i))}
}

// drain reads everything from the spill, committing batches of n.
func drain(t *testing.T, s peeker, n int) []Message {
	t.Helper()
	var out []Message
	for range 100_000 {
		b, err := s.peek(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			return out
		}
		out = append(out, b...)
		if err := s.commit(len(b)); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("spill never empties")
	return nil
}

func TestSpillOrderAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpill(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.segBytes = 256 // many segments
	for i := range 100 {
		if err := s.append(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.pending(); got != 100 {
		t.Fatalf("pending %d", got)
	}
	// Read 30, a failed batch (rewind), then stop as if the process died.
	got := drain(t, &spillLimit{s, 30}, 7)
	b, _ := s.peek(5)
	s.rewind()
	if len(b) != 5 || !bytes.Equal(b[0].Value, msg(len(got)).Value) {
		t.Fatalf("peek after %d: %v", len(got), b)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	s2, err := openSpill(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if p := s2.pending(); p != int64(100-len(got)) {
		t.Fatalf("reopened pending %d, want %d", p, 100-len(got))
	}
	for i := 100; i < 120; i++ { // appends after a restart go after the old ones
		if err := s2.append(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	rest := drain(t, s2, 9)
	all := append(got, rest...)
	if len(all) != 120 {
		t.Fatalf("%d records, want 120", len(all))
	}
	for i, m := range all {
		if want := msg(i); !bytes.Equal(m.Value, want.Value) || m.Topic != want.Topic || string(m.Key) != "k" || !m.Time.Equal(want.Time) {
			t.Fatalf("record %d: %+v", i, m)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*"+spillExt)); len(left) > 1 {
		t.Fatalf("segments left: %v", left)
	}
}

// spillLimit stops drain after n records, to simulate a crash mid-way.
type spillLimit struct {
	*spill
	n int
}

func (l *spillLimit) peek(n int) ([]Message, error) {
	n = min(n, l.n)
	if n == 0 {
		return nil, nil
	}
	b, err := l.spill.peek(n)
	l.n -= len(b)
	return b, err
}

type peeker interface {
	peek(int) ([]Message, error)
	commit(int) error
}

func TestSpillTornTailAndFull(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpill(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		s.append(msg(i))
	}
	s.close()
	// Tear the last record, as a crash during a write would.
	seg, _ := filepath.Glob(filepath.Join(dir, "*"+spillExt))
	st, _ := os.Stat(seg[0])
	os.Truncate(seg[0], st.Size()-3)
	s, err = openSpill(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s, 4); len(got) != 9 {
		t.Fatalf("after a torn tail: %d records, want 9", len(got))
	}
	if s.corrupt != 1 || s.pending() != 0 {
		t.Fatalf("corrupt %d pending %d", s.corrupt, s.pending())
	}

	small, err := openSpill(t.TempDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var full int
	for i := range 10 {
		if err := small.append(msg(i)); errors.Is(err, ErrFull) {
			full++
		}
	}
	if full == 0 || small.pending() == 0 {
		t.Fatalf("full %d pending %d", full, small.pending())
	}
}

// Without a broker at all, Publish never blocks: the queue fills, then the
// spill; past both, events are dropped and counted. A Kafka opened later
// on the same spill finds the events.
func TestKafkaPublishWithoutBroker(t *testing.T) {
	dir := t.TempDir()
	k, err := NewKafka(KafkaConfig{Brokers: []string{"127.0.0.1:1"}, SpillDir: dir, QueueSize: 10, SpillMaxBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	var errs int
	for i := range 200 {
		if err := Emit(k, CDNLog{Vendor: "a", Bytes: int64(i)}); err != nil {
			errs++
		}
	}
	st := k.Stats()
	if st.Queued != 10 || st.Spilled == 0 || st.Dropped == 0 || int64(errs) != st.Dropped || st.Published+st.Dropped != 200 {
		t.Fatalf("stats %+v, %d errors", st, errs)
	}
	// Run with a cancelled context: spill the queue and stop.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k.Run(ctx)
	if err := k.Publish(TopicAudit, nil, []byte("{}")); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after run: %v", err)
	}
	k2, err := NewKafka(KafkaConfig{Brokers: []string{"127.0.0.1:1"}, SpillDir: dir, SpillMaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	after := k.Stats()
	if after.Spilled+after.Dropped != 201 || after.Queued != 0 { // 200 and the one after Run
		t.Fatalf("after run: %+v", after)
	}
	if got := k2.Stats().Pending; got != after.Spilled {
		t.Fatalf("reopened spill has %d, want %d", got, after.Spilled)
	}
}

func TestMemoryBus(t *testing.T) {
	m := NewMemory(MemoryConfig{QueueSize: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	got := map[string][]int{}
	var wg sync.WaitGroup
	sub := func(group string) {
		wg.Go(func() {
			m.Subscribe(ctx, TopicCDNLogs, group, func(_ context.Context, msg Message) error {
				var l CDNLog
				if err := Decode(msg, &l); err != nil {
					return err
				}
				mu.Lock()
				got[group] = append(got[group], int(l.Bytes))
				mu.Unlock()
				return nil
			})
		})
	}
	sub("agg")
	sub("agg") // competing consumers: together they see each event once
	sub("mon")
	// Wait for the groups to exist before publishing.
	for range 100 {
		m.mu.Lock()
		n := len(m.groups[TopicCDNLogs])
		m.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	const n = 500
	for i := range n {
		if err := Emit(m, CDNLog{Vendor: "a", Bytes: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	m.Publish(TopicCDNLogs, nil, []byte("not json"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		a, b := len(got["agg"]), len(got["mon"])
		mu.Unlock()
		if a == n && b == n && m.Stats().HandlerErrors == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agg %d mon %d of %d, stats %+v", a, b, n, m.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	for i, v := range got["mon"] {
		if v != i {
			t.Fatalf("mon out of order at %d: %d", i, v)
		}
	}
	mu.Unlock()
	m.Close()
	wg.Wait() // Close ends every Subscribe
	if err := m.Publish(TopicAudit, nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

func FuzzReadRecord(f *testing.F) {
	f.Add(encodeRecord(msg(1)))
	f.Add(encodeRecord(Message{Topic: "t"}))
	f.Add([]byte{0, 0, 0, 14, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, size, err := readRecord(bytes.NewReader(b))
		if err != nil {
			return
		}
		if size > int64(len(b)) {
			t.Fatalf("size %d > input %d", size, len(b))
		}
		// A record read back encodes to the same bytes.
		if enc := encodeRecord(m); !bytes.Equal(enc, b[:size]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// TestMemoryBusEarlyEvents: what is published before a topic's first
// group subscribes (a node starting up) reaches that group, in order.
func TestMemoryBusEarlyEvents(t *testing.T) {
	m := NewMemory(MemoryConfig{QueueSize: 100})
	defer m.Close()
	for i := range 150 { // more than the queue: the oldest 50 are dropped
		if err := Emit(m, CDNLog{Vendor: "a", Bytes: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []int
	go m.Subscribe(ctx, TopicCDNLogs, "agg", func(_ context.Context, msg Message) error {
		var l CDNLog
		if err := Decode(msg, &l); err != nil {
			return err
		}
		mu.Lock()
		got = append(got, int(l.Bytes))
		mu.Unlock()
		return nil
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d early events, want the last 100", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != 50+i {
			t.Fatalf("early event %d is %d, want %d", i, v, 50+i)
		}
	}
	if d := m.Stats().Dropped; d != 50 {
		t.Errorf("dropped %d, want 50", d)
	}
}
