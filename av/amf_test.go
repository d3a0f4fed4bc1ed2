package av

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Hand encoders for AMF0 test inputs, kept apart from the package's encoder.
func a0str(s string) []byte {
	return cat([]byte{amfString, byte(len(s) >> 8), byte(len(s))}, []byte(s))
}

func a0num(f float64) []byte {
	return binary.BigEndian.AppendUint64([]byte{amfNumber}, math.Float64bits(f))
}

func a0key(k string) []byte { return cat([]byte{byte(len(k) >> 8), byte(len(k))}, []byte(k)) }

var a0end = []byte{0, 0, amfObjectEnd}

func a0ecma(n uint32, pairs ...[]byte) []byte {
	return cat(binary.BigEndian.AppendUint32([]byte{amfECMAArray}, n), cat(pairs...), a0end)
}

func a0obj(pairs ...[]byte) []byte { return cat([]byte{amfObject}, cat(pairs...), a0end) }

// nested returns depth objects inside each other.
func nested(depth int) []byte {
	b := []byte{amfObject}
	for range depth - 1 {
		b = append(b, cat(a0key("o"), []byte{amfObject})...)
	}
	for range depth {
		b = append(b, a0end...)
	}
	return b
}

func TestDecodeScript(t *testing.T) {
	date := time.Date(2026, 11, 21, 14, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		body   []byte
		want   string
		values map[string]any
		err    bool
	}{
		{
			name: "ffmpeg onMetaData",
			body: cat(a0str("onMetaData"), a0ecma(4,
				a0key("width"), a0num(320),
				a0key("stereo"), []byte{amfBoolean, 0},
				a0key("encoder"), a0str("Lavf59.27.100"),
				a0key("filesize"), a0num(87359))),
			want:   "onMetaData",
			values: map[string]any{"width": 320.0, "stereo": false, "encoder": "Lavf59.27.100", "filesize": 87359.0},
		},
		{
			name: "@setDataFrame from an rtmp publisher",
			body: cat(a0str("@setDataFrame"), a0str("onMetaData"), a0ecma(1, a0key("framerate"), a0num(25))),
			want: "onMetaData", values: map[string]any{"framerate": 25.0},
		},
		{
			name: "every type",
			body: cat(a0str("onCuePoint"), a0obj(
				a0key("n"), a0num(-1.5),
				a0key("t"), []byte{amfBoolean, 1},
				a0key("s"), a0str(""),
				a0key("l"), []byte{amfLongString, 0, 0, 0, 3, 'a', 'b', 'c'},
				a0key("o"), a0obj(a0key("x"), []byte{amfNull}),
				a0key("e"), a0ecma(0),
				a0key("a"), cat([]byte{amfStrictArray, 0, 0, 0, 2}, a0num(1), []byte{amfUndefined}),
				a0key("d"), binary.BigEndian.AppendUint64([]byte{amfDate}, math.Float64bits(float64(date.UnixMilli()))), []byte{0, 0},
				a0key(""), a0num(7),
			)),
			want: "onCuePoint",
			values: map[string]any{
				"n": -1.5, "t": true, "s": "", "l": "abc", "o": map[string]any{"x": nil},
				"e": map[string]any{}, "a": []any{1.0, nil}, "d": date, "": 7.0,
			},
		},
		{
			name: "ecma array without end marker, wrong count",
			body: cat(a0str("onMetaData"), binary.BigEndian.AppendUint32([]byte{amfECMAArray}, 99), a0key("width"), a0num(2)),
			want: "onMetaData", values: map[string]any{"width": 2.0},
		},
		{name: "name only", body: a0str("onFI"), want: "onFI", values: map[string]any{}},
		{name: "trailing values ignored", body: cat(a0str("x"), a0obj(), a0num(1)), want: "x", values: map[string]any{}},
		{name: "nesting of 16", body: cat(a0str("x"), nested(16)), want: "x", values: nestedMap(16)},
		{name: "nesting of 17", body: cat(a0str("x"), nested(17)), err: true},
		{name: "deep strict arrays", body: cat(a0str("x"), bytes.Repeat([]byte{amfStrictArray, 0, 0, 0, 1}, 40), []byte{amfNull}), err: true},
		{name: "empty", body: nil, err: true},
		{name: "name is a number", body: a0num(1), err: true},
		{name: "value is a number", body: cat(a0str("x"), a0num(1)), err: true},
		{name: "string past the end", body: []byte{amfString, 0, 9, 'a'}, err: true},
		{name: "long string past the end", body: cat(a0str("x"), a0obj(a0key("l"), []byte{amfLongString, 0xff, 0xff, 0xff, 0xff, 'a'})), err: true},
		{name: "huge strict array", body: cat(a0str("x"), a0obj(a0key("a"), []byte{amfStrictArray, 0xff, 0xff, 0xff, 0xff, 5})), err: true},
		{name: "object without end", body: cat(a0str("x"), []byte{amfObject}, a0key("k"), a0num(1)), err: true},
		{name: "short number", body: cat(a0str("x"), a0obj(a0key("n"), []byte{amfNumber, 1, 2})), err: true},
		{name: "short date", body: cat(a0str("x"), a0obj(a0key("d"), []byte{amfDate, 1, 2, 3, 4, 5, 6, 7, 8})), err: true},
		{name: "reference type", body: cat(a0str("x"), a0obj(a0key("r"), []byte{0x07, 0, 1})), err: true},
		{name: "amf3 switch", body: cat(a0str("x"), []byte{0x11, 1}), err: true},
		{name: "key past the end", body: cat(a0str("x"), []byte{amfObject, 0, 5, 'a'}), err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, values, err := DecodeScript(tt.body)
			if tt.err {
				if err == nil {
					t.Fatalf("decoded %q %v", name, values)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if name != tt.want || !reflect.DeepEqual(values, tt.values) {
				t.Fatalf("got %q %#v\nwant %q %#v", name, values, tt.want, tt.values)
			}
			// Encoding what was decoded and decoding again gives the same.
			name2, values2, err := DecodeScript(EncodeScript(name, values))
			if err != nil || name2 != name || !reflect.DeepEqual(values2, values) {
				t.Fatalf("round trip: %q %#v, %v", name2, values2, err)
			}
		})
	}
}

func nestedMap(depth int) map[string]any {
	m := map[string]any{}
	for range depth - 1 {
		m = map[string]any{"o": m}
	}
	return m
}

func TestEncodeScript(t *testing.T) {
	got := EncodeScript("onMetaData", map[string]any{"width": 320, "audiocodecid": uint8(10), "stereo": true})
	want := cat(a0str("onMetaData"), a0ecma(3,
		a0key("audiocodecid"), a0num(10),
		a0key("stereo"), []byte{amfBoolean, 1},
		a0key("width"), a0num(320)))
	if !bytes.Equal(got, want) {
		t.Fatalf("got  % x\nwant % x", got, want)
	}

	tests := []struct {
		name string
		v    any
		want any // what DecodeScript gives back
	}{
		{"int64", int64(-3), -3.0},
		{"float32", float32(0.5), 0.5},
		{"uint64", uint64(1 << 40), float64(1 << 40)},
		{"long string", strings.Repeat("a", 70000), strings.Repeat("a", 70000)},
		{"string slice", []string{"a", "b"}, []any{"a", "b"}},
		{"nested", map[string]any{"b": []any{map[string]any{"c": nil}}}, map[string]any{"b": []any{map[string]any{"c": nil}}}},
		{"time", time.UnixMilli(1234567).In(time.FixedZone("x", 3600)), time.UnixMilli(1234567).UTC()},
		{"unsupported type is null", struct{}{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, values, err := DecodeScript(EncodeScript("x", map[string]any{"k": tt.v}))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(values["k"], tt.want) {
				t.Fatalf("got %#v, want %#v", values["k"], tt.want)
			}
		})
	}
}

func TestEncodeScriptDeterministic(t *testing.T) {
	first := EncodeScript("onMetaData", MetaData(1920, 1080, 29.97, 4500, 48000, 2))
	for range 20 { // map iteration order changes from run to run
		if again := EncodeScript("onMetaData", MetaData(1920, 1080, 29.97, 4500, 48000, 2)); !bytes.Equal(again, first) {
			t.Fatal("EncodeScript output changed")
		}
	}
}

func TestMetaData(t *testing.T) {
	tests := []struct {
		name                 string
		width, height        int
		fps                  float64
		kbps, rate, channels int
		want                 map[string]any
	}{
		{
			name: "video and stereo audio", width: 1280, height: 720, fps: 30, kbps: 2500, rate: 44100, channels: 2,
			want: map[string]any{
				"encoder": "livefuse", "width": 1280.0, "height": 720.0, "framerate": 30.0, "videocodecid": 7.0,
				"videodatarate": 2500.0, "audiocodecid": 10.0, "audiosamplerate": 44100.0, "audiochannels": 2.0, "stereo": true,
			},
		},
		{
			name: "video only, unknown rate", width: 320, height: 240,
			want: map[string]any{"encoder": "livefuse", "width": 320.0, "height": 240.0, "videocodecid": 7.0},
		},
		{
			name: "mono audio only", rate: 48000, channels: 1,
			want: map[string]any{"encoder": "livefuse", "audiocodecid": 10.0, "audiosamplerate": 48000.0, "audiochannels": 1.0, "stereo": false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MetaData(tt.width, tt.height, tt.fps, tt.kbps, tt.rate, tt.channels)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v\nwant %v", got, tt.want)
			}
			name, back, err := DecodeScript(EncodeScript("onMetaData", got))
			if err != nil || name != "onMetaData" || !reflect.DeepEqual(back, got) {
				t.Fatalf("round trip %q %v %v", name, back, err)
			}
		})
	}
}

