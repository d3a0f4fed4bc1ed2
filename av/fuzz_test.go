package av

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// The seeds of these targets run with every `go test`; `go test -fuzz
// FuzzXxx ./av` explores further. Each checks that bad bytes give an error,
// never a panic, and that what parses survives a round trip.

func FuzzTagToPacket(f *testing.F) {
	f.Add(uint8(TagVideo), uint32(0), cat([]byte{0x17, 0, 0, 0, 0}, testAVCRecord))
	f.Add(uint8(TagVideo), uint32(40), []byte{0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x41})
	f.Add(uint8(TagVideo), uint32(0), []byte{0x17, 2, 0, 0, 0})
	f.Add(uint8(TagVideo), uint32(0), []byte{0x90, 'h', 'v', 'c', '1'})
	f.Add(uint8(TagAudio), uint32(23), []byte{0xaf, 1, 0x21})
	f.Add(uint8(TagAudio), uint32(0), []byte{0xaf, 0, 0x12, 0x10})
	f.Add(uint8(TagScript), uint32(0), EncodeScript("onMetaData", MetaData(320, 240, 25, 0, 44100, 1)))
	f.Add(uint8(TagScript), uint32(38), []byte("\x02\x00\nonMetaData")) // out at timestamp 0
	f.Fuzz(func(t *testing.T, tagType uint8, ts uint32, body []byte) {
		p, err := TagToPacket(tagType, ts, body)
		if err != nil {
			return
		}
		out, tt2, ts2 := AppendTagBody(nil, p)
		wantTS := ts
		if p.Kind == KindData && IsMetaDataBody(p.Data) {
			// onMetaData goes out at timestamp 0 wherever it sits.
			wantTS, p.DTS = 0, 0
		}
		if tt2 != tagType || ts2 != wantTS {
			t.Fatalf("tag type/timestamp %d/%d became %d/%d", tagType, ts, tt2, ts2)
		}
		q, err := TagToPacket(tt2, ts2, out)
		if err != nil {
			t.Fatalf("re-encoded tag refused: %v", err)
		}
		if !samePacket(p, q) {
			t.Fatalf("round trip: %+v became %+v", p, q)
		}
	})
}

func FuzzFLVReader(f *testing.F) {
	stream := FLVHeader(true, true)
	for _, p := range testPackets() {
		stream = AppendTag(stream, p)
	}
	f.Add(stream)
	f.Add(AppendRawTag(FLVHeader(true, false), TagAudio, 0, []byte{0x2f, 1}))
	f.Add(AppendRawTag(FLVHeader(true, false), 15, 0, []byte{1}))
	f.Add(FLVHeader(false, false))
	f.Add([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00\x09\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewFLVReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		r.MaxTagSize = 1 << 16
		var packets []*Packet
		for range 1000 {
			p, err := r.ReadPacket()
			if r.Err() != nil {
				break
			}
			if err == nil {
				packets = append(packets, p)
			}
		}
		if r.Err() == nil || len(packets) == 0 {
			return // stopped by the bound, or nothing to compare
		}
		// Writing the packets and reading them back gives the same packets.
		var buf bytes.Buffer
		w := NewFLVWriter(&buf, true, true)
		for _, p := range packets {
			if err := w.WritePacket(p); err != nil {
				t.Fatal(err)
			}
		}
		r2, err := NewFLVReader(&buf)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range packets {
			got, err := r2.ReadPacket()
			if want.Kind == KindData && IsMetaDataBody(want.Data) {
				// onMetaData goes out at timestamp 0 wherever it sits.
				w := *want
				w.DTS = 0
				want = &w
			}
			if err != nil || !samePacket(got, want) {
				t.Fatalf("packet %d: %+v, %v; want %+v", i, got, err, want)
			}
		}
		if _, err := r2.ReadPacket(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the packets: %v", err)
		}
	})
}

func FuzzParseAVCConfig(f *testing.F) {
	f.Add(testAVCRecord)
	f.Add([]byte{1, 0x42, 0xc0, 0x1e, 0x03, 0x01, 0, 5, 0x67, 0x42, 0xc0, 0x1e, 0x01, 1, 0, 2, 0x68, 0xce})
	f.Add([]byte{1, 0x64, 0, 0x0d, 0xfd, 0xe1})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAVCConfig(b)
		if err != nil {
			return
		}
		if got := c.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("Marshal\n got % x\nwant % x", got, b)
		}
		c.Resolution()
		c.FPS()
		if len(c.SPS) > 0 && len(c.PPS) > 0 {
			if bc, err := BuildAVCConfig(c.SPS[0], c.PPS[0]); err == nil {
				if _, err := ParseAVCConfig(bc.Marshal()); err != nil {
					t.Fatalf("built record refused: %v", err)
				}
			}
		}
	})
}

