package batchio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// readN reads n bytes from c in the background; nil on an error.
func readN(c net.Conn, n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			buf = nil
		}
		got <- buf
	}()
	return got
}

// wrapped hides a connection as netguard's capped connections do.
type wrapped struct{ net.Conn }

func (w wrapped) Unwrap() net.Conn { return w.Conn }

// TestWriterBytes: what arrives is the batch's bytes in order, whatever
// is copied and whatever referenced, on a plain, a wrapped and a
// non-socket connection.
func TestWriterBytes(t *testing.T) {
	big := bytes.Repeat([]byte("video"), 3000)
	pieces := [][]byte{[]byte("hdr1"), big, []byte("aac"), big[:700], []byte("tail"), {}, []byte("x")}
	for _, tc := range []struct {
		name      string
		wrap      bool
		pipe      bool
		exclusive bool
		vectors   bool
	}{
		{name: "tcp", vectors: true},
		{name: "tcp exclusive", exclusive: true, vectors: true},
		{name: "wrapped tcp", wrap: true, vectors: true},
		{name: "wrapped tcp exclusive", wrap: true, exclusive: true, vectors: true},
		{name: "pipe", pipe: true},
		{name: "pipe exclusive", pipe: true, exclusive: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c, s net.Conn
			if tc.pipe {
				c, s = net.Pipe()
				defer c.Close()
				defer s.Close()
			} else {
				c, s = tcpPair(t)
			}
			var wc net.Conn = c
			if tc.wrap {
				wc = wrapped{c}
			}
			w := NewWriter(wc)
			if tc.exclusive {
				w.Exclusive()
				if (w.fd >= 0) != tc.vectors {
					t.Fatalf("exclusive writer's socket %d", w.fd)
				}
			}
			if w.Vectored() != tc.vectors {
				t.Fatalf("vectored %v, want %v", w.Vectored(), tc.vectors)
			}
			b := NewBatch(64, 512)
			if !w.Vectored() {
				b.Flatten()
			}
			var want []byte
			for i, p := range pieces {
				if i%2 == 0 {
					b.Head = append(b.Head, p...)
				} else {
					b.Add(p)
				}
				want = append(want, p...)
			}
			if got := b.AppendTo(nil); !bytes.Equal(got, want) {
				t.Fatalf("AppendTo: %d bytes differ from the %d added", len(got), len(want))
			}
			if b.Refs() != tc.vectors {
				t.Fatalf("refs %v, want %v", b.Refs(), tc.vectors)
			}
			got := readN(s, len(want))
			n, err := w.Write(b)
			if err != nil || n != len(want) {
				t.Fatalf("Write: %d, %v; want %d", n, err, len(want))
			}
			if g := <-got; !bytes.Equal(g, want) {
				t.Fatal("the bytes received differ from the batch")
			}
			b.Reset(1<<10, 4)
			if b.Len() != 0 || b.Refs() || cap(b.Head) != 64 {
				t.Fatalf("after Reset: len %d refs %v cap %d", b.Len(), b.Refs(), cap(b.Head))
			}
		})
	}
}

// TestWriterFullSocket: a batch far larger than the socket buffers is
// written whole to a reader that takes it slowly (partial writes, waits
// in the poller), and a reader that stops reading ends the write at the
// deadline, not later.
func TestWriterFullSocket(t *testing.T) {
	for _, exclusive := range []bool{false, true} {
		t.Run(fmt.Sprint("exclusive=", exclusive), func(t *testing.T) { testWriterFullSocket(t, exclusive) })
	}
}

func testWriterFullSocket(t *testing.T, exclusive bool) {
	c, s := tcpPair(t)
	_ = c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	w := NewWriter(c)
	if exclusive {
		w.Exclusive()
	}
	b := NewBatch(16, 1)
	chunk := bytes.Repeat([]byte{7}, 4<<10)
	for range 1500 { // more than IOV_MAX pieces, 6 MiB
		b.Head = append(b.Head, 'h')
		b.Add(chunk)
	}
	want := b.Len()
	got := make(chan int, 1)
	go func() {
		n, _ := io.Copy(io.Discard, io.LimitReader(s, int64(want)))
		got <- int(n)
	}()
	_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
	n, err := w.Write(b)
	if err != nil || n != want {
		t.Fatalf("Write: %d, %v; want %d", n, err, want)
	}
	if g := <-got; g != want {
		t.Fatalf("received %d bytes, want %d", g, want)
	}

	// Nobody reads now: the write ends at the deadline.
	_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	_, err = w.Write(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a stalled reader: %v, want the deadline", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("the stalled write took %s", el)
	}
}

