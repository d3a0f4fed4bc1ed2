package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// RTMP window sizes announced to peers (the values nginx-rtmp uses).
const (
	rtmpAckWindow       = 2500000
	rtmpPeerBandwidth   = 2500000
	rtmpMaxStreamsPerCn = 8         // message streams (createStream) per connection
	rtmpPlayBatch       = 256 << 10 // bytes: a batch larger than this is written in parts
	rtmpPlayPktsKeep    = 32        // packets a player keeps room for between batches
)

// rtmpConn is the go-rtmp handler of one server connection. go-rtmp calls
// its methods on the connection's goroutine, which also runs OnClose, so
// the fields below mu need no lock; the kick watcher and the player
// goroutine only touch the socket and the close reason.
type rtmpConn struct {
	rtmp.DefaultHandler

	s       *RTMPServer
	rc      *rtmpNetConn
	remote  string
	start   time.Time
	tracked bool // counted in s.wg (set before go-rtmp runs)

	app       string     // from connect, without query
	connQuery url.Values // query found on the connect app or tcUrl

	role   string // "", "publish", "play"
	stream string // app/name once publishing or playing
	feed   string

	fw          FeedWriter
	pubStreamID uint32
	pubStop     chan struct{}
	in          bytes.Buffer
	metaWarned  bool

	playStreamID uint32
	playCancel   context.CancelFunc

	mu     sync.Mutex
	reason string
	level  slog.Level
}

var _ rtmp.Handler = (*rtmpConn)(nil)

func newRTMPConn(s *RTMPServer, nc net.Conn) *rtmpConn {
	c := &rtmpConn{
		s:         s,
		remote:    nc.RemoteAddr().String(),
		start:     time.Now(),
		connQuery: url.Values{},
	}
	c.rc = newRTMPNetConn(nc, s.cfg.MaxMessageSize)
	c.rc.readIdle = s.idleTimeout
	c.rc.writeTimeout = s.writeTimeout
	c.rc.onReadErr = c.readFailed
	c.rc.onClose = c.finish
	return c
}

func (c *rtmpConn) connConfig() *rtmp.ConnConfig {
	lg := logrus.New()
	lg.Out = io.Discard
	lg.Level = logrus.ErrorLevel
	lg.AddHook(rtmpLogHook{c})
	return &rtmp.ConnConfig{
		Handler:                   c,
		SkipHandshakeVerification: true, // as nginx-rtmp: clients' C2 echoes vary
		// One chunk (header + payload) must fit the write buffer, so every
		// write go-rtmp makes is one whole chunk and writeRaw can go between.
		WriterBufferSize: c.s.cfg.ChunkSize + 64,
		ControlState: rtmp.StreamControlStateConfig{
			MaxChunkStreams:            rtmpMaxChunkStreams,
			DefaultAckWindowSize:       rtmpAckWindow,
			DefaultBandwidthWindowSize: rtmpPeerBandwidth,
			DefaultBandwidthLimitType:  message.LimitTypeDynamic,
			MaxMessageSize:             uint32(c.s.cfg.MaxMessageSize),
			MaxMessageStreams:          rtmpMaxStreamsPerCn,
		},
		Logger: lg,
	}
}

// setReason records why the connection ends; the first reason wins.
func (c *rtmpConn) setReason(level slog.Level, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason == "" {
		c.reason, c.level = reason, level
	}
}

func (c *rtmpConn) readFailed(err error) {
	var perr *rtmpProtocolError
	var nerr net.Error
	switch {
	case errors.As(err, &perr):
		c.setReason(slog.LevelWarn, err.Error())
	case errors.Is(err, io.EOF):
		c.setReason(slog.LevelInfo, "peer closed")
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.setReason(slog.LevelInfo, "peer closed inside a message")
	case errors.Is(err, net.ErrClosed):
		c.setReason(slog.LevelInfo, "closed")
	case errors.As(err, &nerr) && nerr.Timeout():
		if c.rc.hsLeft > 0 {
			c.setReason(slog.LevelWarn, "handshake timeout")
		} else {
			c.setReason(slog.LevelWarn, "idle timeout")
		}
	default:
		c.setReason(slog.LevelInfo, "read: "+err.Error())
	}
}

