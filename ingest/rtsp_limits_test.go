package ingest

import (
	"bufio"
	"bytes"
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
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
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