// TestWriterClosed: writing to a connection the peer closed or that is
// closed fails with an error instead of hanging.
func TestWriterClosed(t *testing.T) {
	c, s := tcpPair(t)
	w := NewWriter(c)
	b := NewBatch(16, 1)
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	b.Add(chunk)
	s.Close()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	var err error
	for range 50 { // the reset arrives after a write or two
		if _, err = w.Write(b); err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a closed peer: %v", err)
	}
	c.Close()
	if _, err := w.Write(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to a closed connection: %v, want net.ErrClosed", err)
	}
}

// TestWriterNoAlloc: a write allocates nothing once the writer has its
// vectors.
func TestWriterNoAlloc(t *testing.T) {
	c, s := tcpPair(t)
	go io.Copy(io.Discard, s)
	w := NewWriter(c)
	b := NewBatch(256, 512)
	video := make([]byte, 12000)
	allocs := testing.AllocsPerRun(200, func() {
		b.Reset(1<<10, 8)
		b.Head = append(b.Head, "tagheader"...)
		b.Add(video)
		b.Head = append(b.Head, "size"...)
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write, want 0", allocs)
	}
}

// TestWriterNotVectoredRefuses: referenced payloads on a connection that
// is not a socket are refused, not silently dropped.
func TestWriterNotVectoredRefuses(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	b := NewBatch(16, 1)
	b.Add([]byte("payload"))
	if _, err := NewWriter(c).Write(b); err == nil {
		t.Fatal("a batch with references written to a pipe")
	}
}

// TestReader: data, the read deadline and the end of the connection come
// out of Reader as they do out of net.Conn.
func TestReader(t *testing.T) {
	c, s := tcpPair(t)
	r := NewReader(wrapped{c})
	if r.raw == nil {
		t.Fatal("a wrapped TCP connection is not read raw")
	}
	go func() {
		_, _ = s.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := io.ReadAtLeast(r, buf, 5)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	s.Close()
	if _, err := r.Read(buf); err != io.EOF { //nolint:errorlint // an io.Reader returns io.EOF itself, unwrapped
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	go func() { _, _ = p2.Write([]byte("x")); p2.Close() }()
	if n, err := NewReader(p1).Read(buf); n != 1 || err != nil {
		t.Fatalf("pipe read: %d, %v", n, err)
	}
}

// TestWriterTryWrite: a write that does not wait leaves what does not fit
// pending, and Finish writes it once the reader reads: every byte arrives
// once, in order; for an Exclusive writer (straight to the socket) and
// one that goes through the poller (a connection closed elsewhere).
func TestWriterTryWrite(t *testing.T) {
	for _, exclusive := range []bool{true, false} {
		t.Run(fmt.Sprintf("exclusive=%v", exclusive), func(t *testing.T) {
			c, s := tcpPair(t)
			w := NewWriter(c)
			if exclusive && !w.Exclusive() {
				t.Fatal("a TCP connection is not written straight")
			}
			b := NewBatch(16, 1)
			var want []byte
			for i := range 400 { // 16 MB: more than the socket buffers hold
				chunk := bytes.Repeat([]byte{byte(i)}, 40<<10)
				b.Head = append(b.Head, byte(i))
				b.Add(chunk)
				want = append(append(want, byte(i)), chunk...)
			}
			n, done, err := w.TryWrite(b)
			if err != nil || done || n <= 0 || n >= len(want) {
				t.Fatalf("TryWrite to a reader that does not read: %d of %d bytes, done %v, %v", n, len(want), done, err)
			}
			got := readN(s, len(want))
			_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
			m, err := w.Finish()
			if err != nil || n+m != len(want) {
				t.Fatalf("Finish: %d + %d bytes of %d, %v", n, m, len(want), err)
			}
			if g := <-got; !bytes.Equal(g, want) {
				t.Fatal("the bytes received differ from the batch")
			}
			if exclusive {
				return // only the writer may close an Exclusive writer's connection
			}
			// A connection closed elsewhere: the write fails, it does not wait.
			b.Reset(16, 1)
			b.Add([]byte("after close"))
			_ = c.Close()
			if _, done, err := w.TryWrite(b); err == nil || !done {
				t.Fatalf("TryWrite on a closed connection: done %v, err %v", done, err)
			}
		})
	}
}
