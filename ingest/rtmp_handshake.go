package ingest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"time"
)

// This file answers the RTMP handshake (RTMP specification §5.2) for
// rtmpNetConn, in front of go-rtmp, which knows only the simple handshake.
//
// Two kinds of client exist. Simple clients (librtmp without SWF
// verification, GStreamer's rtmp2) send C1 with a zero version and expect
// S2 to echo C1 byte for byte; librtmp warns "client signature does not
// match" otherwise. Digest clients (Flash Player 9 and later, ffmpeg's own
// RTMP client) embed an HMAC-SHA256 digest in C1, keyed with the Flash
// Player constant, at an offset derived from C1 itself; they expect S1 to
// carry a digest keyed with the Flash Media Server constant, and S2 to end
// in a signature derived from C1's digest. ffmpeg, playing, refuses a
// server whose S1 names a version without them.
//
// Everything here reads fixed-size blocks; nothing a client sends is taken
// as a length. C2 is read and not checked (clients' C2 vary; nginx-rtmp and
// go-rtmp's SkipHandshakeVerification do the same).

const (
	rtmpSigSize    = 1536 // C1, S1, C2, S2
	rtmpDigestSize = sha256.Size
	// rtmpDigestSpan is the range of digest offsets in one half of C1/S1.
	rtmpDigestSpan = 728
)

// rtmpKeyTail follows the Flash Player and Flash Media Server names in the
// full handshake keys (the specification of the digest handshake, as
// librtmp, ffmpeg and every RTMP server use it).
var rtmpKeyTail = []byte{
	0xf0, 0xee, 0xc2, 0x4a, 0x80, 0x68, 0xbe, 0xe8, 0x2e, 0x00, 0xd0, 0xd1,
	0x02, 0x9e, 0x7e, 0x57, 0x6e, 0xec, 0x5d, 0x2d, 0x29, 0x80, 0x6f, 0xab,
	0x93, 0xb8, 0xe6, 0x36, 0xcf, 0xeb, 0x31, 0xae,
}

const (
	rtmpPlayerName = "Genuine Adobe Flash Player 001"       // C1 digest key
	rtmpServerName = "Genuine Adobe Flash Media Server 001" // S1 digest key
)

// rtmpServerKey is the full server key: its name, then rtmpKeyTail. It
// keys the S2 signature.
func rtmpServerKey() []byte {
	return append([]byte(rtmpServerName), rtmpKeyTail...)
}

// rtmpServerVersion is the version S1 names for digest clients (FMS 3.5.1.1,
// as librtmp's server answers); it is 3 or more, so ffmpeg verifies S1.
var rtmpServerVersion = [4]byte{3, 5, 1, 1}

// rtmpDigestOffset returns where the digest sits in a 1536-byte C1 or S1
// for scheme 0 (offset bytes at 8, digest in the first half) or scheme 1
// (offset bytes at 772, digest in the second half).
func rtmpDigestOffset(sig []byte, scheme int) int {
	base := 8
	if scheme == 1 {
		base = 772
	}
	sum := int(sig[base]) + int(sig[base+1]) + int(sig[base+2]) + int(sig[base+3])
	return sum%rtmpDigestSpan + base + 4
}

// rtmpSigDigest is the HMAC-SHA256 with key of sig without its 32 bytes at
// off.
func rtmpSigDigest(sig []byte, off int, key []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(sig[:off])
	h.Write(sig[off+rtmpDigestSize:])
	return h.Sum(nil)
}

// rtmpClientDigest finds the digest of a digest client's C1: the scheme
// whose offset holds a valid one (clients use either). ok is false for
// simple clients.
func rtmpClientDigest(c1 []byte) (digest []byte, scheme int, ok bool) {
	key := []byte(rtmpPlayerName)
	for _, scheme := range [...]int{1, 0} {
		off := rtmpDigestOffset(c1, scheme)
		if hmac.Equal(c1[off:off+rtmpDigestSize], rtmpSigDigest(c1, off, key)) {
			return c1[off : off+rtmpDigestSize], scheme, true
		}
	}
	return nil, 0, false
}