func FuzzSplitAVCC(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 0x65, 1})
	f.Add([]byte{0, 0, 0, 1, 9, 0, 0, 0, 2, 6, 5, 0, 0, 0, 1, 0x41})
	f.Add([]byte{0, 0, 0, 1, 0x67, 0, 0, 1, 0x68, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x65})
	f.Fuzz(func(t *testing.T, b []byte) {
		if nalus, err := SplitAVCC(b); err == nil {
			if back := AppendAVCC(nil, nalus); !bytes.Equal(back, b) {
				t.Fatalf("AppendAVCC gives % x", back)
			}
			idr := false
			for _, n := range nalus {
				idr = idr || NALUType(n) == NALUTypeIDR
			}
			if IsKeyframeAVCC(b) != idr {
				t.Fatalf("IsKeyframeAVCC = %v, want %v", !idr, idr)
			}
			if _, err := AVCCToAnnexB(b); err != nil {
				t.Fatalf("AVCCToAnnexB: %v", err)
			}
		} else {
			IsKeyframeAVCC(b)
		}
		// The same bytes read as Annex-B.
		avcc, err := AnnexBToAVCC(b)
		if err != nil {
			return
		}
		nalus, err := SplitAVCC(avcc)
		if err != nil {
			t.Fatalf("AnnexBToAVCC output refused: %v", err)
		}
		annexB, err := AVCCToAnnexB(avcc)
		if err != nil {
			t.Fatal(err)
		}
		again, err := AnnexBToAVCC(annexB)
		if err != nil || !bytes.Equal(again, avcc) {
			t.Fatalf("Annex-B round trip: % x, %v", again, err)
		}
		for _, n := range nalus {
			if bytes.Contains(n, []byte{0, 0, 1}) || n[len(n)-1] == 0 {
				t.Fatalf("unit % x holds a start code or trailing zero", n)
			}
		}
	})
}

func FuzzParseADTS(f *testing.F) {
	f.Add([]byte{0xff, 0xf1, 0x4c, 0x40, 0x01, 0x5f, 0xfc, 1, 2, 3})
	f.Add([]byte{0xff, 0xf0, 0x4c, 0x40, 0x01, 0x9f, 0xfc, 0xab, 0xcd, 1, 2, 3})
	f.Add(AppendADTS(AppendADTS(nil, &AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}, []byte{1}), &AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}, []byte{2, 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, frames, err := ParseADTS(b)
		if err != nil {
			return
		}
		var out []byte
		for _, fr := range frames {
			n := len(out)
			if out = AppendADTS(out, cfg, fr); len(out) == n {
				t.Fatalf("AppendADTS refused %+v and a %d-byte frame", cfg, len(fr))
			}
		}
		cfg2, frames2, err := ParseADTS(out)
		if err != nil || *cfg2 != *cfg || len(frames2) != len(frames) {
			t.Fatalf("round trip: %+v, %d frames, %v", cfg2, len(frames2), err)
		}
		for i := range frames {
			if !bytes.Equal(frames[i], frames2[i]) {
				t.Fatalf("frame %d changed", i)
			}
		}
	})
}

func FuzzParseAudioConfig(f *testing.F) {
	f.Add([]byte{0x12, 0x10})
	f.Add([]byte{0x2b, 0x92, 0x08, 0x00})
	f.Add([]byte{0x12, 0x08, 0x56, 0xe5, 0x00})
	f.Add([]byte{0x17, 0x80, 0x18, 0x1c, 0x88})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAudioConfig(b)
		if err != nil {
			return
		}
		c.FrameDuration()
		c2, err := ParseAudioConfig(c.Marshal())
		if err != nil || c2.ObjectType != c.ObjectType || c2.SampleRate != c.SampleRate || c2.ChannelCount != c.ChannelCount {
			t.Fatalf("round trip %+v: %+v, %v", c, c2, err)
		}
	})
}

