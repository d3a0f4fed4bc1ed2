package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp/handshake"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/netguard"
)

// Hostile RTMP peers against the real server (and the pull and relay
// clients against a hostile server), over loopback.

// rtmpLengthBomb is the 52 bytes after the handshake: a 40-byte
// connect whose command object holds a strict array declaring 2^31-1
// values (go-amf0 allocates them before reading one).
const rtmpLengthBomb = "\x03\x00\x00\x00\x00\x00\x28\x14\x00\x00\x00\x00\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03app\x02\x00\x04live\x00\x01x\x0a\x7f\xff\xff\xff"

// Hand AMF0 encoders for hostile bodies.
func a0s(s string) []byte {
	return append(binary.BigEndian.AppendUint16([]byte{0x02}, uint16(len(s))), s...)
}

func a0n(f float64) []byte { return binary.BigEndian.AppendUint64([]byte{0x00}, math.Float64bits(f)) }

func a0k(k string) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(k))), k...) }

func rtmpCat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// amfLengthBombValue is a strict array declaring 2^31-1 values, with none.
var amfLengthBombValue = []byte{0x0a, 0x7f, 0xff, 0xff, 0xff}

// amfDepthBomb returns depth strict arrays of one value each, nested.
func amfDepthBomb(depth int) []byte {
	b := make([]byte, 0, depth*5+1)
	for range depth {
		b = append(b, 0x0a, 0, 0, 0, 1)
	}
	return append(b, 0x05)
}

// rtmpCommandBody is an AMF0 command: name, transaction ID, then args.
func rtmpCommandBody(name string, tx float64, args ...[]byte) []byte {
	return rtmpCat(a0s(name), a0n(tx), rtmpCat(args...))
}

func rtmpConnectBody(extra ...[]byte) []byte {
	obj := rtmpCat([]byte{0x03}, a0k("app"), a0s("live"), a0k("tcUrl"), a0s("rtmp://127.0.0.1/live"), rtmpCat(extra...), []byte{0, 0, 0x09})
	return rtmpCommandBody("connect", 1, obj)
}

// rtmpUpToPublish is connect and createStream as a client sends them.
func rtmpUpToPublish() []byte {
	b := rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(), 128)
	return rtmpAppendMessage(b, 3, 20, 0, 0, rtmpCommandBody("createStream", 2, []byte{0x05}), 128)
}

// rtmpPublishCmd is a publish of name on message stream 1.
func rtmpPublishCmd(name string) []byte {
	return rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("publish", 0, []byte{0x05}, a0s(name), a0s("live")), 128)
}

// rtmpIncomplete is a message of size bytes in chunks of chunk bytes
// without its last chunk, which holds one byte: the peer leaves size-1
// bytes of it on the server. size-1 must be a multiple of chunk, csid < 64.
func rtmpIncomplete(csid uint32, typeID uint8, sid uint32, size, chunk int) []byte {
	if (size-1)%chunk != 0 || csid >= 64 {
		panic("rtmpIncomplete: bad size or csid")
	}
	m := rtmpAppendMessage(nil, csid, typeID, sid, 0, make([]byte, size), chunk)
	return m[:len(m)-2]
}

// rtmpSCS is a Set Chunk Size message (sent in 128-byte chunks).
func rtmpSCS(size uint32) []byte {
	return rtmpAppendMessage(nil, 2, 1, 0, 0, binary.BigEndian.AppendUint32(nil, size), 128)
}

// rtmpRefusal waits for the server's refusal line for the connection
// from local and returns it.
func rtmpRefusal(t *testing.T, logs *rtmpLogs, local net.Addr) string {
	t.Helper()
	key := `msg="rtmp connection refused" remote=` + local.String() + " "
	logs.waitFor(t, key)
	return rtmpLogLine(logs.String(), key)
}

