package cdnmix

import (
	"context"
	"fmt"
	"testing"

	"github.com/livefuse/livefuse/bus"
)

// BenchmarkAggregator measures one beacon or log line through the
// aggregator (JSON decode included, as from the bus), spread over 10
// vendors × 170 buckets and 100,000 sessions, and one Tick over that state.
func BenchmarkAggregator(b *testing.B) {
	e := newAggEnv(b)
	var beacons, logs [][]byte
	for i := range 4096 {
		bk := fmt.Sprintf(`"region":"P%d","isp":"isp%d"`, i%34, i%5)
		beacons = append(beacons, fmt.Appendf(nil, `{"session":"s%d","vendor":"v%d",%s,"event":"heartbeat","buffer_empty_ms":%d}`, i*24, i%10, bk, i%3*1000))
		logs = append(logs, fmt.Appendf(nil, `{"vendor":"v%d",%s,"bytes":1250000,"duration_ms":1000,"status":200}`, i%10, bk))
	}
	ctx := context.Background()
	b.Run("beacon", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.a.HandleBeacon(ctx, bus.Message{Value: beacons[i%len(beacons)]})
			i++
		}
	})
	b.Run("log", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.a.HandleLog(ctx, bus.Message{Value: logs[i%len(logs)]})
			i++
		}
	})
	for i := range 100_000 {
		e.a.AddBeacon(bus.Beacon{Session: fmt.Sprint(i), Vendor: fmt.Sprintf("v%d", i%10),
			Region: fmt.Sprintf("P%d", i%34), ISP: fmt.Sprintf("isp%d", i%5), Event: bus.BeaconHeartbeat})
	}
	b.Run("tick-100k-sessions", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.a.Tick()
		}
	})
}
