// Package batchio writes a player's batch of media bytes to its socket at
// once. A batch holds the small pieces a player builds for itself (tag and
// chunk headers, short payloads) in one buffer and points at the large
// payloads every player of a stream shares, so no player copies the
// stream; on a TCP or Unix socket the batch goes out as one writev.
//
// The writev is made as a raw, non-blocking system call through the
// socket's syscall.RawConn: a player socket never blocks (a full socket
// buffer parks the goroutine in the network poller, with the connection's
// write deadline), so the runtime's blocking-syscall bookkeeping, and the
// scheduler hand-offs it causes when thousands of players write on one
// core, are not needed.
//
// It is shared by ingest's RTMP play and origin's HTTP-FLV, which may not
// import each other.
package batchio

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// maxIOV is the most pieces one writev takes (Linux IOV_MAX).
	maxIOV = 1024
	// vecKeep is the most pieces a writer keeps room for between writes.
	vecKeep = 16
)

// Batch is one write's worth of bytes. Head is the player's own bytes,
// appended to directly; Add puts a shared payload after what Head holds
// so far: copied into Head when it is short (a copy that small costs less
// than an iovec), referenced otherwise.
type Batch struct {
	Head     []byte
	headCap  int
	refs     []ref
	inline   int
	refBytes int
}

// ref is a payload written from its shared packet, before Head[at:].
type ref struct {
	at   int
	data []byte
}

// NewBatch returns a batch whose Head starts with capacity headCap; shared
// payloads shorter than inline are copied into Head. inline math.MaxInt
// copies everything (a flat batch, for a writer that is not vectored).
func NewBatch(headCap, inline int) *Batch {
	return &Batch{Head: make([]byte, 0, headCap), headCap: headCap, inline: inline}
}

// Flatten makes every later Add copy into Head (a writer that is not
// vectored writes Head alone).
func (b *Batch) Flatten() { b.inline = math.MaxInt }

// Add appends a shared payload to the batch. A referenced payload must
// not change until the batch is written or reset.
func (b *Batch) Add(p []byte) {
	if len(p) < b.inline {
		b.Head = append(b.Head, p...)
		return
	}
	b.refs = append(b.refs, ref{at: len(b.Head), data: p})
	b.refBytes += len(p)
}

// Len is the batch's length in bytes.
func (b *Batch) Len() int { return len(b.Head) + b.refBytes }

// AppendTo appends the batch's bytes, in order, to dst.
func (b *Batch) AppendTo(dst []byte) []byte {
	pos := 0
	for _, rf := range b.refs {
		dst = append(dst, b.Head[pos:rf.at]...)
		dst = append(dst, rf.data...)
		pos = rf.at
	}
	return append(dst, b.Head[pos:]...)
}

// Refs reports whether the batch references shared payloads.
func (b *Batch) Refs() bool { return len(b.refs) > 0 }

// Reset empties the batch. A Head grown past keepHead and a reference
// list grown past keepRefs (a GOP burst's) are let go: Head starts again
// at the capacity NewBatch gave it.
func (b *Batch) Reset(keepHead, keepRefs int) {
	clear(b.refs) // let the packets go
	if cap(b.Head) > keepHead {
		b.Head = make([]byte, 0, b.headCap)
	}
	if cap(b.refs) > keepRefs {
		b.refs = nil
	}
	b.Head, b.refs, b.refBytes = b.Head[:0], b.refs[:0], 0
}

// Writer writes batches to one connection.
type Writer struct {
	conn net.Conn        // flat writes, and the deadlines
	raw  syscall.RawConn // the socket under conn; nil: not vectored
	vec  []unix.Iovec    // the current write's pieces
	iov  []unix.Iovec    // what is left of vec to write
	n    int             // bytes written by the current write
	err  error           // the current write's system call error
	wfn  func(fd uintptr) bool
	tfn  func(fd uintptr) bool // tryWritev
	full bool                  // tryWritev found the socket full
	fd   int                   // the socket, for writes that try before the poller; -1: none (Exclusive)
}

