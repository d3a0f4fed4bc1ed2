package ingest

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// rtmpFuzzSeeds are byte streams a client sends after the handshake.
func rtmpFuzzSeeds(t testing.TB) [][]byte {
	session := rtmpPublishSession(t, "demo?token=T")
	play := rtmpPublishSession(t, "x")[:0]
	typeID, payload, err := rtmpEncodeCommand("connect", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	play = rtmpAppendMessage(play, 3, typeID, 0, 0, payload, 128)
	play = append(play, session[len(play):]...) // connect, createStream, publish... as a seed to mutate
	return [][]byte{
		nil,
		session,
		play,
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		rtmpRawHeader(0, 3, 0, 0xffffff, 9, 0),
		{0xc3, 0xc3, 0xc3},
		rtmpAppendMessage(nil, 2, 1, 0, 0, []byte{0, 0, 0x10, 0}, 128),
		rtmpAppendMessage(nil, 3, 22, 0, 0, av.AppendRawTag(nil, 9, 5, []byte{0x17, 1, 0, 0, 0}), 128),
		rtmpAppendMessage(nil, 0x1234, 4, 0, 0, []byte{0, 6, 0, 0, 0, 1}, 128),
		// The crash classes of issue 10: the length bomb (the 52
		// bytes), depth bombs under and over the pre-auth message limit,
		// the same in publish, play, data and AMF3 messages.
		[]byte(rtmpLengthBomb),
		rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), amfDepthBomb(1500)), 128),
		rtmpCat(rtmpSCS(4096), rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpConnectBody(a0k("x"), amfDepthBomb(20000)), 4096)),
		rtmpCat(rtmpUpToPublish(), rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("publish", 0, []byte{0x05}, a0s("x?token=T"), amfLengthBombValue), 128)),
		rtmpCat(rtmpUpToPublish(), rtmpAppendMessage(nil, 8, 20, 1, 0, rtmpCommandBody("play", 0, []byte{0x05}, a0s("x"), amfDepthBomb(1000)), 128)),
		rtmpCat(rtmpUpToPublish(), rtmpPublishCmd("y?token=T"),
			rtmpAppendMessage(nil, 4, 18, 1, 0, rtmpCat(a0s("@setDataFrame"), a0s("onMetaData"), amfDepthBomb(3000)), 128)),
		rtmpAppendMessage(nil, 3, 17, 0, 0, append([]byte{0}, rtmpConnectBody(a0k("x"), amfLengthBombValue)...), 128),
		rtmpAppendMessage(nil, 3, 15, 0, 0, rtmpCat([]byte{0}, a0s("onMetaData"), amfDepthBomb(100)), 128),
		rtmpConnBytes(8192),
	}
}

// FuzzRTMPChunkParser: any bytes give messages within the limits or an
// error, never a panic.
func FuzzRTMPChunkParser(f *testing.F) {
	for _, s := range rtmpFuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		p := newRTMPChunkParser(limit)
		r := bytes.NewReader(data)
		for range 1000 {
			cs, err := p.readMessage(r)
			if err != nil {
				return
			}
			if len(cs.buf) == 0 || len(cs.buf) > limit || uint32(len(cs.buf)) != cs.length {
				t.Fatalf("message of %d bytes (length %d)", len(cs.buf), cs.length)
			}
			if p.chunkSize == 0 || p.chunkSize > rtmpMaxChunkSize || len(p.streams) > rtmpMaxChunkStreams {
				t.Fatalf("chunk size %d, %d streams", p.chunkSize, len(p.streams))
			}
		}
	})
}

