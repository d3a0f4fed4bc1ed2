package cdnmix

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// stageOneBeacons are beacon records as /qos publishes them (one beacon a
// message, stamped with the server's time), over 10 vendors × 170 buckets
// and 100,000 sessions.
func stageOneBeacons(now time.Time) []bus.Record {
	var out []bus.Record
	for i := range 8192 {
		v := fmt.Appendf(nil, `{"session":"s%d","stream":"live/demo","vendor":"v%d","event":"heartbeat","time":%q,"buffer_empty_ms":%d,"region":"P%d","isp":"isp%d"}`,
			(i*12289)%100_000, i%10, now.Format(time.RFC3339Nano), i%3*1000, i%34, i%5)
		out = append(out, bus.Record{Message: bus.Message{Topic: bus.TopicQoSBeacons, Value: v, Time: now}})
	}
	return out
}

func benchStageOne(b *testing.B) *StageOne {
	now := func() time.Time { return testNow }
	s, err := NewStageOne(StageOneConfig{
		NewAggregator: func() (*Aggregator, error) {
			return NewAggregator(AggregatorConfig{Now: now, Logger: quietLog})
		},
		Publisher: &capturePub{}, Topic: "p", Owner: "bench", Now: now, Log: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkStageOne measures beacons through a stage-one partition owner
// (offset check, checkpoint marks, JSON decode, aggregation): "partition"
// is one partition on one goroutine, the beacons/s one core takes;
// "partitions-parallel" gives each goroutine its own partition (the
// sharding: no lock shared), against "one-aggregator-parallel", every
// goroutine on one aggregator (one mutex), as before the stages. "tick"
// is one partial of a partition holding 100,000 sessions.
func BenchmarkStageOne(b *testing.B) {
	recs := stageOneBeacons(testNow)
	b.Run("partition", func(b *testing.B) {
		o := benchStageOne(b).Open(bus.TopicQoSBeacons, 0)
		b.ReportAllocs()
		var off int64
		for b.Loop() {
			r := recs[off%int64(len(recs))]
			r.Offset = off
			o.Handle(r)
			off++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "beacons/s")
	})
	b.Run("partitions-parallel", func(b *testing.B) {
		s := benchStageOne(b)
		var part atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			o := s.Open(bus.TopicQoSBeacons, int(part.Add(1)))
			var off int64
			for pb.Next() {
				r := recs[off%int64(len(recs))]
				r.Offset = off
				o.Handle(r)
				off++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "beacons/s")
	})
	b.Run("one-aggregator-parallel", func(b *testing.B) {
		a, err := NewAggregator(AggregatorConfig{Now: func() time.Time { return testNow }, Logger: quietLog})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		var seq atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Add(1) * 7919
			for pb.Next() {
				a.HandleBeacon(ctx, recs[i%int64(len(recs))].Message)
				i++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "beacons/s")
	})
	b.Run("tick-100k-sessions", func(b *testing.B) {
		s := benchStageOne(b)
		o := s.Open(bus.TopicQoSBeacons, 0).(*partOwner)
		for i := range 100_000 {
			o.agg.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: fmt.Sprintf("v%d", i%10),
				Region: fmt.Sprintf("P%d", i%34), ISP: fmt.Sprintf("isp%d", i%5), Event: bus.BeaconHeartbeat, Time: testNow})
		}
		o.caughtUp = true
		b.ReportAllocs()
		for b.Loop() {
			s.Publish()
		}
	})
}
