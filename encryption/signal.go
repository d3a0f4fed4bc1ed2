package encryption

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/livefuse/livefuse/av"
)

// The onEncryption script tag (FLV.md has the full specification).
const (
	// ScriptName is the name of the script-data tag that tells FLV players
	// the encryption state of the packets after it.
	ScriptName = "onEncryption"
	// Scheme names the FLV layout the script tag announces.
	Scheme = "livefuse-flv-sample-aes"
	// SchemeVersion is the version of the layout and of the tag's fields.
	SchemeVersion = 1
	// MethodSampleAES is the method of encrypted streams.
	MethodSampleAES = "SAMPLE-AES"
)

// Limits on the fields of a parsed Signal.
const (
	maxKeyIDLen  = 128
	maxKeyURILen = 2048
)

// ErrBadSignal is wrapped by ParseSignal errors.
var ErrBadSignal = errors.New("encryption: bad onEncryption tag")

// Signal is the content of an onEncryption script tag: whether the packets
// that follow are encrypted, and if so with which key.
type Signal struct {
	Encrypted bool
	// KeyID, KeyURI and IV are set when Encrypted. KeyURI is where players
	// fetch the 16 key bytes; a relative URI resolves against the stream URL.
	KeyID  string
	KeyURI string
	IV     [16]byte
}

// Marshal returns the script-data body (AMF0) of the signal.
func (s *Signal) Marshal() []byte {
	v := map[string]any{
		"version":   SchemeVersion,
		"scheme":    Scheme,
		"encrypted": s.Encrypted,
	}
	if s.Encrypted {
		v["method"] = MethodSampleAES
		v["keyId"] = s.KeyID
		v["keyUri"] = s.KeyURI
		v["iv"] = "0x" + hex.EncodeToString(s.IV[:])
	}
	return av.EncodeScript(ScriptName, v)
}

// Packet returns the signal as a script-data packet at dts.
func (s *Signal) Packet(dts time.Duration) *av.Packet {
	return &av.Packet{Kind: av.KindData, DTS: dts, Data: s.Marshal()}
}

// IsSignal reports, without decoding it, whether a script-data body is an
// onEncryption tag (its first AMF0 value is the string "onEncryption").
func IsSignal(body []byte) bool {
	const n = len(ScriptName)
	return len(body) >= 3+n && body[0] == 2 && body[1] == 0 && body[2] == byte(n) &&
		string(body[3:3+n]) == ScriptName
}

// ParseSignal decodes an onEncryption script-data body. It refuses other
// script names, other schemes and versions, and encrypted signals whose
// method, key ID or IV is missing or malformed.
func ParseSignal(body []byte) (*Signal, error) {
	name, v, err := av.DecodeScript(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignal, err)
	}
	if name != ScriptName {
		return nil, fmt.Errorf("%w: script %q", ErrBadSignal, name)
	}
	if s, _ := v["scheme"].(string); s != Scheme {
		return nil, fmt.Errorf("%w: scheme %q, want %q", ErrBadSignal, s, Scheme)
	}
	if n, _ := v["version"].(float64); n != SchemeVersion {
		return nil, fmt.Errorf("%w: version %v, want %d", ErrBadSignal, v["version"], SchemeVersion)
	}
	enc, ok := v["encrypted"].(bool)
	if !ok {
		return nil, fmt.Errorf("%w: encrypted is %T, want boolean", ErrBadSignal, v["encrypted"])
	}
	s := &Signal{Encrypted: enc}
	if !enc {
		return s, nil
	}
	if m, _ := v["method"].(string); m != MethodSampleAES {
		return nil, fmt.Errorf("%w: method %q, want %q", ErrBadSignal, m, MethodSampleAES)
	}
	s.KeyID, _ = v["keyId"].(string)
	if !ValidKeyID(s.KeyID) {
		return nil, fmt.Errorf("%w: key id %q", ErrBadSignal, truncate(s.KeyID, 40))
	}
	s.KeyURI, _ = v["keyUri"].(string)
	if len(s.KeyURI) > maxKeyURILen {
		return nil, fmt.Errorf("%w: key uri of %d bytes", ErrBadSignal, len(s.KeyURI))
	}
	iv, _ := v["iv"].(string)
	if err := parseIV(&s.IV, iv); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignal, err)
	}
	return s, nil
}

// parseIV reads "0x" and 32 hex digits.
func parseIV(dst *[16]byte, s string) error {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok {
		h, ok = strings.CutPrefix(s, "0X")
	}
	if !ok || len(h) != 32 {
		return fmt.Errorf("iv %q: want 0x and 32 hex digits", truncate(s, 40))
	}
	if _, err := hex.Decode(dst[:], []byte(h)); err != nil {
		return fmt.Errorf("iv %q: %w", s, err)
	}
	return nil
}

// ValidKeyID reports whether id can name a key: 1 to 128 ASCII letters,
// digits, '-', '_' or '.', not starting with '.', so that it fits in a URL
// path segment unescaped.
func ValidKeyID(id string) bool {
	if id == "" || len(id) > maxKeyIDLen || id[0] == '.' {
		return false
	}
	for i := range len(id) {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