// rtmpPipeListener hands out one net.Pipe end, then waits for Close.
type rtmpPipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *rtmpPipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *rtmpPipeListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *rtmpPipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// FuzzRTMPConn feeds arbitrary bytes after a valid handshake into a server
// connection: it must not panic, and the server must close promptly.
func FuzzRTMPConn(f *testing.F) {
	for _, s := range rtmpFuzzSeeds(f) {
		f.Add(s)
	}
	pkts := []*av.Packet{
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: []byte{1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 0}},
		{Kind: av.KindVideo, Codec: av.CodecH264, Key: true, DTS: time.Second, Data: rtmpPattern(5000)},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srvEnd, cliEnd := net.Pipe()
		defer cliEnd.Close()
		ln := &rtmpPipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
		ln.conns <- srvEnd
		deps := Deps{
			Sink: newRTMPFakeSink(),
			Auth: &rtmpFakeAuth{token: "T"},
			Play: &rtmpFakePlay{streams: map[string][]*av.Packet{"live/x": pkts}},
		}
		s := NewRTMPServer(RTMPConfig{MaxMessageSize: 1 << 16}, deps, slog.New(slog.DiscardHandler))
		s.handshakeTimeout, s.idleTimeout, s.writeTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		if err := s.serve(ln); err != nil {
			t.Fatal(err)
		}
		defer func() {
			closed := make(chan struct{})
			go func() { s.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("server hangs in Close")
			}
		}()

		// Handshake by hand: a pipe has no buffer, so C0+C1 go out while
		// S0+S1+S2 are read.
		_ = cliEnd.SetDeadline(time.Now().Add(5 * time.Second))
		c0c1 := make([]byte, 1+1536)
		c0c1[0] = rtmpVersion
		go func() { _, _ = cliEnd.Write(c0c1) }()
		s012 := make([]byte, 1+1536+1536)
		if _, err := io.ReadFull(cliEnd, s012); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, cliEnd)
		}()
		_ = cliEnd.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, err := cliEnd.Write(append(s012[1:1537:1537], data...)) // C2 echoes S1
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			t.Fatal("server stopped reading without closing")
		}
		cliEnd.Close()
		<-drained
	})
}

// FuzzRTMPPullMessages feeds arbitrary chunks to the pull client as if a
// server sent them while playing.
func FuzzRTMPPullMessages(f *testing.F) {
	for _, s := range rtmpFuzzSeeds(f) {
		f.Add(s)
	}
	status := func(code string) []byte {
		typeID, payload, err := rtmpEncodeCommand("onStatus", 0, rtmpOnStatus{level: "status", code: code})
		if err != nil {
			f.Fatal(err)
		}
		return rtmpAppendMessage(nil, 5, typeID, 1, 0, payload, 128)
	}
	f.Add(append(status("NetStream.Play.Start"), rtmpPublishSession(f, "x")...))
	f.Add(status("NetStream.Play.Stop"))
	for _, s := range rtmpHostileReplySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }() // acks and pongs
		w := &rtmpFakeWriter{done: make(chan struct{})}
		cl := newRTMPPullClient(a, w, slog.New(slog.DiscardHandler))
		cl.br.Reset(bytes.NewReader(data))
		cl.playing, cl.streamID = true, 1
		for range 1000 {
			if err := cl.step(); err != nil {
				return
			}
		}
	})
}

// rtmpHostileReplySeeds are server answers carrying the crash classes of
// issue 10 (length bombs, depth bombs, in AMF0 and AMF3 forms), framed as
// a server sends them.
func rtmpHostileReplySeeds() [][]byte {
	var seeds [][]byte
	for _, r := range rtmpHostileReplies() {
		seeds = append(seeds, r.reply)
	}
	ok := func(name string, tx float64, args ...[]byte) []byte {
		return rtmpAppendMessage(nil, 3, 20, 0, 0, rtmpCommandBody(name, tx, args...), 128)
	}
	info := rtmpCat([]byte{0x03}, a0k("level"), a0s("status"), a0k("code"), a0s("NetStream.Publish.Start"), []byte{0, 0, 9})
	seeds = append(seeds,
		rtmpCat(ok("_result", 1, []byte{0x05}, info), ok("_result", 2, []byte{0x05}, a0n(1)), rtmpAppendMessage(nil, 5, 20, 1, 0, rtmpCommandBody("onStatus", 0, []byte{0x05}, info), 128)),
		rtmpCat(ok("_result", 1, []byte{0x05}, info), ok("_result", 2, []byte{0x05}, amfLengthBombValue)),
		rtmpCat(ok("_result", 1, []byte{0x05}, info), ok("_error", 2, []byte{0x05}, amfDepthBomb(3000))),
		rtmpCat(ok("_result", 1, []byte{0x05}, info), ok("_result", 2, []byte{0x05}, a0n(1)),
			rtmpAppendMessage(nil, 5, 20, 1, 0, rtmpCommandBody("onStatus", 0, []byte{0x05}, amfLengthBombValue), 128)),
	)
	return seeds
}

