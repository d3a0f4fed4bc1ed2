package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/batchio"
)

// This file holds the RTMP chunk framing livefuse does itself (RTMP
// specification §5.3): a parser that checks every chunk header a peer sends
// before go-rtmp sees it (go-rtmp trusts declared message lengths and panics
// on some malformed headers), a writer for messages sent around go-rtmp's
// chunk scheduler (RTMP play output), and the net.Conn wrapper that puts
// both, plus deadlines, between a socket and go-rtmp.

const (
	// rtmpHandshakeSize is C0+C1+C2, what a client sends before chunks.
	rtmpHandshakeSize = 1 + 1536 + 1536
	rtmpVersion       = 3
	// rtmpDefaultChunkSize is the chunk size both sides start with.
	rtmpDefaultChunkSize = 128
	// rtmpMaxChunkSize is the largest chunk size go-rtmp accepts; larger
	// Set Chunk Size values are clamped to it, as go-rtmp does.
	rtmpMaxChunkSize = 0xffffff
	// rtmpMaxChunkStreams bounds the chunk streams one peer may open: each
	// one may hold a message buffer. Encoders use fewer than ten.
	rtmpMaxChunkStreams = 32
	// rtmpMaxPayload is the largest message length a chunk header can carry.
	rtmpMaxPayload = 0xffffff
)

// Chunk stream IDs livefuse writes on directly, around go-rtmp's writer.
// go-rtmp answers on ID 2 and on the IDs the client uses for its commands
// (3 to 8 for common clients), so the direct writer keeps to IDs of its own:
// two writers on one chunk stream would break each other's header
// compression.
const (
	rtmpCSIDControl = 2 // protocol and user control (see rtmpUserControl)
	rtmpCSIDStatus  = 20
	rtmpCSIDAudio   = 21
	rtmpCSIDVideo   = 22
)

// rtmpProtocolError is a violation of RTMP framing by the peer.
type rtmpProtocolError struct{ msg string }

func (e *rtmpProtocolError) Error() string { return "rtmp protocol: " + e.msg }

func rtmpProtoErrorf(format string, args ...any) error {
	return &rtmpProtocolError{msg: fmt.Sprintf(format, args...)}
}

// rtmpChunkStream is the receive state of one chunk stream.
type rtmpChunkStream struct {
	id        uint32
	timestamp uint32 // of the current message
	delta     uint32
	length    uint32 // of the current message
	typeID    uint8
	streamID  uint32
	got       uint32 // payload bytes of the current message received so far
	ext       bool   // the last type 0-2 header carried an extended timestamp
	ctl       [4]byte
	buf       []byte // assembled payload (readMessage, and messages rtmpNetConn holds)
	hdr       []byte // raw first chunk header of a message rtmpNetConn holds
}

func (cs *rtmpChunkStream) complete() bool { return cs.length > 0 && cs.got == cs.length }

// rtmpChunkParser reads chunk headers and tracks message boundaries and the
// peer's chunk size. It never trusts a length before checking it.
type rtmpChunkParser struct {
	chunkSize  uint32
	maxMessage uint32
	// preAuth applies the bounds of a connection not yet authorized:
	// messages of at most preAuthMax bytes on at most
	// rtmpPreAuthChunkStreams chunk streams.
	preAuth    bool
	preAuthMax uint32
	// preAuthScope says in refusals when the bounds apply ("" for
	// "before publish or play").
	preAuthScope string
	// budget is charged with the payload bytes of incomplete messages.
	budget  budgetShare
	streams map[uint32]*rtmpChunkStream
	// raw holds the bytes of the last header as go-rtmp reads them: the
	// extended timestamp of a type 3 chunk, which go-rtmp does not expect,
	// is left out.
	raw []byte
	b   [11]byte
}

func newRTMPChunkParser(maxMessage int) *rtmpChunkParser {
	if maxMessage <= 0 || maxMessage > rtmpMaxPayload {
		maxMessage = rtmpMaxPayload
	}
	return &rtmpChunkParser{
		chunkSize:  rtmpDefaultChunkSize,
		maxMessage: uint32(maxMessage),
		streams:    make(map[uint32]*rtmpChunkStream),
		raw:        make([]byte, 0, 18),
	}
}

