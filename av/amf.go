package av

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// AMF0 type markers (AMF0 specification, section 2.1).
const (
	amfNumber      = 0x00
	amfBoolean     = 0x01
	amfString      = 0x02
	amfObject      = 0x03
	amfNull        = 0x05
	amfUndefined   = 0x06
	amfECMAArray   = 0x08
	amfObjectEnd   = 0x09
	amfStrictArray = 0x0a
	amfDate        = 0x0b
	amfLongString  = 0x0c
)

// maxAMFDepth bounds the nesting of objects and arrays DecodeScript follows.
const maxAMFDepth = 16

var errAMF = errors.New("amf0")

// DecodeScript decodes an FLV script-data body (AMF0): a name such as
// "onMetaData" followed by an object or ECMA array of values. A leading
// "@setDataFrame", as RTMP publishers send it, is skipped. Values after the
// first object are ignored; a name with nothing after it gives an empty map.
//
// Values become float64 (number), bool, string (also long string),
// map[string]any (object, ECMA array), []any (strict array), nil (null,
// undefined) and time.Time (date, in UTC). Nesting deeper than 16 levels
// and lengths past the end of body are refused.
func DecodeScript(body []byte) (name string, values map[string]any, err error) {
	d := amfDecoder{b: body}
	v, err := d.value(0)
	if err != nil {
		return "", nil, fmt.Errorf("script name: %w", err)
	}
	name, ok := v.(string)
	if !ok {
		return "", nil, fmt.Errorf("%w: script name is %s, want string", errAMF, amfTypeName(v))
	}
	values = map[string]any{}
	if d.done() {
		return name, values, nil
	}
	v, err = d.value(0)
	if err != nil {
		return "", nil, fmt.Errorf("script %q: %w", name, err)
	}
	if s, ok := v.(string); ok && name == "@setDataFrame" {
		name = s
		if d.done() {
			return name, values, nil
		}
		if v, err = d.value(0); err != nil {
			return "", nil, fmt.Errorf("script %q: %w", name, err)
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", nil, fmt.Errorf("%w: script %q value is %s, want object", errAMF, name, amfTypeName(v))
	}
	return name, m, nil
}

func amfTypeName(v any) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

type amfDecoder struct {
	b   []byte
	pos int
}

func (d *amfDecoder) done() bool { return d.pos >= len(d.b) }

func (d *amfDecoder) need(n int, what string) ([]byte, error) {
	if n < 0 || len(d.b)-d.pos < n {
		return nil, fmt.Errorf("%w: %s at offset %d: %w", errAMF, what, d.pos, ErrTruncated)
	}
	s := d.b[d.pos : d.pos+n]
	d.pos += n
	return s, nil
}

func (d *amfDecoder) u16() (int, error) {
	b, err := d.need(2, "length")
	if err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(b)), nil
}