// finish runs when go-rtmp has closed the connection, last of all.
func (c *rtmpConn) finish() {
	c.mu.Lock()
	reason, level := c.reason, c.level
	c.mu.Unlock()
	if reason == "" {
		reason, level = "closed", slog.LevelInfo
	}
	attrs := []any{"remote", c.remote, "reason", reason, "duration", time.Since(c.start).Round(time.Millisecond)}
	if c.role != "" {
		attrs = append(attrs, "role", c.role, "stream", c.stream)
	}
	if c.feed != "" {
		attrs = append(attrs, "feed", c.feed)
	}
	c.s.log.Log(context.Background(), level, "rtmp connection closed", attrs...)
	c.s.remove(c)
}

// rtmpLogHook takes the reason go-rtmp logs when it drops a connection for
// an error of its own (a message it cannot decode, a recovered panic).
type rtmpLogHook struct{ c *rtmpConn }

func (rtmpLogHook) Levels() []logrus.Level { return []logrus.Level{logrus.ErrorLevel} }

func (h rtmpLogHook) Fire(e *logrus.Entry) error {
	if rest, ok := strings.CutPrefix(e.Message, "Server closed by error: Err = "); ok && !strings.Contains(rest, errRTMPHandoff.Error()) {
		line, _, _ := strings.Cut(rest, "\n")
		h.c.setReason(slog.LevelWarn, "rtmp: "+line)
	}
	return nil
}

// write sends ready-made chunks around go-rtmp's writer.
func (c *rtmpConn) write(b []byte) error {
	_, err := c.rc.writeRaw(b)
	return err
}

// OnServe runs after the handshake: it raises the chunk size the server
// sends with. go-rtmp has no setter for its own side, so this sets go-rtmp's
// state and sends Set Chunk Size directly, before go-rtmp has written a
// chunk (its first chunk on stream 2 then carries a full header).
func (c *rtmpConn) OnServe(conn *rtmp.Conn) {
	size := uint32(c.s.cfg.ChunkSize)
	err := conn.GetChunkStreamer().SelfState().SetChunkSize(size)
	if err == nil {
		var payload []byte
		var typeID uint8
		typeID, payload, err = rtmpEncode(&message.SetChunkSize{ChunkSize: size})
		if err == nil {
			err = c.write(rtmpAppendMessage(nil, rtmpCSIDControl, typeID, 0, 0, payload, rtmpDefaultChunkSize))
		}
	}
	if err != nil {
		c.setReason(slog.LevelInfo, "set chunk size: "+err.Error())
		_ = c.rc.nc.Close()
	}
}

// OnConnect keeps the app and any query an encoder put on it or on tcUrl
// (some put "?token=" there instead of on the stream key).
func (c *rtmpConn) OnConnect(_ uint32, cmd *message.NetConnectionConnect) error {
	app := cmd.Command.App
	if i := strings.IndexByte(app, '?'); i >= 0 {
		if q, err := url.ParseQuery(app[i+1:]); err == nil {
			rtmpMergeQuery(c.connQuery, q)
		}
		app = app[:i]
	}
	c.app = strings.Trim(app, "/")
	if u, err := url.Parse(cmd.Command.TCURL); err == nil {
		rtmpMergeQuery(c.connQuery, u.Query())
	}
	return nil
}

// rtmpMergeQuery adds to dst the keys of src it does not have.
func rtmpMergeQuery(dst, src url.Values) {
	for k, v := range src {
		if _, ok := dst[k]; !ok {
			dst[k] = v
		}
	}
}

// resolve turns a publishing or play name ("NAME?token=T") into the
// stream's app, name and query.
func (c *rtmpConn) resolve(streamName string) (app, name string, q url.Values, err error) {
	app, name, q, err = ParseStreamPath(c.app + "/" + streamName)
	if err != nil {
		return "", "", nil, err
	}
	rtmpMergeQuery(q, c.connQuery)
	return app, name, q, nil
}

// statusChunks builds onStatus command messages for message stream sid.
func (c *rtmpConn) statusChunks(dst []byte, sid uint32, level, code, desc string) []byte {
	typeID, payload, err := rtmpEncodeCommand("onStatus", 0, rtmpOnStatus{level: level, code: code, description: desc})
	if err != nil {
		return dst // cannot happen with these plain values
	}
	return rtmpAppendMessage(dst, rtmpCSIDStatus, typeID, sid, 0, payload, c.s.cfg.ChunkSize)
}

