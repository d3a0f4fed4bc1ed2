package ingest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/batchio"
)

const (
	// rtmpPlayInline: payload pieces shorter than this are copied next to
	// their chunk headers (AAC frames, metadata); longer ones (video) are
	// written from the shared packet. A copy this small costs less than an
	// iovec.
	rtmpPlayInline = 512
	// rtmpPlayHeadSize is the initial size of a player's header buffer:
	// a video frame's chunk headers and the audio before it.
	rtmpPlayHeadSize = 1 << 10
	// rtmpPlayHeadKeep is the largest header buffer a player keeps between
	// batches: a GOP burst's buffer is let go afterwards.
	rtmpPlayHeadKeep = 2 << 10
	// rtmpPlayRefsKeep is the most payload references a player keeps room
	// for between batches.
	rtmpPlayRefsKeep = 16
)

// rtmpPlayOut builds one RTMP player's batch of media messages and writes
// it at once, as origin's HTTP-FLV writer does (batchio): on a TCP
// connection a batch is one writev whose small pieces (chunk headers, tag
// body headers, short payloads) are the player's own bytes and whose media
// payloads are written straight from the packets every player shares. No
// player copies the stream. Elsewhere (RTMPS) the batch is flat and
// written with one Write, so TLS makes large records.
//
// The bytes are those rtmpAppendMessage makes: a type 0 header per message,
// type 3 headers between its chunks.
type rtmpPlayOut struct {
	rc        *rtmpNetConn
	bw        *batchio.Writer
	b         *batchio.Batch
	chunkSize int
	sid       uint32
	small     [16]byte // a message's tag body header
}

func newRTMPPlayOut(rc *rtmpNetConn, chunkSize int, sid uint32) *rtmpPlayOut {
	o := &rtmpPlayOut{rc: rc, bw: batchio.NewWriter(rc.nc), b: batchio.NewBatch(rtmpPlayHeadSize, rtmpPlayInline), chunkSize: chunkSize, sid: sid}
	if !o.bw.Vectored() {
		o.b.Flatten()
	}
	return o
}

// appendRaw adds ready-made chunks to the batch.
func (o *rtmpPlayOut) appendRaw(b []byte) {
	o.b.Head = append(o.b.Head, b...)
}

// size is the batch's length in bytes.
func (o *rtmpPlayOut) size() int { return o.b.Len() }

// full reports whether the batch should be written before more is added
// (a GOP burst): its own bytes have reached rtmpPlayHeadKeep, or it holds
// rtmpPlayBatch bytes. So a player's buffer never grows past about
// rtmpPlayHeadKeep.
func (o *rtmpPlayOut) full() bool {
	return len(o.b.Head) >= rtmpPlayHeadKeep || o.size() >= rtmpPlayBatch
}

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
	h := rtmpAppendBasicHeader(o.b.Head, 0, csid)
	h = append(h, byte(field>>16), byte(field>>8), byte(field), byte(n>>16), byte(n>>8), byte(n), typeID)
	h = binary.LittleEndian.AppendUint32(h, o.sid)
	if ext {
		h = binary.BigEndian.AppendUint32(h, ts)
	}
	o.b.Head = h
	// The payload is pre then data, cut every chunkSize bytes.
	data := p.Data
	for off := 0; ; {
		k := min(o.chunkSize, n-off)
		if off < len(pre) {
			c := min(k, len(pre)-off)
			o.b.Head = append(o.b.Head, pre[off:off+c]...)
			if c < k {
				o.b.Add(data[:k-c])
				data = data[k-c:]
			}
		} else {
			o.b.Add(data[:k])
			data = data[k:]
		}
		off += k
		if off >= n {
			break
		}
		o.b.Head = rtmpAppendBasicHeader(o.b.Head, 3, csid)
		if ext {
			o.b.Head = binary.BigEndian.AppendUint32(o.b.Head, ts)
		}
	}
}

// flush writes the batch (one writev on TCP) and starts the next one.
func (o *rtmpPlayOut) flush() error {
	if o.size() == 0 {
		return nil
	}
	err := o.rc.writeBatch(o.bw, o.b)
	o.b.Reset(rtmpPlayHeadKeep, rtmpPlayRefsKeep)
	return err
}

// tryFlush writes the batch without waiting (a group writer's turn): done
// is false when the socket filled first; finish then writes the rest.
func (o *rtmpPlayOut) tryFlush() (done bool, err error) {
	if o.size() == 0 {
		return true, nil
	}
	done, err = o.rc.tryBatch(o.bw, o.b)
	if done {
		o.b.Reset(rtmpPlayHeadKeep, rtmpPlayRefsKeep)
	}
	return done, err
}

// finish writes what tryFlush left, waiting until a fresh write deadline,
// and starts the next batch.
func (o *rtmpPlayOut) finish() error {
	err := o.rc.finishBatch(o.bw)
	o.b.Reset(rtmpPlayHeadKeep, rtmpPlayRefsKeep)
	return err
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
