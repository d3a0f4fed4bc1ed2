package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/yutopp/go-rtmp/handshake"
	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// RTMP pull: playing a remote rtmp:// stream into a feed.
//
// go-rtmp v0.0.7's client cannot play: the message stream that
// ClientConn.CreateStream makes has no state handler, so the server's first
// onStatus on it panics in go-rtmp's read loop, and it has no play command.
// Its chunk reader also acks through a writer only a ClientConn sets. So the
// puller reads chunks with rtmpChunkParser and uses go-rtmp for the
// handshake and for encoding and decoding messages.

const (
	rtmpPullDialTimeout  = 10 * time.Second
	rtmpPullSetupTimeout = 10 * time.Second // handshake to play started
	rtmpPullIdleTimeout  = 30 * time.Second // no bytes from the server
	rtmpPullMaxMessage   = 8 << 20
	rtmpPullBufferMs     = 3000
	// rtmpClientPrePlayMessage is the largest message a server may send
	// a pull client before NetStream.Play.Start, and a relay client at
	// any time (it reads only answers, acks and pings): with at most
	// rtmpPreAuthChunkStreams chunk streams, what a hostile server makes
	// a client hold stays under a MiB.
	rtmpClientPrePlayMessage = 64 << 10
)

// runRTMPPull plays src (rtmp://host[:port]/app/name[?query]) and writes its
// packets to w until the connection ends, the remote stream ends, w.Done()
// fires or ctx is done. It does not close w. It returns ctx.Err() when ctx
// ended it, nil when the server ended the stream, otherwise the error.
// Incomplete messages are charged to budget (nil: no budget). A reply
// that passes a bound (AMF check, message size before Play.Start, budget)
// ends the pull with "rtmp pull reply refused" in the log.
func runRTMPPull(ctx context.Context, src string, w FeedWriter, log *slog.Logger, budget *Budget) error {
	if log == nil {
		log = slog.Default()
	}
	target, err := parseRTMPPullURL(src)
	if err != nil {
		return err
	}
	log = log.With("remote", target.redacted)

	d := net.Dialer{Timeout: rtmpPullDialTimeout}
	nc, err := d.DialContext(ctx, "tcp", target.host)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("rtmp pull %s: %w", target.redacted, err)
	}
	defer nc.Close()

	// Unblock reads and writes when ctx ends or the origin drops the feed.
	stop := make(chan struct{})
	watchDone := make(chan struct{})
	dropped := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-ctx.Done():
		case <-w.Done():
			close(dropped)
		case <-stop:
			return
		}
		_ = nc.Close()
	}()
	defer func() {
		close(stop)
		<-watchDone
	}()

	cl := newRTMPPullClient(nc, w, log)
	cl.parser.budget.b = budget
	defer cl.parser.budget.release()
	err = cl.run(target)
	if lerr := (*limitError)(nil); errors.As(err, &lerr) && ctx.Err() == nil {
		log.Warn("rtmp pull reply refused", "reason", lerr.reason, "limit", lerr.limit)
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case isClosed(dropped):
		return fmt.Errorf("rtmp pull %s: feed dropped by the origin", target.redacted)
	case err != nil:
		return fmt.Errorf("rtmp pull %s: %w", target.redacted, err)
	}
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

type rtmpPullTarget struct {
	host     string // host:port
	app      string
	name     string // with query
	tcURL    string
	redacted string
}

func parseRTMPPullURL(src string) (rtmpPullTarget, error) {
	u, err := url.Parse(src)
	if err != nil {
		return rtmpPullTarget{}, fmt.Errorf("rtmp pull: source url: %w", err)
	}
	t := rtmpPullTarget{redacted: u.Redacted()}
	if u.Scheme != "rtmp" {
		return t, fmt.Errorf("rtmp pull %s: scheme %q, want rtmp", t.redacted, u.Scheme)
	}
	if u.Hostname() == "" {
		return t, fmt.Errorf("rtmp pull %s: no host", t.redacted)
	}
	port := u.Port()
	if port == "" {
		port = "1935"
	}
	t.host = net.JoinHostPort(u.Hostname(), port)
	p := strings.Trim(u.Path, "/")
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || i == len(p)-1 {
		return t, fmt.Errorf("rtmp pull %s: path %q, want /app/name", t.redacted, u.Path)
	}
	t.app, t.name = p[:i], p[i+1:]
	if u.RawQuery != "" {
		t.name += "?" + u.RawQuery
	}
	t.tcURL = "rtmp://" + t.host + "/" + t.app
	return t, nil
}

