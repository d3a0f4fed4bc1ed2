package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/handshake"
	rtmpmsg "github.com/yutopp/go-rtmp/message"
)

// rtmpConn is a client RTMP connection for the publisher and the players.
//
// go-rtmp's ClientConn can connect, create a stream and send publish, but
// streams it creates have no handler on the client side: the first onStatus
// or media message on them panics inside its read loop (recovered, and the
// connection stops reading), and it has no play command. So this uses
// go-rtmp for the handshake, the AMF0 encoders and the chunked writer
// (rtmp.ChunkStreamer), and reads with chunkReader.
type rtmpConn struct {
	nc  net.Conn
	cnt *countingReader
	cr  *chunkReader
	cs  *rtmp.ChunkStreamer

	wmu  sync.Mutex // ChunkStreamer.Write shares one encoder
	cmsg rtmp.ChunkMessage

	ackWindow uint32 // from the peer's WinAckSize; 0 = no acks
	acked     uint64
}

// Chunk stream ids, as FFmpeg uses them.
const (
	csidControl = 2
	csidCommand = 3
	csidAudio   = 4
	csidData    = 5
	csidVideo   = 6
)

// RTMP message type ids.
const (
	msgSetChunkSize     = 1
	msgAbort            = 2
	msgAck              = 3
	msgUserControl      = 4
	msgWinAckSize       = 5
	msgSetPeerBandwidth = 6
	msgAudio            = 8
	msgVideo            = 9
	msgDataAMF0         = 18
	msgCommandAMF0      = 20
)

// countingReader counts the bytes read from the connection (for acks and
// the byte totals).
type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// dialRTMP connects and runs the handshake; ctx bounds both.
func dialRTMP(ctx context.Context, addr string) (*rtmpConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rtmp dial %s: %w", addr, err)
	}
	c := &rtmpConn{nc: nc, cnt: &countingReader{r: nc}}
	stop := c.closeOnDone(ctx)
	defer stop()
	br := bufio.NewReaderSize(c.cnt, 16<<10)
	if err := handshake.HandshakeWithServer(br, nc, &handshake.Config{}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("rtmp handshake %s: %w", addr, ctxErr(ctx, err))
	}
	c.cr = newChunkReader(br)
	c.cs = rtmp.NewChunkStreamer(nil, bufio.NewWriterSize(nc, 16<<10), nil)
	return c, nil
}

// closeOnDone closes the connection when ctx ends before stop is called, to
// unblock reads and writes that have no deadline.
func (c *rtmpConn) closeOnDone(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.nc.Close() })
}

// ctxErr prefers the context's error: a read failing because ctx closed the
// connection should say so.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (c *rtmpConn) Close() error {
	if c.cs != nil {
		_ = c.cs.Close()
	}
	return c.nc.Close()
}

// write sends one message. The payload is copied before it returns.
func (c *rtmpConn) write(ctx context.Context, csid int, streamID, ts uint32, msg rtmpmsg.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.cmsg.StreamID = streamID
	c.cmsg.Message = msg
	err := c.cs.Write(ctx, csid, ts, &c.cmsg)
	c.cmsg.Message = nil
	if err != nil {
		return fmt.Errorf("rtmp write: %w", err)
	}
	return nil
}

// command sends an AMF0 command message.
func (c *rtmpConn) command(ctx context.Context, streamID uint32, name string, txn int64, args ...any) error {
	var body bytes.Buffer
	enc := rtmpmsg.NewAMFEncoder(&body, rtmpmsg.EncodingTypeAMF0)
	for _, a := range args {
		if err := enc.Encode(a); err != nil {
			return fmt.Errorf("rtmp %s: encode: %w", name, err)
		}
	}
	return c.write(ctx, csidCommand, streamID, 0, &rtmpmsg.CommandMessage{
		CommandName: name, TransactionID: txn, Encoding: rtmpmsg.EncodingTypeAMF0, Body: &body,
	})
}

// setChunkSize raises the chunk size we write with.
func (c *rtmpConn) setChunkSize(ctx context.Context, n uint32) error {
	c.wmu.Lock()
	err := c.cs.SelfState().SetChunkSize(n) // before the message: the writer goroutine reads it later
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("rtmp chunk size: %w", err)
	}
	return c.write(ctx, csidControl, 0, 0, &rtmpmsg.SetChunkSize{ChunkSize: n})
}