func (p *rtmpChunkParser) scope() string {
	if p.preAuthScope == "" {
		return "before publish or play"
	}
	return p.preAuthScope
}

func rtmpBE24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

// next reads one chunk header and returns its chunk stream and the number
// of payload bytes of this chunk, which the caller reads and passes to
// consume before calling next again.
func (p *rtmpChunkParser) next(r io.Reader) (*rtmpChunkStream, uint32, error) {
	b := p.b[:]
	raw := p.raw[:0]
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return nil, 0, err
	}
	raw = append(raw, b[0])
	format := b[0] >> 6
	csid := uint32(b[0] & 0x3f)
	switch csid {
	case 0:
		if _, err := io.ReadFull(r, b[:1]); err != nil {
			return nil, 0, noEOF(err)
		}
		raw = append(raw, b[0])
		csid = 64 + uint32(b[0])
	case 1:
		if _, err := io.ReadFull(r, b[:2]); err != nil {
			return nil, 0, noEOF(err)
		}
		raw = append(raw, b[0], b[1])
		csid = 64 + uint32(b[0]) + uint32(b[1])*256
	}
	cs := p.streams[csid]
	if cs == nil {
		if p.preAuth && len(p.streams) >= rtmpPreAuthChunkStreams {
			return nil, 0, limitErrorf(limitPreAuthStreams, "more than %d chunk streams %s", rtmpPreAuthChunkStreams, p.scope())
		}
		if len(p.streams) >= rtmpMaxChunkStreams {
			return nil, 0, rtmpProtoErrorf("more than %d chunk streams", rtmpMaxChunkStreams)
		}
		cs = &rtmpChunkStream{id: csid}
		p.streams[csid] = cs
	}
	inMessage := cs.got > 0 && cs.got < cs.length
	if inMessage && format != 3 {
		return nil, 0, rtmpProtoErrorf("chunk type %d on chunk stream %d before its message of %d bytes was complete (%d)",
			format, csid, cs.length, cs.got)
	}
	n := [4]int{11, 7, 3, 0}[format]
	if _, err := io.ReadFull(r, b[:n]); err != nil {
		return nil, 0, noEOF(err)
	}
	raw = append(raw, b[:n]...)
	var field uint32
	if format < 3 {
		field = rtmpBE24(b[0:3])
	}
	var length uint32
	var typeID uint8
	if format < 2 {
		length, typeID = rtmpBE24(b[3:6]), b[6]
	}
	var streamID uint32
	if format == 0 {
		streamID = binary.LittleEndian.Uint32(b[7:11])
	}
	switch {
	case format < 3:
		cs.ext = field == 0xffffff
		if cs.ext {
			if _, err := io.ReadFull(r, b[:4]); err != nil {
				return nil, 0, noEOF(err)
			}
			raw = append(raw, b[:4]...)
			field = binary.BigEndian.Uint32(b[:4])
		}
	case cs.ext:
		// Type 3 chunks repeat the extended timestamp of their stream's
		// last header (as ffmpeg and librtmp write them); go-rtmp does not
		// read it, so it stays out of raw.
		if _, err := io.ReadFull(r, b[:4]); err != nil {
			return nil, 0, noEOF(err)
		}
	}
	if format < 2 {
		if length == 0 {
			return nil, 0, rtmpProtoErrorf("empty message on chunk stream %d", csid)
		}
		if p.preAuth && length > p.preAuthMax {
			return nil, 0, limitErrorf(limitPreAuthMessage, "message of %d bytes on chunk stream %d %s, limit %d",
				length, csid, p.scope(), p.preAuthMax)
		}
		if length > p.maxMessage {
			return nil, 0, rtmpProtoErrorf("message of %d bytes on chunk stream %d, limit %d", length, csid, p.maxMessage)
		}
		cs.length, cs.typeID = length, typeID
	}
	switch format {
	case 0:
		cs.streamID, cs.timestamp, cs.delta = streamID, field, 0
	case 1, 2:
		cs.delta = field
	}
	if cs.length == 0 {
		return nil, 0, rtmpProtoErrorf("chunk type %d on chunk stream %d, which has no message header yet", format, csid)
	}
	if !inMessage {
		cs.got = 0
		cs.buf = cs.buf[:0]
		if format != 0 {
			cs.timestamp += cs.delta
		}
	}
	size := min(cs.length-cs.got, p.chunkSize)
	// A message is charged whole when its first chunk arrives, before a
	// byte of it is read: its reader (readMessage, hold, go-rtmp) may
	// hold a buffer of its declared length from then on.
	if !inMessage {
		if err := p.budget.take(int64(cs.length), p.preAuth); err != nil {
			return nil, 0, err
		}
	}
	p.raw = raw
	return cs, size, nil
}