// OnPublish authorizes a publisher and claims its feed. Refusals answer
// NetStream.Publish.BadName here; go-rtmp then adds Publish.Failed for the
// error returned and closes the connection.
func (c *rtmpConn) OnPublish(sctx *rtmp.StreamContext, _ uint32, cmd *message.NetStreamPublish) error {
	if c.role != "" {
		return fmt.Errorf("rtmp publish: connection is already %sing %s", c.role, c.stream)
	}
	app, name, q, err := c.resolve(cmd.PublishingName)
	if err != nil {
		return c.refusePublish(sctx.StreamID, "", "", err)
	}
	stream := app + "/" + name
	feed, err := FeedFromQuery(q)
	if err != nil {
		return c.refusePublish(sctx.StreamID, stream, "", err)
	}
	src := av.Source{Protocol: "rtmp", Remote: c.remote, RTT: tcpRTT(c.rc.nc)}
	if q.Has("relay") {
		// Another unit relays a feed its ingest accepted.
		if !checkRelaySecret(q.Get("relay"), c.s.cfg.RelaySecret) {
			return c.refusePublish(sctx.StreamID, stream, feed, fmt.Errorf("%w: wrong relay secret", ErrUnauthorized))
		}
		src.Protocol, src.Session = RelayProtocol, q.Get("session")
		if from := q.Get("from"); from != "" {
			src.Remote = "unit " + from + " " + c.remote
		}
	} else if err := c.s.checkAddress(true, app, name, c.rc.nc.RemoteAddr()); err != nil {
		return c.refusePublish(sctx.StreamID, stream, feed, err)
	} else if err := c.s.deps.Auth.AuthorizePublish(app, name, q.Get("token")); err != nil {
		return c.refusePublish(sctx.StreamID, stream, feed, err)
	}
	fw, err := c.s.deps.Sink.Publish(app, name, feed, src)
	if err != nil {
		if errors.Is(err, ErrBusy) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) {
			return c.refusePublish(sctx.StreamID, stream, feed, err)
		}
		c.s.log.Warn("rtmp publish failed", "remote", c.remote, "stream", stream, "feed", feed, "error", err)
		c.setReason(slog.LevelInfo, "publish failed")
		return fmt.Errorf("rtmp publish %s: %w", stream, err)
	}
	c.role, c.stream, c.feed = "publish", stream, feed
	c.rc.authorize(true)
	c.fw, c.pubStreamID = fw, sctx.StreamID
	c.pubStop = make(chan struct{})
	c.s.wg.Add(1)
	go c.watchKick(fw.Done(), c.pubStop)
	c.s.log.Info("rtmp publish started", "remote", c.remote, "stream", stream, "feed", feed)
	return nil
}

func (c *rtmpConn) refusePublish(sid uint32, stream, feed string, err error) error {
	desc := "Publish refused."
	if errors.Is(err, ErrForbidden) {
		desc = "Publish refused: address not allowed."
	}
	_ = c.write(c.statusChunks(nil, sid, "error", string(message.NetStreamOnStatusCodePublishBadName), desc))
	c.s.log.Warn("rtmp publish refused", "remote", c.remote, "stream", stream, "feed", feed, "error", err)
	c.setReason(slog.LevelInfo, "publish refused")
	return fmt.Errorf("rtmp publish refused: %w", err)
}

// watchKick closes the connection when the origin drops the publisher.
func (c *rtmpConn) watchKick(done <-chan struct{}, stop <-chan struct{}) {
	defer c.s.wg.Done()
	select {
	case <-done:
		c.setReason(slog.LevelInfo, "publisher dropped by the origin")
		_ = c.rc.nc.Close()
	case <-stop:
	}
}

func (c *rtmpConn) endPublish() {
	if c.fw == nil {
		return
	}
	close(c.pubStop)
	c.fw.Close()
	c.fw = nil
}

