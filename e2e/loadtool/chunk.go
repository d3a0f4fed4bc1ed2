package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// chunkReader reassembles RTMP messages from chunks (RTMP 1.0 section 5.3).
// go-rtmp's ChunkStreamer allocates per chunk and its client has no play
// side, and a thousand players on two cores cannot afford either, so the
// load tool reads with this instead: no allocation once each chunk stream's
// buffer has grown, and a message is valid only until the next read.
type chunkReader struct {
	r         *bufio.Reader
	chunkSize uint32
	maxMsg    uint32
	streams   []chunkStream // by chunk stream id, grown on demand
	hdr       [11]byte
}

// chunkStream is the header state a chunk stream carries between chunks.
type chunkStream struct {
	used     bool
	ts       uint32
	delta    uint32
	length   uint32
	typeID   uint8
	streamID uint32
	extTS    bool   // the last header had an extended timestamp
	extVal   uint32 // and its value
	buf      []byte // the message being assembled
	open     bool   // buf holds part of a message
}

// rtmpMessage is one reassembled message. Data aliases the reader's buffer.
type rtmpMessage struct {
	TypeID    uint8
	StreamID  uint32
	Timestamp uint32
	Data      []byte
}

const (
	defaultChunkSize = 128
	maxChunkStreamID = 1024 // we see a handful; refuse silly ids
	maxMessageSize   = 4 << 20
)

var errChunk = errors.New("rtmp chunk")

func newChunkReader(r *bufio.Reader) *chunkReader {
	return &chunkReader{r: r, chunkSize: defaultChunkSize, maxMsg: maxMessageSize}
}

// setChunkSize applies a SetChunkSize message from the peer.
func (c *chunkReader) setChunkSize(n uint32) error {
	n &= 0x7fffffff
	if n == 0 || n > 0xffffff {
		return fmt.Errorf("%w: chunk size %d", errChunk, n)
	}
	c.chunkSize = n
	return nil
}

func uint24(b []byte) uint32 {
	return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
}

// readMessage reads chunks until one message is complete.
func (c *chunkReader) readMessage() (rtmpMessage, error) {
	for {
		m, done, err := c.readChunk()
		if err != nil || done {
			return m, err
		}
	}
}

func (c *chunkReader) readChunk() (rtmpMessage, bool, error) {
	b0, err := c.r.ReadByte()
	if err != nil {
		return rtmpMessage{}, false, err
	}
	format := b0 >> 6
	csid := uint32(b0 & 0x3f)
	switch csid {
	case 0:
		b, err := c.r.ReadByte()
		if err != nil {
			return rtmpMessage{}, false, unexpectedEOF(err)
		}
		csid = uint32(b) + 64
	case 1:
		if _, err := io.ReadFull(c.r, c.hdr[:2]); err != nil {
			return rtmpMessage{}, false, unexpectedEOF(err)
		}
		csid = uint32(c.hdr[1])<<8 + uint32(c.hdr[0]) + 64
	}
	if csid >= maxChunkStreamID {
		return rtmpMessage{}, false, fmt.Errorf("%w: chunk stream id %d", errChunk, csid)
	}
	if int(csid) >= len(c.streams) {
		c.streams = append(c.streams, make([]chunkStream, int(csid)+1-len(c.streams))...)
	}
	cs := &c.streams[csid]

	hlen := [4]int{11, 7, 3, 0}[format]
	if hlen > 0 {
		if cs.open {
			return rtmpMessage{}, false, fmt.Errorf("%w: new header on chunk stream %d inside a message", errChunk, csid)
		}
		if _, err := io.ReadFull(c.r, c.hdr[:hlen]); err != nil {
			return rtmpMessage{}, false, unexpectedEOF(err)
		}
	} else if !cs.used {
		return rtmpMessage{}, false, fmt.Errorf("%w: type 3 chunk on new chunk stream %d", errChunk, csid)
	}
	if format == 1 && !cs.used || format == 2 && !cs.used {
		return rtmpMessage{}, false, fmt.Errorf("%w: type %d chunk on new chunk stream %d", errChunk, format, csid)
	}

	if hlen > 0 {
		tsField := uint24(c.hdr[:3])
		if format <= 1 {
			cs.length = uint24(c.hdr[3:6])
			cs.typeID = c.hdr[6]
		}
		if format == 0 {
			cs.streamID = binary.LittleEndian.Uint32(c.hdr[7:11])
		}
		cs.extTS = tsField == 0xffffff
		if cs.extTS {
			if _, err := io.ReadFull(c.r, c.hdr[:4]); err != nil {
				return rtmpMessage{}, false, unexpectedEOF(err)
			}
			tsField = binary.BigEndian.Uint32(c.hdr[:4])
			cs.extVal = tsField
		}
		if format == 0 {
			cs.ts = tsField
			cs.delta = 0
		} else {
			cs.delta = tsField
			cs.ts += tsField
		}
		cs.used = true
	} else {
		if cs.extTS {
			// Writers disagree on whether type 3 chunks repeat the extended
			// timestamp (go-rtmp does not, FFmpeg does): take it when the
			// next 4 bytes are that value.
			if p, err := c.r.Peek(4); err == nil && binary.BigEndian.Uint32(p) == cs.extVal {
				_, _ = c.r.Discard(4)
			}
		}
		if !cs.open {
			cs.ts += cs.delta // a new message with the previous header
		}
	}
	if cs.length > c.maxMsg {
		return rtmpMessage{}, false, fmt.Errorf("%w: message of %d bytes, limit %d", errChunk, cs.length, c.maxMsg)
	}
	if !cs.open {
		cs.buf = cs.buf[:0]
	}
	n := min(cs.length-uint32(len(cs.buf)), c.chunkSize)
	start := len(cs.buf)
	cs.buf = growLen(cs.buf, int(n))
	if _, err := io.ReadFull(c.r, cs.buf[start:]); err != nil {
		return rtmpMessage{}, false, unexpectedEOF(err)
	}
	if uint32(len(cs.buf)) < cs.length {
		cs.open = true
		return rtmpMessage{}, false, nil
	}
	cs.open = false
	return rtmpMessage{TypeID: cs.typeID, StreamID: cs.streamID, Timestamp: cs.ts, Data: cs.buf}, true, nil
}

// growLen extends b by n bytes, reallocating only when the capacity is short.
func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), max(2*cap(b), len(b)+n, 4096))
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