// rtmpPullClient is one pull connection.
type rtmpPullClient struct {
	nc     net.Conn
	cr     *rtmpCountingReader
	br     *bufio.Reader
	parser *rtmpChunkParser
	w      FeedWriter
	log    *slog.Logger

	streamID  uint32
	chunk     int        // outgoing chunk size
	wmu       sync.Mutex // writes (a publishing client writes from two goroutines)
	playing   bool
	ackWindow uint32
	ackedAt   uint32
	out       []byte
	readSetAt time.Time
	packets   int
}

func newRTMPPullClient(nc net.Conn, w FeedWriter, log *slog.Logger) *rtmpPullClient {
	cr := &rtmpCountingReader{r: nc}
	return &rtmpPullClient{
		nc:     nc,
		cr:     cr,
		br:     bufio.NewReaderSize(cr, 16<<10),
		parser: newRTMPClientParser(),
		chunk:  rtmpDefaultChunkSize,
		w:      w,
		log:    log,
	}
}

// newRTMPClientParser returns the chunk parser of a pull or relay client:
// small messages on few chunk streams until lifted by Play.Start.
func newRTMPClientParser() *rtmpChunkParser {
	p := newRTMPChunkParser(rtmpPullMaxMessage)
	p.preAuth, p.preAuthMax = true, rtmpClientPrePlayMessage
	p.preAuthScope = "before Play.Start"
	return p
}

// rtmpCountingReader counts bytes for acknowledgements.
type rtmpCountingReader struct {
	r io.Reader
	n uint32 // wraps, as the RTMP sequence number does
}

func (r *rtmpCountingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += uint32(n)
	return n, err
}

func (cl *rtmpPullClient) run(t rtmpPullTarget) error {
	if err := cl.setup(t); err != nil {
		return err
	}
	if err := cl.sendCommand(8, cl.streamID, "play", 0, rtmpPlayArgs{name: t.name}); err != nil {
		return err
	}
	if err := cl.send(rtmpCSIDControl, 0, &message.UserCtrl{Event: &message.UserCtrlEventSetBufferLength{
		StreamID: cl.streamID, LengthMs: rtmpPullBufferMs,
	}}); err != nil {
		return err
	}
	for {
		if err := cl.step(); err != nil {
			if errors.Is(err, errRTMPPullEnded) {
				cl.log.Info("rtmp pull: remote stream ended", "packets", cl.packets)
				return nil
			}
			return err
		}
	}
}