func (d *amfDecoder) u32() (uint32, error) {
	b, err := d.need(4, "length")
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (d *amfDecoder) str(n int) (string, error) {
	b, err := d.need(n, "string")
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// value decodes one value; depth counts the enclosing objects and arrays.
func (d *amfDecoder) value(depth int) (any, error) {
	mb, err := d.need(1, "type marker")
	if err != nil {
		return nil, err
	}
	switch mb[0] {
	case amfNumber:
		b, err := d.need(8, "number")
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	case amfBoolean:
		b, err := d.need(1, "boolean")
		if err != nil {
			return nil, err
		}
		return b[0] != 0, nil
	case amfString:
		n, err := d.u16()
		if err != nil {
			return nil, err
		}
		return d.str(n)
	case amfLongString:
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		if uint64(n) > uint64(len(d.b)-d.pos) {
			return nil, fmt.Errorf("%w: long string of %d bytes at offset %d: %w", errAMF, n, d.pos, ErrTruncated)
		}
		return d.str(int(n))
	case amfNull, amfUndefined:
		return nil, nil
	case amfDate:
		b, err := d.need(10, "date") // float64 ms since the epoch, int16 time zone (unused)
		if err != nil {
			return nil, err
		}
		ms := math.Float64frombits(binary.BigEndian.Uint64(b))
		return time.UnixMilli(int64(ms)).UTC(), nil
	case amfObject:
		if depth >= maxAMFDepth {
			return nil, fmt.Errorf("%w: nesting deeper than %d", errAMF, maxAMFDepth)
		}
		return d.properties(depth+1, false)
	case amfECMAArray:
		if depth >= maxAMFDepth {
			return nil, fmt.Errorf("%w: nesting deeper than %d", errAMF, maxAMFDepth)
		}
		if _, err := d.u32(); err != nil { // count: a hint only, writers get it wrong
			return nil, err
		}
		return d.properties(depth+1, true)
	case amfStrictArray:
		if depth >= maxAMFDepth {
			return nil, fmt.Errorf("%w: nesting deeper than %d", errAMF, maxAMFDepth)
		}
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		if uint64(n) > uint64(len(d.b)-d.pos) { // every value takes at least one byte
			return nil, fmt.Errorf("%w: strict array of %d values at offset %d: %w", errAMF, n, d.pos, ErrTruncated)
		}
		arr := make([]any, 0, n)
		for range n {
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, nil
	}
	return nil, fmt.Errorf("%w: type marker 0x%02x at offset %d unsupported", errAMF, mb[0], d.pos-1)
}

// properties decodes key/value pairs up to the object end marker. An ECMA
// array may also end with the body, as some encoders write it.
func (d *amfDecoder) properties(depth int, ecma bool) (map[string]any, error) {
	m := map[string]any{}
	for {
		if ecma && d.done() {
			return m, nil
		}
		n, err := d.u16()
		if err != nil {
			return nil, err
		}
		key, err := d.str(n)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			mb, err := d.need(1, "object end")
			if err != nil {
				return nil, err
			}
			if mb[0] == amfObjectEnd {
				return m, nil
			}
			d.pos-- // an empty key with a real value
		}
		v, err := d.value(depth)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		m[key] = v
	}
}

// EncodeScript encodes a script-data body: the name as an AMF0 string and
// values as an ECMA array. Keys are written in sorted order at every level,
// so the output is reproducible.
//
// Values may be any numeric Go type (written as numbers), bool, string,
// map[string]any (object), []any or []string (strict array), time.Time
// (date) and nil (null). Other types are written as null.
func EncodeScript(name string, values map[string]any) []byte {
	b := appendAMFString(nil, name)
	b = append(b, amfECMAArray)
	b = binary.BigEndian.AppendUint32(b, uint32(len(values)))
	b = appendAMFProperties(b, values)
	return b
}

func appendAMFString(b []byte, s string) []byte {
	if len(s) > math.MaxUint16 {
		b = append(b, amfLongString)
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	b = append(b, amfString)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendAMFProperties(b []byte, m map[string]any) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		if len(k) <= math.MaxUint16 { // longer keys can't be written
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = appendAMFValue(b, m[k])
	}
	return append(b, 0, 0, amfObjectEnd)
}

func appendAMFNumber(b []byte, f float64) []byte {
	b = append(b, amfNumber)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

func appendAMFValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case float64:
		return appendAMFNumber(b, v)
	case float32:
		return appendAMFNumber(b, float64(v))
	case int:
		return appendAMFNumber(b, float64(v))
	case int8:
		return appendAMFNumber(b, float64(v))
	case int16:
		return appendAMFNumber(b, float64(v))
	case int32:
		return appendAMFNumber(b, float64(v))
	case int64:
		return appendAMFNumber(b, float64(v))
	case uint:
		return appendAMFNumber(b, float64(v))
	case uint8:
		return appendAMFNumber(b, float64(v))
	case uint16:
		return appendAMFNumber(b, float64(v))
	case uint32:
		return appendAMFNumber(b, float64(v))
	case uint64:
		return appendAMFNumber(b, float64(v))
	case bool:
		if v {
			return append(b, amfBoolean, 1)
		}
		return append(b, amfBoolean, 0)
	case string:
		return appendAMFString(b, v)
	case time.Time:
		b = append(b, amfDate)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(float64(v.UnixMilli())))
		return append(b, 0, 0)
	case map[string]any:
		return appendAMFProperties(append(b, amfObject), v)
	case []any:
		b = append(b, amfStrictArray)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		for _, e := range v {
			b = appendAMFValue(b, e)
		}
		return b
	case []string:
		b = append(b, amfStrictArray)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		for _, e := range v {
			b = appendAMFString(b, e)
		}
		return b
	}
	return append(b, amfNull)
}

// MetaData returns the usual onMetaData values for an H.264/AAC stream.
// The video keys (width, height, framerate, videocodecid, videodatarate)
// are left out when width and height are 0, the audio keys
// (audiocodecid, audiosamplerate, audiochannels, stereo) when audioRate is
// 0; videodatarate (kbit/s) is left out when videoKbps is 0. Numbers are
// float64, as DecodeScript returns them.
func MetaData(width, height int, fps float64, videoKbps, audioRate int, audioChannels int) map[string]any {
	m := map[string]any{"encoder": "livefuse"}
	if width > 0 || height > 0 {
		m["width"] = float64(width)
		m["height"] = float64(height)
		m["videocodecid"] = float64(flvCodecAVC)
		if fps > 0 {
			m["framerate"] = fps
		}
		if videoKbps > 0 {
			m["videodatarate"] = float64(videoKbps)
		}
	}
	if audioRate > 0 {
		m["audiocodecid"] = float64(flvSoundFormatAAC)
		m["audiosamplerate"] = float64(audioRate)
		m["audiochannels"] = float64(audioChannels)
		m["stereo"] = audioChannels >= 2
	}
	return m
}
