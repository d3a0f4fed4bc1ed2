package authkey

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func testSessionKey(t testing.TB, secret string) *SessionKey {
	k, err := NewSessionKey([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSessionRoundTrip(t *testing.T) {
	k := testSessionKey(t, "0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	in := Session{Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Expires: now.Add(time.Hour)}
	tok, err := k.Sign(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ID) != 16 || got.Stream != in.Stream || got.Vendor != in.Vendor || got.Region != in.Region ||
		got.ISP != in.ISP || !got.Expires.Equal(in.Expires) {
		t.Fatalf("got %+v, want %+v", got, in)
	}
	// A given ID is kept.
	in.ID = got.ID
	tok2, err := k.Sign(in)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := k.Verify(tok2, now); err != nil || again.ID != got.ID {
		t.Fatalf("id not kept: %+v %v", again, err)
	}
}

func TestSessionVerify(t *testing.T) {
	k := testSessionKey(t, "0123456789abcdef")
	other := testSessionKey(t, "fedcba9876543210")
	now := time.Unix(1_700_000_000, 0)
	sign := func(k *SessionKey, s Session) string {
		tok, err := k.Sign(s)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign(k, Session{Stream: "live/demo", Vendor: "a", Expires: now.Add(time.Minute)})
	flip := []byte(good)
	if flip[10] == 'A' {
		flip[10] = 'B'
	} else {
		flip[10] = 'A'
	}
	tests := []struct {
		name, token string
		want        error
	}{
		{"good", good, nil},
		{"empty", "", ErrSessionMissing},
		{"other key", sign(other, Session{Vendor: "a", Expires: now.Add(time.Minute)}), ErrSessionMismatch},
		{"bit flipped", string(flip), ErrSessionMismatch},
		{"truncated", good[:len(good)-4], ErrSessionMismatch},
		{"expired", sign(k, Session{Vendor: "a", Expires: now.Add(-time.Second)}), ErrSessionExpired},
		{"not base64", "!!!!" + good[4:], ErrSessionMalformed},
		{"too short", "AAAA", ErrSessionMalformed},
		{"too long", strings.Repeat("A", MaxSessionToken+1), ErrSessionMalformed},
		{"auth_key value", "1444435200-0-0-80cd3862d699b7118eed99103f2a3a4f", ErrSessionMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Verify(tc.token, now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSessionSignRefuses(t *testing.T) {
	k := testSessionKey(t, "0123456789abcdef")
	tests := []struct {
		name string
		s    Session
	}{
		{"long stream", Session{Stream: strings.Repeat("x", MaxSessionField+1)}},
		{"long isp", Session{ISP: strings.Repeat("x", MaxSessionField+1)}},
		{"bad id", Session{ID: "short"}},
		{"id not base64", Session{ID: "!!!!!!!!!!!!!!!!"}},
	}
	for _, tc := range tests {
		if _, err := k.Sign(tc.s); !errors.Is(err, ErrSessionMalformed) {
			t.Errorf("%s: got %v", tc.name, err)
		}
	}
	if _, err := NewSessionKey([]byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

// A payload signed with the key but malformed inside (lengths past the
// end, trailing bytes) is refused, not read out of bounds.
func TestSessionSignedGarbage(t *testing.T) {
	k := testSessionKey(t, "0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	head := append([]byte{sessionVersion, 0, 0, 0, 0, 0x7f, 0, 0, 0}, make([]byte, sessionIDLen)...)
	tests := map[string][]byte{
		"length past end": append(append([]byte{}, head...), 200, 'a', 0, 0),
		"trailing":        append(append([]byte{}, head...), 0, 0, 0, 0, 9),
		"version":         append([]byte{9}, append(append([]byte{}, head[1:]...), 0, 0, 0, 0)...),
		"huge expiry":     append([]byte{sessionVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, append(make([]byte, sessionIDLen), 0, 0, 0, 0)...),
	}
	for name, payload := range tests {
		tok := base64.RawURLEncoding.EncodeToString(k.mac(payload, payload))
		if _, err := k.Verify(tok, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzSessionVerify(f *testing.F) {
	k := testSessionKey(f, "0123456789abcdef")
	good, _ := k.Sign(Session{Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Expires: time.Unix(1<<40, 0)})
	f.Add(good, false)
	f.Add("", false)
	f.Add("AAAA", false)
	f.Add(strings.Repeat("_", MaxSessionToken), false)
	f.Add(base64.RawURLEncoding.EncodeToString([]byte{1, 0, 0, 0, 0, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0}), true)
	f.Fuzz(func(t *testing.T, token string, resign bool) {
		if resign {
			// Sign whatever payload the fuzzer made, to reach the parser
			// behind the MAC.
			raw, err := base64.RawURLEncoding.DecodeString(token)
			if err != nil || len(raw) > MaxSessionToken/2 {
				return
			}
			token = base64.RawURLEncoding.EncodeToString(k.mac(raw, raw))
		}
		s, err := k.Verify(token, time.Unix(0, 0))
		if err != nil {
			return
		}
		again, err := k.Sign(s)
		if err != nil {
			t.Fatalf("verified session %+v does not sign again: %v", s, err)
		}
		if s2, err := k.Verify(again, time.Unix(0, 0)); err != nil || s2 != s {
			t.Fatalf("round trip: %+v %v, want %+v", s2, err, s)
		}
	})
}

func BenchmarkSessionVerify(b *testing.B) {
	k := testSessionKey(b, "0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	tok, _ := k.Sign(Session{Stream: "live/demo", Vendor: "a", Region: "GD", ISP: "telecom", Expires: now.Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Verify(tok, now); err != nil {
			b.Fatal(err)
		}
	}
}
