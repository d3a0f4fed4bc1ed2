package netguard

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func startHTTP(t *testing.T, c HTTPConfig, h http.Handler) *HTTPListener {
	t.Helper()
	l, err := NewHTTPListener("127.0.0.1:0", "test", c, h, quiet())
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve()
	t.Cleanup(func() { l.Server.Close() })
	return l
}

// TestHTTPListenerBounds: a slow body is cut at read_timeout, a request
// without a body may be answered for longer, headers beyond the limit are
// refused, an idle kept-alive connection is closed, and the per-address
// cap holds.
func TestHTTPListenerBounds(t *testing.T) {
	c := HTTPConfig{ReadHeaderTimeout: time.Second, ReadTimeout: 300 * time.Millisecond,
		IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4 << 10, Limits: Limits{MaxConnsPerIP: 3}}
	l := startHTTP(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			time.Sleep(3 * c.ReadTimeout) // a live response outlasts read_timeout
			fmt.Fprint(w, "long done")
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		fmt.Fprintf(w, "got %d", len(b))
	}))
	addr := l.Addr().String()

	t.Run("long response without body", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/long")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "long done" {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("slow body", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "POST /qos HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
		// One byte per 100 ms: the body would take 10 s.
		closed := false
		for i := 0; i < 100 && !closed; i++ {
			if _, err := conn.Write([]byte("x")); err != nil {
				closed = true
			}
			time.Sleep(100 * time.Millisecond)
			conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			var b [512]byte
			if n, err := conn.Read(b[:]); n > 0 || (err != nil && !os.IsTimeout(err)) {
				closed = true // answered (408) or closed
			}
		}
		if !closed {
			t.Fatal("a 1-byte-per-100ms body was read to the end")
		}
	})
	t.Run("header limit", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("idle keep-alive closed", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); err == nil || os.IsTimeout(err) {
			t.Fatalf("idle connection not closed by the server: %v", err)
		}
	})
	t.Run("per address cap", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 3 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
			t.Fatalf("4th connection from one address not closed: %v", err)
		}
	})
}

// TestHTTPListenerTLS: HTTPS with HTTP/2 offered, and a certificate
// replaced on disk served to the next connection.
func TestHTTPListenerTLS(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, cf, kf, "one.test")
	c := MediaHTTPDefaults()
	c.TLS = TLSConfig{CertFile: cf, KeyFile: kf}
	l := startHTTP(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.Proto) }))
	l.Certs.every = 0 // look at the files on every handshake
	get := func() (proto, cn string) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if proto, cn := get(); proto != "HTTP/2.0" || cn != "one.test" {
		t.Fatalf("got %s from %s, want HTTP/2.0 from one.test", proto, cn)
	}
	writePair(t, cf, kf, "two.test")
	future := time.Now().Add(time.Minute)
	os.Chtimes(cf, future, future)
	os.Chtimes(kf, future, future)
	if _, cn := get(); cn != "two.test" {
		t.Fatalf("after the renewal: served %s, want two.test", cn)
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHTTPListenerLogsTimeouts: the connections the server closes on its
// own timeouts (idle keep-alive, a body cut at read_timeout), which
// net/http closes silently, are logged with the client's address.
func TestHTTPListenerLogsTimeouts(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := HTTPConfig{ReadHeaderTimeout: time.Second, ReadTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond}
	l, err := NewHTTPListener("127.0.0.1:0", "test", c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
	}), log)
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve()
	defer l.Server.Close()
	tests := []struct {
		name, request, reason string
	}{
		{"idle keep-alive", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "idle for idle_timeout"},
		{"slow body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab", "request body not read within read_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := io.WriteString(nc, tt.request); err != nil {
				t.Fatal(err)
			}
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, nc) // until the server closes
			want := "remote=" + nc.LocalAddr().String()
			for range 50 {
				if s := logs.String(); strings.Contains(s, want) && strings.Contains(s, tt.reason) {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Fatalf("no %q line for %s in:\n%s", tt.reason, want, logs.String())
		})
	}
}