// TestRTMPHostileMessages: each hostile input closes its own connection
// with a refusal naming the limit, nothing reaches the sink or go-amf0, and
// a good publisher is served afterwards.
func TestRTMPHostileMessages(t *testing.T) {
	prePublish := func(name string) []byte { return rtmpCat(rtmpUpToPublish(), rtmpPublishCmd(name+"?token=T")) }
	var incomplete []byte
	for i := range rtmpPreAuthChunkStreams + 1 {
		incomplete = append(incomplete, rtmpIncomplete(uint32(3+i), 20, 0, 129, 128)...)
	}
	tests := []struct {
		name    string
		data    []byte
		limit   string
		reason  string
		publish string // the stream the hostile client published before, if any
	}{
		{name: "length bomb in connect (issue seed)", data: []byte(rtmpLengthBomb), limit: limitAMF, reason: "strict array of 2147483647 values"},
		{name: "depth bomb in connect", data: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), amfDepthBomb(1500)), 128),
			limit: limitAMF, reason: "nesting deeper than 16"},
		{name: "1.6 million nested arrays in connect", data: rtmpCat(rtmpSCS(4096), rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), amfDepthBomb(1_600_000)), 4096)[:64<<10]),
			limit: limitPreAuthMessage, reason: "before publish or play, limit 8192"},
		{name: "long string past the end in connect", data: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), []byte{0x0c, 0xff, 0xff, 0xff, 0xff, 'a'}), 128),
			limit: limitAMF, reason: "long string of 4294967295 bytes"},
		{name: "ECMA count past the end in connect", data: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0, 0, 9}), 128),
			limit: limitAMF, reason: "ECMA array of 4294967295 entries"},
		{name: "typed object in connect", data: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), []byte{0x10, 0, 1, 'T', 0, 0, 9}), 128),
			limit: limitAMF, reason: "type marker 0x10"},
		{name: "length bomb in createStream", data: rtmpCat(rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(), 128),
			rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpCommandBody("createStream", 2, amfLengthBombValue), 128)), limit: limitAMF, reason: "strict array of 2147483647"},
		{name: "length bomb in publish", data: rtmpCat(rtmpUpToPublish(),
			rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("publish", 0, []byte{0x05}, a0s("x?token=T"), amfLengthBombValue), 128)),
			limit: limitAMF, reason: "strict array of 2147483647"},
		{name: "depth bomb in play", data: rtmpCat(rtmpUpToPublish(),
			rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("play", 0, []byte{0x05}, a0s("x"), amfDepthBomb(1000)), 128)),
			limit: limitAMF, reason: "nesting deeper than 16"},
		{name: "AMF3 command with length bomb", data: rtmpAppendMessage(nil, 3, 17, 0, 0, append([]byte{0}, rtmpConnectBody(a0k("x"), amfLengthBombValue)...), 128),
			limit: limitAMF, reason: "strict array of 2147483647"},
		{name: "AMF3 command with an AMF3 value", data: rtmpAppendMessage(nil, 3, 17, 0, 0, append([]byte{0}, rtmpCommandBody("connect", 1, []byte{0x11, 0x0a, 0x0b, 0x01, 0x01})...), 128),
			limit: limitAMF, reason: "type marker 0x11"},
		{name: "AMF3 data with depth bomb", data: rtmpAppendMessage(nil, 3, 15, 0, 0, rtmpCat([]byte{0}, a0s("onMetaData"), amfDepthBomb(100)), 128),
			limit: limitAMF, reason: "data message refused"},
		{name: "length bomb in a data message before publish", data: rtmpAppendMessage(nil, 4, 18, 0, 0, rtmpCat(a0s("@setDataFrame"), a0s("onMetaData"), amfLengthBombValue), 128),
			limit: limitAMF, reason: "data message refused"},
		{name: "depth bomb of 8 MB in @setDataFrame after publish", publish: "live/meta",
			data:  rtmpCat(prePublish("meta"), rtmpSCS(4096), rtmpAppendMessage(nil, 4, 18, 1, 0, rtmpCat(a0s("@setDataFrame"), a0s("onMetaData"), amfDepthBomb(1_600_000)), 4096)),
			limit: limitAMF, reason: "nesting deeper than 16"},
		{name: "message past the pre-auth limit", data: rtmpAppendMessage(nil, 3, 20, 0, 0, make([]byte, 8193), 128)[:200],
			limit: limitPreAuthMessage, reason: "message of 8193 bytes on chunk stream 3 before publish or play, limit 8192"},
		{name: "chunk streams past the pre-auth limit", data: incomplete,
			limit: limitPreAuthStreams, reason: "more than 8 chunk streams before publish or play"},
	}
	sink := newRTMPFakeSink()
	// 4096-byte chunks for the 8 MB message after publish; 8 MiB messages.
	s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := rtmpDialHandshake(t, s.Addr().String())
			go func() {
				_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				_, _ = nc.Write(tt.data) // the server may close before it read everything
			}()
			rtmpWaitClosed(t, nc, 10*time.Second)
			line := rtmpRefusal(t, logs, nc.LocalAddr())
			if !strings.Contains(line, "limit="+tt.limit) || !strings.Contains(line, tt.reason) {
				t.Errorf("refusal logged as %q, want limit=%s and reason %q", line, tt.limit, tt.reason)
			}
		})
	}
	_ = s.Close() // every connection accounted for: all budget given back
	if u := s.deps.Budget.Used(); u != 0 {
		t.Errorf("budget holds %d bytes after every connection ended", u)
	}
	for _, w := range sink.all() {
		if w.stream != "live/meta" {
			t.Errorf("a hostile client published %s", w.stream)
		}
	}
}

