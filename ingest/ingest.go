// Package ingest accepts feeds from encoders and remote sources: the RTMP
// server (publish, and RTMP play for players), the RTSP server (ANNOUNCE /
// RECORD over TCP and UDP) and pull clients for rtmp:// and rtsp:// sources.
// It converts every protocol to av.Packets at its edge and hands them to a
// Sink; it knows nothing about the origin beyond the interfaces below.
package ingest

import (
	"context"
	"errors"
	"net/url"

	"github.com/livefuse/livefuse/av"
)

// Errors a Sink or Authorizer may return; ingest maps them to protocol
// answers (RTMP NetStream.Publish.BadName, RTSP 401/404/400).
var (
	ErrUnauthorized = errors.New("unauthorized")
	ErrNotFound     = errors.New("stream not found")
	ErrBusy         = errors.New("feed already has a publisher")
)

// Sink takes accepted feeds. The origin implements it (wired in cmd/livefuse).
type Sink interface {
	// Publish claims feed ("main" or "backup") of app/name. It returns
	// ErrBusy when that feed already has a live publisher.
	Publish(app, name, feed string, src av.Source) (FeedWriter, error)
}

// FeedWriter receives one publisher's packets.
type FeedWriter interface {
	// WritePacket hands over p; it never blocks. p must not be changed after.
	WritePacket(p *av.Packet)
	// Done is closed when the origin drops the publisher (kick, stream
	// disabled or deleted); ingest then closes the connection.
	Done() <-chan struct{}
	// Unpublish tells the origin the publisher ended the feed on purpose
	// (RTMP FCUnpublish/deleteStream, RTSP TEARDOWN, a pull removed from
	// the config), as opposed to a lost connection. Close follows.
	Unpublish()
	// Close tells the origin the publisher is gone.
	Close()
}

// Authorizer decides who may publish and play.
type Authorizer interface {
	// AuthorizePublish checks the publish token of app/name.
	AuthorizePublish(app, name, token string) error
	// AuthorizePlay checks a play request; uri is the request path (for
	// auth_key signing) and q its query.
	AuthorizePlay(app, name, uri string, q url.Values) error
}

// PlaySource gives RTMP players a stream to read.
type PlaySource interface {
	Subscribe(app, name string) (PacketReader, error)
}

// PacketReader is one player's view of a stream: it starts with the
// sequence headers and the cached GOP, then live packets.
type PacketReader interface {
	// ReadPackets waits until packets are queued and appends all of them to
	// dst. It returns an error when the reader was dropped or the stream ended.
	ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error)
	Close()
}

// Deps are what the protocol servers and pullers need from the rest of the node.
type Deps struct {
	Sink Sink
	Auth Authorizer
	Play PlaySource // may be nil: RTMP play is then refused
	// Budget bounds the bytes all ingest connections hold in incomplete
	// messages; share one between the servers and the puller of a node.
	// Nil: the RTMP server makes its own from its configuration, the
	// others are bound by their per-connection limits only.
	Budget *Budget
	// Guard applies the streams' IP lists; nil: none.
	Guard AddressGuard
}
