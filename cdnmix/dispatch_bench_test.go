package cdnmix

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// benchWriter is a reusable ResponseWriter, so handler benchmarks measure
// the handler and not the recorder.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// bareHandler is the baseline: a plain net/http handler answering a fixed
// 302, doing none of the dispatch work.
func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://a.example.com/live/demo.flv")
		w.WriteHeader(http.StatusFound)
	})
}

// BenchmarkDispatch compares the dispatcher with a bare handler, in process
// (handler cost) and over loopback HTTP/1.1 keep-alive (what a client sees).
// Compare ns/op of the pairs: dispatch-302 against bare, loopback-dispatch
// against loopback-bare.
func BenchmarkDispatch(b *testing.B) {
	env := newDispatchEnv(b, dispatchVendors())
	handlers := []struct {
		name, target string
		h            http.Handler
	}{
		{"bare", "/dispatch/live/demo.flv", bareHandler()},
		{"dispatch-302", "/dispatch/live/demo.flv", env.d},
		{"dispatch-json", "/dispatch/live/demo.flv?format=json", env.d},
		{"dispatch-302-token", "/dispatch/live/demo.flv", withTokens(b, env)},
		{"dispatch-json-token", "/dispatch/live/demo.flv?format=json", withTokens(b, env)},
	}
	for _, hc := range handlers {
		b.Run(hc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r, _ := http.NewRequest("GET", "http://x"+hc.target, nil)
				r.RemoteAddr = "198.51.100.1:40000"
				w := &benchWriter{h: make(http.Header)}
				for pb.Next() {
					clear(w.h)
					hc.h.ServeHTTP(w, r)
					if w.code != http.StatusFound && w.code != http.StatusOK {
						b.Errorf("status %d", w.code)
						return
					}
				}
			})
		})
	}
	for _, hc := range handlers[:2] {
		b.Run("loopback-"+hc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: hc.h, ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln)
			defer srv.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			url := "http://" + ln.Addr().String() + hc.target
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusFound {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// withTokens is env's dispatcher handing out qos session tokens.
func withTokens(b *testing.B, env *dispatchEnv) *Dispatcher {
	cfg := env.d.cfg
	cfg.Tokens = testTokens(b)
	d, err := NewDispatcher(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return d
}