// TestRTMPHostileMessagesThenGoodPublisher: after hostile input the same
// server takes a good publisher (and go-rtmp state of held, re-chunked
// commands stays right with chunk sizes changed in between).
func TestRTMPHostileMessagesThenGoodPublisher(t *testing.T) {
	sink := newRTMPFakeSink()
	s, logs := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	bad := rtmpDialHandshake(t, s.Addr().String())
	_, _ = bad.Write([]byte(rtmpLengthBomb))
	rtmpWaitClosed(t, bad, 10*time.Second)
	rtmpRefusal(t, logs, bad.LocalAddr())

	nc := rtmpDialHandshake(t, s.Addr().String())
	go func() { _, _ = io.Copy(io.Discard, nc) }()
	// connect in 128-byte chunks, a chunk size change while createStream
	// is incomplete, then the rest of the session.
	cs := rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpCommandBody("createStream", 2, []byte{0x05}, a0s(strings.Repeat("p", 300))), 128)
	b := rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(), 128)
	b = append(b, cs[:12+128]...) // createStream: its first chunk
	b = append(b, rtmpSCS(512)...)
	b = rtmpAppendBasicHeader(b, 3, 3) // the rest of it in one chunk of the new size
	b = append(b, cs[12+128+1:12+128+1+128]...)
	b = append(b, cs[12+128+1+128+1:]...)
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	// The rest is cut at the new chunk size of 512.
	rest := rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("publish", 0, []byte{0x05}, a0s("good?token=T"), a0s("live")), 512)
	rest = rtmpAppendMessage(rest, 6, 9, 1, 0, []byte{0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 0}, 512)
	rest = rtmpAppendMessage(rest, 6, 9, 1, 40, append([]byte{0x17, 1, 0, 0, 0, 0, 0, 0x40, 0}, rtmpPattern(0x40<<8)...), 512)
	if _, err := nc.Write(rest); err != nil {
		t.Fatal(err)
	}
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 5*time.Second, "2 packets", func() bool { return w.count() == 2 })
	if w.stream != "live/good" {
		t.Fatalf("published %s", w.stream)
	}
}