// rtmpHandshakeReply builds S0+S1+S2 for C1. random fills the random parts
// (crypto/rand.Read in the server). digest reports whether c1 was a digest
// client's.
func rtmpHandshakeReply(c1 []byte, uptime uint32, random func([]byte)) (out []byte, digest bool) {
	out = make([]byte, 1+2*rtmpSigSize)
	out[0] = rtmpVersion
	s1 := out[1 : 1+rtmpSigSize]
	s2 := out[1+rtmpSigSize:]
	binary.BigEndian.PutUint32(s1, uptime)
	random(s1[8:])

	cd, scheme, ok := rtmpClientDigest(c1)
	if !ok {
		// S1 version stays zero: librtmp then does the simple handshake.
		copy(s2, c1)
		return out, false
	}
	copy(s1[4:8], rtmpServerVersion[:])
	off := rtmpDigestOffset(s1, scheme)
	copy(s1[off:], rtmpSigDigest(s1, off, []byte(rtmpServerName)))

	random(s2[:rtmpSigSize-rtmpDigestSize])
	h := hmac.New(sha256.New, rtmpServerKey())
	h.Write(cd)
	h = hmac.New(sha256.New, h.Sum(nil))
	h.Write(s2[:rtmpSigSize-rtmpDigestSize])
	copy(s2[rtmpSigSize-rtmpDigestSize:], h.Sum(nil))
	return out, true
}

// rtmpServerHandshake reads C0+C1 from r, writes S0+S1+S2 to w in one
// write, then reads C2. A C0 other than version 3 (RTMPE among them) is a
// protocol error. It reports whether the client used the digest form.
func rtmpServerHandshake(r io.Reader, w io.Writer) (digest bool, err error) {
	buf := make([]byte, 1+rtmpSigSize)
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return false, err
	}
	if buf[0] != rtmpVersion {
		return false, rtmpProtoErrorf("handshake version %d, want %d", buf[0], rtmpVersion)
	}
	if _, err := io.ReadFull(r, buf[1:]); err != nil {
		return false, noEOF(err)
	}
	out, digest := rtmpHandshakeReply(buf[1:], uint32(time.Now().UnixMilli()), func(b []byte) { _, _ = rand.Read(b) })
	if _, err := w.Write(out); err != nil {
		return digest, err
	}
	if _, err := io.ReadFull(r, buf[1:]); err != nil { // C2
		return digest, noEOF(err)
	}
	return digest, nil
}

// rtmpHandshakeState is rtmpNetConn's part in the handshake.
type rtmpHandshakeState struct {
	done bool // the client's handshake is answered
	drop int  // bytes of go-rtmp's own handshake still to drop
}

// readHandshake is rtmpNetConn's read while go-rtmp does its (simple)
// handshake. The first call answers the client's handshake on the socket;
// go-rtmp then reads a C0+C1+C2 of zeros (it checks nothing with
// SkipHandshakeVerification) and its S0+S1+S2 are dropped (see
// writeHandshake), so what the client sees is this file's answer.
func (c *rtmpNetConn) readHandshake(p []byte) (int, error) {
	if !c.hs.done {
		if _, err := rtmpServerHandshake(c.br, rtmpRawWriter{c}); err != nil {
			return 0, err
		}
		c.hs = rtmpHandshakeState{done: true, drop: rtmpHandshakeSize}
	}
	n := min(len(p), c.hsLeft)
	clear(p[:n])
	if c.hsLeft == rtmpHandshakeSize {
		p[0] = rtmpVersion
	}
	c.hsLeft -= n
	return n, nil
}

// writeHandshake drops go-rtmp's own S0+S1+S2 (rtmpHandshakeSize bytes,
// written before its first chunk) and writes what follows them.
func (c *rtmpNetConn) writeHandshake(p []byte) (int, error) {
	k := min(len(p), c.hs.drop)
	c.hs.drop -= k
	if k == len(p) {
		return k, nil
	}
	n, err := c.writeRaw(p[k:])
	return k + n, err
}

// rtmpRawWriter writes to the socket around go-rtmp (see writeRaw).
type rtmpRawWriter struct{ c *rtmpNetConn }

func (w rtmpRawWriter) Write(p []byte) (int, error) { return w.c.writeRaw(p) }
