package authkey

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	stdhash "hash"
	"sync"
	"time"
)

// Session tokens. A dispatcher hands each player one signed, expiring
// token that names the player's session, stream, CDN vendor, region and
// ISP; whoever holds the key (the /qos handler of any node sharing it)
// can check it without a lookup. The token is base64url (no padding) of
//
//	payload = 0x01 | exp (8 bytes, big endian Unix seconds) | id (12 bytes)
//	          | len stream | stream | len vendor | vendor | len region | region | len isp | isp
//	token   = base64url(payload | HMAC-SHA256(key, payload)[:16])
//
// each length one byte. Verify checks the length of the token, then the
// MAC (constant time), then the expiry, and only then reads the payload,
// whose every length is checked against the bytes that remain: bytes that
// were not signed with the key are never parsed.

// Limits of a session token.
const (
	// MaxSessionToken is the longest token Verify reads, in characters.
	MaxSessionToken = 1024
	// MaxSessionField is the longest stream, vendor, region or ISP; Sign
	// also refuses a session whose token would be over MaxSessionToken.
	MaxSessionField = 255
	// MinSessionKey is the shortest key NewSessionKey accepts, in bytes.
	MinSessionKey = 16

	sessionVersion = 1
	sessionIDLen   = 12
	sessionMACLen  = 16
	sessionFixed   = 1 + 8 + sessionIDLen // before the fields
)

// Errors returned by SessionKey.Verify.
var (
	ErrSessionMissing   = errors.New("session token missing")
	ErrSessionMalformed = errors.New("session token malformed")
	ErrSessionExpired   = errors.New("session token expired")
	ErrSessionMismatch  = errors.New("session token signature mismatch")
)

// Session is what a session token says.
type Session struct {
	// ID names the session: 16 base64url characters (12 random bytes),
	// made by Sign when empty.
	ID string
	// Stream ("app/name"), Vendor, Region and ISP are where the player
	// was sent; Region and ISP may be empty (not located).
	Stream, Vendor, Region, ISP string
	// Expires is when the token stops being accepted (second precision).
	Expires time.Time
}

// SessionKey signs and checks session tokens with one HMAC key. It is
// safe for concurrent use.
type SessionKey struct {
	macs sync.Pool // hash.Hash keyed with the secret
}

// NewSessionKey returns a SessionKey for secret (at least MinSessionKey
// bytes; the caller may reuse secret afterwards).
func NewSessionKey(secret []byte) (*SessionKey, error) {
	if len(secret) < MinSessionKey {
		return nil, fmt.Errorf("session key: %d bytes, want at least %d", len(secret), MinSessionKey)
	}
	k := append([]byte(nil), secret...)
	sk := &SessionKey{}
	sk.macs.New = func() any { return hmac.New(sha256.New, k) }
	return sk, nil
}

func (k *SessionKey) mac(dst, payload []byte) []byte {
	h := k.macs.Get().(stdhash.Hash)
	h.Reset()
	h.Write(payload)
	var sum [sha256.Size]byte
	out := h.Sum(sum[:0])
	k.macs.Put(h)
	return append(dst, out[:sessionMACLen]...)
}

// NewSessionID returns a fresh random session ID.
func NewSessionID() string {
	var b [sessionIDLen]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Sign returns the token for s, making s.ID when it is empty. A field
// longer than MaxSessionField, or an ID that is not 16 base64url
// characters, is an error.
func (k *SessionKey) Sign(s Session) (string, error) {
	var id [sessionIDLen]byte
	if s.ID == "" {
		rand.Read(id[:])
	} else if n, err := base64.RawURLEncoding.Decode(id[:], []byte(s.ID)); err != nil || n != sessionIDLen || len(s.ID) != 16 {
		return "", fmt.Errorf("session token: id %q: %w", s.ID, ErrSessionMalformed)
	}
	fields := [4]string{s.Stream, s.Vendor, s.Region, s.ISP}
	for _, f := range fields {
		if len(f) > MaxSessionField {
			return "", fmt.Errorf("session token: field of %d bytes (at most %d): %w", len(f), MaxSessionField, ErrSessionMalformed)
		}
	}
	var stack [sessionFixed + sessionMACLen + 4*(1+MaxSessionField)]byte
	b := append(stack[:0], sessionVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(max(s.Expires.Unix(), 0)))
	b = append(b, id[:]...)
	for _, f := range fields {
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	b = k.mac(b, b)
	if base64.RawURLEncoding.EncodedLen(len(b)) > MaxSessionToken {
		return "", fmt.Errorf("session token: %d bytes: %w", len(b), ErrSessionMalformed)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Verify checks token at now and returns what it says.
func (k *SessionKey) Verify(token string, now time.Time) (Session, error) {
	if token == "" {
		return Session{}, ErrSessionMissing
	}
	if len(token) > MaxSessionToken {
		return Session{}, fmt.Errorf("session token: %d characters: %w", len(token), ErrSessionMalformed)
	}
	var stack [MaxSessionToken * 3 / 4]byte
	n, err := base64.RawURLEncoding.Decode(stack[:], []byte(token))
	if err != nil || n < sessionFixed+4+sessionMACLen {
		return Session{}, fmt.Errorf("session token: encoding: %w", ErrSessionMalformed)
	}
	raw := stack[:n]
	payload, sig := raw[:n-sessionMACLen], raw[n-sessionMACLen:]
	var want [sessionMACLen]byte
	if !hmac.Equal(k.mac(want[:0], payload), sig) {
		return Session{}, ErrSessionMismatch
	}
	// Signed by us from here on; still checked, never trusted blindly.
	if payload[0] != sessionVersion {
		return Session{}, fmt.Errorf("session token: version %d: %w", payload[0], ErrSessionMalformed)
	}
	exp := binary.BigEndian.Uint64(payload[1:9])
	if exp > 1<<62 || now.Unix() > int64(exp) {
		return Session{}, ErrSessionExpired
	}
	s := Session{ID: base64.RawURLEncoding.EncodeToString(payload[9:sessionFixed]), Expires: time.Unix(int64(exp), 0)}
	rest := payload[sessionFixed:]
	var fields [4]string
	for i := range fields {
		if len(rest) < 1 || int(rest[0]) > len(rest)-1 || int(rest[0]) > MaxSessionField {
			return Session{}, fmt.Errorf("session token: field %d: %w", i, ErrSessionMalformed)
		}
		l := int(rest[0])
		fields[i] = string(rest[1 : 1+l])
		rest = rest[1+l:]
	}
	if len(rest) != 0 {
		return Session{}, fmt.Errorf("session token: %d trailing bytes: %w", len(rest), ErrSessionMalformed)
	}
	s.Stream, s.Vendor, s.Region, s.ISP = fields[0], fields[1], fields[2], fields[3]
	return s, nil
}