// TestRTMPBudget: incomplete messages are charged to the node's budget;
// connections not yet authorized share half of it, a publisher may use
// the rest, and closing gives every byte back.
func TestRTMPBudget(t *testing.T) {
	sink := newRTMPFakeSink()
	const budget = 64 << 10
	s, logs := rtmpTestServer(t, RTMPConfig{BufferBudget: budget}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	used := s.deps.Budget.Used
	// holds is n messages on chunk streams from csid0 on, each holding
	// size-1 bytes on the server.
	holds := func(csid0 uint32, n, size int, sid uint32, typeID uint8) []byte {
		var b []byte
		for i := range n {
			b = append(b, rtmpIncomplete(csid0+uint32(i), typeID, sid, size, 128)...)
		}
		return b
	}
	const pub = 30080 // what the first publisher holds: past half the budget
	steps := []struct {
		name    string
		close   int // close the connection of this step (1-based) first
		data    []byte
		refused bool
		used    int64 // budget used after the step (held connections stay)
	}{
		{name: "publisher past half the budget", data: rtmpCat(rtmpUpToPublish(), rtmpPublishCmd("big?token=T"), holds(6, 1, pub+1, 1, 9)), used: pub},
		{name: "pre-auth connection up to half", data: holds(3, 2, 1025, 0, 20), used: pub + 2048},
		{name: "pre-auth connection over half", data: holds(3, 1, 1025, 0, 20), refused: true, used: pub + 2048},
		{name: "publisher past the whole budget", data: rtmpCat(rtmpUpToPublish(), rtmpPublishCmd("big2?token=T"), holds(6, 1, 40065, 1, 9)),
			refused: true, used: pub + 2048},
		{name: "pre-auth connection gone", close: 2, data: nil, used: pub},
	}
	conns := make([]net.Conn, len(steps))
	for i, st := range steps {
		if st.close > 0 {
			conns[st.close-1].Close()
		}
		nc := rtmpDialHandshake(t, s.Addr().String())
		conns[i] = nc
		go func() { _, _ = io.Copy(io.Discard, nc) }()
		if _, err := nc.Write(st.data); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.refused {
			line := rtmpRefusal(t, logs, nc.LocalAddr())
			if !strings.Contains(line, "limit="+limitBudget) {
				t.Fatalf("%s: refusal %q, want limit=budget", st.name, line)
			}
		}
		rtmpWaitFor(t, 5*time.Second, fmt.Sprintf("%s: %d bytes used", st.name, st.used), func() bool { return used() == st.used })
	}
	_ = s.Close()
	if u := used(); u != 0 {
		t.Fatalf("budget holds %d bytes after Close", u)
	}
}

// TestRTMPSetupDeadlineAndMinRate: a connection must publish or play in
// time after its handshake, and a publisher must keep a minimum rate;
// trickling bytes does not keep either open, honest clients stay.
func TestRTMPSetupDeadlineAndMinRate(t *testing.T) {
	// An inter frame of one 3000-byte NAL unit (AVCC), 3 KB a message.
	video := rtmpAppendMessage(nil, 6, 9, 1, 0, append([]byte{0x27, 1, 0, 0, 0, 0, 0, 0x0b, 0xb8}, rtmpPattern(3000)...), 128)
	tests := []struct {
		name   string
		start  []byte        // sent at once after the handshake
		drip   []byte        // then sent one byte per tick
		tick   time.Duration // 0: nothing more
		burst  bool          // send drip whole each tick instead
		limit  string        // "" the connection stays open for the whole run
		reason string
	}{
		{name: "trickling connect", drip: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(), 128), tick: 50 * time.Millisecond,
			limit: limitSetupTimeout, reason: "no publish or play within 400ms of the handshake"},
		{name: "connected, never publishing", start: rtmpUpToPublish(), drip: rtmpAppendMessage(nil, 2, 5, 0, 0, []byte{0, 0, 1, 0}, 128), tick: 50 * time.Millisecond, burst: true,
			limit: limitSetupTimeout, reason: "no publish or play within"},
		{name: "trickling publisher", start: rtmpCat(rtmpUpToPublish(), rtmpPublishCmd("slow?token=T")), drip: video, tick: 50 * time.Millisecond,
			limit: limitMinRate, reason: "below the minimum of 2000 bytes/s"},
		{name: "publisher at 60 KB/s", start: rtmpCat(rtmpUpToPublish(), rtmpPublishCmd("fast?token=T")), drip: video, tick: 50 * time.Millisecond, burst: true},
	}
	const run = 1500 * time.Millisecond
	sink := newRTMPFakeSink()
	s, logs := rtmpTestServer(t, RTMPConfig{SetupTimeout: 400 * time.Millisecond, MinPublishRate: 2000, MinPublishRateWindow: 300 * time.Millisecond},
		Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nc := rtmpDialHandshake(t, s.Addr().String())
			_ = nc.SetDeadline(time.Time{})
			closed := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, nc); close(closed) }()
			if _, err := nc.Write(tt.start); err != nil {
				t.Fatal(err)
			}
			end := time.Now().Add(run)
			if tt.limit != "" {
				end = time.Now().Add(10 * time.Second) // bound; the server closes well before
			}
			for i := 0; time.Now().Before(end); i++ {
				select {
				case <-closed:
				case <-time.After(tt.tick):
					var b []byte
					if tt.burst {
						b = tt.drip
					} else if i < len(tt.drip) {
						b = tt.drip[i : i+1]
					}
					if _, err := nc.Write(b); err == nil {
						continue
					}
				}
				break
			}
			if tt.limit == "" {
				select {
				case <-closed:
					t.Fatalf("honest client closed: %s", rtmpLogLine(logs.String(), "remote="+nc.LocalAddr().String()))
				default:
				}
				return
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("trickling client still connected")
			}
			line := rtmpRefusal(t, logs, nc.LocalAddr())
			if !strings.Contains(line, "limit="+tt.limit) || !strings.Contains(line, tt.reason) {
				t.Errorf("refusal %q, want limit=%s and %q", line, tt.limit, tt.reason)
			}
		})
	}
}

