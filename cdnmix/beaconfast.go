package cdnmix

import (
	"strconv"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// decodeBeaconFast decodes one qos.beacons message in the shape /qos
// publishes it (one flat JSON object, lower-case keys, plain ASCII
// strings, integers) without reflection: stage one takes every beacon of
// its partitions through it. It reports false for anything else (escapes,
// other keys, null, floats, non-ASCII, arrays...), which then goes through
// encoding/json; what it accepts, it decodes as encoding/json does (see
// FuzzDecodeBeaconFast).
func decodeBeaconFast(b []byte) (bus.Beacon, bool) {
	var out bus.Beacon
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return out, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return out, skipWS(b, i+1) == len(b)
	}
	for {
		key, j, ok := fastString(b, i)
		if !ok {
			return out, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return out, false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return out, false
		}
		switch string(key) {
		case "session", "stream", "vendor", "event", "error", "region", "isp", "client":
			s, j, ok := fastString(b, i)
			if !ok {
				return out, false
			}
			i = j
			v := string(s)
			switch string(key) {
			case "session":
				out.Session = v
			case "stream":
				out.Stream = v
			case "vendor":
				out.Vendor = v
			case "event":
				out.Event = v
			case "error":
				out.Error = v
			case "region":
				out.Region = v
			case "isp":
				out.ISP = v
			case "client":
				out.Client = v
			}
		case "time":
			_, j, ok := fastString(b, i)
			if !ok {
				return out, false
			}
			var t time.Time
			if t.UnmarshalJSON(b[i:j]) != nil {
				return out, false
			}
			out.Time, i = t, j
		case "buffer_empty_ms", "first_frame_ms":
			n, j, ok := fastInt(b, i)
			if !ok {
				return out, false
			}
			i = j
			if string(key) == "buffer_empty_ms" {
				out.BufferEmptyMs = n
			} else {
				out.FirstFrameMs = n
			}
		default:
			return out, false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return out, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
			continue
		case '}':
			return out, skipWS(b, i+1) == len(b)
		}
		return out, false
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// fastString reads a JSON string at b[i] of plain printable ASCII without
// escapes and returns its contents and the index after it.
func fastString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// fastInt reads a JSON integer (-?(0|[1-9][0-9]*), at most 18 digits).
func fastInt(b []byte, i int) (int64, int, bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	d := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == d || j-d > 18 || b[d] == '0' && j-d > 1 {
		return 0, 0, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, 0, false
	}
	n, err := strconv.ParseInt(string(b[i:j]), 10, 64)
	return n, j, err == nil
}