// NewWriter returns a writer for c. It writes vectored when c is, or wraps
// (through Unwrap methods, as netguard's capped connections do), a TCP or
// Unix socket; otherwise (TLS) it writes a batch's Head with c.Write, and
// the batch should be flat (Batch.Flatten).
func NewWriter(c net.Conn) *Writer {
	w := &Writer{conn: c, fd: -1, raw: rawConn(c)}
	if w.raw != nil {
		w.wfn, w.tfn = w.writev, w.tryWritev
	}
	return w
}

// rawConn returns the syscall.RawConn of the TCP or Unix socket c is or
// wraps (through Unwrap methods); nil for anything else (TLS).
func rawConn(c net.Conn) syscall.RawConn {
	for nc := c; nc != nil; {
		switch t := nc.(type) {
		case *net.TCPConn:
			raw, _ := t.SyscallConn()
			return raw
		case *net.UnixConn:
			raw, _ := t.SyscallConn()
			return raw
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		nc = u.Unwrap()
	}
	return nil
}

// Exclusive is the caller's promise that the connection is closed only by
// the goroutine that writes, after its last Write. Writes then go straight
// to the socket and through the poller (its lock, the deadline, the wait)
// only when it is full: about a tenth less work per write. Without the
// promise a concurrent Close could let the socket's number be reused
// during a write. It reports whether writes go straight to the socket (a
// connection that is not a TCP or Unix socket, TLS for one, does not).
func (w *Writer) Exclusive() bool {
	if w.raw == nil {
		return false
	}
	_ = w.raw.Control(func(fd uintptr) { w.fd = int(fd) })
	return w.fd >= 0
}

// Vectored reports whether batches go out as one writev (their payloads
// need not be copied into Head).
func (w *Writer) Vectored() bool { return w.raw != nil }

// Write writes b whole and reports the bytes written. It waits while the
// socket is full, until the connection's write deadline. It does not
// reset b.
func (w *Writer) Write(b *Batch) (int, error) {
	if b.Len() == 0 {
		return 0, nil
	}
	if w.raw == nil {
		if len(b.refs) > 0 {
			return 0, errors.New("batchio: referenced payloads on a connection that is not vectored")
		}
		return w.conn.Write(b.Head)
	}
	w.build(b)
	w.iov, w.n, w.err = w.vec, 0, nil
	var err error
	if w.fd < 0 || !w.writev(uintptr(w.fd)) {
		err = w.raw.Write(w.wfn) // what is left, once the socket has room
	}
	return w.n, w.done(err)
}

// TryWrite writes b without waiting: done is false when the socket filled
// first, and what is left is pending until Finish writes it (b must not
// change meanwhile). An Exclusive writer writes straight to the socket;
// another goes through the poller's lock, which keeps the socket open
// during the write, but still does not wait for room. On a connection
// that is not vectored (TLS) it is Write.
func (w *Writer) TryWrite(b *Batch) (n int, done bool, err error) {
	if w.raw == nil || b.Len() == 0 {
		n, err = w.Write(b)
		return n, true, err
	}
	w.build(b)
	w.iov, w.n, w.err = w.vec, 0, nil
	if w.fd >= 0 {
		if !w.writev(uintptr(w.fd)) {
			return w.n, false, nil // pending: Finish
		}
	} else {
		w.full = false
		if err := w.raw.Write(w.tfn); err != nil {
			return w.n, true, w.done(err)
		}
		if w.full {
			return w.n, false, nil // pending: Finish
		}
	}
	n, err = w.n, w.done(nil)
	return n, true, err
}

// tryWritev is the RawConn.Write callback of TryWrite: it writes what
// fits and never lets the poller wait.
func (w *Writer) tryWritev(fd uintptr) bool {
	w.full = !w.writev(fd)
	return true
}

// Finish writes what TryWrite left pending, waiting for room until the
// connection's write deadline, and reports the bytes it wrote.
func (w *Writer) Finish() (int, error) {
	w.n, w.err = 0, nil
	err := w.raw.Write(w.wfn)
	return w.n, w.done(err)
}

// build turns b into w.vec.
func (w *Writer) build(b *Batch) {
	w.vec = w.vec[:0]
	pos := 0
	for _, rf := range b.refs {
		if rf.at > pos {
			w.add(b.Head[pos:rf.at])
		}
		w.add(rf.data)
		pos = rf.at
	}
	if pos < len(b.Head) {
		w.add(b.Head[pos:])
	}
}

// done ends a write: it lets the pieces go and makes the error.
func (w *Writer) done(err error) error {
	clear(w.vec) // let the packets go
	w.vec, w.iov = w.vec[:0], nil
	if cap(w.vec) > vecKeep {
		w.vec = nil // a burst's
	}
	if err == nil && w.err != nil {
		err = &net.OpError{Op: "writev", Net: w.conn.LocalAddr().Network(), Source: w.conn.LocalAddr(), Addr: w.conn.RemoteAddr(), Err: w.err}
	}
	if err != nil {
		return fmt.Errorf("batchio: %w", err)
	}
	return nil
}

func (w *Writer) add(p []byte) {
	if len(p) == 0 {
		return
	}
	var v unix.Iovec
	v.Base = &p[0]
	v.SetLen(len(p))
	w.vec = append(w.vec, v)
}

// writev is the RawConn.Write callback: it writes what is left of w.iov
// and reports false when the socket is full (the poller then waits for
// room, or for the deadline).
func (w *Writer) writev(fd uintptr) bool {
	for len(w.iov) > 0 {
		cnt := min(len(w.iov), maxIOV)
		// The pieces are kept alive by w.iov and the batch (and the heap
		// does not move), so the uintptr is safe for the call.
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(cnt))
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			w.err = e
			return true
		}
		w.n += int(n)
		w.consume(int(n))
	}
	return true
}