// consume accounts for payload bytes b of cs (giving the message's bytes
// back to the budget once it is complete) and applies a completed Set
// Chunk Size message.
func (p *rtmpChunkParser) consume(cs *rtmpChunkStream, b []byte) error {
	if cs.typeID == uint8(message.TypeIDSetChunkSize) && cs.got < 4 {
		copy(cs.ctl[cs.got:], b)
	}
	cs.got += uint32(len(b))
	if cs.complete() {
		p.budget.give(int64(cs.length))
	}
	if !cs.complete() || cs.typeID != uint8(message.TypeIDSetChunkSize) {
		return nil
	}
	if cs.length < 4 {
		return rtmpProtoErrorf("set chunk size message of %d bytes", cs.length)
	}
	size := binary.BigEndian.Uint32(cs.ctl[:])
	if size == 0 || size&0x80000000 != 0 {
		return rtmpProtoErrorf("invalid chunk size %#x", size)
	}
	p.chunkSize = min(size, rtmpMaxChunkSize)
	return nil
}

// readMessage reads chunks until a message is complete and returns its
// chunk stream; the payload is cs.buf, valid until the next call.
func (p *rtmpChunkParser) readMessage(r io.Reader) (*rtmpChunkStream, error) {
	for {
		cs, n, err := p.next(r)
		if err != nil {
			return nil, err
		}
		start := len(cs.buf)
		if start == 0 {
			// One allocation of the declared length (charged to the
			// budget by next); growing chunk by chunk held about twice that.
			cs.buf = slices.Grow(cs.buf, int(cs.length))
		}
		cs.buf = slices.Grow(cs.buf, int(n))[:start+int(n)]
		if _, err := io.ReadFull(r, cs.buf[start:]); err != nil {
			return nil, noEOF(err)
		}
		if err := p.consume(cs, cs.buf[start:]); err != nil {
			return nil, err
		}
		if cs.complete() {
			return cs, nil
		}
	}
}

// noEOF turns io.EOF in the middle of a structure into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func rtmpAppendBasicHeader(dst []byte, format byte, csid uint32) []byte {
	switch {
	case csid < 64:
		return append(dst, format<<6|byte(csid))
	case csid < 320:
		return append(dst, format<<6, byte(csid-64))
	default:
		return append(dst, format<<6|1, byte((csid-64)&0xff), byte((csid-64)>>8))
	}
}

// rtmpAppendMessage appends one message as chunks of at most chunkSize
// payload bytes: a type 0 header (so the result does not depend on what was
// sent before on csid), then type 3 headers, which repeat an extended
// timestamp as ffmpeg and librtmp expect. len(payload) must be at most
// rtmpMaxPayload.
func rtmpAppendMessage(dst []byte, csid uint32, typeID uint8, streamID, ts uint32, payload []byte, chunkSize int) []byte {
	ext := ts >= 0xffffff
	field := ts
	if ext {
		field = 0xffffff
	}
	n := len(payload)
	dst = rtmpAppendBasicHeader(dst, 0, csid)
	dst = append(dst, byte(field>>16), byte(field>>8), byte(field), byte(n>>16), byte(n>>8), byte(n), typeID)
	dst = binary.LittleEndian.AppendUint32(dst, streamID)
	if ext {
		dst = binary.BigEndian.AppendUint32(dst, ts)
	}
	for off := 0; ; {
		k := min(chunkSize, n-off)
		dst = append(dst, payload[off:off+k]...)
		off += k
		if off >= n {
			return dst
		}
		dst = rtmpAppendBasicHeader(dst, 3, csid)
		if ext {
			dst = binary.BigEndian.AppendUint32(dst, ts)
		}
	}
}

