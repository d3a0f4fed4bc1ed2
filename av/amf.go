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

// ErrAMF is wrapped by every error of the AMF0 decoding in this package:
// a value cut short (ErrTruncated too), a type marker not supported, or
// a limit of AMFLimits passed.
var ErrAMF = errors.New("amf0")

var errAMF = ErrAMF

// AMFLimits bounds what CheckAMF0 accepts. Zero fields take the defaults.
type AMFLimits struct {
	// MaxDepth bounds the nesting of objects and arrays (default 16).
	MaxDepth int
	// MaxValues bounds the values of a body in total, nested ones
	// included (default 65536).
	MaxValues int
}

// DefaultAMFMaxValues is AMFLimits.MaxValues when it is 0: room for the
// keyframe index of hours of FLV in one onMetaData, while what a decoder
// that allocates per value builds from one body stays around a MiB.
const DefaultAMFMaxValues = 1 << 16

// CheckAMF0 reports whether body is a sequence of whole AMF0 values within
// lim, without building them: it is what stands between a peer and a
// decoder that trusts declared counts and nests without limit (go-amf0,
// through go-rtmp). It accepts number, boolean, string, long string,
// object, null, undefined, ECMA array, strict array and date, and refuses
// any other type marker. Every declared length and count is checked
// against the bytes that remain (a strict array of N values needs at least
// N bytes, an ECMA array declaring N entries at least N); an object
// property with an empty name must be the object end, and ECMA arrays must
// end with the end marker, as go-amf0 reads them. An empty body is
// accepted. The error wraps ErrAMF.
func CheckAMF0(body []byte, lim AMFLimits) error {
	d := amfDecoder{b: body, check: true, maxDepth: lim.MaxDepth, maxValues: lim.MaxValues}
	if d.maxDepth <= 0 {
		d.maxDepth = maxAMFDepth
	}
	if d.maxValues <= 0 {
		d.maxValues = DefaultAMFMaxValues
	}
	for !d.done() {
		if _, err := d.value(0); err != nil {
			return err
		}
	}
	return nil
}

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

// amfDecoder decodes AMF0 values from b. In check mode (CheckAMF0) it
// builds nothing, counts values against maxValues and reads objects and
// ECMA arrays as strictly as go-amf0 does.
type amfDecoder struct {
	b   []byte
	pos int

	check     bool
	maxDepth  int // 0: maxAMFDepth
	maxValues int // 0: no limit
	values    int
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
	if err != nil || d.check {
		return "", err
	}
	return string(b), nil
}

// nest checks that one more level of objects and arrays is allowed.
func (d *amfDecoder) nest(depth int) error {
	limit := d.maxDepth
	if limit <= 0 {
		limit = maxAMFDepth
	}
	if depth >= limit {
		return fmt.Errorf("%w: nesting deeper than %d at offset %d", errAMF, limit, d.pos-1)
	}
	return nil
}

// value decodes one value; depth counts the enclosing objects and arrays.
func (d *amfDecoder) value(depth int) (any, error) {
	mb, err := d.need(1, "type marker")
	if err != nil {
		return nil, err
	}
	if d.maxValues > 0 {
		if d.values++; d.values > d.maxValues {
			return nil, fmt.Errorf("%w: more than %d values", errAMF, d.maxValues)
		}
	}
	switch mb[0] {
	case amfNumber:
		b, err := d.need(8, "number")
		if err != nil || d.check {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	case amfBoolean:
		b, err := d.need(1, "boolean")
		if err != nil || d.check {
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
		if err != nil || d.check {
			return nil, err
		}
		ms := math.Float64frombits(binary.BigEndian.Uint64(b))
		return time.UnixMilli(int64(ms)).UTC(), nil
	case amfObject:
		if err := d.nest(depth); err != nil {
			return nil, err
		}
		return d.properties(depth+1, false)
	case amfECMAArray:
		if err := d.nest(depth); err != nil {
			return nil, err
		}
		n, err := d.u32() // count: a hint only, writers get it wrong
		if err != nil {
			return nil, err
		}
		if d.check && uint64(n) > uint64(len(d.b)-d.pos) {
			return nil, fmt.Errorf("%w: ECMA array of %d entries at offset %d: %w", errAMF, n, d.pos, ErrTruncated)
		}
		return d.properties(depth+1, true)
	case amfStrictArray:
		if err := d.nest(depth); err != nil {
			return nil, err
		}
		n, err := d.u32()
		if err != nil {
			return nil, err
		}
		if uint64(n) > uint64(len(d.b)-d.pos) { // every value takes at least one byte
			return nil, fmt.Errorf("%w: strict array of %d values at offset %d: %w", errAMF, n, d.pos, ErrTruncated)
		}
		if d.maxValues > 0 && uint64(n) > uint64(d.maxValues-d.values) {
			return nil, fmt.Errorf("%w: strict array of %d values at offset %d, more than %d values", errAMF, n, d.pos, d.maxValues)
		}
		var arr []any
		if !d.check {
			arr = make([]any, 0, n)
		}
		for range n {
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if !d.check {
				arr = append(arr, v)
			}
		}
		return arr, nil
	}
	return nil, fmt.Errorf("%w: type marker 0x%02x at offset %d unsupported", errAMF, mb[0], d.pos-1)
}

// properties decodes key/value pairs up to the object end marker. An ECMA
// array may also end with the body, as some encoders write it.
func (d *amfDecoder) properties(depth int, ecma bool) (map[string]any, error) {
	var m map[string]any
	if !d.check {
		m = map[string]any{}
	}
	for {
		if ecma && !d.check && d.done() {
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
			if d.check {
				return nil, fmt.Errorf("%w: empty property name not followed by the object end at offset %d", errAMF, d.pos-1)
			}
			d.pos-- // an empty key with a real value
		}
		v, err := d.value(depth)
		if err != nil {
			if d.check {
				return nil, err // keys are not kept in check mode
			}
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		if !d.check {
			m[key] = v
		}
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
