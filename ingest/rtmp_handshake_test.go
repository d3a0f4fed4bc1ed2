package ingest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp/message"
)

// The digest handshake as a client does it, written from the client's side
// (librtmp's HandShake, ffmpeg's rtmp_handshake) to check the server's.

func hsHMAC(key []byte, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// hsOffset is the digest offset in a C1/S1 for scheme 0 (pointer at byte 8)
// or 1 (pointer at byte 772).
func hsOffset(sig []byte, scheme int) int {
	p := 8 + 764*scheme
	return (int(sig[p])+int(sig[p+1])+int(sig[p+2])+int(sig[p+3]))%728 + p + 4
}

var (
	hsPlayerKey = append([]byte("Genuine Adobe Flash Player 001"), rtmpKeyTail...)
	hsServerKey = append([]byte("Genuine Adobe Flash Media Server 001"), rtmpKeyTail...)
)

// hsDigestC1 builds a digest client's C1 (version 9.0.124.2) with its
// digest at the offset of scheme, from seed.
func hsDigestC1(seed uint64, scheme int) (c1, digest []byte) {
	r := rand.New(rand.NewPCG(seed, 1))
	c1 = make([]byte, 1536)
	for i := 8; i < len(c1); i++ {
		c1[i] = byte(r.Uint32())
	}
	copy(c1[4:], []byte{9, 0, 124, 2})
	off := hsOffset(c1, scheme)
	d := hsHMAC(hsPlayerKey[:30], c1[:off], c1[off+32:])
	copy(c1[off:], d)
	return c1, d
}

// hsVerifyDigestReply checks S1 and S2 as ffmpeg and librtmp do when they
// play: S1's digest under the server key at either scheme's offset, and
// S2's signature keyed with the client's digest.
func hsVerifyDigestReply(t *testing.T, c1Digest, s1, s2 []byte) {
	t.Helper()
	if s1[4] < 3 {
		t.Errorf("S1 version %v: ffmpeg verifies S1 only for versions from 3", s1[4:8])
	}
	ok := false
	for scheme := range 2 {
		off := hsOffset(s1, scheme)
		if bytes.Equal(s1[off:off+32], hsHMAC(hsServerKey[:36], s1[:off], s1[off+32:])) {
			ok = true
		}
	}
	if !ok {
		t.Error("S1 digest does not verify at either offset")
	}
	key := hsHMAC(hsServerKey, c1Digest)
	if !bytes.Equal(s2[1504:], hsHMAC(key, s2[:1504])) {
		t.Error("S2 signature does not match the client's digest")
	}
}

func TestRTMPHandshakeReply(t *testing.T) {
	simple := make([]byte, 1536)
	for i := 8; i < len(simple); i++ {
		simple[i] = byte(i * 7)
	}
	copy(simple, []byte{0, 0, 1, 2}) // uptime; version zero
	// A C1 with a version but no valid digest is answered the simple way.
	fake, _ := hsDigestC1(3, 0)
	fake[hsOffset(fake, 0)] ^= 1

	for _, tc := range []struct {
		name   string
		c1     []byte
		digest []byte
	}{
		{"simple", simple, nil},
		{"version without digest", fake, nil},
		{"digest scheme 0 (librtmp, ffmpeg)", nil, nil},
		{"digest scheme 1 (Flash Player 10)", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c1 := tc.c1
			switch {
			case strings.Contains(tc.name, "scheme 0"):
				c1, tc.digest = hsDigestC1(1, 0)
			case strings.Contains(tc.name, "scheme 1"):
				c1, tc.digest = hsDigestC1(2, 1)
			}
			c2 := bytes.Repeat([]byte{0xc2}, 1536)
			in := append(append([]byte{3}, c1...), c2...)
			var out bytes.Buffer
			digest, err := rtmpServerHandshake(bytes.NewReader(in), &out)
			if err != nil {
				t.Fatal(err)
			}
			if digest != (tc.digest != nil) {
				t.Fatalf("digest form %v, want %v", digest, tc.digest != nil)
			}
			b := out.Bytes()
			if len(b) != 3073 || b[0] != 3 {
				t.Fatalf("reply of %d bytes, S0 %d", len(b), b[0])
			}
			s1, s2 := b[1:1537], b[1537:]
			if tc.digest == nil {
				if !bytes.Equal(s2, c1) {
					t.Error("S2 does not echo C1 byte for byte (librtmp: client signature does not match)")
				}
				if !bytes.Equal(s1[4:8], []byte{0, 0, 0, 0}) {
					t.Errorf("S1 version %v for a simple client", s1[4:8])
				}
				return
			}
			hsVerifyDigestReply(t, tc.digest, s1, s2)
		})
	}
}

