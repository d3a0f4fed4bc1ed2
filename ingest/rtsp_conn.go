package ingest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// rtspMaxRequestBytes bounds what a connection may send without a complete
// request: gortsplib's own limits allow a request of about 128 KiB of body
// plus 255 headers of 2.5 KiB, and it skips bytes that start nothing it
// knows, so without this bound a stream of garbage would be read forever.
const rtspMaxRequestBytes = 1 << 20

// rtspGuardListener wraps the RTSP listener so that every connection is an
// rtspGuardConn.
type rtspGuardListener struct {
	net.Listener
	timeout      time.Duration
	setupTimeout time.Duration // accept to RECORD; 0: none
	budget       *Budget
}

func newRTSPGuardListener(ln net.Listener, timeout time.Duration) *rtspGuardListener {
	return &rtspGuardListener{Listener: ln, timeout: timeout}
}

// Accept returns the next connection, guarded.
func (l *rtspGuardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := &rtspGuardConn{Conn: c, timeout: l.timeout}
	g.budget.b = l.budget
	if l.setupTimeout > 0 {
		g.setupTimeout = l.setupTimeout
		g.setupBy = time.Now().Add(l.setupTimeout)
	}
	g.requestSeen()
	return g, nil
}

// rtspGuardConn closes connections that do not speak RTSP. gortsplib reads
// requests without a deadline and silently skips bytes that do not start a
// request, so on its own a connection sending garbage or nothing stays open
// forever. Until the session records, the guard
//   - refuses a first byte that cannot start an RTSP request,
//   - gives every request ReadTimeout to arrive complete, counted from the
//     previous request or response (or the accept),
//   - refuses more than rtspMaxRequestBytes without a complete request,
//     and charges the bytes read since the last request to the budget,
//   - closes it when it has not reached RECORD within setupTimeout of the
//     accept (a client dribbling valid requests would otherwise stay).
//
// Once recording, gortsplib's own read deadline (TCP) or its RTP timeout
// (UDP, where this control connection may idle) take over.
type rtspGuardConn struct {
	net.Conn
	timeout      time.Duration
	setupTimeout time.Duration
	setupBy      time.Time // zero: no deadline to RECORD
	budget       budgetShare

	recording   atomic.Bool
	minRate     atomic.Int64 // bytes a second while recording; 0: none
	rateWindow  atomic.Int64 // time.Duration
	lastRequest atomic.Int64 // unix nanoseconds
	sinceReq    atomic.Int64 // bytes read since the last request

	// only touched by the reading goroutine
	rateFrom     time.Time
	rateBytes    int64
	userDeadline time.Time
	applied      time.Time
	first        bool // first byte checked
}

var errRTSPGarbage = errors.New("rtsp: not an RTSP request")

// requestSeen restarts the request timer (a request arrived or a response
// went out).
func (c *rtspGuardConn) requestSeen() {
	c.lastRequest.Store(time.Now().UnixNano())
	c.budget.give(c.sinceReq.Swap(0))
}

func (c *rtspGuardConn) setRecording(v bool) {
	c.recording.Store(v)
	if v {
		c.budget.give(c.sinceReq.Swap(0))
	}
}

// setMinRate makes a recording publisher keep rate bytes a second over
// window (RTP over TCP only: with UDP this connection may idle).
func (c *rtspGuardConn) setMinRate(rate int64, window time.Duration) {
	if rate > 0 && window > 0 {
		c.rateWindow.Store(int64(window))
		c.minRate.Store(rate)
	}
}

// Close closes the connection and gives its budget back.
func (c *rtspGuardConn) Close() error {
	c.budget.release()
	return c.Conn.Close()
}

// SetReadDeadline records the deadline gortsplib wants; Read combines it
// with the guard's own.
// Underlying returns the wrapped connection (for TCP_INFO).
func (c *rtspGuardConn) Underlying() net.Conn { return c.Conn }

func (c *rtspGuardConn) SetReadDeadline(t time.Time) error {
	c.userDeadline = t
	return c.apply()
}

// SetDeadline sets both deadlines.
func (c *rtspGuardConn) SetDeadline(t time.Time) error {
	c.userDeadline = t
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.apply()
}

// guardDeadline is the time by which the next request must be complete
// (zero while recording).
func (c *rtspGuardConn) guardDeadline() time.Time {
	if c.recording.Load() {
		return time.Time{}
	}
	d := time.Unix(0, c.lastRequest.Load()).Add(c.timeout)
	if !c.setupBy.IsZero() && c.setupBy.Before(d) {
		d = c.setupBy
	}
	return d
}

func (c *rtspGuardConn) apply() error {
	d := c.userDeadline
	if g := c.guardDeadline(); !g.IsZero() && (d.IsZero() || g.Before(d)) {
		d = g
	}
	if d.Equal(c.applied) {
		return nil
	}
	c.applied = d
	return c.Conn.SetReadDeadline(d)
}

// Read reads with the guard applied.
func (c *rtspGuardConn) Read(b []byte) (int, error) {
	if err := c.apply(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 && !c.first {
		c.first = true
		if !rtspCanStartMessage(b[0]) {
			return 0, fmt.Errorf("%w: first byte 0x%02x", errRTSPGarbage, b[0])
		}
	}
	if c.recording.Load() {
		if rate := c.minRate.Load(); rate > 0 {
			now := time.Now()
			if c.rateFrom.IsZero() {
				c.rateFrom = now
			}
			c.rateBytes += int64(n)
			if el := now.Sub(c.rateFrom); el >= time.Duration(c.rateWindow.Load()) {
				if float64(c.rateBytes) < float64(rate)*el.Seconds() {
					return n, limitErrorf(limitMinRate, "publisher sent %d bytes in %s, below the minimum of %d bytes/s",
						c.rateBytes, el.Round(time.Millisecond), rate)
				}
				c.rateFrom, c.rateBytes = now, 0
			}
		}
	} else {
		if c.sinceReq.Add(int64(n)) > rtspMaxRequestBytes {
			return 0, limitErrorf(limitRequestBytes, "%v: over %d bytes without a complete request", errRTSPGarbage, rtspMaxRequestBytes)
		}
		if err := c.budget.take(int64(n), true); err != nil {
			return 0, err
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && (c.userDeadline.IsZero() || time.Now().Before(c.userDeadline)) {
			if !c.setupBy.IsZero() && !time.Now().Before(c.setupBy) {
				return n, limitErrorf(limitSetupTimeout, "no RECORD within %s of the connection", c.setupTimeout)
			}
			return n, fmt.Errorf("rtsp: no complete request within %s: %w", c.timeout, err)
		}
	}
	return n, err
}

// rtspCanStartMessage reports whether b can begin what a client sends: a
// request method (ANNOUNCE, DESCRIBE, GET_PARAMETER, OPTIONS, PAUSE, PLAY,
// RECORD, SETUP, SET_PARAMETER, TEARDOWN), a response ("RTSP/1.0") or an
// interleaved frame ('$').
func rtspCanStartMessage(b byte) bool {
	switch b {
	case 'A', 'D', 'G', 'O', 'P', 'R', 'S', 'T', '$':
		return true
	}
	return false
}
