package origin

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/batchio"
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
	// flvHeadKeep is the largest buffer of tag headers a player keeps
	// between batches; a batch is written when it reaches it (full).
	flvHeadKeep = 4 * flvHeadSize
	// flvBatchBytes is the most a batch holds before it is written.
	flvBatchBytes = 256 << 10
)

// flvOut writes one HTTP-FLV response. A batch of tags is built with
// appendRaw/appendTag and written with flush.
//
// On a hijacked TCP connection a batch is one writev (batchio): the tag
// headers, small payloads and PreviousTagSize fields are the player's
// own bytes, the payloads stay in the shared packets.
type flvOut struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	conn     net.Conn // hijacked connection; nil: write through w
	bw       *batchio.Writer
	readDone chan struct{} // closed when the connection watcher ends
	maxLag   time.Duration
	deadline time.Time // current write deadline of conn
	direct   bool      // batches go straight to the socket (tryFlush can be used)

	b *batchio.Batch
}

// newFLVOut starts the response: on HTTP/1.x it takes the connection over
// and writes the status line and headers itself; gone is called when the
// player closes the connection. Otherwise it sends the headers through w.
func newFLVOut(w http.ResponseWriter, r *http.Request, gone context.CancelFunc, maxLag time.Duration) (*flvOut, error) {
	o := &flvOut{w: w, rc: http.NewResponseController(w), maxLag: maxLag, b: batchio.NewBatch(flvHeadSize, flvInline)}
	if r.ProtoMajor == 1 {
		if conn, _, err := o.rc.Hijack(); err == nil {
			return o, o.hijacked(conn, gone)
		}
	}
	o.b.Flatten()
	w.WriteHeader(http.StatusOK)
	return o, o.rc.Flush()
}

// hijacked writes the response header on conn and starts watching it for
// the player's end.
func (o *flvOut) hijacked(conn net.Conn, gone context.CancelFunc) error {
	// A listener wrapper (netguard's connection caps) hides the TCP
	// connection: batchio writes the batches to it (one writev); the
	// connection is closed through the wrapper (which gives the slot
	// back).
	o.conn, o.bw = conn, batchio.NewWriter(conn)
	o.direct = o.bw.Exclusive() // only close, from the player's writer, closes conn
	if !o.bw.Vectored() {       // TLS: one flat write per batch is one record
		o.b.Flatten()
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
	// The response is net/http's no more: let it (and with it the
	// connection's buffers) go.
	o.w, o.rc = nil, nil
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

// reset starts a new batch, letting a burst's buffers go.
func (o *flvOut) reset() { o.b.Reset(flvHeadKeep, 16) }

// full reports whether the batch should be written before more is added
// (a GOP burst, a long flv_coalesce): its own bytes have reached
// flvHeadKeep, or it holds flvBatchBytes.
func (o *flvOut) full() bool {
	return len(o.b.Head) >= flvHeadKeep || o.b.Len() >= flvBatchBytes
}

// appendRaw adds bytes to the batch.
func (o *flvOut) appendRaw(b []byte) { o.b.Head = append(o.b.Head, b...) }

// appendTag adds p's FLV tag to the batch, the same bytes av.AppendTag
// makes. A packet FLV cannot carry adds nothing.
func (o *flvOut) appendTag(p *av.Packet) {
	start := len(o.b.Head)
	o.b.Head = append(o.b.Head, make([]byte, av.TagHeaderSize)...)
	hp := *p // the tag body's header bytes only
	hp.Data = nil
	var (
		tagType uint8
		ts      uint32
	)
	o.b.Head, tagType, ts = av.AppendTagBody(o.b.Head, &hp)
	if tagType == 0 {
		o.b.Head = o.b.Head[:start]
		return
	}
	if p.Kind == av.KindData && av.IsMetaDataBody(p.Data) {
		ts = 0 // as AppendTagBody does for the whole packet
	}
	size := len(o.b.Head) - start - av.TagHeaderSize + len(p.Data)
	o.b.Add(p.Data)
	b := o.b.Head[start:]
	b[0] = tagType
	b[1], b[2], b[3] = byte(size>>16), byte(size>>8), byte(size)
	b[4], b[5], b[6] = byte(ts>>16), byte(ts>>8), byte(ts)
	b[7] = byte(ts >> 24) // TimestampExtended
	b[8], b[9], b[10] = 0, 0, 0
	o.b.Head = binary.BigEndian.AppendUint32(o.b.Head, uint32(av.TagHeaderSize+size))
}

// flush writes the batch and reports the bytes written.
func (o *flvOut) flush() (int, error) {
	if o.b.Len() == 0 {
		return 0, nil
	}
	now := time.Now()
	if o.conn == nil {
		_ = o.rc.SetWriteDeadline(now.Add(o.maxLag))
		n, err := o.w.Write(o.b.Head)
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
	return o.bw.Write(o.b)
}

// tryFlush writes the batch without waiting (a group writer's turn): done
// is false when the socket filled first; finish then writes the rest.
func (o *flvOut) tryFlush() (n int, done bool, err error) {
	return o.bw.TryWrite(o.b)
}

// finish writes what tryFlush left, waiting until a fresh write deadline.
func (o *flvOut) finish() (int, error) {
	o.deadline = time.Now().Add(o.maxLag)
	if err := o.conn.SetWriteDeadline(o.deadline); err != nil {
		return 0, err
	}
	return o.bw.Finish()
}
