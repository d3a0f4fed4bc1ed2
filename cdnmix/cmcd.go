package cdnmix

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/livefuse/livefuse/bus"
)

// Limits on CMCD input (CTA-5004), one payload being the value of a CMCD=
// query parameter, the CMCD-* headers joined, or one line of a report body.
const (
	maxCMCDPayload = 4096 // bytes of one payload
	maxCMCDPairs   = 64   // key=value pairs in one payload
	maxCMCDKey     = 64   // bytes of one key (custom keys are prefixed)
	maxCMCDString  = 1024 // bytes of one string value, unescaped
)

// CMCD is what livefuse reads of one CMCD payload; other keys (custom
// ones included) are checked for form and skipped. Numbers are -1 when
// absent.
type CMCD struct {
	BufferLengthMs    int64  // bl
	BitrateKbps       int64  // br: encoded bitrate of the object
	StarvationMs      int64  // bsd (v2): how long the buffer was empty
	Starved           bool   // bs: the buffer ran empty since the last request
	Startup           bool   // su: the object is needed to start (or restart) playback
	ObjectType        string // ot: m, a, v, av, i, c, tt, k, o
	State             string // sta (v2): s starting, p playing, k seeking, r rebuffering, a paused, w waiting, e ended, f fatal error, q quit, d preloading
	Event             string // e (v2, event mode): ps play state, e error, t time interval, ...
	SessionID, Stream string // sid, cid (informative: /qos takes both from the token)
	Version           int64  // v (1 when absent)
}

// ParseCMCD decodes one CMCD payload ("bl=2100,br=3200,bs,ot=v,sid=\"…\"",
// keys separated by commas, a key alone meaning true). Every length and
// count is bounded; a malformed payload is refused as a whole.
func ParseCMCD(s string) (CMCD, error) {
	c := CMCD{BufferLengthMs: -1, BitrateKbps: -1, StarvationMs: -1, Version: 1}
	if len(s) > maxCMCDPayload {
		return CMCD{}, fmt.Errorf("cmcd: payload of %d bytes (at most %d): %w", len(s), maxCMCDPayload, ErrMalformed)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return CMCD{}, fmt.Errorf("cmcd: empty payload: %w", ErrMalformed)
	}
	seen := make(map[string]bool, 16)
	for pairs := 0; s != ""; pairs++ {
		if pairs == maxCMCDPairs {
			return CMCD{}, fmt.Errorf("cmcd: more than %d keys: %w", maxCMCDPairs, ErrMalformed)
		}
		var key, val string
		var hasVal bool
		var err error
		key, val, hasVal, s, err = nextCMCDPair(s)
		if err != nil {
			return CMCD{}, err
		}
		if seen[key] {
			return CMCD{}, fmt.Errorf("cmcd: key %q twice: %w", key, ErrMalformed)
		}
		seen[key] = true
		if err := c.set(key, val, hasVal); err != nil {
			return CMCD{}, err
		}
	}
	return c, nil
}

// nextCMCDPair splits the first key[=value] off s.
func nextCMCDPair(s string) (key, val string, hasVal bool, rest string, err error) {
	i := 0
	for i < len(s) && s[i] != '=' && s[i] != ',' {
		i++
	}
	key = strings.TrimSpace(s[:i])
	if !validCMCDKey(key) {
		return "", "", false, "", fmt.Errorf("cmcd: bad key %q: %w", trimForErr(key), ErrMalformed)
	}
	if i == len(s) || s[i] == ',' {
		if i < len(s) {
			i++
		}
		return key, "", false, s[i:], nil
	}
	s = s[i+1:]
	if strings.HasPrefix(s, "(") { // an inner list (CMCD v2): (item item;param ...)
		j := 1
		for j < len(s) && s[j] != ')' {
			if s[j] == '"' {
				for j++; j < len(s) && s[j] != '"'; j++ {
					if s[j] == '\\' {
						j++
					}
				}
				if j >= len(s) {
					break
				}
			}
			j++
		}
		if j >= len(s) {
			return "", "", false, "", fmt.Errorf("cmcd: unterminated list in %q: %w", key, ErrMalformed)
		}
		val, s = s[:j+1], s[j+1:]
		if s != "" && s[0] != ',' {
			return "", "", false, "", fmt.Errorf("cmcd: junk after the list of %q: %w", key, ErrMalformed)
		}
		if s != "" {
			s = s[1:]
		}
		return key, val, true, s, nil
	}
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		j := 1
		for ; j < len(s) && s[j] != '"'; j++ {
			if s[j] == '\\' {
				j++
				if j == len(s) || (s[j] != '"' && s[j] != '\\') {
					return "", "", false, "", fmt.Errorf("cmcd: bad escape in %q: %w", key, ErrMalformed)
				}
			}
			if b.Len() == maxCMCDString {
				return "", "", false, "", fmt.Errorf("cmcd: %q longer than %d bytes: %w", key, maxCMCDString, ErrMalformed)
			}
			b.WriteByte(s[j])
		}
		if j == len(s) {
			return "", "", false, "", fmt.Errorf("cmcd: unterminated string in %q: %w", key, ErrMalformed)
		}
		s = s[j+1:]
		if s != "" && s[0] != ',' {
			return "", "", false, "", fmt.Errorf("cmcd: junk after the string of %q: %w", key, ErrMalformed)
		}
		if s != "" {
			s = s[1:]
		}
		return key, `"` + b.String(), true, s, nil // the quote marks a string
	}
	val, rest, _ = strings.Cut(s, ",")
	val = strings.TrimSpace(val)
	if val == "" || len(val) > maxCMCDString || strings.ContainsAny(val, "\" \t()") {
		return "", "", false, "", fmt.Errorf("cmcd: bad value of %q: %w", key, ErrMalformed)
	}
	return key, val, true, rest, nil
}