// rtmpEncode encodes msg with go-rtmp's message encoder and returns its
// type ID and payload.
func rtmpEncode(msg message.Message) (uint8, []byte, error) {
	var buf bytes.Buffer
	if err := message.NewEncoder(&buf).Encode(msg); err != nil {
		return 0, nil, fmt.Errorf("encode rtmp message type %d: %w", msg.TypeID(), err)
	}
	return uint8(msg.TypeID()), buf.Bytes(), nil
}

// rtmpEncodeCommand builds an AMF0 command message payload: name,
// transaction ID, then args (go-rtmp's body values).
func rtmpEncodeCommand(name string, txID int64, args message.AMFConvertible) (uint8, []byte, error) {
	var body bytes.Buffer
	if err := message.EncodeBodyAnyValues(message.NewAMFEncoder(&body, message.EncodingTypeAMF0), args); err != nil {
		return 0, nil, fmt.Errorf("encode rtmp command %s: %w", name, err)
	}
	return rtmpEncode(&message.CommandMessage{
		CommandName:   name,
		TransactionID: txID,
		Encoding:      message.EncodingTypeAMF0,
		Body:          &body,
	})
}

// rtmpOnStatus is an onStatus info object (level, code, description).
type rtmpOnStatus struct{ level, code, description string }

func (s rtmpOnStatus) FromArgs(...any) error { return errors.New("rtmpOnStatus: decode not supported") }

func (s rtmpOnStatus) ToArgs(message.EncodingType) ([]any, error) {
	return []any{nil, map[string]any{"level": s.level, "code": s.code, "description": s.description}}, nil
}

// rtmpDeadlineSlack is how often at most rtmpNetConn moves a deadline: a
// deadline is set per socket call, but not more than once a second.
const rtmpDeadlineSlack = time.Second

// rtmpNetConn sits between a server socket and go-rtmp. It answers the
// handshake itself (rtmp_handshake.go), then checks every chunk header with an
// rtmpChunkParser before handing it on, so an oversized or malformed chunk
// fails the read instead of reaching go-rtmp. Command and data messages
// (AMF0 and AMF3 forms) are held until complete and handed on only once
// av.CheckAMF0 accepted them: go-rtmp decodes them with go-amf0, which
// trusts declared counts and nests without limit. Writes from go-rtmp (one
// whole chunk per call, see rtmpServerConnConfig) and from writeRaw are
// serialized, so the play output can bypass go-rtmp's writer.
//
// Until authorize is called (publish or play accepted) the parser applies
// the pre-authorization bounds and the connection must get there by
// setupBy; a publisher must then send at least minRate bytes a second,
// measured over rateWindow.
type rtmpNetConn struct {
	nc     net.Conn
	raw    *batchio.Reader // reads nc without the runtime's blocking-syscall bookkeeping
	br     *bufio.Reader
	parser *rtmpChunkParser
	log    *slog.Logger // refusals; nil: not logged
	remote string

	// read side: used by go-rtmp's connection goroutine only
	hsLeft    int // handshake bytes go-rtmp has yet to read
	hs        rtmpHandshakeState
	pend      []byte
	left      uint32
	cur       *rtmpChunkStream
	held      []byte        // a held message, re-chunked, being handed on
	readIdle  time.Duration // 0: no read deadline after the handshake
	readSetAt time.Time
	err       error // sticky

	setupTimeout time.Duration // 0: none
	setupBy      time.Time     // set at the end of the handshake
	publishing   bool
	minRate      int64 // bytes a second; 0: none
	rateWindow   time.Duration
	rateFrom     time.Time
	rateBytes    int64

	wmu          sync.Mutex
	goWrites     rtmpWriteWatch // what go-rtmp wrote (rtmp_conn.go)
	writeTimeout time.Duration
	writeSetAt   time.Time

	onReadErr func(error)
	closeOnce sync.Once
	onClose   func()

	// Hand-off of a player's connection (rtmp_play.go): once handoff is
	// set, go-rtmp's reads fail with errRTMPHandoff and its Close leaves
	// the socket open and starts afterHandoff, which then reads alone
	// (handedOff set).
	handoff      atomic.Bool
	handedOff    bool
	afterHandoff func()
}

