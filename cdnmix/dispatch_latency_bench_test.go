package cdnmix

import (
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDispatchLatency sends b.N requests over loopback keep-alive
// connections at a fixed rate (CDNMIX_BENCH_RPS, default 5000 a second)
// to the dispatcher and to the bare handler, and reports latency
// percentiles measured from each request's scheduled time (so a stall
// delays the requests behind it instead of hiding them). Run it at about
// half the rate BenchmarkDispatch/loopback-* measures:
//
//	CDNMIX_BENCH_RPS=10000 go test -run '^$' -bench DispatchLatency -benchtime 20000x ./cdnmix/
func BenchmarkDispatchLatency(b *testing.B) {
	rps := 5000
	if s := os.Getenv("CDNMIX_BENCH_RPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("CDNMIX_BENCH_RPS=%q", s)
		}
		rps = n
	}
	env := newDispatchEnv(b, dispatchVendors())
	for _, hc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bareHandler()}, {"dispatch-302", env.d}} {
		b.Run(hc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: hc.h, ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln)
			defer srv.Close()
			const workers = 64
			tr := &http.Transport{MaxIdleConnsPerHost: workers}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			url := "http://" + ln.Addr().String() + "/dispatch/live/demo.flv"
			interval := time.Second / time.Duration(rps)
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						at := start.Add(time.Duration(i) * interval)
						if d := time.Until(at); d > 0 {
							time.Sleep(d)
						}
						resp, err := client.Get(url)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						lat[i] = time.Since(at)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6 }
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
		})
	}
}