// rtmpFuzzClient is a pull client reading data as the server's bytes
// after the handshake; what it writes is discarded.
func rtmpFuzzClient(t *testing.T, data []byte, w FeedWriter) *rtmpPullClient {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() { _, _ = io.Copy(io.Discard, b) }()
	cl := newRTMPPullClient(a, w, slog.New(slog.DiscardHandler))
	cl.parser.budget.b = NewBudget(1 << 20)
	cl.br.Reset(bytes.NewReader(data))
	return cl
}

// FuzzRTMPPullReplies: a pulled source's answers to connect, createStream
// and play (_result, _error, onStatus) are checked before go-rtmp decodes
// them: any bytes end in an error or a playing client, never a crash.
func FuzzRTMPPullReplies(f *testing.F) {
	for _, s := range rtmpHostileReplySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cl := rtmpFuzzClient(t, data, &rtmpFakeWriter{done: make(chan struct{})})
		defer cl.parser.budget.release()
		if err := cl.connect(rtmpPullTarget{app: "live", name: "x", tcURL: "rtmp://h/live"}); err != nil {
			return
		}
		for range 100 {
			if err := cl.step(); err != nil {
				return
			}
		}
	})
}

// FuzzRelayReplies: what a unit answers a relay link (connect,
// createStream, publish) never crashes the relaying node.
func FuzzRelayReplies(f *testing.F) {
	for _, s := range rtmpHostileReplySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cl := rtmpFuzzClient(t, data, nil)
		if err := cl.connect(rtmpPullTarget{app: "live", name: "x", tcURL: "rtmp://h/live"}); err != nil {
			return
		}
		_ = awaitPublishStart(cl)
	})
}

// FuzzRTMPCheckedDecode: whatever av.CheckAMF0 lets through, go-rtmp and
// go-amf0 decode in bounded time and memory (a bomb that passed would
// crash this target with an out-of-memory or a stack overflow); their own
// errors and panics (type assertions in go-rtmp) are fine.
func FuzzRTMPCheckedDecode(f *testing.F) {
	f.Add(uint8(20), []byte(rtmpLengthBomb)[12:])
	f.Add(uint8(20), rtmpConnectBody(a0k("x"), amfDepthBomb(40)))
	f.Add(uint8(20), rtmpCommandBody("publish", 0, []byte{0x05}, a0s("x"), amfLengthBombValue))
	f.Add(uint8(18), rtmpCat(a0s("@setDataFrame"), a0s("onMetaData"), []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0, 0, 9}))
	f.Add(uint8(17), append([]byte{0}, rtmpConnectBody(a0k("x"), amfDepthBomb(20))...))
	f.Add(uint8(15), append([]byte{0}, rtmpCat(a0s("onMetaData"), []byte{0x0a, 0, 0, 0, 2, 5, 5})...))
	f.Fuzz(func(t *testing.T, typeID uint8, body []byte) {
		if !rtmpAMFMessage(typeID) || rtmpCheckAMF(typeID, body) != nil {
			return
		}
		_ = rtmpSafeDecode(func() error {
			var msg message.Message
			if err := message.NewDecoder(bytes.NewReader(body)).Decode(message.TypeID(typeID), &msg); err != nil {
				return err
			}
			switch m := msg.(type) {
			case *message.CommandMessage:
				var v message.AMFConvertible
				return message.CmdBodyDecoderFor(m.CommandName, m.TransactionID)(m.Body, message.NewAMFDecoder(m.Body, m.Encoding), &v)
			case *message.DataMessage:
				var v message.AMFConvertible
				return message.DataBodyDecoderFor(m.Name)(m.Body, message.NewAMFDecoder(m.Body, m.Encoding), &v)
			}
			return nil
		})
		// Every value the way go-amf0 reads an unknown command's arguments.
		_ = rtmpSafeDecode(func() error {
			d := message.NewAMFDecoder(bytes.NewReader(body), message.EncodingTypeAMF0)
			for range len(body) + 1 {
				var v any
				if err := d.Decode(&v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
