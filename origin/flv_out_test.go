package origin

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/batchio"
)

// TestHTTPFLVBytes: every transport (HTTP/1.1 taken over and written with
// writev, HTTP/1.1 over TLS taken over and written flat, HTTP/2 through
// the ResponseWriter) sends exactly the bytes av.AppendTag makes, with
// payloads large enough to be written from the packets and small ones
// copied next to their headers.
func TestHTTPFLVBytes(t *testing.T) {
	big := func(dts int, key bool, n int) *av.Packet {
		d := make([]byte, n)
		for i := range d {
			d[i] = byte(i*7 + dts)
		}
		return &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: key, DTS: ms(dts), CTS: ms(80), Data: d}
	}
	cached := []*av.Packet{metaPkt(), avcHdr(1), aacHdr(), big(0, true, 70000), aud(10), big(40, false, 511), big(80, false, 512)}
	live := []*av.Packet{aud(100), big(120, false, 3000), big(160, false, 100), aud(170), big(200, true, 200000)}
	want := av.FLVHeader(true, true)
	for _, p := range append(append([]*av.Packet{}, cached...), live...) {
		want = av.AppendTag(want, p)
	}
	for _, tc := range []struct {
		name       string
		tls, http2 bool
		close      bool // body delimited by close
	}{
		{"http1", false, false, true},
		{"http1 tls", true, false, true},
		{"http2", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHub(flvConfig(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(h.Handler())
			srv.EnableHTTP2 = tc.http2
			if tc.tls {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			defer h.Close()
			f, err := h.Publish("live", "cam", "main", av.Source{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range cached {
				f.WritePacket(p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/cam.flv", nil)
			c := srv.Client()
			if tc.tls && !tc.http2 {
				c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
				c.Transport.(*http.Transport).ForceAttemptHTTP2 = false
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if wantProto := map[bool]int{false: 1, true: 2}[tc.http2]; resp.ProtoMajor != wantProto {
				t.Fatalf("protocol %s", resp.Proto)
			}
			if resp.Close != tc.close || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Content-Type") != "video/x-flv" {
				t.Fatalf("close %v, headers %v", resp.Close, resp.Header)
			}
			got := make([]byte, len(want))
			// What the player has once the cached packets are in.
			head := len(av.FLVHeader(true, true))
			for _, p := range cached {
				head = len(av.AppendTag(make([]byte, head), p))
			}
			if _, err := io.ReadFull(resp.Body, got[:head]); err != nil {
				t.Fatal(err)
			}
			for _, p := range live {
				f.WritePacket(p)
			}
			if _, err := io.ReadFull(resp.Body, got[head:]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				i := 0
				for i < len(got) && got[i] == want[i] {
					i++
				}
				t.Fatalf("bytes differ from av.AppendTag at offset %d of %d", i, len(want))
			}
		})
	}
}

// TestFLVOutNoAlloc: writing a batch on a taken-over TCP connection
// allocates nothing.
func TestFLVOutNoAlloc(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	o := &flvOut{conn: conn, bw: batchio.NewWriter(conn), maxLag: time.Second, b: batchio.NewBatch(flvHeadSize, flvInline)}
	if !o.bw.Vectored() {
		t.Fatal("a TCP connection is not written vectored")
	}
	pkts := []*av.Packet{aud(0), {Kind: av.KindVideo, Codec: av.CodecH264, Data: make([]byte, 12000)}, aud(20)}
	allocs := testing.AllocsPerRun(200, func() {
		o.reset()
		for _, p := range pkts {
			o.appendTag(p)
		}
		if _, err := o.flush(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
}
