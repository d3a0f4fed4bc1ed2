package origin

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/livefuse/livefuse/av"
)

const (
	// flvHeadSize is the initial size of a player's buffer of tag headers
	// (and, without writev, of whole tags): a batch of a video frame and
	// the audio before it needs well under 1 KiB. A GOP burst's larger
	// buffer is let go after it (reset).
	flvHeadSize = 2 << 10
	// flvInline: payloads shorter than this are copied next to their tag
	// header (AAC frames, metadata); longer ones (video) are written from
	// the packet itself. A copy this small costs less than an iovec.
	flvInline = 512
)

// flvOut writes one HTTP-FLV response. A batch of tags is built with
// appendRaw/appendTag and written with flush.
//
// On a hijacked TCP connection a batch is one writev: head holds the tag
// headers, small payloads and PreviousTagSize fields; refs point at the
// payloads that stay in the shared packets, to be written between the
// bytes of head.
type flvOut struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	conn     net.Conn      // hijacked connection; nil: write through w
	wconn    net.Conn      // what batches are written to: conn, or the TCP connection it wraps
	vec      bool          // conn takes net.Buffers as one writev
	readDone chan struct{} // closed when the connection watcher ends
	maxLag   time.Duration
	deadline time.Time // current write deadline of conn

	inline int // payloads shorter than this are copied into head
	head   []byte
	refs   []flvRef
	iov    [][]byte
	bufs   net.Buffers // WriteTo consumes it; a field, so it does not escape per write
}

// flvRef is a payload written from the packet, before head[at:].
type flvRef struct {
	at   int
	data []byte
}

// newFLVOut starts the response: on HTTP/1.x it takes the connection over
// and writes the status line and headers itself; gone is called when the
// player closes the connection. Otherwise it sends the headers through w.
func newFLVOut(w http.ResponseWriter, r *http.Request, gone context.CancelFunc, maxLag time.Duration) (*flvOut, error) {
	o := &flvOut{w: w, rc: http.NewResponseController(w), maxLag: maxLag, head: make([]byte, 0, flvHeadSize)}
	if r.ProtoMajor == 1 {
		if conn, _, err := o.rc.Hijack(); err == nil {
			return o, o.hijacked(conn, gone)
		}
	}
	o.inline = math.MaxInt
	w.WriteHeader(http.StatusOK)
	return o, o.rc.Flush()
}

// hijacked writes the response header on conn and starts watching it for
// the player's end.
func (o *flvOut) hijacked(conn net.Conn, gone context.CancelFunc) error {
	o.conn, o.wconn = conn, conn
	// A listener wrapper (netguard's connection caps) hides the TCP
	// connection: write the batches to it (one writev), close through
	// the wrapper (which gives the slot back).
	if u, ok := conn.(interface{ Unwrap() net.Conn }); ok {
		if inner := u.Unwrap(); inner != nil {
			o.wconn = inner
		}
	}
	switch o.wconn.(type) {
	case *net.TCPConn, *net.UnixConn:
		o.vec, o.inline = true, flvInline
	default: // TLS: one flat write per batch is one record
		o.inline = math.MaxInt
	}
	_ = conn.SetDeadline(time.Time{}) // whatever the server set for reading the request
	o.readDone = make(chan struct{})
	go func() {
		defer close(o.readDone)
		// The player sends nothing more; a read ends when it goes away
		// (or when close closes the connection).
		var b [256]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				gone()
				return
			}
		}
	}()
	hdr := o.w.Header().Clone()
	hdr.Set("Connection", "close")
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	hdr.Del("Content-Length")
	hdr.Del("Transfer-Encoding")
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = hdr.Write(&b)
	b.WriteString("\r\n")
	o.deadline = time.Now().Add(o.maxLag)
	if err := conn.SetWriteDeadline(o.deadline); err != nil {
		return err
	}
	_, err := conn.Write(b.Bytes())
	return err
}

// close ends the response: it closes a hijacked connection.
func (o *flvOut) close() {
	if o.conn == nil {
		// Do not let the last write deadline outlive this response on a
		// kept-alive connection.
		_ = o.rc.SetWriteDeadline(time.Time{})
		return
	}
	o.conn.Close()
	<-o.readDone
}

// reset starts a new batch.
func (o *flvOut) reset() {
	if cap(o.head) > 8*flvHeadSize && len(o.head) < flvHeadSize {
		o.head = make([]byte, 0, flvHeadSize) // let a burst's buffer go
	}
	o.head = o.head[:0]
	o.refs = o.refs[:0]
}

// appendRaw adds bytes to the batch.
func (o *flvOut) appendRaw(b []byte) { o.head = append(o.head, b...) }

// appendTag adds p's FLV tag to the batch, the same bytes av.AppendTag
// makes. A packet FLV cannot carry adds nothing.
func (o *flvOut) appendTag(p *av.Packet) {
	start := len(o.head)
	o.head = append(o.head, make([]byte, av.TagHeaderSize)...)
	hp := *p // the tag body's header bytes only
	hp.Data = nil
	var (
		tagType uint8
		ts      uint32
	)
	o.head, tagType, ts = av.AppendTagBody(o.head, &hp)
	if tagType == 0 {
		o.head = o.head[:start]
		return
	}
	if p.Kind == av.KindData && av.IsMetaDataBody(p.Data) {
		ts = 0 // as AppendTagBody does for the whole packet
	}
	size := len(o.head) - start - av.TagHeaderSize + len(p.Data)
	switch {
	case len(p.Data) < o.inline:
		o.head = append(o.head, p.Data...)
	default:
		o.refs = append(o.refs, flvRef{at: len(o.head), data: p.Data})
	}
	b := o.head[start:]
	b[0] = tagType
	b[1], b[2], b[3] = byte(size>>16), byte(size>>8), byte(size)
	b[4], b[5], b[6] = byte(ts>>16), byte(ts>>8), byte(ts)
	b[7] = byte(ts >> 24) // TimestampExtended
	b[8], b[9], b[10] = 0, 0, 0
	o.head = binary.BigEndian.AppendUint32(o.head, uint32(av.TagHeaderSize+size))
}

// flush writes the batch and reports the bytes written.
func (o *flvOut) flush() (int, error) {
	if len(o.head) == 0 {
		return 0, nil // every tag starts in head
	}
	now := time.Now()
	if o.conn == nil {
		_ = o.rc.SetWriteDeadline(now.Add(o.maxLag))
		n, err := o.w.Write(o.head)
		if err == nil {
			err = o.rc.Flush()
		}
		return n, err
	}
	// A stalled player ends after between 3/4 and all of max_lag; moving
	// the deadline at every write would cost a timer update per write.
	if d := now.Add(o.maxLag); d.Sub(o.deadline) > o.maxLag/4 {
		o.deadline = d
		if err := o.conn.SetWriteDeadline(d); err != nil {
			return 0, err
		}
	}
	if !o.vec {
		return o.wconn.Write(o.head)
	}
	o.iov = o.iov[:0]
	pos := 0
	for _, rf := range o.refs {
		if rf.at > pos {
			o.iov = append(o.iov, o.head[pos:rf.at])
		}
		o.iov = append(o.iov, rf.data)
		pos = rf.at
	}
	if pos < len(o.head) {
		o.iov = append(o.iov, o.head[pos:])
	}
	o.bufs = o.iov
	n, err := o.bufs.WriteTo(o.wconn)
	clear(o.iov) // let the packets go
	clear(o.refs)
	o.bufs = nil
	return int(n), err
}
