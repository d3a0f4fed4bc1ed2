package ingest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// Unit relays: every unit holds both feeds of a stream hot. The unit whose
// ingest accepted a feed hands it to its own origin in-process and pushes
// it over RTMP to every other unit's ingest, with the shared relay secret
// in place of the publish token (rtmp://UNIT/APP/NAME?relay=S&feed=F&from=U).
// A feed that arrived through a relay is never relayed again, so two units
// relaying to each other make no loop.
//
// A relay link never blocks the feed: it has a bounded queue, and when the
// queue is full (the link is slow or down) it drops until the next
// keyframe. It keeps the feed's sequence headers and current GOP, so after
// a reconnect the other unit gets a decodable start at once; packets it
// already had are recognised by their timestamps (relays keep the
// encoder's timestamps) and dropped there, so a link that drops and
// returns neither duplicates nor reorders.

// Unit is one origin unit of a deployment.
type Unit struct {
	Name string `yaml:"name"`
	// Relay is the unit's RTMP ingest address (host:port) for relays.
	Relay string `yaml:"relay"`
}

// RelayConfig configures the relay of feeds to the other units.
type RelayConfig struct {
	// Self is this unit's name; it is not relayed to.
	Self  string
	Units []Unit
	// Secret authenticates relays between units; without it no feed is
	// relayed, and relayed publishes are refused.
	Secret string
	// Queue is the packets a link may hold while it sends (default 2048).
	Queue int
}

const (
	relayQueue         = 2048
	relayBackoffMin    = 100 * time.Millisecond
	relayBackoffMax    = 2 * time.Second
	relayRefusedWait   = 5 * time.Second
	relayWriteTimeout  = 5 * time.Second
	relayChunkSize     = 4096
	relayMaxGOPPackets = 4096
)

// RelayProtocol is the av.Source.Protocol of a feed that came from
// another unit.
const RelayProtocol = "relay"

// Relay is a Sink that publishes every feed to the node's own Sink and
// relays encoder feeds to the other units.
type Relay struct {
	inner  Sink
	cfg    RelayConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRelay wraps inner. Close stops every link.
func NewRelay(inner Sink, cfg RelayConfig, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = relayQueue
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Relay{inner: inner, cfg: cfg, log: log, ctx: ctx, cancel: cancel}
}

// Close stops every relay link and waits for them.
func (r *Relay) Close() {
	r.cancel()
	r.wg.Wait()
}

// Publish claims the feed at the node's own Sink and starts a link to every
// other unit, unless the feed itself came from a relay.
func (r *Relay) Publish(app, name, feed string, src av.Source) (FeedWriter, error) {
	w, err := r.inner.Publish(app, name, feed, src)
	if err != nil || src.Protocol == RelayProtocol || r.cfg.Secret == "" {
		return w, err
	}
	t := &relayTee{FeedWriter: w, session: newRelaySession()}
	for _, u := range r.cfg.Units {
		if u.Name == r.cfg.Self || u.Relay == "" {
			continue
		}
		l := &relayLink{
			r: r, unit: u, app: app, name: name, feed: feed, upstream: t.session,
			q:    make(chan *av.Packet, r.cfg.Queue),
			stop: make(chan struct{}),
			log:  r.log.With("stream", app+"/"+name, "feed", feed, "unit", u.Name),
		}
		t.links = append(t.links, l)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.run(r.ctx)
		}()
	}
	return t, nil
}

// relayTee hands each packet to the node's feed and to every link.
type relayTee struct {
	FeedWriter
	session string // this feed's session, the same for every reconnect of its links
	links   []*relayLink
	once    sync.Once
}

func (t *relayTee) WritePacket(p *av.Packet) {
	t.FeedWriter.WritePacket(p)
	for _, l := range t.links {
		l.put(p)
	}
}

func (t *relayTee) Unpublish() {
	t.FeedWriter.Unpublish()
	for _, l := range t.links {
		l.clean.Store(true)
	}
}

func (t *relayTee) Close() {
	t.once.Do(func() {
		for _, l := range t.links {
			close(l.stop)
		}
	})
	t.FeedWriter.Close()
}

// relayLink pushes one feed to one unit.
type relayLink struct {
	r                     *Relay
	unit                  Unit
	app, name, feed       string
	upstream              string // the tee's session id
	log                   *slog.Logger
	q                     chan *av.Packet
	stop                  chan struct{}
	clean                 atomic.Bool
	skip                  atomic.Bool
	dropped, sent, starts atomic.Int64

	mu             sync.Mutex // headers and GOP, for (re)connects
	meta, avc, aac *av.Packet
	gop            []*av.Packet
	hasVideo       bool
}