// rtmpConnLimits are the bounds of one server connection (see RTMPConfig).
type rtmpConnLimits struct {
	preAuthMaxMessage int // 0: no pre-authorization bounds
	setupTimeout      time.Duration
	minRate           int
	rateWindow        time.Duration
	budget            *Budget
}

// limit applies l, logging refusals to log with remote. Call it before the
// first Read.
func (c *rtmpNetConn) limit(l rtmpConnLimits, log *slog.Logger, remote string) {
	c.log, c.remote = log, remote
	if l.preAuthMaxMessage > 0 {
		c.parser.preAuth, c.parser.preAuthMax = true, uint32(l.preAuthMaxMessage)
		c.setupTimeout = l.setupTimeout
	}
	if l.minRate > 0 && l.rateWindow > 0 {
		c.minRate, c.rateWindow = int64(l.minRate), l.rateWindow
	}
	c.parser.budget.b = l.budget
}

func newRTMPNetConn(nc net.Conn, maxMessage int) *rtmpNetConn {
	c := &rtmpNetConn{
		nc:     nc,
		raw:    batchio.NewReader(nc),
		parser: newRTMPChunkParser(maxMessage),
		hsLeft: rtmpHandshakeSize,
	}
	c.br = bufio.NewReaderSize(rtmpDeadlineReader{c}, 16<<10)
	return c
}

// rtmpDeadlineReader refreshes the read deadline before socket reads once
// the handshake is over (during it the deadline set at accept stays), and
// measures a publisher's rate.
type rtmpDeadlineReader struct{ c *rtmpNetConn }

func (r rtmpDeadlineReader) Read(p []byte) (int, error) {
	c := r.c
	if c.hsLeft == 0 && (c.readIdle > 0 || c.parser.preAuth && !c.setupBy.IsZero()) {
		if now := time.Now(); now.Sub(c.readSetAt) >= rtmpDeadlineSlack {
			c.readSetAt = now
			var d time.Time
			if c.readIdle > 0 {
				d = now.Add(c.readIdle)
			}
			if c.parser.preAuth && !c.setupBy.IsZero() && (d.IsZero() || c.setupBy.Before(d)) {
				d = c.setupBy
			}
			_ = c.nc.SetReadDeadline(d)
		}
	}
	n, err := c.raw.Read(p)
	if c.publishing && c.minRate > 0 {
		c.rateBytes += int64(n)
		now := time.Now()
		if el := now.Sub(c.rateFrom); el >= c.rateWindow {
			if float64(c.rateBytes) < float64(c.minRate)*el.Seconds() {
				return n, limitErrorf(limitMinRate, "publisher sent %d bytes in %s, below the minimum of %d bytes/s",
					c.rateBytes, el.Round(time.Millisecond), c.minRate)
			}
			c.rateFrom, c.rateBytes = now, 0
		}
	}
	return n, err
}

// stopReadDeadline removes the read deadline: a player may stay silent
// while it watches. It is called once play is accepted, so it also ends
// the setup deadline. Call it on go-rtmp's connection goroutine.
func (c *rtmpNetConn) stopReadDeadline() {
	c.authorize(false)
	c.readIdle = 0
	_ = c.nc.SetReadDeadline(time.Time{})
}

// authorize ends the setup deadline once publish (publish true) or play
// was accepted. A publisher is freed of the small-message bounds and its
// rate is measured from now; a player keeps them (it sends only control
// messages and commands, and play is often open to anyone). Call it on
// go-rtmp's connection goroutine.
func (c *rtmpNetConn) authorize(publish bool) {
	c.setupBy = time.Time{}
	c.readSetAt = time.Time{} // the next read sets the idle deadline alone
	if publish {
		c.parser.preAuth = false
		c.publishing = true
		c.rateFrom, c.rateBytes = time.Now(), 0
	} else {
		c.parser.preAuthScope = "from a player"
	}
}

