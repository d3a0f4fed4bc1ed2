package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/netguard"
)

// TestRTSPLimits: RTSP connections that never reach RECORD, that hold
// request bytes past the budget, or that pass the connection caps are
// closed with a refusal naming the limit; the budget is given back.
func TestRTSPLimits(t *testing.T) {
	tests := []struct {
		name   string
		cfg    RTSPConfig
		budget int64
		// client runs against addr; it returns when the server closed it.
		client func(t *testing.T, addr string) net.Conn
		limit  string // "" for a netguard refusal at accept
		reason string
	}{
		{name: "OPTIONS every 100ms, never RECORD", cfg: RTSPConfig{ReadTimeout: time.Second, SetupTimeout: 500 * time.Millisecond},
			client: func(t *testing.T, addr string) net.Conn {
				c := rtspDial(t, addr)
				r := bufio.NewReader(c)
				for i := 1; i < 100; i++ {
					if _, err := fmt.Fprintf(c, "OPTIONS rtsp://%s/live/x RTSP/1.0\r\nCSeq: %d\r\n\r\n", addr, i); err != nil {
						break
					}
					if _, err := r.ReadString('\n'); err != nil {
						break
					}
					_, _ = r.Discard(r.Buffered())
					time.Sleep(100 * time.Millisecond)
				}
				return c
			},
			limit: limitSetupTimeout, reason: "no RECORD within 500ms of the connection"},
		{name: "request bytes past the budget", cfg: RTSPConfig{ReadTimeout: 5 * time.Second}, budget: 64 << 10,
			client: func(t *testing.T, addr string) net.Conn {
				c := rtspDial(t, addr)
				// gortsplib skips what starts no request, so this is read
				// on (up to rtspMaxRequestBytes) and charged.
				_, _ = c.Write(append([]byte("Ox"), bytes.Repeat([]byte{'x'}, 40<<10)...))
				return c
			},
			limit: limitBudget, reason: "ingest buffer budget for connections not yet publishing or playing (32768 bytes) spent"},
		{name: "second connection from one address", cfg: RTSPConfig{Limits: netguard.Limits{MaxConnsPerIP: 1}},
			client: func(t *testing.T, addr string) net.Conn {
				first := rtspDial(t, addr)
				t.Cleanup(func() { first.Close() })
				if _, err := fmt.Fprintf(first, "OPTIONS rtsp://%s/live/x RTSP/1.0\r\nCSeq: 1\r\n\r\n", addr); err != nil {
					t.Fatal(err)
				}
				if _, err := bufio.NewReader(first).ReadString('\n'); err != nil {
					t.Fatal(err)
				}
				return rtspDial(t, addr)
			},
			reason: "address at its cap of 1 connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs, log := newRTMPLogs(t)
			tt.cfg.Addr = "127.0.0.1:0"
			budget := NewBudget(tt.budget)
			s := NewRTSPServer(tt.cfg, Deps{Sink: newRTSPFakeSink(), Auth: rtspFakeAuth{token: "secret"}, Budget: budget}, log)
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			c := tt.client(t, s.Addr().String())
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("connection left open")
			}
			if tt.limit == "" {
				line := rtspWaitLine(t, logs, `msg="connection refused"`, "listener=rtsp")
				if !strings.Contains(line, tt.reason) {
					t.Errorf("refusal %q, want %q", line, tt.reason)
				}
				return
			}
			line := rtspWaitLine(t, logs, `msg="rtsp connection refused"`, "remote="+c.LocalAddr().String()+" ")
			if !strings.Contains(line, "limit="+tt.limit) || !strings.Contains(line, tt.reason) {
				t.Errorf("refusal %q, want limit=%s and %q", line, tt.limit, tt.reason)
			}
			rtmpWaitFor(t, 5*time.Second, "budget given back", func() bool { return budget.Used() == 0 })
			if err := rtspOptions(s.Addr().String()); err != nil {
				t.Errorf("server after the refusal: %v", err)
			}
		})
	}
}

