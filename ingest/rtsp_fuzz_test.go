package ingest

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// FuzzRTSPRequest sends arbitrary bytes to a running server: it must never
// panic, and must still answer a well-formed request afterwards.
func FuzzRTSPRequest(f *testing.F) {
	const sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" +
		"a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QADazZQUH7ARAAAAMAEAAAAwMg8UKZYA==,aOvjyyLA\r\n" +
		"a=control:streamid=0\r\n" +
		"m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/1\r\n" +
		"a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=118856E500\r\n" +
		"a=control:streamid=1\r\n"
	announce := "ANNOUNCE rtsp://127.0.0.1/live/f?token=secret RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n" +
		"Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp
	seeds := []string{
		"OPTIONS rtsp://127.0.0.1/live/x RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		announce,
		announce + "SETUP rtsp://127.0.0.1/live/f?token=secret/streamid=0 RTSP/1.0\r\nCSeq: 2\r\n" +
			"Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n\r\n",
		announce + "RECORD rtsp://127.0.0.1/live/f RTSP/1.0\r\nCSeq: 2\r\n\r\n",
		"DESCRIBE rtsp://127.0.0.1/live/x RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		"SETUP rtsp://127.0.0.1/live/x/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n",
		"$\x00\x00\x10\x80\x60\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01abcd",
		"\x00\x01\x02garbage",
		"GET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nSession: 1234\r\n\r\n",
		"TEARDOWN rtsp://127.0.0.1/live/x RTSP/1.0\r\nCSeq: 1\r\nSession: zzz\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}

	sink := newRTSPFakeSink()
	srv := NewRTSPServer(RTSPConfig{Addr: "127.0.0.1:0", ReadTimeout: time.Second},
		Deps{Sink: sink, Auth: rtspFakeAuth{token: "secret"}}, slog.New(slog.DiscardHandler))
	if err := srv.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	addr := srv.Addr().String()

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write(data)
		// end of input: the server answers what it understood and closes
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // until the server closes (or the deadline)
		c.Close()
		if err := rtspOptions(addr); err != nil {
			t.Fatalf("server after input: %v", err)
		}
	})
}