// OnSetDataFrame forwards onMetaData as a script packet whose Data is what
// an FLV file's script tag holds (go-rtmp has already taken off the
// "@setDataFrame" name).
func (c *rtmpConn) OnSetDataFrame(ts uint32, data *message.NetStreamSetDataFrame) error {
	if c.fw == nil {
		return nil
	}
	name, _, err := av.DecodeScript(data.Payload)
	if err == nil && name != "onMetaData" {
		err = fmt.Errorf("data frame %q", name)
	}
	if err != nil {
		if !c.metaWarned {
			c.metaWarned = true
			c.s.log.Warn("rtmp publish: metadata ignored", "remote", c.remote, "stream", c.stream, "feed", c.feed, "error", err)
		}
		return nil
	}
	p, err := av.TagToPacket(av.TagScript, ts, data.Payload)
	if err != nil {
		return nil
	}
	c.fw.WritePacket(p)
	return nil
}

func (c *rtmpConn) OnAudio(ts uint32, payload io.Reader) error {
	return c.media(av.TagAudio, ts, payload)
}

func (c *rtmpConn) OnVideo(ts uint32, payload io.Reader) error {
	return c.media(av.TagVideo, ts, payload)
}

func (c *rtmpConn) media(tagType uint8, ts uint32, payload io.Reader) error {
	if c.fw == nil {
		return nil
	}
	c.in.Reset()
	if _, err := c.in.ReadFrom(payload); err != nil {
		return fmt.Errorf("rtmp publish %s: read message: %w", c.stream, err)
	}
	p, err := av.TagToPacket(tagType, ts, c.in.Bytes())
	switch {
	case err == nil:
		c.fw.WritePacket(p)
		return nil
	case errors.Is(err, av.ErrSkip):
		return nil
	case errors.Is(err, av.ErrUnsupportedCodec):
		c.s.log.Warn("rtmp publish: unsupported codec, closing", "remote", c.remote, "stream", c.stream, "feed", c.feed, "error", err)
		c.setReason(slog.LevelWarn, err.Error())
	default:
		c.setReason(slog.LevelWarn, "malformed media message: "+err.Error())
	}
	return fmt.Errorf("rtmp publish %s: %w", c.stream, err)
}

// OnFCPublish answers onFCPublish, which encoders written for Flash Media
// Server wait for (or warn about) before they go on.
func (c *rtmpConn) OnFCPublish(_ uint32, cmd *message.NetStreamFCPublish) error {
	return c.fcReply("onFCPublish", "NetStream.Publish.Start", cmd.StreamName)
}

// OnFCUnpublish marks the end of the feed as intended by the encoder and
// answers onFCUnpublish.
func (c *rtmpConn) OnFCUnpublish(_ uint32, cmd *message.NetStreamFCUnpublish) error {
	if c.fw != nil {
		c.fw.Unpublish()
	}
	return c.fcReply("onFCUnpublish", "NetStream.Unpublish.Success", cmd.StreamName)
}

// fcReply sends an onFCPublish or onFCUnpublish on the control stream. The
// name is the encoder's, query (token) left out. A failed write is left to
// the read side to report: encoders often close right after FCUnpublish.
func (c *rtmpConn) fcReply(name, code, streamName string) error {
	streamName, _, _ = strings.Cut(streamName, "?")
	typeID, payload, err := rtmpEncodeCommand(name, 0, rtmpOnStatus{level: "status", code: code, description: streamName})
	if err != nil {
		return err
	}
	_ = c.write(rtmpAppendMessage(nil, rtmpCSIDStatus, typeID, 0, 0, payload, c.s.cfg.ChunkSize))
	return nil
}

// OnDeleteStream ends the publish or play on the stream deleted. Without a
// stream ID (GStreamer names the stream instead, see
// rtmpDecodeDeleteStream) it is the connection's publish or play stream.
// go-rtmp then deletes the stream.
func (c *rtmpConn) OnDeleteStream(_ uint32, cmd *message.NetStreamDeleteStream) error {
	if cmd.StreamID == 0 {
		switch {
		case c.pubStreamID != 0:
			cmd.StreamID = c.pubStreamID
		case c.playStreamID != 0:
			cmd.StreamID = c.playStreamID
		default:
			c.setReason(slog.LevelInfo, "deleteStream without a stream")
			return errors.New("rtmp deleteStream: no stream to delete")
		}
	}
	switch {
	case c.fw != nil && cmd.StreamID == c.pubStreamID:
		c.fw.Unpublish()
		c.endPublish()
	case c.playCancel != nil && cmd.StreamID == c.playStreamID:
		c.playCancel()
	}
	return nil
}