// TestRTMPPlayerKeepsBounds: play (often open to anyone) ends the setup
// deadline but not the small-message bounds: a player sending a large
// message is refused.
func TestRTMPPlayerKeepsBounds(t *testing.T) {
	play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/tv": nil}}
	s, logs := rtmpTestServer(t, RTMPConfig{SetupTimeout: 300 * time.Millisecond}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}, Play: play}, nil)
	nc := rtmpDialHandshake(t, s.Addr().String())
	_ = nc.SetDeadline(time.Time{})
	closed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, nc); close(closed) }()
	if _, err := nc.Write(rtmpCat(rtmpUpToPublish(), rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("play", 0, []byte{0x05}, a0s("tv")), 128))); err != nil {
		t.Fatal(err)
	}
	rtmpWaitFor(t, 5*time.Second, "player", func() bool { return len(play.all()) == 1 })
	select {
	case <-closed:
		t.Fatal("player closed")
	case <-time.After(time.Second): // past the setup deadline
	}
	if _, err := nc.Write(rtmpAppendMessage(nil, 3, 20, 0, 0, make([]byte, 9000), 128)); err != nil {
		t.Fatal(err)
	}
	line := rtmpRefusal(t, logs, nc.LocalAddr())
	if !strings.Contains(line, "limit="+limitPreAuthMessage) || !strings.Contains(line, "from a player, limit 8192") {
		t.Fatalf("refusal %q, want the player's message bound", line)
	}
}

// TestRTMPConnCaps: the listener refuses connections over its caps at
// accept, per address and in total, and takes new ones once some closed.
func TestRTMPConnCaps(t *testing.T) {
	tests := []struct {
		name   string
		limits netguard.Limits
		open   int // connections that get served
	}{
		{name: "per address", limits: netguard.Limits{MaxConnsPerIP: 2}, open: 2},
		{name: "in total", limits: netguard.Limits{MaxConns: 3, MaxConnsPerIP: -1}, open: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := rtmpTestServer(t, RTMPConfig{Limits: tt.limits}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, nil)
			var conns []net.Conn
			for range tt.open {
				conns = append(conns, rtmpDialHandshake(t, s.Addr().String()))
			}
			extra, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer extra.Close()
			rtmpWaitClosed(t, extra, 5*time.Second)
			logs.waitFor(t, `msg="connection refused" listener=rtmp`)
			conns[0].Close()
			rtmpWaitFor(t, 5*time.Second, "a slot given back", func() bool {
				nc, err := net.DialTimeout("tcp", s.Addr().String(), time.Second)
				if err != nil {
					return false
				}
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
				return handshake.HandshakeWithServer(nc, nc, &handshake.Config{SkipHandshakeVerification: true}) == nil
			})
		})
	}
}

