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

// seen collects the sequence numbers delivered per topic.
type seen struct {
	mu   sync.Mutex
	got  map[string]map[int]int // topic → seq → deliveries
	bad  int
	cond chan struct{}
}

func newSeen() *seen { return &seen{got: map[string]map[int]int{}, cond: make(chan struct{}, 1)} }

func (s *seen) handler(ctx context.Context, m Message) error {
	var seq int
	switch m.Topic {
	case TopicQoSBeacons:
		var b Beacon
		if err := Decode(m, &b); err != nil {
			s.mu.Lock()
			s.bad++
			s.mu.Unlock()
			return err
		}
		fmt.Sscanf(b.Session, "s%d", &seq)
	case TopicCDNLogs:
		var l CDNLog
		if err := Decode(m, &l); err != nil {
			return err
		}
		seq = int(l.Bytes)
	}
	s.mu.Lock()
	if s.got[m.Topic] == nil {
		s.got[m.Topic] = map[int]int{}
	}
	s.got[m.Topic][seq]++
	s.mu.Unlock()
	select {
	case s.cond <- struct{}{}:
	default:
	}
	return nil
}

// missing returns how many of seq 0..n-1 have not arrived on topic, and
// how many arrived more than once.
func (s *seen) missing(topic string, n int) (missing, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		switch c := s.got[topic][i]; {
		case c == 0:
			missing++
		case c > 1:
			dups += c - 1
		}
	}
	return missing, dups
}

// wait waits until nothing of 0..n-1 is missing on both topics, or the
// timeout.
func (s *seen) wait(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		mb, _ := s.missing(TopicQoSBeacons, n)
		ml, _ := s.missing(TopicCDNLogs, n)
		if mb == 0 && ml == 0 {
			return
		}
		select {
		case <-s.cond:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("after %v: %d beacons and %d log lines of %d missing", timeout, mb, ml, n)
		}
	}
}

func publishSeq(t *testing.T, p Publisher, i int) {
	t.Helper()
	at := time.Unix(1_700_000_000, 0).Add(time.Duration(i) * time.Millisecond)
	if err := Emit(p, Beacon{Session: fmt.Sprintf("s%d", i), Stream: "live/x", Vendor: "a", Event: BeaconHeartbeat, Time: at}); err != nil {
		t.Fatalf("publish beacon %d: %v", i, err)
	}
	if err := Emit(p, CDNLog{Vendor: "a", Time: at, Bytes: int64(i), Status: 200}); err != nil {
		t.Fatalf("publish log %d: %v", i, err)
	}
}

// A real Kafka-protocol broker in its own process: events flow through
// kafka-go; the broker stops for 20 s while producers keep publishing
// (into the spill), then restarts from its data directory; every event
// arrives.
func TestKafkaBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s broker outage")
	}
	port := freePort(t)
	b := startBroker(t, port, t.TempDir())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	k, err := NewKafka(KafkaConfig{Brokers: []string{b.addr}, SpillDir: t.TempDir(), RetryMax: time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { k.Run(ctx) })
	s := newSeen()
	for _, topic := range []string{TopicQoSBeacons, TopicCDNLogs} {
		wg.Go(func() {
			if err := k.Subscribe(ctx, topic, "test", s.handler); err != nil {
				t.Errorf("subscribe %s: %v", topic, err)
			}
		})
	}

	const phase = 300
	for i := range phase {
		publishSeq(t, k, i)
	}
	s.wait(t, phase, 30*time.Second)
	t.Logf("phase 1: %d+%d events delivered, stats %+v", phase, phase, k.Stats())

	b.stop()
	outage := time.Now()
	// Publish through the outage: 20 s, 15 events of each kind a second.
	for i := phase; i < 2*phase; i++ {
		publishSeq(t, k, i)
		time.Sleep(20 * time.Second / phase)
	}
	st := k.Stats()
	if st.Spilled == 0 || !k.Down() {
		t.Fatalf("nothing spilled during the outage: %+v", st)
	}
	t.Logf("after %v of outage: %+v", time.Since(outage).Round(time.Second), st)
	b.start()

	s.wait(t, 2*phase, 60*time.Second)
	_, db := s.missing(TopicQoSBeacons, 2*phase)
	_, dl := s.missing(TopicCDNLogs, 2*phase)
	st = k.Stats()
	t.Logf("all %d events delivered; duplicates %d beacons, %d log lines; stats %+v", 4*phase, db, dl, st)
	if st.Dropped != 0 || st.Pending != 0 {
		t.Fatalf("dropped or left in the spill: %+v", st)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