// OnUnknownCommandMessage takes closeStream, which ends this connection's
// publish or play as deleteStream does (the stream itself stays); other
// commands (FCSubscribe, getStreamLength...) are ignored.
func (c *rtmpConn) OnUnknownCommandMessage(_ uint32, cmd *message.CommandMessage) error {
	if cmd.CommandName != "closeStream" {
		return nil
	}
	switch {
	case c.fw != nil:
		c.fw.Unpublish()
		c.endPublish()
	case c.playCancel != nil:
		c.playCancel()
	}
	return nil
}

// OnPlay authorizes a player, subscribes it and starts its writer.
// go-rtmp answers NetStream.Play.Failed for an error returned here, and
// NetStream.Play.Start after success (the only Play.Start the player gets);
// the writer starts with the media once that is out.
func (c *rtmpConn) OnPlay(sctx *rtmp.StreamContext, _ uint32, cmd *message.NetStreamPlay) error {
	if c.role != "" {
		return fmt.Errorf("rtmp play: connection is already %sing %s", c.role, c.stream)
	}
	if c.s.deps.Play == nil {
		c.setReason(slog.LevelInfo, "play refused: rtmp play disabled")
		return errors.New("rtmp play is disabled")
	}
	app, name, q, err := c.resolve(cmd.StreamName)
	if err != nil {
		return c.refusePlay(sctx.StreamID, "", err)
	}
	stream := app + "/" + name
	if err := c.s.checkAddress(false, app, name, c.rc.nc.RemoteAddr()); err != nil {
		return c.refusePlay(sctx.StreamID, stream, err)
	}
	if err := c.s.deps.Auth.AuthorizePlay(app, name, "/"+stream, q); err != nil {
		return c.refusePlay(sctx.StreamID, stream, err)
	}
	r, err := c.s.deps.Play.Subscribe(app, name)
	if err != nil {
		return c.refusePlay(sctx.StreamID, stream, err)
	}
	c.role, c.stream, c.playStreamID = "play", stream, sctx.StreamID
	c.rc.stopReadDeadline()

	sid := sctx.StreamID
	// Stream Begin (a user control message, so on chunk stream 2) and
	// Play.Reset go out now; go-rtmp sends Play.Start once this returns,
	// and the player's writer waits for it to be out before the media.
	out := rtmpUserControl(nil, &message.UserCtrlEventStreamBegin{StreamID: sid})
	out = c.statusChunks(out, sid, "status", "NetStream.Play.Reset", "Playing and resetting "+stream+".")
	started := c.rc.goWrites.arm(rtmpPlayStartMarker)
	if err := c.write(out); err != nil {
		r.Close()
		return fmt.Errorf("rtmp play %s: %w", stream, err)
	}

	ctx, cancel := context.WithCancel(c.s.ctx)
	c.playCancel = cancel
	c.s.wg.Add(1)
	go c.runPlayer(ctx, r, sid, started)
	c.s.log.Info("rtmp play started", "remote", c.remote, "stream", stream)
	return nil
}

func (c *rtmpConn) refusePlay(sid uint32, stream string, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		_ = c.write(c.statusChunks(nil, sid, "error", "NetStream.Play.StreamNotFound", "No such stream."))
	case errors.Is(err, ErrForbidden):
		_ = c.write(c.statusChunks(nil, sid, "error", "NetStream.Play.Failed", "Play refused: address not allowed."))
	}
	c.s.log.Warn("rtmp play refused", "remote", c.remote, "stream", stream, "error", err)
	c.setReason(slog.LevelInfo, "play refused")
	return fmt.Errorf("rtmp play refused: %w", err)
}