func (c *rtmpNetConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if !c.handedOff && c.handoff.Load() {
		return 0, errRTMPHandoff
	}
	n, err := c.read(p)
	if err != nil && !c.handedOff && c.handoff.Load() {
		// The read was woken for the hand-off (a player sends only
		// control messages: nothing was half read).
		return 0, errRTMPHandoff
	}
	if err != nil {
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() && c.hsLeft == 0 && c.parser.preAuth &&
			!c.setupBy.IsZero() && !time.Now().Before(c.setupBy) {
			err = limitErrorf(limitSetupTimeout, "no publish or play within %s of the handshake", c.setupTimeout)
		}
		var lerr *limitError
		if errors.As(err, &lerr) && c.log != nil {
			c.log.Warn("rtmp connection refused", "remote", c.remote, "reason", lerr.reason, "limit", lerr.limit)
		}
		c.err = err
		if c.onReadErr != nil {
			c.onReadErr(err)
		}
	}
	return n, err
}

func (c *rtmpNetConn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.hsLeft > 0 {
		n, err := c.readHandshake(p) // rtmp_handshake.go
		if c.hsLeft == 0 && c.parser.preAuth && c.setupTimeout > 0 {
			c.setupBy = time.Now().Add(c.setupTimeout)
		}
		return n, err
	}
	for len(c.pend) == 0 && c.left == 0 {
		cs, n, err := c.parser.next(c.br)
		if err != nil {
			return 0, err
		}
		if rtmpAMFMessage(cs.typeID) {
			if err := c.hold(cs, n); err != nil {
				return 0, err
			}
			continue
		}
		c.cur, c.left = cs, n
		k := copy(p, c.parser.raw)
		c.pend = c.parser.raw[k:]
		return k, nil
	}
	if len(c.pend) > 0 {
		n := copy(p, c.pend)
		c.pend = c.pend[n:]
		return n, nil
	}
	n, err := c.br.Read(p[:min(uint32(len(p)), c.left)])
	if n > 0 {
		c.left -= uint32(n)
		if perr := c.parser.consume(c.cur, p[:n]); perr != nil {
			return 0, perr
		}
	}
	return n, noEOF(err)
}

// rtmpAMFMessage reports whether messages of typeID carry AMF values that
// go-rtmp decodes: commands and data, in their AMF0 and AMF3 forms.
func rtmpAMFMessage(typeID uint8) bool {
	switch message.TypeID(typeID) {
	case message.TypeIDCommandMessageAMF0, message.TypeIDDataMessageAMF0,
		message.TypeIDCommandMessageAMF3, message.TypeIDDataMessageAMF3:
		return true
	}
	return false
}

// rtmpCheckAMF checks the body of a command or data message (see
// rtmpAMFMessage) with av.CheckAMF0. The AMF3 forms start with one byte
// (0), then AMF0 values as the AMF0 forms; an AMF3 value inside (marker
// 0x11) is refused. The error says which message was refused.
func rtmpCheckAMF(typeID uint8, body []byte) error {
	name := "command"
	switch message.TypeID(typeID) {
	case message.TypeIDDataMessageAMF0, message.TypeIDDataMessageAMF3:
		name = "data"
	}
	switch message.TypeID(typeID) {
	case message.TypeIDCommandMessageAMF3, message.TypeIDDataMessageAMF3:
		if len(body) == 0 {
			return limitErrorf(limitAMF, "%s message (AMF3 form) refused: empty", name)
		}
		body = body[1:]
	}
	if err := av.CheckAMF0(body, av.AMFLimits{}); err != nil {
		return limitErrorf(limitAMF, "%s message refused: %v", name, err)
	}
	return nil
}

