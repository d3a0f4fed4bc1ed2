package ingest

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// What a peer may make ingest hold before it is authorized, and in total.
//
// Until an RTMP connection is authorized to publish or play it may send
// only what connect, createStream and publish or play need: messages of at
// most RTMPConfig.PreAuthMaxMessageSize bytes on at most
// rtmpPreAuthChunkStreams chunk streams, and it must be authorized within
// RTMPConfig.SetupTimeout of the end of its handshake. Players keep the
// message bounds (they send only commands and control messages); only
// publishers are freed of them. Pull and relay clients apply the same
// bounds (with rtmpClientPrePlayMessage) to the servers they read. The bytes of
// incomplete messages of every ingest connection (RTMP server, RTMP pull
// and relay clients, RTSP requests) are charged to one Budget; connections
// not yet authorized may take only half of it, so they cannot starve
// publishers. A publisher must then keep up RTMPConfig.MinPublishRate.
// Each violation closes that one connection and logs
//
//	level=WARN msg="rtmp connection refused" remote=… reason=… limit=…
//
// (or "rtsp connection refused", "rtmp pull reply refused", "relay reply
// refused") with limit one of the rtmpLimit* values below.

// Values of the "limit" log key: which bound a refused connection passed.
const (
	limitAMF            = "amf"             // a command or data message the AMF0 check refused
	limitPreAuthMessage = "preauth_message" // a message larger than allowed before publish or play (players: always)
	limitPreAuthStreams = "preauth_streams" // too many chunk streams before publish or play (players: always)
	limitBudget         = "budget"          // the node's buffer budget is spent
	limitSetupTimeout   = "setup_timeout"   // no publish, play or RECORD in time
	limitMinRate        = "min_rate"        // a publisher sending below the minimum rate
	limitRequestBytes   = "request_bytes"   // RTSP: too many bytes without a complete request
)

// rtmpPreAuthChunkStreams bounds the chunk streams a connection may open
// before it is authorized: encoders use 2 to 4 (control, commands, and the
// stream's commands), ffmpeg 2, 3 and 8.
const rtmpPreAuthChunkStreams = 8

// limitError is a refusal for passing one of the bounds above.
type limitError struct {
	limit  string // one of the limit* values
	reason string
}

func (e *limitError) Error() string { return e.reason }

// Unwrap makes a refusal a protocol violation for the code that maps read
// errors to close reasons (rtmpConn.readFailed).
func (e *limitError) Unwrap() error { return &rtmpProtocolError{msg: e.reason} }

func limitErrorf(limit, format string, args ...any) error {
	return &limitError{limit: limit, reason: fmt.Sprintf(format, args...)}
}

// Budget bounds the bytes that all ingest connections of a node hold in
// incomplete messages (a message's payload from its first chunk until its
// last). A connection that would pass it is closed. Connections not yet
// authorized may fill only half of it. A nil *Budget bounds nothing. It is
// safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes; limit <= 0 gives nil (no bound).
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		return nil
	}
	return &Budget{limit: limit}
}

// Limit returns the budget's size in bytes (0 for nil).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Used returns the bytes charged now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// take charges n bytes; it fails, charging nothing, when that would pass
// the limit (half of it for a connection not yet authorized).
func (b *Budget) take(n int64, preAuth bool) bool {
	if b == nil || n <= 0 {
		return true
	}
	limit := b.limit
	if preAuth {
		limit /= 2
	}
	for {
		u := b.used.Load()
		if u+n > limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// give returns n bytes taken before.
func (b *Budget) give(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}

// budgetShare is one connection's part of a Budget: what it has charged,
// given back in full when the connection ends (release), whichever
// goroutine ends it.
type budgetShare struct {
	b *Budget

	mu      sync.Mutex
	charged int64
	closed  bool
}

// take charges n bytes for this connection.
func (s *budgetShare) take(n int64, preAuth bool) error {
	if s.b == nil || n <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil // the connection is ending; its reads fail anyway
	}
	if !s.b.take(n, preAuth) {
		scope := "ingest buffer budget of %d bytes spent"
		limit := s.b.limit
		if preAuth {
			scope = "ingest buffer budget for connections not yet publishing or playing (%d bytes) spent"
			limit /= 2
		}
		return limitErrorf(limitBudget, scope, limit)
	}
	s.charged += n
	return nil
}

// give returns n bytes of what this connection charged.
func (s *budgetShare) give(n int64) {
	if s.b == nil || n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, s.charged)
	s.charged -= n
	s.b.give(n)
}

// release gives back everything; later takes charge nothing.
func (s *budgetShare) release() {
	if s.b == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.b.give(s.charged)
	s.charged = 0
}