// runPlayer copies packets from r to the player as RTMP messages, written
// directly (see rtmpNetConn) in batches: everything r has queued at a
// wake-up goes out with one writev whose media payloads are the shared
// packets themselves (rtmpPlayOut). Once the player has caught up, one of
// the stream's group writers serves it (rtmpPlayer.step), as it serves
// HTTP-FLV players, when r allows it (origin's readers do).
func (c *rtmpConn) runPlayer(ctx context.Context, r PacketReader, sid uint32, started <-chan struct{}) {
	wait := time.NewTimer(rtmpPlayStartWait)
	select {
	case <-started:
	case <-wait.C: // go-rtmp could not send it; play anyway
	case <-ctx.Done():
		wait.Stop()
		r.Close()
		c.s.wg.Done()
		return
	}
	wait.Stop()
	c.handOff() // go-rtmp has sent all it sends a player
	p := &rtmpPlayer{c: c, ctx: ctx, r: r, sid: sid, out: newRTMPPlayOut(c.rc, c.s.cfg.ChunkSize, sid)}
	if g, ok := r.(groupReader); ok && p.out.bw.Vectored() {
		p.g = g // never for RTMPS: a TLS write cannot be made without waiting
	}
	// |RtmpSampleAccess(true, true): Flash players want it to read the data.
	sampleAccess := []byte{0x02, 0x00, 0x11}
	sampleAccess = append(sampleAccess, "|RtmpSampleAccess"...)
	sampleAccess = append(sampleAccess, 0x01, 0x01, 0x01, 0x01)
	p.out.appendRaw(rtmpAppendMessage(nil, rtmpCSIDStatus, uint8(message.TypeIDDataMessageAMF0), sid, 0, sampleAccess, c.s.cfg.ChunkSize))
	// The play's end closes the reader, so the wait for packets needs no
	// select on ctx (a select per wake-up costs more than the rest of the
	// wait), and a group writer is given the player's last turn.
	p.stop = context.AfterFunc(ctx, r.Close)
	p.run()
}

// groupReader is a PacketReader whose player may be served by its
// stream's group writers (origin.Reader): a goroutine that writes, without
// waiting, to every caught-up player that has something queued, instead
// of a goroutine per player woken per frame.
type groupReader interface {
	PacketReader
	// JoinGroup hands the player to a group writer, which calls step
	// whenever it may have packets; false when it has some queued.
	JoinGroup(step func()) bool
	// LeaveGroup, from step, gives the player back to a goroutine.
	LeaveGroup()
	// Poll is ReadPackets without the wait.
	Poll(dst []*av.Packet) ([]*av.Packet, error)
	// StepDone ends a turn that wrote everything.
	StepDone()
}

// rtmpPlayer is one RTMP player's writing side after the hand-off: served
// by a goroutine of its own (run) or, once caught up, by a group writer
// (step); never by both.
type rtmpPlayer struct {
	c    *rtmpConn
	ctx  context.Context
	r    PacketReader
	g    groupReader // r, when group writers may serve the player; nil: never
	sid  uint32
	out  *rtmpPlayOut
	pkts []*av.Packet
	stop func() bool
}

// run serves the player from its goroutine until the play ends, or until
// it has caught up and a group writer takes it over.
func (p *rtmpPlayer) run() {
	for {
		pkts, err := p.r.ReadPackets(context.Background(), p.pkts[:0])
		if err != nil {
			p.end(err)
			return
		}
		for i, pk := range pkts {
			pkts[i] = nil
			p.out.appendPacket(pk)
			if p.out.full() && !p.wrote(p.out.flush()) {
				p.keep(pkts)
				p.end(nil)
				return
			}
		}
		p.keep(pkts)
		if !p.wrote(p.out.flush()) {
			p.end(nil)
			return
		}
		if p.g != nil && p.g.JoinGroup(p.step) {
			// Caught up: a group writer serves it from here, with writes
			// that need no deadline (the old one, at most a second old, is
			// taken off before it could fail one).
			p.c.rc.groupWrites()
			return
		}
	}
}

// step is a group writer's turn with the player: what is queued is
// written without waiting. A player whose socket fills leaves the group
// for a goroutine of its own, which finishes the write.
func (p *rtmpPlayer) step() {
	pkts, rerr := p.g.Poll(p.pkts[:0])
	for i, pk := range pkts {
		pkts[i] = nil
		p.out.appendPacket(pk)
	}
	p.keep(pkts)
	done, werr := p.out.tryFlush()
	switch {
	case werr != nil:
		p.g.LeaveGroup()
		p.wrote(werr)
		p.end(nil)
	case !done:
		p.g.LeaveGroup()
		go p.finishRun()
	case rerr != nil:
		p.g.LeaveGroup()
		if p.ctx.Err() != nil {
			p.end(nil) // the player left: nothing to tell it
		} else {
			go p.end(rerr) // Play.Stop is written, and may wait
		}
	default:
		p.g.StepDone()
	}
}

