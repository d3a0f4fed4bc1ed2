package netguard

import (
	"errors"
	"net"
	"testing"
	"time"
)

func tcpAddr(s string) net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", s)
	return a
}

func TestLimiter(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		remotes []string
		refused []bool
	}{
		{"no caps", Limits{}, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, []bool{false, false, false}},
		{"total", Limits{MaxConns: 2}, []string{"127.0.0.1:1", "127.0.0.2:2", "127.0.0.3:3"}, []bool{false, false, true}},
		{"per ip", Limits{MaxConnsPerIP: 1}, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.2:3"}, []bool{false, true, false}},
		{"v4 in v6 is one address", Limits{MaxConnsPerIP: 1}, []string{"127.0.0.1:1", "[::ffff:127.0.0.1]:2"}, []bool{false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.limits)
			var releases []func()
			for i, r := range tt.remotes {
				rel, err := l.Acquire(tcpAddr(r))
				var re *RefusedError
				if got := errors.As(err, &re); got != tt.refused[i] {
					t.Fatalf("conn %d from %s: refused=%v, want %v (%v)", i, r, got, tt.refused[i], err)
				}
				if rel != nil {
					releases = append(releases, rel)
				}
			}
			for _, rel := range releases {
				rel()
				rel() // a second release gives nothing back twice
			}
			if n := l.Open(); n != 0 {
				t.Fatalf("open after release = %d", n)
			}
			if len(l.perIP) != 0 {
				t.Fatalf("per-address map keeps %d entries after release", len(l.perIP))
			}
		})
	}
}

func TestListenerRefusesOverCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := NewListener(ln, NewLimiter(Limits{MaxConnsPerIP: 1}), nil, "test")
	defer gl.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1 := <-accepted
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// The second connection is closed by the server without a byte.
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("over-cap connection read %d bytes, err %v; want closed", n, err)
	}
	// Closing the first gives its slot back.
	s1.Close()
	c3, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	select {
	case s3 := <-accepted:
		s3.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("connection after release not accepted")
	}
	if r := gl.Limiter().Refused(); r != 1 {
		t.Fatalf("refused = %d, want 1", r)
	}
}