// rtmpHostileServer serves one scripted RTMP server: after the handshake
// it answers the client's first command with reply, then reads until the
// client goes. It returns the address.
func rtmpHostileServer(t *testing.T, reply []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
				if err := handshake.HandshakeWithClient(nc, nc, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
					return
				}
				p := newRTMPChunkParser(1 << 20)
				if _, err := p.readMessage(nc); err != nil {
					return
				}
				_, _ = nc.Write(reply)
				_, _ = io.Copy(io.Discard, nc)
			}()
		}
	}()
	return ln.Addr().String()
}

// rtmpHostileReplies are what a hostile server answers a client's connect
// with, and the refusal each must give.
func rtmpHostileReplies() []struct {
	name, limit, reason string
	reply               []byte
} {
	info := func(v []byte) []byte {
		return rtmpCat([]byte{0x03}, a0k("level"), a0s("error"), a0k("code"), a0s("NetConnection.Connect.Rejected"), a0k("x"), v, []byte{0, 0, 9})
	}
	return []struct {
		name, limit, reason string
		reply               []byte
	}{
		{name: "_error with a length bomb", limit: limitAMF, reason: "strict array of 2147483647",
			reply: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpCommandBody("_error", 1, []byte{0x05}, info(amfLengthBombValue)), 128)},
		{name: "_result with a depth bomb", limit: limitAMF, reason: "nesting deeper than 16",
			reply: rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpCommandBody("_result", 1, []byte{0x05}, info(amfDepthBomb(5000))), 128)},
		{name: "onStatus with a length bomb", limit: limitAMF, reason: "strict array of 2147483647",
			reply: rtmpAppendMessage(nil, 5, 20, 0, 0, rtmpCommandBody("onStatus", 0, []byte{0x05}, info(amfLengthBombValue)), 128)},
		{name: "onStatus with 1.6 million nested arrays", limit: limitPreAuthMessage, reason: "bytes on chunk stream 5",
			reply: rtmpAppendMessage(nil, 5, 20, 0, 0, rtmpCommandBody("onStatus", 0, []byte{0x05}, info(amfDepthBomb(1_600_000))), 128)[:64<<10]},
		{name: "AMF3 _error with a length bomb", limit: limitAMF, reason: "strict array of 2147483647",
			reply: rtmpAppendMessage(nil, 3, 17, 0, 0, append([]byte{0}, rtmpCommandBody("_error", 1, []byte{0x05}, info(amfLengthBombValue))...), 128)},
		{name: "data message with a long string past the end", limit: limitAMF, reason: "long string",
			reply: rtmpAppendMessage(nil, 5, 18, 0, 0, rtmpCat(a0s("onMetaData"), []byte{0x0c, 0x7f, 0xff, 0xff, 0xff}), 128)},
		{name: "chunk streams past the limit", limit: limitPreAuthStreams, reason: "more than 8 chunk streams",
			reply: func() []byte {
				var b []byte
				for i := range 9 {
					b = append(b, rtmpIncomplete(uint32(3+i), 9, 1, 468*128+1, 128)...)
				}
				return b
			}()},
	}
}

// TestRTMPPullHostileServer: a pulled source answering with AMF bombs or
// oversized messages ends that pull with a refusal; nothing else happens.
func TestRTMPPullHostileServer(t *testing.T) {
	for _, tt := range rtmpHostileReplies() {
		t.Run(tt.name, func(t *testing.T) {
			addr := rtmpHostileServer(t, tt.reply)
			logs, log := newRTMPLogs(t)
			w := &rtmpFakeWriter{done: make(chan struct{})}
			budget := NewBudget(1 << 20)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err := runRTMPPull(ctx, "rtmp://"+addr+"/live/src", w, log, budget)
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("pull ended with %v, want %q", err, tt.reason)
			}
			logs.waitFor(t, `msg="rtmp pull reply refused"`)
			if line := rtmpLogLine(logs.String(), "rtmp pull reply refused"); !strings.Contains(line, "limit="+tt.limit) || !strings.Contains(line, "remote=rtmp://"+addr) {
				t.Errorf("refusal %q, want limit=%s and the remote", line, tt.limit)
			}
			if u := budget.Used(); u != 0 {
				t.Errorf("budget holds %d bytes after the pull ended", u)
			}
		})
	}
}

