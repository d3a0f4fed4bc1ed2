package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
)

// newTestHub starts a hub and an HTTP server on 127.0.0.1 (port chosen at
// run time); both are closed when the test ends.
func newTestHub(t *testing.T, cfg Config) (*Hub, *httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := NewHub(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(srv.Close) // runs after h.Close: handlers have ended by then
	t.Cleanup(h.Close)
	return h, srv, reg
}

func flvConfig() Config {
	cfg := DefaultConfig()
	cfg.HLSVariant = HLSOff
	return cfg
}

func get(t *testing.T, ctx context.Context, u string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readFLV reads n packets from an HTTP-FLV body.
func readFLV(t *testing.T, r *av.FLVReader, n int) []*av.Packet {
	t.Helper()
	var out []*av.Packet
	for len(out) < n {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("after %q: %v", kinds(out), err)
		}
		out = append(out, p)
	}
	return out
}

func TestHTTPFLV(t *testing.T) {
	cases := []struct {
		name     string
		coalesce time.Duration
		writes   []*av.Packet
		want     string // kinds before the live packet
	}{
		{"generated metadata", 0, []*av.Packet{avcHdr(1), aacHdr(), vid(0, true), aud(10), vid(40, false)}, "MVAKap"},
		{"publisher metadata", 0, []*av.Packet{metaPkt(), avcHdr(1), aacHdr(), vid(0, true), aud(10)}, "MVAKa"},
		{"coalesced", 5 * time.Millisecond, []*av.Packet{avcHdr(1), vid(0, true)}, "MVK"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := flvConfig()
			cfg.FLVCoalesce = tc.coalesce
			h, srv, reg := newTestHub(t, cfg)
			f, err := h.Publish("live", "cam", "main", av.Source{Protocol: "rtmp", Remote: "127.0.0.1:5000"})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.writes {
				f.WritePacket(p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp := get(t, ctx, srv.URL+"/live/cam.flv")
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			for k, want := range map[string]string{"Content-Type": "video/x-flv", "Access-Control-Allow-Origin": "*"} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			// The handler takes the HTTP/1.1 connection over: no length,
			// the body ends with the connection.
			if resp.ContentLength != -1 || len(resp.TransferEncoding) != 0 || !resp.Close {
				t.Errorf("want a body delimited by close, got length %d, encoding %v, close %v",
					resp.ContentLength, resp.TransferEncoding, resp.Close)
			}
			r, err := av.NewFLVReader(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			got := readFLV(t, r, len(tc.want))
			if k := kinds(got); k != tc.want {
				t.Fatalf("player got %q, want %q", k, tc.want)
			}
			name, _, err := av.DecodeScript(got[0].Data)
			if err != nil || name != "onMetaData" {
				t.Fatalf("first tag: %q %v, want onMetaData", name, err)
			}
			live := vid(400, false)
			f.WritePacket(live)
			p := readFLV(t, r, 1)[0]
			if p.DTS != live.DTS || string(p.Data) != string(live.Data) {
				t.Fatalf("live packet: got dts %v, want %v", p.DTS, live.DTS)
			}
			if st, _ := h.Status("live", "cam"); st.Readers != 1 || st.Protocol != "rtmp" {
				t.Fatalf("status %+v", st)
			}
			f.Unpublish() // the encoder ended the stream: the player gets the end
			f.Close()
			if _, err := r.ReadPacket(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the publisher left: %v, want EOF", err)
			}
			if n := metricValue(t, reg, "livefuse_origin_bytes_out_total"); n == 0 {
				t.Errorf("bytes out counter is 0")
			}
		})
	}
}

// metricValue sums the samples of the metric called name (any labels).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestHTTPFLVDisconnect: a player that goes away is removed at once.
func TestHTTPFLVDisconnect(t *testing.T) {
	h, srv, reg := newTestHub(t, flvConfig())
	f, err := h.Publish("live", "cam", "", av.Source{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WritePacket(avcHdr(1))
	f.WritePacket(vid(0, true))
	ctx, cancel := context.WithCancel(context.Background())
	resp := get(t, ctx, srv.URL+"/live/cam.flv")
	r, err := av.NewFLVReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	readFLV(t, r, 3)
	if n := metricValue(t, reg, "livefuse_origin_readers"); n != 1 {
		t.Fatalf("readers gauge %v, want 1", n)
	}
	cancel()
	resp.Body.Close()
	for i := 0; ; i++ {
		st, _ := h.Status("live", "cam")
		if st.Readers == 0 {
			break
		}
		if i == 500 {
			t.Fatalf("player still attached after disconnecting")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := metricValue(t, reg, "livefuse_origin_readers"); n != 0 {
		t.Fatalf("readers gauge %v, want 0", n)
	}
}

func TestHTTPAnswers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Authorize = func(app, name, uri string, q url.Values) error {
		if q.Get("token") == "bad" {
			return errors.New("bad token")
		}
		if want := "/" + app + "/" + name; !strings.HasPrefix(uri, want) {
			return fmt.Errorf("uri %q", uri)
		}
		return nil
	}
	h, srv, _ := newTestHub(t, cfg)
	f, err := h.Publish("live", "cam", "main", av.Source{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases := []struct {
		method, path string
		code         int
	}{
		{"GET", "/live/nothere.flv", 404},
		{"GET", "/live/nothere/index.m3u8", 404},
		{"GET", "/live/cam.flv?token=bad", 403},
		{"GET", "/live/cam/index.m3u8?token=bad", 403},
		{"HEAD", "/live/cam.flv", 200},
		{"GET", "/live/cam/unknown.ts", 404},
		{"GET", "/live/cam/0123456789ab_main_seg99.ts", 404}, // right form, no such segment
		{"GET", "/live/cam/../cam.flv", 404},
		{"GET", "/live/.cam.flv", 404},
		{"GET", "/live/cam.mp4", 404},
		{"GET", "/", 404},
		{"GET", "/a/b/c/d", 404},
		{"POST", "/live/cam.flv", 405},
		{"OPTIONS", "/live/cam.flv", 204},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			req.Header.Set("Access-Control-Request-Headers", "range")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("no CORS header")
			}
			if tc.method == "OPTIONS" && !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "GET") {
				t.Fatalf("preflight without allowed methods")
			}
		})
	}
}

func TestHubFeeds(t *testing.T) {
	h, _, reg := newTestHub(t, flvConfig())
	main, err := h.Publish("live", "cam", "main", av.Source{Protocol: "rtmp", Remote: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish("live", "cam", "main", av.Source{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second main publisher: %v, want ErrBusy", err)
	}
	backup, err := h.Publish("live", "cam", "backup", av.Source{Protocol: "rtsp", Remote: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ app, name, feed string }{{"live", "cam", "third"}, {"live", "a/b", "main"}, {"", "x", "main"}} {
		if _, err := h.Publish(bad.app, bad.name, bad.feed, av.Source{}); err == nil {
			t.Errorf("publish %v accepted", bad)
		}
	}
	other, err := h.Publish("app2", "other", "main", av.Source{})
	if err != nil {
		t.Fatal(err)
	}
	if l := h.List(); len(l) != 2 || l[0].App != "app2" || l[1].Name != "cam" {
		t.Fatalf("list %+v", l)
	}
	if n := metricValue(t, reg, "livefuse_origin_streams"); n != 2 {
		t.Fatalf("streams gauge %v, want 2", n)
	}

	// Main leaves: the stream stays with the backup.
	r, err := h.Subscribe("live", "cam")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	main.Close()
	main.Close()
	main.WritePacket(vid(0, true)) // ignored after Close
	st, ok := h.Status("live", "cam")
	if !ok || st.Feed != "backup" || st.Protocol != "rtsp" {
		t.Fatalf("status after main left: %+v %v", st, ok)
	}
	backup.WritePacket(vid(0, true))
	if got := drain(r); kinds(got) != "K" {
		t.Fatalf("reader got %q from the backup", kinds(got))
	}

	// Kick: the publisher's Done closes, readers get the end.
	if err := h.Kick("live", "cam"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-backup.Done():
	default:
		t.Fatal("backup Done not closed by Kick")
	}
	if _, err := r.ReadPackets(context.Background(), nil); !errors.Is(err, ErrEnded) {
		t.Fatalf("reader after kick: %v", err)
	}
	if _, err := h.Subscribe("live", "cam"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("subscribe after kick: %v", err)
	}
	if err := h.Kick("live", "cam"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("kick twice: %v", err)
	}
	backup.Close() // after a kick: no effect
	again, err := h.Publish("live", "cam", "main", av.Source{})
	if err != nil {
		t.Fatalf("republish after kick: %v", err)
	}

	// Close ends everything and refuses new publishers.
	r2, _ := h.Subscribe("app2", "other")
	h.Close()
	if _, err := r2.ReadPackets(context.Background(), nil); !errors.Is(err, ErrEnded) {
		t.Fatalf("reader after hub close: %v", err)
	}
	for _, f := range []*Feed{other, again} {
		select {
		case <-f.Done():
		default:
			t.Fatal("feed Done not closed by hub Close")
		}
	}
	if _, err := h.Publish("live", "x", "main", av.Source{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero fills defaults", func(c *Config) { *c = Config{} }, true},
		{"fmp4", func(c *Config) { c.HLSVariant = HLSFMP4 }, true},
		{"low latency needs 7 segments", func(c *Config) { c.HLSVariant = HLSLowLatency; c.HLSSegmentCount = 3 }, false},
		{"unknown variant", func(c *Config) { c.HLSVariant = "dash" }, false},
		{"too few segments", func(c *Config) { c.HLSSegmentCount = 2 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			_, err := NewHub(cfg, nil, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("NewHub: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	// Registering twice on one registry fails cleanly.
	reg := prometheus.NewRegistry()
	if _, err := NewHub(DefaultConfig(), nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHub(DefaultConfig(), nil, reg); err == nil {
		t.Fatal("second hub on the same registry: no error")
	}
}

// FuzzParseRoute parses request paths as they come from the network.
func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/live/cam.flv", "/live/cam/index.m3u8", "/live/cam/0123456789ab_main_seg3.ts",
		"/live/cam/0123456789ab_video1_part12.mp4", "/../x.flv", "//.flv", "/a/b/c/d", "/live/cam/main_stream.m3u8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parseRoute(p)
		if !ok {
			return
		}
		if !validName(rt.app) || !validName(rt.name) {
			t.Fatalf("%q: accepted invalid names %q %q", p, rt.app, rt.name)
		}
		if rt.kind == routeHLS && (strings.Contains(rt.file, "/") || strings.Contains(rt.file, "..")) {
			t.Fatalf("%q: file %q", p, rt.file)
		}
	})
}

// TestHTTPFLVStalledPlayer: a player that stops reading (its socket
// buffers full) is disconnected and never holds up the publisher or a
// player that reads.
func TestHTTPFLVStalledPlayer(t *testing.T) {
	cfg := flvConfig()
	cfg.ReaderQueue = 16
	cfg.MaxLag = 200 * time.Millisecond
	h, srv, _ := newTestHub(t, cfg)
	f, err := h.Publish("live", "cam", "main", av.Source{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WritePacket(avcHdr(1))

	stalled, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(stalled, "GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := get(t, ctx, srv.URL+"/live/cam.flv")
	defer resp.Body.Close()
	r, err := av.NewFLVReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	readFLV(t, r, 2)           // metadata, AVC header
	for i := 0; i < 500; i++ { // the stalled request may still be on its way
		if st, _ := h.Status("live", "cam"); st.Readers == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	big := make([]byte, 64<<10)
	for i := 0; ; i++ {
		p := &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%10 == 0, DTS: ms(i * 40), Data: big}
		f.WritePacket(p)
		got := readFLV(t, r, 1)[0]
		if got.DTS != p.DTS {
			t.Fatalf("reading player: packet %v, want %v", got.DTS, p.DTS)
		}
		if st, _ := h.Status("live", "cam"); st.Readers == 1 {
			t.Logf("stalled player gone after %d packets; %d dropped", i, st.DroppedReaders)
			break
		}
		if i == 2000 {
			t.Fatal("stalled player still attached after 2000 packets")
		}
		if i > 100 {
			time.Sleep(5 * time.Millisecond) // give the write deadline time to pass
		}
	}
}

// TestHTTPCheckAddress: a player whose address the lists refuse gets 403
// for HTTP-FLV and HLS before its key is looked at; others are served.
func TestHTTPCheckAddress(t *testing.T) {
	cfg := DefaultConfig()
	var denied atomic.Bool
	cfg.CheckAddress = func(app, name string, remote netip.Addr) error {
		if !remote.IsLoopback() {
			return fmt.Errorf("remote %v is not loopback", remote)
		}
		if denied.Load() && name == "cam" {
			return errors.New("denied")
		}
		return nil
	}
	h, srv, _ := newTestHub(t, cfg)
	f, err := h.Publish("live", "cam", "main", av.Source{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		deny bool
		path string
		code int
	}{
		{false, "/live/cam.flv", 200},
		{true, "/live/cam.flv", 403},
		{true, "/live/cam/index.m3u8", 403},
		{true, "/live/other.flv", 404},
	} {
		denied.Store(tc.deny)
		req, _ := http.NewRequest("HEAD", srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("deny=%v %s: status %d, want %d", tc.deny, tc.path, resp.StatusCode, tc.code)
		}
	}
}
