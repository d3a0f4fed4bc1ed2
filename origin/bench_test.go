package origin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// BenchmarkFanout measures Stream.Write with N readers, each draining its
// queue in its own goroutine as players do. One op is one packet; allocs/op
// counts every goroutine, so 0 means no allocation per packet and reader.
// The hold-audio cases are HTTP-FLV players with flv_coalesce set: audio
// waits for the next video frame, so readers wake once per frame.
func BenchmarkFanout(b *testing.B) {
	type bench struct {
		n    int
		hold bool
	}
	for _, bc := range []bench{{1, false}, {100, false}, {1000, false}, {1000, true}} {
		n := bc.n
		name := fmt.Sprint("readers=", n)
		if bc.hold {
			name += "/hold-audio"
		}
		b.Run(name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.ReaderQueue = 4096
			// The writer runs far faster than any real source; let readers
			// skip rather than be dropped, and report how much they got.
			cfg.MaxOverflows = 1 << 30
			cfg.MaxLag = time.Hour
			s := NewStream(cfg, nil)
			s.Write(avcHdr(1))
			s.Write(aacHdr())
			pkts := make([]*av.Packet, 300)
			for i := range pkts {
				if i%3 == 2 {
					pkts[i] = aud(i)
				} else {
					pkts[i] = vid(i, i%60 == 0)
				}
			}
			var wg sync.WaitGroup
			var delivered, dropped int64
			var mu sync.Mutex
			for range n {
				r := s.Subscribe()
				if bc.hold {
					r.holdAudio(time.Second)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer r.Close()
					buf := make([]*av.Packet, 0, 8192)
					var got int64
					for {
						var err error
						buf, err = r.ReadPackets(context.Background(), buf[:0])
						got += int64(len(buf))
						if err != nil {
							mu.Lock()
							delivered += got
							if errors.Is(err, ErrDropped) {
								dropped++
							}
							mu.Unlock()
							return
						}
					}
				}()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				s.Write(pkts[i%len(pkts)])
			}
			elapsed := time.Since(start)
			b.StopTimer()
			s.Close()
			wg.Wait()
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N)/float64(n), "ns/packet/reader")
			b.ReportMetric(float64(dropped), "dropped")
			b.ReportMetric(float64(delivered)/float64(b.N)/float64(n), "delivered/packet")
		})
	}
}