// hold reads the n payload bytes of a chunk of cs, a command or data
// message, into cs.buf. Once the message is complete and rtmpCheckAMF
// accepted it, it is queued for go-rtmp: its first chunk header as the
// peer sent it, then the payload in chunks of the current chunk size
// (go-rtmp reads it after every Set Chunk Size before it, which passed
// unheld). No other chunk of cs's chunk stream can come between, so
// go-rtmp's header state stays what the peer meant.
func (c *rtmpNetConn) hold(cs *rtmpChunkStream, n uint32) error {
	if cs.got == 0 {
		cs.hdr = append(cs.hdr[:0], c.parser.raw...)
	}
	start := len(cs.buf)
	if start == 0 {
		// One allocation of the declared length (charged to the
		// budget by next); growing chunk by chunk held about twice that.
		cs.buf = slices.Grow(cs.buf, int(cs.length))
	}
	cs.buf = slices.Grow(cs.buf, int(n))[:start+int(n)]
	if _, err := io.ReadFull(c.br, cs.buf[start:]); err != nil {
		return noEOF(err)
	}
	if err := c.parser.consume(cs, cs.buf[start:]); err != nil {
		return err
	}
	if !cs.complete() {
		return nil
	}
	if err := rtmpCheckAMF(cs.typeID, cs.buf); err != nil {
		return err
	}
	out := append(c.held[:0], cs.hdr...)
	chunk := int(c.parser.chunkSize)
	for off := 0; ; {
		k := min(chunk, len(cs.buf)-off)
		out = append(out, cs.buf[off:off+k]...)
		if off += k; off >= len(cs.buf) {
			break
		}
		out = rtmpAppendBasicHeader(out, 3, cs.id)
	}
	c.held, c.pend = out, out
	if cap(cs.buf) > rtmpKeepBuffer {
		cs.buf = nil
	}
	if cap(c.held) > rtmpKeepBuffer {
		c.held = nil // c.pend keeps it until handed on
	}
	return nil
}

// rtmpKeepBuffer is the largest buffer a connection keeps between messages.
const rtmpKeepBuffer = 64 << 10

// Write is go-rtmp's path to the socket.
func (c *rtmpNetConn) Write(p []byte) (int, error) {
	if c.hs.drop > 0 {
		return c.writeHandshake(p) // rtmp_handshake.go
	}
	n, err := c.writeRaw(p)
	if err == nil {
		c.goWrites.saw(p) // rtmp_conn.go
	}
	return n, err
}

// writeRaw writes p at once, between whole chunks of go-rtmp's writer.
func (c *rtmpNetConn) writeRaw(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeTimeout > 0 {
		if now := time.Now(); now.Sub(c.writeSetAt) >= rtmpDeadlineSlack {
			c.writeSetAt = now
			_ = c.nc.SetWriteDeadline(now.Add(c.writeTimeout))
		}
	}
	return c.nc.Write(p)
}

// writeBatch writes b with w (one writev on the socket under nc), between
// whole chunks of go-rtmp's writer, with nc's write deadline.
func (c *rtmpNetConn) writeBatch(w *batchio.Writer, b *batchio.Batch) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeTimeout > 0 {
		if now := time.Now(); now.Sub(c.writeSetAt) >= rtmpDeadlineSlack {
			c.writeSetAt = now
			_ = c.nc.SetWriteDeadline(now.Add(c.writeTimeout))
		}
	}
	_, err := w.Write(b)
	return err
}

// groupWrites readies the connection for tryBatch: a write that does not
// wait needs no deadline, and an old one would fail it once passed. The
// next write that waits sets one again.
func (c *rtmpNetConn) groupWrites() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeSetAt = time.Time{}
	_ = c.nc.SetWriteDeadline(time.Time{})
}

// tryBatch writes b with w without waiting (batchio's TryWrite); what the
// socket did not take is left for finishBatch.
func (c *rtmpNetConn) tryBatch(w *batchio.Writer, b *batchio.Batch) (done bool, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, done, err = w.TryWrite(b)
	return done, err
}

// finishBatch writes what tryBatch left, waiting for room at most the
// write timeout from now.
func (c *rtmpNetConn) finishBatch(w *batchio.Writer) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeTimeout > 0 {
		c.writeSetAt = time.Now()
		_ = c.nc.SetWriteDeadline(c.writeSetAt.Add(c.writeTimeout))
	}
	_, err := w.Finish()
	return err
}

// Close closes the socket; go-rtmp calls it last when a connection ends.
// After a hand-off go-rtmp's Close only starts afterHandoff.
func (c *rtmpNetConn) Close() error {
	if !c.handedOff && c.handoff.Load() && c.afterHandoff != nil {
		c.handedOff = true
		go c.afterHandoff()
		return nil
	}
	err := c.nc.Close()
	c.parser.budget.release()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}