func TestRTMPHandshakeRefused(t *testing.T) {
	full := append([]byte{3}, make([]byte, 3072)...)
	for _, tc := range []struct {
		name  string
		in    []byte
		proto bool
		err   error
	}{
		{"empty", nil, false, io.EOF},
		{"RTMPE (version 6)", append([]byte{6}, make([]byte, 3072)...), true, nil},
		{"version 0", []byte{0}, true, nil},
		{"short C1", full[:900], false, io.ErrUnexpectedEOF},
		{"no C2", full[:1537], false, io.ErrUnexpectedEOF},
		{"short C2", full[:3000], false, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rtmpServerHandshake(bytes.NewReader(tc.in), io.Discard)
			var perr *rtmpProtocolError
			switch {
			case tc.proto && !errors.As(err, &perr):
				t.Fatalf("err %v, want a protocol error", err)
			case !tc.proto && !errors.Is(err, tc.err):
				t.Fatalf("err %v, want %v", err, tc.err)
			}
		})
	}
}

// TestRTMPHandshakeServer does the digest handshake with a running server,
// then connects: go-rtmp behind rtmpNetConn must not notice the handshake
// was answered for it.
func TestRTMPHandshakeServer(t *testing.T) {
	for _, digest := range []bool{true, false} {
		name := "simple"
		if digest {
			name = "digest"
		}
		t.Run(name, func(t *testing.T) {
			s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{token: "T"}}, nil)
			nc, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			c1 := make([]byte, 1536)
			var cd []byte
			if digest {
				c1, cd = hsDigestC1(7, 0)
			}
			if _, err := nc.Write(append([]byte{3}, c1...)); err != nil {
				t.Fatal(err)
			}
			reply := make([]byte, 3073)
			if _, err := io.ReadFull(nc, reply); err != nil {
				t.Fatal(err)
			}
			if digest {
				hsVerifyDigestReply(t, cd, reply[1:1537], reply[1537:])
			} else if !bytes.Equal(reply[1537:], c1) {
				t.Error("S2 does not echo C1")
			}
			typeID, payload, err := rtmpEncodeCommand("connect", 1, &message.NetConnectionConnect{
				Command: message.NetConnectionConnectCommand{App: "live", TCURL: "rtmp://x/live"},
			})
			if err != nil {
				t.Fatal(err)
			}
			msg := append(bytes.Clone(reply[1:1537]), rtmpAppendMessage(nil, 3, typeID, 0, 0, payload, 128)...) // C2, connect
			if _, err := nc.Write(msg); err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, 4096)
			for !bytes.Contains(got, []byte("NetConnection.Connect.Success")) {
				n, err := nc.Read(buf)
				if err != nil {
					t.Fatalf("no connect result (%v); got %q", err, got)
				}
				got = append(got, buf[:n]...)
			}
		})
	}
}

// FuzzRTMPHandshake feeds arbitrary bytes to the server's handshake reader:
// it must not panic, and it answers only a whole C0+C1 of version 3.
func FuzzRTMPHandshake(f *testing.F) {
	c1, _ := hsDigestC1(1, 0)
	c1b, _ := hsDigestC1(2, 1)
	maxOff := make([]byte, 1536) // offset bytes at their largest
	for i := range maxOff {
		maxOff[i] = 0xff
	}
	for _, seed := range [][]byte{
		nil,
		{3},
		{6},
		append([]byte{3}, make([]byte, 3072)...),
		append(append([]byte{3}, c1...), make([]byte, 1536)...),
		append(append([]byte{3}, c1b...), make([]byte, 1536)...),
		append(append([]byte{3}, maxOff...), maxOff...),
		append([]byte{3}, c1[:700]...),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		_, err := rtmpServerHandshake(bytes.NewReader(data), &out)
		if out.Len() > 0 && (len(data) < 1537 || data[0] != 3 || out.Len() != 3073) {
			t.Fatalf("answered %d bytes to %d bytes of input", out.Len(), len(data))
		}
		if err == nil && len(data) < 3073 {
			t.Fatalf("no error for %d bytes", len(data))
		}
	})
}

// BenchmarkRTMPHandshakeReply is the server's cost of answering one
// handshake (the reply, without the socket).
func BenchmarkRTMPHandshakeReply(b *testing.B) {
	digestC1, _ := hsDigestC1(1, 0)
	for _, bc := range []struct {
		name string
		c1   []byte
	}{{"simple", make([]byte, 1536)}, {"digest", digestC1}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rtmpHandshakeReply(bc.c1, 0, func(p []byte) { clear(p) })
			}
		})
	}
}