// readMessage returns the next message that is not protocol control;
// control messages (chunk size, ack window, pings) are handled here.
func (c *rtmpConn) readMessage(ctx context.Context) (rtmpMessage, error) {
	for {
		m, err := c.cr.readMessage()
		if err != nil {
			return m, err
		}
		if c.ackWindow > 0 && c.cnt.n-c.acked >= uint64(c.ackWindow) {
			c.acked = c.cnt.n
			if err := c.write(ctx, csidControl, 0, 0, &rtmpmsg.Ack{SequenceNumber: uint32(c.cnt.n)}); err != nil {
				return m, err
			}
		}
		switch m.TypeID {
		case msgSetChunkSize:
			if len(m.Data) < 4 {
				return m, fmt.Errorf("%w: short SetChunkSize", errChunk)
			}
			if err := c.cr.setChunkSize(binary.BigEndian.Uint32(m.Data)); err != nil {
				return m, err
			}
		case msgWinAckSize:
			if len(m.Data) < 4 {
				return m, fmt.Errorf("%w: short WinAckSize", errChunk)
			}
			c.ackWindow = binary.BigEndian.Uint32(m.Data)
		case msgUserControl:
			// PingRequest (6) wants a PingResponse with the same timestamp.
			if len(m.Data) >= 6 && binary.BigEndian.Uint16(m.Data) == 6 {
				ev := &rtmpmsg.UserCtrlEventPingResponse{Timestamp: binary.BigEndian.Uint32(m.Data[2:])}
				if err := c.write(ctx, csidControl, 0, 0, &rtmpmsg.UserCtrl{Event: ev}); err != nil {
					return m, err
				}
			}
		case msgAbort, msgAck, msgSetPeerBandwidth:
		default:
			return m, nil
		}
	}
}

// rtmpCommand is a decoded AMF0 command message.
type rtmpCommand struct {
	Name string
	Txn  float64
	Args []any
}

// decodeCommand decodes an AMF0 command message body. It allocates, which is
// fine: players see a few commands at the start and none afterwards.
func decodeCommand(b []byte) (rtmpCommand, error) {
	var cmd rtmpCommand
	dec := rtmpmsg.NewAMFDecoder(bytes.NewReader(b), rtmpmsg.EncodingTypeAMF0)
	if err := dec.Decode(&cmd.Name); err != nil {
		return cmd, fmt.Errorf("rtmp command name: %w", err)
	}
	if err := dec.Decode(&cmd.Txn); err != nil {
		return cmd, fmt.Errorf("rtmp command %q transaction: %w", cmd.Name, err)
	}
	for len(cmd.Args) < 8 {
		var v any
		if err := dec.Decode(&v); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return cmd, fmt.Errorf("rtmp command %q argument %d: %w", cmd.Name, len(cmd.Args), err)
		}
		cmd.Args = append(cmd.Args, v)
	}
	return cmd, nil
}

// statusCode returns the "code" of an onStatus or _error info object.
func (cmd rtmpCommand) statusCode() string {
	for _, a := range cmd.Args {
		if m, ok := a.(map[string]any); ok {
			if s, ok := m["code"].(string); ok {
				return s
			}
		}
	}
	return ""
}

// awaitCommand reads until a command accepted by match arrives. Media and
// data messages before it are dropped.
func (c *rtmpConn) awaitCommand(ctx context.Context, what string, match func(rtmpCommand) (bool, error)) (rtmpCommand, error) {
	for {
		m, err := c.readMessage(ctx)
		if err != nil {
			return rtmpCommand{}, fmt.Errorf("rtmp %s: %w", what, ctxErr(ctx, err))
		}
		if m.TypeID != msgCommandAMF0 {
			continue
		}
		cmd, err := decodeCommand(m.Data)
		if err != nil {
			return cmd, fmt.Errorf("rtmp %s: %w", what, err)
		}
		if ok, err := match(cmd); ok || err != nil {
			return cmd, err
		}
	}
}

// result matches the _result or _error of transaction txn.
func result(what string, txn float64) func(rtmpCommand) (bool, error) {
	return func(cmd rtmpCommand) (bool, error) {
		if cmd.Txn != txn {
			return false, nil
		}
		switch cmd.Name {
		case "_result":
			return true, nil
		case "_error":
			return true, fmt.Errorf("rtmp %s refused: %s", what, cmd.statusCode())
		}
		return false, nil
	}
}