// finishRun finishes the write step left pending, then serves the player
// from this goroutine.
func (p *rtmpPlayer) finishRun() {
	if !p.wrote(p.out.finish()) {
		p.end(nil)
		return
	}
	p.run()
}

// wrote reports whether a write succeeded; a failed one ends the
// connection (unless the play ended first).
func (p *rtmpPlayer) wrote(err error) bool {
	if err == nil {
		return true
	}
	if p.ctx.Err() == nil {
		p.c.setReason(slog.LevelInfo, "write: "+err.Error())
		_ = p.c.rc.nc.Close()
	}
	return false
}

// keep lets a GOP burst's packet slice go.
func (p *rtmpPlayer) keep(pkts []*av.Packet) {
	clear(pkts)
	if cap(pkts) > rtmpPlayPktsKeep {
		pkts = nil
	}
	p.pkts = pkts[:0]
}

// end ends the play; rerr, the reader's end (the stream ended, or the
// player fell too far behind), is told to a player still there.
func (p *rtmpPlayer) end(rerr error) {
	if rerr != nil && p.ctx.Err() == nil {
		p.c.setReason(slog.LevelInfo, "stream ended: "+rerr.Error())
		p.c.stopPlay(p.sid)
		p.c.endGently()
	}
	p.stop()
	p.r.Close()
	p.c.s.wg.Done()
}

// stopPlay tells the player the stream is over (Play.Stop, then Stream
// EOF) so it ends cleanly rather than on a dropped connection.
func (c *rtmpConn) stopPlay(sid uint32) {
	out := c.statusChunks(nil, sid, "status", "NetStream.Play.Stop", "Stopped playing "+c.stream+".")
	_ = c.write(rtmpUserControl(out, &message.UserCtrlEventStreamEOF{StreamID: sid}))
}

// OnClose ends the publish or play; the socket is closed by go-rtmp after
// its pending writes (a refusal status) are out, except for players, whose
// writer is stopped at once.
func (c *rtmpConn) OnClose() {
	if c.rc.handoff.Load() {
		return // the player goes on (handOff)
	}
	c.endPublish()
	if c.playCancel != nil {
		c.playCancel()
		_ = c.rc.nc.Close()
	}
}

// rtmpUserControl appends a user control message (Stream Begin, Stream EOF)
// to dst. User control messages belong on chunk stream 2, message stream 0
// (RTMP specification §6.2; GStreamer warns otherwise). go-rtmp writes on
// chunk stream 2 too, but only small control messages whose header it
// sends in full or relative to one of the same type and length, which a
// user control message of 6 bytes at timestamp 0 keeps valid.
func rtmpUserControl(dst []byte, event message.UserCtrlEvent) []byte {
	typeID, payload, err := rtmpEncode(&message.UserCtrl{Event: event})
	if err != nil {
		return dst // cannot happen with these events
	}
	return rtmpAppendMessage(dst, rtmpCSIDControl, typeID, 0, 0, payload, rtmpDefaultChunkSize)
}

// rtmpPlayStartMarker is in go-rtmp's NetStream.Play.Start chunk.
var rtmpPlayStartMarker = []byte(message.NetStreamOnStatusCodePlayStart)

// rtmpPlayStartWait bounds a player writer's wait for go-rtmp's Play.Start
// (go-rtmp gives up on a write after 5 s).
const rtmpPlayStartWait = 6 * time.Second

// rtmpWriteWatch tells when go-rtmp has written a chunk holding a marker
// (rtmpNetConn.Write calls saw after each of go-rtmp's writes went out).
type rtmpWriteWatch struct {
	armed atomic.Pointer[rtmpWatch]
}

type rtmpWatch struct {
	marker []byte
	done   chan struct{}
}

// arm returns a channel closed once go-rtmp wrote a chunk holding marker.
func (w *rtmpWriteWatch) arm(marker []byte) <-chan struct{} {
	a := &rtmpWatch{marker: marker, done: make(chan struct{})}
	w.armed.Store(a)
	return a.done
}

