package ingest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"time"

	"github.com/livefuse/livefuse/av"
)

const (
	// rtmpPlayInline: payload pieces shorter than this are copied next to
	// their chunk headers (AAC frames, metadata); longer ones (video) are
	// written from the shared packet. A copy this small costs less than an
	// iovec.
	rtmpPlayInline = 512
	// rtmpPlayHeadKeep is the largest header buffer a player keeps between
	// batches: a GOP burst's buffer is let go afterwards.
	rtmpPlayHeadKeep = 4 << 10
	// rtmpPlayRefsKeep is the most payload references a player keeps room
	// for between batches.
	rtmpPlayRefsKeep = 64
)

// rtmpPlayOut builds one RTMP player's batch of media messages and writes
// it at once, as origin's HTTP-FLV writer does: on a TCP connection a batch
// is one writev whose small pieces (chunk headers, tag body headers, short
// payloads) come from the player's head buffer and whose media payloads are
// written straight from the packets every player shares. No player copies
// the stream. Elsewhere (RTMPS) the batch is copied into head and written
// with one Write, so TLS makes large records.
//
// The bytes are those rtmpAppendMessage makes: a type 0 header per message,
// type 3 headers between its chunks.
type rtmpPlayOut struct {
	rc        *rtmpNetConn
	tcp       *net.TCPConn // nil: no writev, flat batches
	chunkSize int
	sid       uint32
	inline    int

	head     []byte
	refs     []rtmpPlayRef
	iov      [][]byte
	bufs     net.Buffers // WriteTo consumes it; a field, so it does not escape per write
	refBytes int         // bytes in refs
	small    [16]byte    // a message's tag body header
}

// rtmpPlayRef is a payload piece written from the packet, before head[at:].
type rtmpPlayRef struct {
	at   int
	data []byte
}