// TestRTSPMinPublishRate: a publisher sending RTP over TCP below the
// minimum rate is closed with a refusal; one above it stays.
func TestRTSPMinPublishRate(t *testing.T) {
	tests := []struct {
		name  string
		burst bool // a whole RTP packet each tick, else one byte
		limit string
	}{
		{name: "one byte every 50ms", limit: limitMinRate},
		{name: "1.4 KB every 50ms", burst: true},
	}
	logs, log := newRTMPLogs(t)
	s := NewRTSPServer(RTSPConfig{Addr: "127.0.0.1:0", ReadTimeout: 5 * time.Second, MinPublishRate: 2000, MinPublishRateWindow: 300 * time.Millisecond},
		Deps{Sink: newRTSPFakeSink(), Auth: rtspFakeAuth{token: "secret"}}, log)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // after the parallel subtests
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := rtspDial(t, s.Addr().String())
			rtspRecordTCP(t, c, s.Addr().String(), fmt.Sprintf("cam%d", i))
			// An RTP packet on interleaved channel 0: a single NAL unit
			// (non-IDR slice) of 1400 bytes.
			rtp := []byte{0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x41}
			rtp = append(rtp, rtmpPattern(1387)...)
			frame := append([]byte{'$', 0, byte(len(rtp) >> 8), byte(len(rtp))}, rtp...)
			closed := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, c); close(closed) }()
			end := time.Now().Add(1500 * time.Millisecond)
			if tt.limit != "" {
				end = time.Now().Add(10 * time.Second)
			}
		loop:
			for k := 0; time.Now().Before(end); k++ {
				select {
				case <-closed:
					break loop
				case <-time.After(50 * time.Millisecond):
				}
				b := frame
				if !tt.burst {
					b = frame[k%len(frame) : k%len(frame)+1]
				} else {
					binary.BigEndian.PutUint16(b[6:], uint16(k+2)) // RTP sequence number
				}
				if _, err := c.Write(b); err != nil {
					break
				}
			}
			if tt.limit == "" {
				select {
				case <-closed:
					t.Fatal("publisher above the minimum rate closed")
				default:
				}
				return
			}
			<-closed
			line := rtspWaitLine(t, logs, `msg="rtsp connection refused"`, "remote="+c.LocalAddr().String()+" ")
			if !strings.Contains(line, "limit="+tt.limit) || !strings.Contains(line, "below the minimum of 2000 bytes/s") {
				t.Errorf("refusal %q", line)
			}
		})
	}
}

// rtspRecordTCP announces an H.264 stream live/name, sets it up with RTP
// over TCP (interleaved 0-1) and starts recording.
func rtspRecordTCP(t *testing.T, c net.Conn, addr, name string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	r := bufio.NewReader(c)
	base := "rtsp://" + addr + "/live/" + name
	sdp := "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" +
		"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n"
	session := ""
	do := func(req string) {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		status, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "RTSP/1.0 200") {
			t.Fatalf("%q answered %q, %v", strings.SplitN(req, "\r\n", 2)[0], status, err)
		}
		length := 0
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			line = strings.TrimSpace(line)
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ":")
			switch strings.ToLower(k) {
			case "session":
				session, _, _ = strings.Cut(strings.TrimSpace(v), ";")
			case "content-length":
				fmt.Sscan(strings.TrimSpace(v), &length)
			}
		}
		_, _ = r.Discard(length)
	}
	do(fmt.Sprintf("ANNOUNCE %s?token=secret RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", base, len(sdp), sdp))
	do(fmt.Sprintf("SETUP %s/trackID=0?token=secret RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n\r\n", base))
	do(fmt.Sprintf("RECORD %s?token=secret RTSP/1.0\r\nCSeq: 3\r\nSession: %s\r\nRange: npt=0.000-\r\n\r\n", base, session))
}

func rtspDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rtspWaitLine waits for a log line holding every one of parts.
func rtspWaitLine(t *testing.T, logs *rtmpLogs, parts ...string) string {
	t.Helper()
	var found string
	rtmpWaitFor(t, 10*time.Second, fmt.Sprintf("log line with %q", parts), func() bool {
	lines:
		for _, line := range strings.Split(logs.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			found = line
			return true
		}
		return false
	})
	return found
}

// TestRTSPUDPReadBuffer: the UDP sockets get a 4 MiB receive buffer unless
// the config says otherwise; a negative value leaves the system's default.
func TestRTSPUDPReadBuffer(t *testing.T) {
	for _, tt := range []struct{ set, want int }{{0, 4 << 20}, {1 << 20, 1 << 20}, {-1, 0}} {
		s := NewRTSPServer(RTSPConfig{Addr: "127.0.0.1:0", UDPReadBuffer: tt.set}, Deps{}, nil)
		if s.cfg.UDPReadBuffer != tt.want {
			t.Errorf("udp_read_buffer %d: %d, want %d", tt.set, s.cfg.UDPReadBuffer, tt.want)
		}
	}
}