// consume drops the first n written bytes from w.iov.
func (w *Writer) consume(n int) {
	i := 0
	for i < len(w.iov) && n >= int(w.iov[i].Len) {
		n -= int(w.iov[i].Len)
		i++
	}
	w.iov = w.iov[i:]
	if n > 0 && len(w.iov) > 0 {
		v := &w.iov[0]
		v.Base = (*byte)(unsafe.Add(unsafe.Pointer(v.Base), n))
		v.SetLen(int(v.Len) - n)
	}
}

// Reader reads a connection with raw, non-blocking read system calls
// through its syscall.RawConn (waiting in the network poller, with the
// connection's read deadline), for the same reason Writer writes that
// way. On a connection that is not a TCP or Unix socket it is c.Read.
type Reader struct {
	conn net.Conn
	raw  syscall.RawConn
	buf  []byte
	n    int
	err  error
	eof  bool
	rfn  func(fd uintptr) bool
}

// NewReader returns a reader of c (looked through as NewWriter does).
func NewReader(c net.Conn) *Reader {
	r := &Reader{conn: c, raw: rawConn(c)}
	if r.raw != nil {
		r.rfn = r.read
	}
	return r
}

// Read reads into p, as net.Conn's Read does.
func (r *Reader) Read(p []byte) (int, error) {
	if r.raw == nil || len(p) == 0 {
		return r.conn.Read(p)
	}
	r.buf, r.n, r.err, r.eof = p, 0, nil, false
	err := r.raw.Read(r.rfn)
	r.buf = nil
	if err != nil {
		return 0, fmt.Errorf("batchio: %w", err)
	}
	if r.eof {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, &net.OpError{Op: "read", Net: r.conn.LocalAddr().Network(), Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: r.err}
	}
	return r.n, nil
}

func (r *Reader) read(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
		switch e {
		case 0:
			r.eof = n == 0
			r.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.err = e
			return true
		}
	}
}
