package av

import (
	"errors"
	"fmt"
)

// MaxNameLen is the longest app or stream name, in bytes.
const MaxNameLen = 128

// CheckName says why s cannot be an app or stream name, or returns nil:
// a name is 1–128 bytes of letters, digits, '-', '_' and '.', not starting
// with '.'. Names become URL path segments, etcd keys and object-store
// prefixes, so the rule keeps them free of separators and escapes. It is
// the one rule of every package (publish and play paths, the registry,
// recordings, HLS variant paths).
func CheckName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxNameLen:
		return fmt.Errorf("longer than %d bytes", MaxNameLen)
	case s[0] == '.':
		return errors.New("must not start with '.'")
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return fmt.Errorf("byte %d: only letters, digits, '.', '_' and '-' are allowed", i)
		}
	}
	return nil
}

// ValidName reports whether s is an app or stream name (see CheckName).
func ValidName(s string) bool {
	if s == "" || len(s) > MaxNameLen || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

func nameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		return true
	}
	return false
}