// put keeps p for reconnects and queues it; it never blocks.
func (l *relayLink) put(p *av.Packet) {
	l.mu.Lock()
	switch {
	case p.Kind == av.KindData:
		l.meta = p
	case p.Header && p.Kind == av.KindVideo:
		l.avc, l.hasVideo = p, true
	case p.Header:
		l.aac = p
	case p.Kind == av.KindVideo && p.Key:
		clear(l.gop)
		l.gop = append(l.gop[:0], p)
	case len(l.gop) > 0 && len(l.gop) < relayMaxGOPPackets:
		l.gop = append(l.gop, p)
	}
	hasVideo := l.hasVideo
	l.mu.Unlock()
	if l.skip.Load() {
		if !(p.Kind == av.KindVideo && p.Key) && !(p.Kind == av.KindAudio && !hasVideo) && !p.Header {
			l.dropped.Add(1)
			return
		}
		l.skip.Store(false)
	}
	select {
	case l.q <- p:
	default:
		l.skip.Store(true)
		l.dropped.Add(1)
	}
}

// run keeps the link up until the feed ends or the relay closes.
func (l *relayLink) run(ctx context.Context) {
	backoff := relayBackoffMin
	for attempt := 0; ; attempt++ {
		err := l.session(ctx)
		select {
		case <-ctx.Done():
			return
		case <-l.stop:
			return
		default:
		}
		wait := backoff
		if lerr := (*limitError)(nil); errors.As(err, &lerr) {
			l.log.Warn("relay reply refused", "remote", l.unit.Relay, "reason", lerr.reason, "limit", lerr.limit)
		}
		if errors.Is(err, errRelayRefused) {
			wait = relayRefusedWait
			l.log.Warn("relay refused by the unit", "err", err, "retry_in", wait)
		} else {
			l.log.Info("relay link down, reconnecting", "err", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, relayBackoffMax)
		if err == nil {
			backoff = relayBackoffMin
		}
	}
}

var errRelayRefused = errors.New("relay refused")

// session connects, publishes and sends until an error or the end.
func (l *relayLink) session(ctx context.Context) error {
	d := net.Dialer{Timeout: rtmpPullDialTimeout}
	nc, err := d.DialContext(ctx, "tcp", l.unit.Relay)
	if err != nil {
		return fmt.Errorf("dial %s: %w", l.unit.Relay, err)
	}
	defer nc.Close()
	// Unblock everything when the relay or the feed stops.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-l.stop:
			if l.clean.Load() {
				return // the sender says goodbye itself
			}
		case <-done:
			return
		}
		_ = nc.Close()
	}()

	cl := newRTMPPullClient(nc, nil, l.log)
	cl.parser.preAuthScope = "in a reply to a relay link" // it never plays: the bounds stay
	q := url.Values{"relay": {l.r.cfg.Secret}, "feed": {l.feed}, "from": {l.r.cfg.Self}, "session": {l.upstream}}
	t := rtmpPullTarget{host: l.unit.Relay, app: l.app, name: l.name + "?" + q.Encode(), tcURL: "rtmp://" + l.unit.Relay + "/" + l.app}
	if err := cl.setup(t); err != nil {
		return err
	}
	if err := cl.sendCommand(8, cl.streamID, "publish", 0, rtmpPublishArgs{name: t.name}); err != nil {
		return err
	}
	if err := awaitPublishStart(cl); err != nil {
		return err
	}
	// Larger chunks from here on: media goes out in fewer pieces.
	if err := cl.send(rtmpCSIDControl, 0, &message.SetChunkSize{ChunkSize: relayChunkSize}); err != nil {
		return err
	}
	cl.chunk = relayChunkSize
	_ = nc.SetDeadline(time.Time{})
	l.starts.Add(1)
	l.log.Info("relay link up", "addr", l.unit.Relay)

	// The server's acks and pings, read in the background; an error there
	// closes the connection, which fails the next write.
	readErr := make(chan error, 1)
	go func() {
		for {
			if err := cl.step(); err != nil {
				readErr <- err
				_ = nc.Close()
				return
			}
		}
	}()

	s := &relaySender{cl: cl, nc: nc}
	// Start with the headers and the current GOP, dropping what is
	// queued from before; queued packets the GOP already holds are
	// skipped by timestamp.
	for n := len(l.q); n > 0; n-- {
		<-l.q
	}
	l.skip.Store(false)
	l.mu.Lock()
	start := make([]*av.Packet, 0, 3+len(l.gop))
	for _, h := range [...]*av.Packet{l.meta, l.avc, l.aac} {
		if h != nil {
			start = append(start, h)
		}
	}
	start = append(start, l.gop...)
	l.mu.Unlock()
	for _, p := range start {
		if err := s.write(p); err != nil {
			return err
		}
	}
	for {
		select {
		case p := <-l.q:
			if err := s.write(p); err != nil {
				return err
			}
			l.sent.Add(1)
		case err := <-readErr:
			return fmt.Errorf("read: %w", err)
		case <-l.stop:
			if l.clean.Load() {
				for n := len(l.q); n > 0; n-- {
					if err := s.write(<-l.q); err != nil {
						return err
					}
				}
				_ = cl.sendCommand(8, cl.streamID, "FCUnpublish", 0, rtmpNameArg{name: l.name})
				_ = cl.sendCommand(3, 0, "deleteStream", 0, rtmpStreamIDArg{id: cl.streamID})
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// relaySender writes packets as RTMP messages, skipping any packet not
// after the last one sent of its kind (the overlap of GOP and queue).
type relaySender struct {
	cl   *rtmpPullClient
	nc   net.Conn
	last [3]time.Duration
	seen [3]bool
	body []byte
	out  []byte
}

func (s *relaySender) write(p *av.Packet) error {
	k := 2
	if !p.Header {
		switch p.Kind {
		case av.KindVideo:
			k = 0
		case av.KindAudio:
			k = 1
		}
	}
	if k < 2 {
		if s.seen[k] && p.DTS <= s.last[k] {
			return nil
		}
		s.last[k], s.seen[k] = p.DTS, true
	}
	var typeID uint8
	var tagType uint8
	s.body, tagType, _ = av.AppendTagBody(s.body[:0], p)
	switch tagType {
	case av.TagVideo:
		typeID = uint8(message.TypeIDVideoMessage)
	case av.TagAudio:
		typeID = uint8(message.TypeIDAudioMessage)
	default:
		typeID = uint8(message.TypeIDDataMessageAMF0)
		// Servers take metadata as @setDataFrame(onMetaData, ...).
		s.body = append([]byte{0x02, 0x00, 0x0d, '@', 's', 'e', 't', 'D', 'a', 't', 'a', 'F', 'r', 'a', 'm', 'e'}, s.body...)
	}
	ts := uint32(p.DTS / time.Millisecond)
	s.out = rtmpAppendMessage(s.out[:0], 6, typeID, s.cl.streamID, ts, s.body, s.cl.chunk)
	s.cl.wmu.Lock()
	defer s.cl.wmu.Unlock()
	_ = s.nc.SetWriteDeadline(time.Now().Add(relayWriteTimeout))
	if _, err := s.nc.Write(s.out); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// awaitPublishStart reads until the server's answer to publish.
func awaitPublishStart(cl *rtmpPullClient) error {
	for range 64 {
		cs, err := cl.readMessage()
		if err != nil {
			return err
		}
		if cs.typeID != uint8(message.TypeIDCommandMessageAMF0) {
			if err := cl.handle(cs); err != nil {
				return err
			}
			continue
		}
		cmd, err := rtmpDecodeCommand(cs.buf)
		if err != nil {
			return err
		}
		if cmd.CommandName != "onStatus" {
			continue
		}
		code := rtmpDescribeBody(cmd.Body)
		if strings.HasPrefix(code, "NetStream.Publish.Start") {
			return nil
		}
		return fmt.Errorf("%w: %s", errRelayRefused, code)
	}
	return errors.New("no answer to publish")
}

// rtmpPublishArgs are the publish command's arguments: null, name, "live".
type rtmpPublishArgs struct{ name string }

func (rtmpPublishArgs) FromArgs(...any) error {
	return errors.New("rtmpPublishArgs: decode not supported")
}

func (a rtmpPublishArgs) ToArgs(message.EncodingType) ([]any, error) {
	return []any{nil, a.name, "live"}, nil
}

type rtmpNameArg struct{ name string }

func (rtmpNameArg) FromArgs(...any) error { return errors.New("rtmpNameArg: decode not supported") }

func (a rtmpNameArg) ToArgs(message.EncodingType) ([]any, error) { return []any{nil, a.name}, nil }

type rtmpStreamIDArg struct{ id uint32 }

func (rtmpStreamIDArg) FromArgs(...any) error {
	return errors.New("rtmpStreamIDArg: decode not supported")
}

func (a rtmpStreamIDArg) ToArgs(message.EncodingType) ([]any, error) {
	return []any{nil, float64(a.id)}, nil
}

func newRelaySession() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkRelaySecret compares a relay's secret in constant time.
func checkRelaySecret(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
