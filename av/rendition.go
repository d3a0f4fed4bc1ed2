package av

import (
	"errors"
	"fmt"
	"strings"
)

// MaxRenditionLen is the longest rendition name, in bytes: short, so that
// NAME_<rendition> stays a stream name.
const MaxRenditionLen = 32

// RenditionStream is the stream name of rendition r of stream name, in the
// same app: NAME_<rendition>.
func RenditionStream(name, r string) string { return name + "_" + r }

// CheckRendition says why s cannot be a rendition name, or returns nil: 1–32
// bytes of letters, digits, '-' and '_' (no '.', so that a rendition never
// looks like a file extension of its stream).
func CheckRendition(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxRenditionLen:
		return fmt.Errorf("%q longer than %d bytes", s, MaxRenditionLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' || !nameByte(c) {
			return fmt.Errorf("%q: only letters, digits, '-' and '_'", s)
		}
	}
	return nil
}

// SplitRendition finds the stream and rendition a stream name s stands for.
// Stream and rendition names may both contain '_', so the split is not
// known from s alone: each '_' is tried from the last one, and the first
// split with a valid rendition whose stream isParent accepts wins (the
// stream with the longest name, then). isParent is asked only about valid
// stream names.
func SplitRendition(s string, isParent func(name string) bool) (name, rendition string, ok bool) {
	for i := strings.LastIndexByte(s, '_'); i > 0; i = strings.LastIndexByte(s[:i], '_') {
		name, rendition = s[:i], s[i+1:]
		if CheckRendition(rendition) == nil && ValidName(name) && isParent(name) {
			return name, rendition, true
		}
	}
	return "", "", false
}