// onStatus matches the NetStream status that says want, or a failure.
func onStatus(what, want string) func(rtmpCommand) (bool, error) {
	return func(cmd rtmpCommand) (bool, error) {
		if cmd.Name != "onStatus" {
			return false, nil
		}
		code := cmd.statusCode()
		switch {
		case code == want:
			return true, nil
		case strings.Contains(code, "Failed"), strings.Contains(code, "BadName"),
			strings.Contains(code, "NotFound"), strings.Contains(code, "Rejected"):
			return true, fmt.Errorf("rtmp %s refused: %s", what, code)
		}
		return false, nil
	}
}

// open runs connect and createStream and returns the message stream id.
// ctx bounds the exchange.
func (c *rtmpConn) open(ctx context.Context, app, tcURL string) (uint32, error) {
	stop := c.closeOnDone(ctx)
	defer stop()
	var body bytes.Buffer
	connect := &rtmpmsg.NetConnectionConnect{Command: rtmpmsg.NetConnectionConnectCommand{
		App: app, Type: "nonprivate", FlashVer: "FMLE/3.0 (compatible; livefuse-loadtool)", TCURL: tcURL,
		Capabilities: 15, AudioCodecs: 4071, VideoCodecs: 252, VideoFunction: 1,
	}}
	if err := rtmpmsg.EncodeBodyAnyValues(rtmpmsg.NewAMFEncoder(&body, rtmpmsg.EncodingTypeAMF0), connect); err != nil {
		return 0, fmt.Errorf("rtmp connect: encode: %w", err)
	}
	if err := c.write(ctx, csidCommand, 0, 0, &rtmpmsg.CommandMessage{
		CommandName: "connect", TransactionID: 1, Encoding: rtmpmsg.EncodingTypeAMF0, Body: &body,
	}); err != nil {
		return 0, err
	}
	if _, err := c.awaitCommand(ctx, "connect", result("connect", 1)); err != nil {
		return 0, err
	}
	if err := c.command(ctx, 0, "createStream", 2, nil); err != nil {
		return 0, err
	}
	cmd, err := c.awaitCommand(ctx, "createStream", result("createStream", 2))
	if err != nil {
		return 0, err
	}
	for _, a := range cmd.Args {
		if id, ok := a.(float64); ok && id >= 1 && id < 1<<31 {
			return uint32(id), nil
		}
	}
	return 0, fmt.Errorf("rtmp createStream: no stream id in %v", cmd.Args)
}

// publish sends publish and waits for NetStream.Publish.Start.
func (c *rtmpConn) publish(ctx context.Context, streamID uint32, name string) error {
	stop := c.closeOnDone(ctx)
	defer stop()
	if err := c.command(ctx, streamID, "publish", 0, nil, name, "live"); err != nil {
		return err
	}
	_, err := c.awaitCommand(ctx, "publish", onStatus("publish", "NetStream.Publish.Start"))
	return err
}

// play sends play for a live stream. The caller reads the media and the
// onStatus replies with readMessage.
func (c *rtmpConn) play(ctx context.Context, streamID uint32, name string) error {
	// Start -2000 is what FFmpeg sends for "live or recorded".
	return c.command(ctx, streamID, "play", 0, nil, name, float64(-2000))
}

// writeMedia sends one FLV tag body as an audio, video or data message.
func (c *rtmpConn) writeMedia(ctx context.Context, streamID uint32, tagType uint8, ts uint32, body []byte) error {
	var msg rtmpmsg.Message
	csid := csidVideo
	switch tagType {
	case msgVideo:
		msg = &rtmpmsg.VideoMessage{Payload: bytes.NewReader(body)}
	case msgAudio:
		msg, csid = &rtmpmsg.AudioMessage{Payload: bytes.NewReader(body)}, csidAudio
	case msgDataAMF0:
		// An FLV script tag is "onMetaData" + array; publishers send it
		// as @setDataFrame.
		msg = &rtmpmsg.DataMessage{Name: "@setDataFrame", Encoding: rtmpmsg.EncodingTypeAMF0, Body: bytes.NewReader(body)}
		csid = csidData
	default:
		return fmt.Errorf("rtmp write: tag type %d", tagType)
	}
	return c.write(ctx, csid, streamID, ts, msg)
}