func newRTMPPlayOut(rc *rtmpNetConn, chunkSize int, sid uint32) *rtmpPlayOut {
	o := &rtmpPlayOut{rc: rc, chunkSize: chunkSize, sid: sid, inline: math.MaxInt}
	nc := rc.nc
	for {
		if t, ok := nc.(*net.TCPConn); ok {
			o.tcp, o.inline = t, rtmpPlayInline
			break
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		if nc = u.Unwrap(); nc == nil {
			break
		}
	}
	return o
}

// appendRaw adds ready-made chunks to the batch.
func (o *rtmpPlayOut) appendRaw(b []byte) {
	o.head = append(o.head, b...)
}

// size is the batch's length in bytes.
func (o *rtmpPlayOut) size() int { return len(o.head) + o.refBytes }

// appendPacket adds p as one RTMP message on its chunk stream; a packet
// RTMP cannot carry (or too large for a message) adds nothing.
func (o *rtmpPlayOut) appendPacket(p *av.Packet) {
	hp := *p // the tag body's header bytes only
	hp.Data = nil
	pre, typeID, ts := av.AppendTagBody(o.small[:0], &hp)
	var csid uint32
	switch typeID {
	case av.TagVideo:
		csid = rtmpCSIDVideo
	case av.TagAudio:
		csid = rtmpCSIDAudio
	case av.TagScript:
		csid = rtmpCSIDStatus
		if av.IsMetaDataBody(p.Data) {
			ts = 0 // as AppendTagBody does for the whole packet
		}
	default:
		return
	}
	n := len(pre) + len(p.Data)
	if n > rtmpMaxPayload {
		return
	}
	ext := ts >= 0xffffff
	field := ts
	if ext {
		field = 0xffffff
	}
	h := rtmpAppendBasicHeader(o.head, 0, csid)
	h = append(h, byte(field>>16), byte(field>>8), byte(field), byte(n>>16), byte(n>>8), byte(n), typeID)
	h = binary.LittleEndian.AppendUint32(h, o.sid)
	if ext {
		h = binary.BigEndian.AppendUint32(h, ts)
	}
	o.head = h
	// The payload is pre then data, cut every chunkSize bytes.
	data := p.Data
	for off := 0; ; {
		k := min(o.chunkSize, n-off)
		if off < len(pre) {
			c := min(k, len(pre)-off)
			o.head = append(o.head, pre[off:off+c]...)
			if c < k {
				o.addData(data[:k-c])
				data = data[k-c:]
			}
		} else {
			o.addData(data[:k])
			data = data[k:]
		}
		off += k
		if off >= n {
			break
		}
		o.head = rtmpAppendBasicHeader(o.head, 3, csid)
		if ext {
			o.head = binary.BigEndian.AppendUint32(o.head, ts)
		}
	}
}

func (o *rtmpPlayOut) addData(b []byte) {
	if len(b) < o.inline {
		o.head = append(o.head, b...)
		return
	}
	o.refs = append(o.refs, rtmpPlayRef{at: len(o.head), data: b})
	o.refBytes += len(b)
}

// flush writes the batch (one writev on TCP) and starts the next one.
func (o *rtmpPlayOut) flush() error {
	if o.size() == 0 {
		return nil
	}
	var err error
	if o.tcp == nil || len(o.refs) == 0 {
		_, err = o.rc.writeRaw(o.head)
	} else {
		o.bufs = o.vectors()
		err = o.rc.writeBuffers(o.tcp, &o.bufs)
		clear(o.iov) // let the packets go
		o.bufs = nil
	}
	o.reset()
	return err
}

// vectors returns the batch as the pieces of one writev.
func (o *rtmpPlayOut) vectors() [][]byte {
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
	return o.iov
}

// reset empties the batch, letting a burst's buffers go.
func (o *rtmpPlayOut) reset() {
	clear(o.refs)
	if cap(o.head) > rtmpPlayHeadKeep {
		o.head = nil
	}
	if cap(o.refs) > rtmpPlayRefsKeep {
		o.refs, o.iov = nil, nil
	}
	o.head, o.refs, o.refBytes = o.head[:0], o.refs[:0], 0
}

// errRTMPHandoff ends go-rtmp's part in a player's connection (handOff).
var errRTMPHandoff = errors.New("rtmp: player connection handed off")

// rtmpPlayerReadBuffer is the read buffer of a player's connection after
// the hand-off: a player sends only acknowledgements and a few commands.
const rtmpPlayerReadBuffer = 512

// handOff takes a player's connection from go-rtmp once Play.Start is out:
// go-rtmp's loop ends (its read fails with errRTMPHandoff, woken by a read
// deadline in the past) and its Close, which leaves the socket open, starts
// readPlayer instead. go-rtmp's per-connection state (a 64 KiB read
// buffer, 8 KiB of buffered reader and writer, two goroutines) is then
// garbage: about 80 KiB of each player's 100.
//
// After the hand-off what the player sends is checked by the chunk parser
// and dropped: acknowledgements, and commands (deleteStream, closeStream,
// pause), which players send right before they close the connection.
func (c *rtmpConn) handOff() {
	c.rc.afterHandoff = c.readPlayer
	c.rc.handoff.Store(true)
	_ = c.rc.nc.SetReadDeadline(time.Now())
}

// readPlayer reads the player's side after the hand-off until it fails
// (the player closed, or endGently's deadline), then ends the play and
// closes the connection.
func (c *rtmpConn) readPlayer() {
	rc := c.rc
	_ = rc.nc.SetReadDeadline(time.Time{})
	if rc.br.Buffered() == 0 {
		rc.br = bufio.NewReaderSize(rtmpDeadlineReader{rc}, rtmpPlayerReadBuffer)
	}
	var buf [rtmpPlayerReadBuffer]byte
	for {
		if _, err := rc.Read(buf[:]); err != nil {
			break
		}
	}
	if c.playCancel != nil {
		c.playCancel()
	}
	_ = rc.Close()
}