// setup runs the handshake, connect and createStream (the part of a client
// session that playing and publishing share), with a deadline over all.
func (cl *rtmpPullClient) setup(t rtmpPullTarget) error {
	_ = cl.nc.SetDeadline(time.Now().Add(rtmpPullSetupTimeout))
	if err := handshake.HandshakeWithServer(cl.br, cl.nc, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	return cl.connect(t)
}

// connect sends connect and createStream and reads their answers (every
// reply checked by readMessage before it is decoded).
func (cl *rtmpPullClient) connect(t rtmpPullTarget) error {
	connect := &message.NetConnectionConnect{Command: message.NetConnectionConnectCommand{
		App:          t.app,
		Type:         "nonprivate",
		FlashVer:     "LNX 9,0,124,2",
		TCURL:        t.tcURL,
		Capabilities: 15,
		AudioCodecs:  0x0fff,
		VideoCodecs:  0x00ff,
	}}
	if err := cl.sendCommand(3, 0, "connect", 1, connect); err != nil {
		return err
	}
	if _, err := cl.await(1); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := cl.send(rtmpCSIDControl, 0, &message.WinAckSize{Size: rtmpAckWindow}); err != nil {
		return err
	}
	if err := cl.sendCommand(3, 0, "createStream", 2, &message.NetConnectionCreateStream{}); err != nil {
		return err
	}
	body, err := cl.await(2)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	var res message.AMFConvertible
	if err := rtmpSafeDecode(func() error {
		return message.DecodeBodyCreateStreamResult(body, message.NewAMFDecoder(body, message.EncodingTypeAMF0), &res)
	}); err != nil {
		return fmt.Errorf("createStream result: %w", err)
	}
	cl.streamID = res.(*message.NetConnectionCreateStreamResult).StreamID
	return nil
}

var errRTMPPullEnded = errors.New("remote stream ended")

// rtmpPlayArgs are the play command's arguments: null, name, start -2
// (a live stream if there is one, else a recorded one).
type rtmpPlayArgs struct{ name string }

func (rtmpPlayArgs) FromArgs(...any) error { return errors.New("rtmpPlayArgs: decode not supported") }

func (a rtmpPlayArgs) ToArgs(message.EncodingType) ([]any, error) {
	return []any{nil, a.name, float64(-2)}, nil
}

func (cl *rtmpPullClient) send(csid, sid uint32, msg message.Message) error {
	typeID, payload, err := rtmpEncode(msg)
	if err != nil {
		return err
	}
	return cl.sendRaw(csid, typeID, sid, payload)
}

func (cl *rtmpPullClient) sendCommand(csid, sid uint32, name string, txID int64, args message.AMFConvertible) error {
	typeID, payload, err := rtmpEncodeCommand(name, txID, args)
	if err != nil {
		return err
	}
	return cl.sendRaw(csid, typeID, sid, payload)
}

func (cl *rtmpPullClient) sendRaw(csid uint32, typeID uint8, sid uint32, payload []byte) error {
	cl.wmu.Lock()
	defer cl.wmu.Unlock()
	cl.out = rtmpAppendMessage(cl.out[:0], csid, typeID, sid, 0, payload, cl.chunk)
	if cl.playing {
		_ = cl.nc.SetWriteDeadline(time.Now().Add(rtmpWriteTimeout))
	}
	if _, err := cl.nc.Write(cl.out); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// await reads messages until the _result of transaction txID and returns
// the rest of its body (after the transaction ID).
func (cl *rtmpPullClient) await(txID int64) (io.Reader, error) {
	for range 64 {
		cs, err := cl.readMessage()
		if err != nil {
			return nil, err
		}
		if cs.typeID != uint8(message.TypeIDCommandMessageAMF0) {
			if err := cl.handle(cs); err != nil {
				return nil, err
			}
			continue
		}
		cmd, err := rtmpDecodeCommand(cs.buf)
		if err != nil {
			return nil, err
		}
		switch {
		case (cmd.CommandName == "_result" || cmd.CommandName == "_error") && cmd.TransactionID == txID:
			if cmd.CommandName == "_error" {
				return nil, fmt.Errorf("refused: %s", rtmpDescribeBody(cmd.Body))
			}
			return cmd.Body, nil
		case cmd.CommandName == "onStatus":
			if err := cl.onStatus(cmd.Body); err != nil {
				return nil, err
			}
		}
	}
	return nil, fmt.Errorf("no answer to transaction %d", txID)
}

func (cl *rtmpPullClient) readMessage() (*rtmpChunkStream, error) {
	if cl.playing {
		if now := time.Now(); now.Sub(cl.readSetAt) >= rtmpDeadlineSlack {
			cl.readSetAt = now
			_ = cl.nc.SetReadDeadline(now.Add(rtmpPullIdleTimeout))
		}
	}
	cs, err := cl.parser.readMessage(cl.br)
	if err != nil {
		return nil, err
	}
	// Every reply that carries AMF is checked before go-rtmp and go-amf0
	// decode any of it (await, handle, onStatus).
	if rtmpAMFMessage(cs.typeID) {
		if err := rtmpCheckAMF(cs.typeID, cs.buf); err != nil {
			return nil, err
		}
	}
	if cl.ackWindow > 0 && cl.cr.n-cl.ackedAt >= cl.ackWindow {
		cl.ackedAt = cl.cr.n
		if err := cl.send(rtmpCSIDControl, 0, &message.Ack{SequenceNumber: cl.cr.n}); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// step reads and handles one message.
func (cl *rtmpPullClient) step() error {
	cs, err := cl.readMessage()
	if err != nil {
		return err
	}
	return cl.handle(cs)
}

func (cl *rtmpPullClient) handle(cs *rtmpChunkStream) error {
	payload := cs.buf
	switch message.TypeID(cs.typeID) {
	case message.TypeIDVideoMessage, message.TypeIDAudioMessage:
		return cl.media(cs.typeID, cs.timestamp, payload)
	case message.TypeIDDataMessageAMF0:
		// Only onMetaData goes on (as an FLV script tag holds it, without
		// @setDataFrame); other data messages are not media.
		if body, ok := av.MetaDataBody(payload); ok {
			return cl.media(av.TagScript, cs.timestamp, body)
		}
	case message.TypeIDAggregateMessage:
		return rtmpSplitAggregate(cs.timestamp, payload, cl.media)
	case message.TypeIDCommandMessageAMF0:
		cmd, err := rtmpDecodeCommand(payload)
		if err != nil {
			return err
		}
		if cmd.CommandName == "onStatus" {
			return cl.onStatus(cmd.Body)
		}
	case message.TypeIDWinAckSize:
		if len(payload) >= 4 {
			cl.ackWindow = binary.BigEndian.Uint32(payload)
		}
	case message.TypeIDUserCtrl:
		if len(payload) < 6 {
			return rtmpProtoErrorf("user control message of %d bytes", len(payload))
		}
		switch binary.BigEndian.Uint16(payload) {
		case 1: // StreamEOF
			if cl.playing && binary.BigEndian.Uint32(payload[2:]) == cl.streamID {
				return errRTMPPullEnded
			}
		case 6: // PingRequest
			return cl.send(rtmpCSIDControl, 0, &message.UserCtrl{Event: &message.UserCtrlEventPingResponse{
				Timestamp: binary.BigEndian.Uint32(payload[2:]),
			}})
		}
	}
	return nil
}

func (cl *rtmpPullClient) media(tagType uint8, ts uint32, body []byte) error {
	if !cl.playing {
		return nil
	}
	p, err := av.TagToPacket(tagType, ts, body)
	switch {
	case err == nil:
		cl.packets++
		cl.w.WritePacket(p)
		return nil
	case errors.Is(err, av.ErrSkip):
		return nil
	}
	return fmt.Errorf("media message: %w", err)
}

func (cl *rtmpPullClient) onStatus(body io.Reader) error {
	var info map[string]any
	err := rtmpSafeDecode(func() error {
		d := message.NewAMFDecoder(body, message.EncodingTypeAMF0)
		var obj any
		if err := d.Decode(&obj); err != nil {
			return err
		}
		return d.Decode(&info)
	})
	if err != nil {
		return fmt.Errorf("onStatus: %w", err)
	}
	code, _ := info["code"].(string)
	desc, _ := info["description"].(string)
	switch code {
	case "NetStream.Play.Start":
		if !cl.playing {
			cl.playing = true
			cl.parser.preAuth = false // media may come now
			_ = cl.nc.SetDeadline(time.Time{})
			cl.log.Info("rtmp pull: playing")
		}
	case "NetStream.Play.Reset", "NetStream.Play.PublishNotify", "NetStream.Data.Start":
	case "NetStream.Play.Stop", "NetStream.Play.UnpublishNotify", "NetStream.Play.Complete":
		return errRTMPPullEnded
	default:
		if level, _ := info["level"].(string); level == "error" {
			return fmt.Errorf("server: %s (%s)", code, desc)
		}
	}
	return nil
}

// rtmpDecodeCommand decodes an AMF0 command message with go-rtmp; Body is
// left at the arguments after the transaction ID.
func rtmpDecodeCommand(payload []byte) (*message.CommandMessage, error) {
	var msg message.Message
	err := rtmpSafeDecode(func() error {
		return message.NewDecoder(bytes.NewReader(payload)).Decode(message.TypeIDCommandMessageAMF0, &msg)
	})
	if err != nil {
		return nil, fmt.Errorf("command message: %w", err)
	}
	cmd, ok := msg.(*message.CommandMessage)
	if !ok {
		return nil, fmt.Errorf("command message: decoded as %T", msg)
	}
	return cmd, nil
}

// rtmpSafeDecode runs an AMF decode, turning a panic of the decoder into an
// error (go-amf0 and go-rtmp's FromArgs assert types).
func rtmpSafeDecode(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed amf0: %v", r)
		}
	}()
	return f()
}

// rtmpDescribeBody renders the information object of an _error answer.
func rtmpDescribeBody(body io.Reader) string {
	var info map[string]any
	_ = rtmpSafeDecode(func() error {
		d := message.NewAMFDecoder(body, message.EncodingTypeAMF0)
		var obj any
		if err := d.Decode(&obj); err != nil {
			return err
		}
		return d.Decode(&info)
	})
	code, _ := info["code"].(string)
	desc, _ := info["description"].(string)
	if code == "" && desc == "" {
		return "no reason given"
	}
	return code + " " + desc
}

// rtmpSplitAggregate calls f for each FLV tag of an aggregate message
// (RTMP type 22: tags with 11-byte headers and back pointers). Tag times
// are offsets from the first tag's, added to the message timestamp.
func rtmpSplitAggregate(ts uint32, b []byte, f func(tagType uint8, ts uint32, body []byte) error) error {
	first, base := true, uint32(0)
	for len(b) > 0 {
		if len(b) < av.TagHeaderSize {
			return rtmpProtoErrorf("aggregate message: %d bytes left, tag header needs %d", len(b), av.TagHeaderSize)
		}
		tagType := b[0] & 0x1f
		size := int(rtmpBE24(b[1:4]))
		tagTS := rtmpBE24(b[4:7]) | uint32(b[7])<<24
		end := av.TagHeaderSize + size
		if len(b) < end {
			return rtmpProtoErrorf("aggregate message: tag of %d bytes, %d left", size, len(b)-av.TagHeaderSize)
		}
		if first {
			first, base = false, tagTS
		}
		switch tagType {
		case av.TagAudio, av.TagVideo, av.TagScript:
			if err := f(tagType, ts+(tagTS-base), b[av.TagHeaderSize:end]); err != nil {
				return err
			}
		}
		b = b[min(end+av.PrevTagSizeSize, len(b)):]
	}
	return nil
}