// validCMCDKey: lowercase letters, digits, and for custom keys '-' and
// '.' (e.g. com.example-myKey), at most maxCMCDKey bytes.
func validCMCDKey(k string) bool {
	if k == "" || len(k) > maxCMCDKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func trimForErr(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// set stores one key's value.
func (c *CMCD) set(key, val string, hasVal bool) error {
	str := func() (string, error) {
		if !strings.HasPrefix(val, `"`) {
			return "", fmt.Errorf("cmcd: %q must be a string: %w", key, ErrMalformed)
		}
		return val[1:], nil
	}
	token := func(max int) (string, error) {
		if !hasVal || strings.HasPrefix(val, `"`) || len(val) > max {
			return "", fmt.Errorf("cmcd: %q must be a token: %w", key, ErrMalformed)
		}
		return val, nil
	}
	num := func(max float64) (int64, error) {
		v := val
		if strings.HasPrefix(v, "(") { // a list of numbers (v2): its first item, without parameters
			v, _, _ = strings.Cut(strings.TrimSpace(v[1:len(v)-1]), " ")
			v, _, _ = strings.Cut(v, ";")
		}
		if !hasVal || strings.HasPrefix(v, `"`) || v == "" {
			return 0, fmt.Errorf("cmcd: %q must be a number: %w", key, ErrMalformed)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > max {
			return 0, fmt.Errorf("cmcd: %q=%s out of range: %w", key, trimForErr(val), ErrMalformed)
		}
		return int64(math.Round(f)), nil
	}
	boolean := func() (bool, error) {
		switch {
		case !hasVal || val == "true" || val == "?1":
			return true, nil
		case val == "false" || val == "?0":
			return false, nil
		}
		return false, fmt.Errorf("cmcd: %q must be a boolean: %w", key, ErrMalformed)
	}
	var err error
	switch key {
	case "bl":
		c.BufferLengthMs, err = num(float64(maxBufferEmpty.Milliseconds()))
	case "br":
		c.BitrateKbps, err = num(maxBitrateKbps)
	case "bsd":
		c.StarvationMs, err = num(float64(maxBufferEmpty.Milliseconds()))
	case "bs":
		c.Starved, err = boolean()
	case "su":
		c.Startup, err = boolean()
	case "ot":
		c.ObjectType, err = token(2)
	case "sta":
		c.State, err = token(1)
	case "e":
		c.Event, err = token(2)
	case "sid":
		c.SessionID, err = str()
	case "cid":
		c.Stream, err = str()
	case "v":
		c.Version, err = num(99)
	default: // checked for form by the splitter; not used
	}
	return err
}

// Beacon maps one CMCD payload onto the beacon events the aggregates
// count: a fatal error (sta=f, e=e) is an error; a starved buffer (bs, or
// sta=r) a stall of bsd milliseconds (a stall in the stall rate when bsd
// is 2000 or more; CMCD v1 gives no duration, so it is recorded without
// one); a startup request (su, sta=s) a start; anything else a heartbeat
// carrying br. Session, stream, vendor, region and ISP come from the token.
func (c CMCD) Beacon() bus.Beacon {
	var b bus.Beacon
	switch {
	case c.State == "f" || c.Event == "e":
		b.Event, b.Error = bus.BeaconError, "cmcd: fatal error"
	case c.Starved || c.State == "r":
		b.Event = bus.BeaconStall
		if c.StarvationMs > 0 {
			b.BufferEmptyMs = c.StarvationMs
		}
	case c.Startup || c.State == "s":
		b.Event = bus.BeaconStart
	default:
		b.Event = bus.BeaconHeartbeat
	}
	if c.BitrateKbps > 0 {
		b.BitrateKbps = c.BitrateKbps
	}
	return b
}
