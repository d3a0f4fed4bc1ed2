package cdnmix

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/bus"
)

// aggPublisher hands what /qos publishes straight to an aggregator, as
// the in-process bus would, without its queue.
type aggPublisher struct{ a *Aggregator }

func (p aggPublisher) Publish(_ string, _, value []byte) error {
	return p.a.HandleBeacon(context.Background(), bus.Message{Value: value})
}

type nopBody struct{ *strings.Reader }

func (nopBody) Close() error { return nil }

// BenchmarkQoSBeacon measures one beacon through POST /qos with its token
// checked (HMAC-SHA256), its rate taken, published as JSON and aggregated
// under the token's key (JSON decoded again, as from the bus): the whole
// cost of a beacon that may steer, over 10,000 sessions. "refused" is a
// beacon without a token, which is counted and dropped. ns/beacon is the
// figure to read.
func BenchmarkQoSBeacon(b *testing.B) {
	keys := testTokens(b)
	const sessions = 10_000
	tokens := make([]string, sessions)
	for i := range tokens {
		tokens[i] = signTok(b, keys, authkey.Session{Stream: "live/demo", Vendor: fmt.Sprintf("v%d", i%10),
			Region: fmt.Sprintf("P%d", i%34), ISP: fmt.Sprintf("isp%d", i%5), Expires: time.Now().Add(time.Hour)})
	}
	bodies := func(batch int, withToken bool) [][]byte {
		out := make([][]byte, 0, 256)
		for j := range 256 {
			var parts []string
			for k := range batch {
				i := (j*batch + k) % sessions
				if withToken {
					parts = append(parts, fmt.Sprintf(`{"token":%q,"event":"heartbeat","buffer_empty_ms":%d}`, tokens[i], i%3*1000))
				} else {
					parts = append(parts, fmt.Sprintf(`{"session":"s%d","vendor":"v%d","event":"heartbeat"}`, i, i%10))
				}
			}
			out = append(out, []byte("["+strings.Join(parts, ",")+"]"))
		}
		return out
	}
	cases := []struct {
		name      string
		batch     int
		withToken bool
		want      int
	}{
		{"token-batch1", 1, true, http.StatusNoContent},
		{"token-batch100", 100, true, http.StatusNoContent},
		{"refused-batch100", 100, false, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			a, err := NewAggregator(AggregatorConfig{Logger: quietLog})
			if err != nil {
				b.Fatal(err)
			}
			h, err := NewQoSHandler(QoSConfig{Publisher: aggPublisher{a}, Tokens: keys, SessionRate: 1e9, SessionBurst: 1 << 30, Logger: quietLog})
			if err != nil {
				b.Fatal(err)
			}
			bs := bodies(tc.batch, tc.withToken)
			r, _ := http.NewRequest("POST", "http://x/qos", nil)
			r.RemoteAddr = "198.51.100.1:40000"
			w := &benchWriter{h: make(http.Header)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r.Body = nopBody{strings.NewReader(string(bs[i%len(bs)]))}
				clear(w.h)
				h.ServeHTTP(w, r)
				if w.code != tc.want {
					b.Fatalf("status %d", w.code)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tc.batch), "ns/beacon")
		})
	}
}