func TestDecodeScriptErrorsWrapTruncated(t *testing.T) {
	_, _, err := DecodeScript([]byte{amfString, 0, 9, 'a'})
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
}

// strictArrays returns depth strict arrays of one element inside each
// other, the innermost holding a null: the depth bomb's shape.
func strictArrays(depth int) []byte {
	var b []byte
	for range depth {
		b = append(b, amfStrictArray, 0, 0, 0, 1)
	}
	return append(b, amfNull)
}

func TestCheckAMF0(t *testing.T) {
	connect := cat(a0str("connect"), a0num(1), a0obj(cat(a0key("app"), a0str("live")), cat(a0key("tcUrl"), a0str("rtmp://h/live"))))
	longStr := func(n uint32, body int) []byte {
		return cat(binary.BigEndian.AppendUint32([]byte{amfLongString}, n), bytes.Repeat([]byte{'x'}, body))
	}
	manyNulls := func(n int) []byte {
		return cat(binary.BigEndian.AppendUint32([]byte{amfStrictArray}, uint32(n)), bytes.Repeat([]byte{amfNull}, n))
	}
	tests := []struct {
		name string
		body []byte
		lim  AMFLimits
		want string // "" accepted, else a substring of the error
	}{
		{name: "empty", body: nil},
		{name: "connect", body: connect},
		{name: "script", body: EncodeScript("onMetaData", MetaData(1280, 720, 30, 2500, 44100, 2))},
		{name: "every supported type", body: cat(a0num(1), []byte{amfBoolean, 1}, a0str("s"), longStr(3, 3), []byte{amfNull, amfUndefined},
			a0ecma(1, a0key("k"), a0num(2)), manyNulls(3), []byte{amfDate, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})},
		{name: "length bomb: strict array of 2^31-1", body: cat(a0str("connect"), a0num(1), []byte{amfObject}, a0key("app"), a0str("live"), a0key("x"),
			[]byte{amfStrictArray, 0x7f, 0xff, 0xff, 0xff}), want: "strict array of 2147483647 values"},
		{name: "strict array of 2^32-1", body: []byte{amfStrictArray, 0xff, 0xff, 0xff, 0xff, amfNull}, want: "strict array"},
		{name: "ECMA count past the end", body: []byte{amfECMAArray, 0x7f, 0xff, 0xff, 0xff, 0, 0, amfObjectEnd}, want: "ECMA array of"},
		{name: "ECMA count 0 (a hint)", body: a0ecma(0, a0key("k"), a0num(2))},
		{name: "ECMA without end marker", body: []byte{amfECMAArray, 0, 0, 0, 0}, want: "truncated"},
		{name: "long string past the end", body: longStr(0xffffffff, 4), want: "long string"},
		{name: "string past the end", body: []byte{amfString, 0xff, 0xff, 'a'}, want: "truncated"},
		{name: "key past the end", body: []byte{amfObject, 0xff, 0xff, 'a'}, want: "truncated"},
		{name: "depth bomb: nested strict arrays", body: strictArrays(1_600_000), want: "nesting deeper than 16"},
		{name: "depth bomb: nested objects", body: nested(100_000), want: "nesting deeper than 16"},
		{name: "depth 16 objects", body: nested(16)},
		{name: "depth 17 objects", body: nested(17), want: "nesting deeper"},
		{name: "depth limit set", body: nested(4), lim: AMFLimits{MaxDepth: 3}, want: "nesting deeper than 3"},
		{name: "values at the limit", body: manyNulls(9), lim: AMFLimits{MaxValues: 10}},
		{name: "values past the limit", body: manyNulls(10), lim: AMFLimits{MaxValues: 10}, want: "more than 10 values"},
		{name: "default value limit", body: manyNulls(DefaultAMFMaxValues), want: "more than 65536 values"},
		{name: "empty key with a value", body: cat([]byte{amfObject}, a0key(""), a0num(1), a0end), want: "empty property name"},
		{name: "object end as a value", body: []byte{amfObjectEnd}, want: "unsupported"},
		{name: "reference", body: []byte{0x07, 0, 1}, want: "type marker 0x07"},
		{name: "typed object", body: cat([]byte{0x10}, a0key("T"), a0end), want: "type marker 0x10"},
		{name: "AMF3 switch", body: []byte{0x11, 0x01}, want: "type marker 0x11"},
		{name: "xml document", body: []byte{0x0f, 0, 0, 0, 0}, want: "type marker 0x0f"},
		{name: "unsupported marker", body: []byte{0x0d}, want: "type marker 0x0d"},
		{name: "trailing partial value", body: cat(a0num(1), []byte{amfNumber, 1}), want: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckAMF0(tt.body, tt.lim)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q, want %q", err, tt.want)
			case err != nil && !errors.Is(err, ErrAMF):
				t.Fatalf("error %v does not wrap ErrAMF", err)
			}
		})
	}
}

// CheckAMF0 builds nothing: checking a body allocates nothing whatever it
// declares.
func TestCheckAMF0DoesNotAllocate(t *testing.T) {
	body := cat(a0str("connect"), a0num(1), a0obj(cat(a0key("app"), a0str("live")), cat(a0key("list"), strictArrays(10))))
	if n := testing.AllocsPerRun(100, func() { _ = CheckAMF0(body, AMFLimits{}) }); n != 0 {
		t.Fatalf("%v allocations per check", n)
	}
}