// TestRelayHostileServer: a relay link whose unit answers with AMF bombs
// is refused and retried; the feed goes on.
func TestRelayHostileServer(t *testing.T) {
	for _, tt := range rtmpHostileReplies() {
		t.Run(tt.name, func(t *testing.T) {
			addr := rtmpHostileServer(t, tt.reply)
			logs, log := newRTMPLogs(t)
			inner := newRTMPFakeSink()
			r := NewRelay(inner, RelayConfig{Self: "a", Units: []Unit{{Name: "a"}, {Name: "b", Relay: addr}}, Secret: "s"}, log)
			defer r.Close()
			w, err := r.Publish("live", "x", "main", av.Source{Protocol: "rtmp"})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			logs.waitFor(t, `msg="relay reply refused"`)
			line := rtmpLogLine(logs.String(), "relay reply refused")
			if !strings.Contains(line, "limit="+tt.limit) || !strings.Contains(line, tt.reason) || !strings.Contains(line, "remote="+addr) {
				t.Errorf("refusal %q, want limit=%s, %q and the remote", line, tt.limit, tt.reason)
			}
		})
	}
}

// rtmpConnBytes is what one connection at the pre-authorization limits
// sends: every allowed chunk stream holding a message one byte short of
// the largest allowed.
func rtmpConnBytes(maxMessage int) []byte {
	size := (maxMessage-1)/128*128 + 1 // 8065 for 8 KiB: it holds 8064 bytes
	var b []byte
	for i := range rtmpPreAuthChunkStreams {
		b = append(b, rtmpIncomplete(uint32(3+i), 20, 0, size, 128)...)
	}
	return b
}

// BenchmarkRTMPConnMemory measures the heap a server holds per connection,
// idle after the handshake and at the pre-authorization limits (8 chunk
// streams each holding a message of 8 KiB minus a byte). Run:
//
//	go test -run '^$' -bench RTMPConnMemory -benchtime 200x ./ingest
func BenchmarkRTMPConnMemory(b *testing.B) {
	for _, held := range []bool{false, true} {
		name := "idle"
		if held {
			name = "preauth-limits"
		}
		b.Run(name, func(b *testing.B) {
			s := NewRTMPServer(RTMPConfig{Addr: "127.0.0.1:0", Limits: netguard.Limits{MaxConns: -1, MaxConnsPerIP: -1}},
				Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, slog.New(slog.DiscardHandler))
			if err := s.Start(); err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := rtmpConnBytes(s.cfg.PreAuthMaxMessageSize)
			before := rtmpHeap()
			conns := make([]net.Conn, 0, b.N)
			for range b.N {
				nc, err := net.Dial("tcp", s.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, nc)
				if err := handshake.HandshakeWithServer(nc, nc, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
					b.Fatal(err)
				}
				if held {
					if _, err := nc.Write(data); err != nil {
						b.Fatal(err)
					}
				}
			}
			want := int64(0)
			if held {
				want = int64(b.N) * int64(rtmpPreAuthChunkStreams*((s.cfg.PreAuthMaxMessageSize-1)/128*128))
			}
			deadline := time.Now().Add(30 * time.Second)
			for s.deps.Budget.Used() < want && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // the last connections settle
			after := rtmpHeap()
			b.ReportMetric(float64(after-before)/float64(b.N), "heap-B/conn")
			b.ReportMetric(float64(s.deps.Budget.Used())/float64(b.N), "budget-B/conn")
			for _, nc := range conns {
				nc.Close()
			}
		})
	}
}

func rtmpHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