func FuzzDecodeScript(f *testing.F) {
	f.Add(EncodeScript("onMetaData", MetaData(1280, 720, 30, 2500, 44100, 2)))
	f.Add(cat(a0str("@setDataFrame"), a0str("onMetaData"), a0ecma(1, a0key("framerate"), a0num(25))))
	f.Add(EncodeScript("x", map[string]any{"a": []any{1.0, "s", nil, true, map[string]any{"d": time.UnixMilli(5)}}}))
	f.Add(cat(a0str("x"), nested(16)))
	f.Add(cat(a0str("x"), []byte{amfStrictArray, 0xff, 0xff, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, values, err := DecodeScript(b)
		if err != nil {
			return
		}
		name2, values2, err := DecodeScript(EncodeScript(name, values))
		if err != nil {
			t.Fatalf("re-encoded script refused: %v", err)
		}
		if name2 != name || !amfEqual(values, values2) {
			t.Fatalf("round trip: %q %#v\nbecame %q %#v", name, values, name2, values2)
		}
	})
}

// amfEqual compares decoded AMF values, with NaN equal to NaN.
func amfEqual(a, b any) bool {
	switch a := a.(type) {
	case float64:
		b, ok := b.(float64)
		return ok && (a == b || math.IsNaN(a) && math.IsNaN(b))
	case time.Time:
		b, ok := b.(time.Time)
		return ok && a.Equal(b)
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !amfEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !amfEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// FuzzCheckAMF0: any bytes are accepted or refused without a panic, and
// what CheckAMF0 accepts the building decoder reads whole, value by value,
// within the limits.
func FuzzCheckAMF0(f *testing.F) {
	f.Add(EncodeScript("onMetaData", MetaData(1280, 720, 30, 2500, 44100, 2)))
	f.Add(cat(a0str("connect"), a0num(1), a0obj(cat(a0key("app"), a0str("live")))))
	// The length bomb of issue 10: a strict array declaring 2^31-1 values.
	f.Add(cat(a0str("connect"), a0num(1), []byte{amfObject}, a0key("app"), a0str("live"), a0key("x"), []byte{amfStrictArray, 0x7f, 0xff, 0xff, 0xff}))
	// Depth bombs: nested strict arrays and objects.
	f.Add(cat(a0str("connect"), a0num(1), strictArrays(4096)))
	f.Add(nested(64))
	f.Add([]byte{amfECMAArray, 0xff, 0xff, 0xff, 0xff, 0, 0, amfObjectEnd})
	f.Add(cat(binary.BigEndian.AppendUint32([]byte{amfLongString}, 0xffffffff), []byte("abc")))
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := AMFLimits{MaxDepth: 8, MaxValues: 1000}
		if err := CheckAMF0(b, lim); err != nil {
			return
		}
		d := amfDecoder{b: b, maxDepth: lim.MaxDepth, maxValues: lim.MaxValues}
		for !d.done() {
			if _, err := d.value(0); err != nil {
				t.Fatalf("accepted by CheckAMF0, refused by the decoder at %d: %v", d.pos, err)
			}
		}
	})
}

// FuzzNames: the name rules take what a publish or play URL says. CheckName
// and ValidName agree, an accepted name is a single safe path segment, and
// a split rendition name joins back to the name it came from.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"cam", "cam_720p", "my_cam_hd_720", ".x", "a/b", "", "_", "a__b", "x_a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckName(s)
		if (err == nil) != ValidName(s) {
			t.Fatalf("CheckName(%q) = %v but ValidName = %v", s, err, ValidName(s))
		}
		if err == nil && (strings.ContainsAny(s, "/\\?#%") || s == "." || s == "..") {
			t.Fatalf("accepted %q", s)
		}
		parents := 0
		name, r, ok := SplitRendition(s, func(n string) bool { parents++; return ValidName(n) })
		if ok && (RenditionStream(name, r) != s || CheckRendition(r) != nil || !ValidName(name)) {
			t.Fatalf("SplitRendition(%q) = %q, %q", s, name, r)
		}
		if parents > len(s) {
			t.Fatalf("SplitRendition(%q) asked %d times", s, parents)
		}
	})
}

// FuzzMetaDataBody: recognising onMetaData never panics, and the body it
// returns is a suffix of the input that is onMetaData itself.
func FuzzMetaDataBody(f *testing.F) {
	meta := EncodeScript("onMetaData", MetaData(640, 360, 30, 0, 44100, 2))
	f.Add(meta)
	f.Add(append([]byte(amfSetDataFrame), meta...))
	f.Add(EncodeScript("onCuePoint", nil))
	f.Add([]byte(amfSetDataFrame))
	f.Fuzz(func(t *testing.T, b []byte) {
		body, ok := MetaDataBody(b)
		if !bytes.HasSuffix(b, body) {
			t.Fatalf("body %q is not a suffix of %q", body, b)
		}
		if ok != IsMetaDataBody(b) || ok && !IsMetaDataBody(body) {
			t.Fatalf("MetaDataBody(%q) = %q, %v disagrees with IsMetaDataBody", b, body, ok)
		}
	})
}