// saw checks a chunk go-rtmp wrote.
func (w *rtmpWriteWatch) saw(p []byte) {
	a := w.armed.Load()
	if a == nil || !bytes.Contains(p, a.marker) {
		return
	}
	if w.armed.CompareAndSwap(a, nil) {
		close(a.done)
	}
}

// go-rtmp's decoders for deleteStream and closeStream fail on forms
// clients send: GStreamer's rtmp2 names the stream in deleteStream instead
// of giving its ID, and closeStream comes with and without arguments. These
// accept any form; the connection decides what is deleted (OnDeleteStream).
// Command bodies reach them checked by av.CheckAMF0.
func init() {
	message.CmdBodyDecoders["deleteStream"] = rtmpDecodeDeleteStream
	message.CmdBodyDecoders["closeStream"] = rtmpDecodeCloseStream
}

// rtmpDecodeArgs decodes up to len(args) values, fewer when the body ends.
func rtmpDecodeArgs(name string, d message.AMFDecoder, args []any) error {
	for i := range args {
		if err := d.Decode(&args[i]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("decode %s args[%d]: %w", name, i, err)
		}
	}
	return nil
}

// rtmpDecodeDeleteStream decodes deleteStream(commandObject, streamID);
// StreamID is 0 when the second value is missing or not a stream ID.
func rtmpDecodeDeleteStream(_ io.Reader, d message.AMFDecoder, v *message.AMFConvertible) error {
	var args [2]any
	if err := rtmpDecodeArgs("deleteStream", d, args[:]); err != nil {
		return err
	}
	cmd := &message.NetStreamDeleteStream{}
	if f, ok := args[1].(float64); ok && f >= 1 && f <= math.MaxUint32 && f == math.Trunc(f) {
		cmd.StreamID = uint32(f)
	}
	*v = cmd
	return nil
}

// rtmpDecodeCloseStream decodes closeStream with any arguments.
func rtmpDecodeCloseStream(_ io.Reader, d message.AMFDecoder, v *message.AMFConvertible) error {
	var args [2]any
	if err := rtmpDecodeArgs("closeStream", d, args[:]); err != nil {
		return err
	}
	*v = &message.NetStreamCloseStream{}
	return nil
}

// rtmpLinger is how long a player whose stream ended may take to close its
// side once it has received everything the server sent.
const rtmpLinger = 2 * time.Second

// rtmpDrainPoll is how often endGently looks whether the player has
// received everything.
const rtmpDrainPoll = 20 * time.Millisecond

// endGently ends a player's connection after the last status message. It
// closes the server's sending side at once (the player reads Play.Stop,
// then end of stream) and leaves reading to go-rtmp until the player
// closes its side. The socket is closed only once the player has
// acknowledged every byte queued for it (at most rtmpWriteTimeout, as one
// blocked write), and then after rtmpLinger at most.
//
// Both waits are needed against a reset, which makes the kernel discard
// what is still queued, Play.Stop last: closing at once while the
// player's last messages were unread answered them with a reset, and
// closing after a fixed linger while a slow player was still reading the
// socket buffers (seconds of media on a busy machine) answered its next
// message, an acknowledgement say, with one.
func (c *rtmpConn) endGently() {
	nc := c.rc.nc
	for {
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() != nil {
				break
			}
			queued := sendQueue(nc)
			if queued == nil {
				if c.rc.nc.SetReadDeadline(time.Now().Add(rtmpLinger)) != nil {
					break
				}
				return
			}
			// Bound the whole wait now; shorten it once the player has all.
			if c.rc.nc.SetReadDeadline(time.Now().Add(rtmpWriteTimeout+rtmpLinger)) != nil {
				break
			}
			c.s.wg.Add(1)
			go func() {
				defer c.s.wg.Done()
				t := time.NewTicker(rtmpDrainPoll)
				defer t.Stop()
				for end := time.Now().Add(rtmpWriteTimeout); time.Now().Before(end); {
					if n, ok := queued(); !ok || n == 0 {
						break
					}
					select {
					case <-t.C:
					case <-c.s.ctx.Done():
						return
					}
				}
				_ = c.rc.nc.SetReadDeadline(time.Now().Add(rtmpLinger))
			}()
			return
		}
		u, ok := nc.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		nc = u.Unwrap()
	}
	_ = c.rc.nc.Close()
}
