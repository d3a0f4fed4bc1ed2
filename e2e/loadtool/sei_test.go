package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// hasStartCodeEmulation reports whether a NAL unit payload contains a byte
// sequence that emulation prevention must have removed: 00 00 00, 00 00 01
// or 00 00 02, or an 00 00 03 not followed by a byte <= 3 (or the end).
func hasStartCodeEmulation(b []byte) bool {
	for i := 0; i+2 < len(b); i++ {
		if b[i] != 0 || b[i+1] != 0 {
			continue
		}
		switch {
		case b[i+2] <= 2:
			return true
		case b[i+2] == 3 && i+3 < len(b) && b[i+3] > 3:
			return true
		}
	}
	return false
}

func TestStampSEIRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		ns      int64
		wantEPB bool // the encoding needs emulation prevention bytes
	}{
		{"zero", 0, true},
		{"one", 1, true},
		{"two zero pairs", 0x0000000100000002, true},
		{"leading 03", 0x0300000000000000, true},
		{"escape byte value", 0x0000030000000300, true},
		{"no zeros", 0x1122334455667788, false},
		{"now-ish", 1763736000123456789, false},
		{"max", math.MaxInt64, false},
		{"all ones", -1, false},
		{"zeros at the end", 0x1122334455000000, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nal := appendStampSEI(nil, tt.ns)
			if nal[0] != 0x06 {
				t.Fatalf("NAL header %#x, want 0x06", nal[0])
			}
			const raw = 1 + 1 + 1 + stampPayloadSize + 1
			if gotEPB := len(nal) > raw; gotEPB != tt.wantEPB {
				t.Errorf("len %d (raw %d): emulation prevention used = %v, want %v", len(nal), raw, gotEPB, tt.wantEPB)
			}
			if hasStartCodeEmulation(nal[1:]) {
				t.Errorf("payload % x emulates a start code", nal[1:])
			}
			if nal[len(nal)-1] != 0x80 {
				t.Errorf("last byte %#x, want the 0x80 stop bit", nal[len(nal)-1])
			}
			got, ok := stampFromSEI(nal)
			if !ok || got != tt.ns {
				t.Fatalf("stampFromSEI = %#x, %v; want %#x", got, ok, tt.ns)
			}
		})
	}
}

func TestStampSEIVector(t *testing.T) {
	// ns = 0x00000001_00000002: RBSP ... 00 00 00 01 00 00 00 02 80 must
	// become 00 00 03 00 01 00 00 03 00 02 80.
	want := []byte{0x06, 0x05, 0x18}
	want = append(want, stampUUID[:]...)
	want = append(want, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x02, 0x80)
	got := appendStampSEI([]byte{0xAA}, 0x0000000100000002)
	if !bytes.Equal(got[1:], want) || got[0] != 0xAA {
		t.Fatalf("appendStampSEI:\n got % x\nwant % x", got[1:], want)
	}
}

func TestEmulationPrevention(t *testing.T) {
	tests := []struct {
		rbsp, want []byte
	}{
		{[]byte{0, 0, 0}, []byte{0, 0, 3, 0}},
		{[]byte{0, 0, 1}, []byte{0, 0, 3, 1}},
		{[]byte{0, 0, 3}, []byte{0, 0, 3, 3}},
		{[]byte{0, 0, 4}, []byte{0, 0, 4}},
		{[]byte{0, 0, 0, 0, 0}, []byte{0, 0, 3, 0, 0, 3, 0}},
		{[]byte{0, 0}, []byte{0, 0, 3}}, // trailing zeros
		{[]byte{1, 0, 2}, []byte{1, 0, 2}},
	}
	for _, tt := range tests {
		got := appendEmulationPrevention(nil, tt.rbsp)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("appendEmulationPrevention(% x) = % x, want % x", tt.rbsp, got, tt.want)
		}
		r := rbspReader{b: got}
		var back []byte
		for {
			c, ok := r.next()
			if !ok {
				break
			}
			back = append(back, c)
		}
		if !bytes.Equal(back, tt.rbsp) {
			t.Errorf("rbspReader(% x) = % x, want % x", got, back, tt.rbsp)
		}
	}
}

// seiNAL builds an SEI NAL unit from raw messages (type, payload), with
// emulation prevention.
func seiNAL(msgs ...[]byte) []byte {
	var rbsp []byte
	for _, m := range msgs {
		rbsp = append(rbsp, m...)
	}
	rbsp = append(rbsp, 0x80)
	return appendEmulationPrevention([]byte{0x06}, rbsp)
}

func seiMessage(typ int, payload []byte) []byte {
	var b []byte
	for ; typ >= 255; typ -= 255 {
		b = append(b, 0xFF)
	}
	b = append(b, byte(typ))
	size := len(payload)
	for ; size >= 255; size -= 255 {
		b = append(b, 0xFF)
	}
	b = append(b, byte(size))
	return append(b, payload...)
}

func stampPayload(uuid [16]byte, ns uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), uuid[:]...), ns)
}

func TestStampFromSEI(t *testing.T) {
	otherUUID := [16]byte{0xdc, 0x45, 0xe9, 0xbd, 0xe6, 0xd9, 0x48, 0xb7, 0x96, 0x2c, 0xd8, 0x20, 0xd9, 0x23, 0xee, 0xef} // x264's
	x264Info := append(otherUUID[:], bytes.Repeat([]byte("x264 - core 164 "), 40)...)                                     // > 255 bytes
	ours := stampPayload(stampUUID, 42)
	tests := []struct {
		name   string
		nal    []byte
		want   int64
		wantOK bool
	}{
		{"ours", appendStampSEI(nil, 42), 42, true},
		{"after x264 info", seiNAL(seiMessage(5, x264Info), seiMessage(5, ours)), 42, true},
		{"after other type", seiNAL(seiMessage(4, []byte{0xb5, 0, 0x31}), seiMessage(5, ours)), 42, true},
		{"long type", seiNAL(seiMessage(300, []byte{1, 2, 3}), seiMessage(5, ours)), 42, true},
		{"payload longer than a stamp", seiNAL(seiMessage(5, append(stampPayload(stampUUID, 7), 9, 9))), 7, true},
		{"x264 info only", seiNAL(seiMessage(5, x264Info)), 0, false},
		{"other uuid", seiNAL(seiMessage(5, stampPayload(otherUUID, 42))), 0, false},
		{"too short for a stamp", seiNAL(seiMessage(5, stampUUID[:])), 0, false},
		{"not sei", append([]byte{0x65}, appendStampSEI(nil, 42)[1:]...), 0, false},
		{"empty", nil, 0, false},
		{"header only", []byte{0x06}, 0, false},
		{"size past end", []byte{0x06, 0x05, 0x40, 0x01}, 0, false},
		{"ff forever", append([]byte{0x06}, bytes.Repeat([]byte{0xFF}, 1000)...), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := stampFromSEI(tt.nal)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("stampFromSEI = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	// Every truncation of a valid stamp fails cleanly.
	full := appendStampSEI(nil, 0x0000000100000002)
	for n := range len(full) - 1 {
		if _, ok := stampFromSEI(full[:n]); ok {
			t.Errorf("stampFromSEI(first %d of %d bytes) found a stamp", n, len(full))
		}
	}
}

func avcc(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

// naluTypes lists the NAL unit types of AVCC data.
func naluTypes(t *testing.T, b []byte) []byte {
	t.Helper()
	var types []byte
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("bad AVCC tail % x", b)
		}
		l := int(binary.BigEndian.Uint32(b))
		if l == 0 || l > len(b)-4 {
			t.Fatalf("bad AVCC length %d with %d left", l, len(b)-4)
		}
		types = append(types, b[4]&0x1f)
		b = b[4+l:]
	}
	return types
}

func TestAppendStamped(t *testing.T) {
	aud := []byte{0x09, 0xf0}
	sps := []byte{0x67, 0x64, 0x00, 0x1f}
	pps := []byte{0x68, 0xeb, 0xe3}
	x264 := seiNAL(seiMessage(5, stampPayload([16]byte{1}, 0)))
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x00, 0x03}
	slice := []byte{0x41, 0x9a, 0x00}
	tests := []struct {
		name  string
		au    []byte
		types []byte
	}{
		{"idr with parameter sets", avcc(aud, sps, pps, x264, idr), []byte{9, 7, 8, 6, 6, 5}},
		{"plain slice", avcc(slice), []byte{6, 1}},
		{"two slices", avcc(slice, slice), []byte{6, 1, 1}},
		{"no slice", avcc(sps, pps), []byte{7, 8, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0x17, 0x01, 0, 0, 0}
			out, ok := appendStamped(append([]byte(nil), prefix...), tt.au, 12345)
			if !ok {
				t.Fatal("appendStamped refused a valid access unit")
			}
			if !bytes.Equal(out[:5], prefix) {
				t.Fatalf("prefix changed: % x", out[:5])
			}
			if got := naluTypes(t, out[5:]); !bytes.Equal(got, tt.types) {
				t.Errorf("NAL unit types %v, want %v", got, tt.types)
			}
			if ns, ok := stampFromAVCC(out[5:]); !ok || ns != 12345 {
				t.Errorf("stampFromAVCC = %d, %v; want 12345", ns, ok)
			}
		})
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {0, 0, 0, 9, 0x65}, {0, 0, 0, 0}} {
		out, ok := appendStamped(nil, bad, 1)
		if ok || !bytes.Equal(out, bad) {
			t.Errorf("appendStamped(% x) = % x, %v; want it unchanged and false", bad, out, ok)
		}
	}
}

func TestStampFromAVCC(t *testing.T) {
	slice := []byte{0x41, 0x9a}
	sei := appendStampSEI(nil, 99)
	tests := []struct {
		name   string
		au     []byte
		wantOK bool
	}{
		{"before slice", avcc(sei, slice), true},
		{"after slice", avcc(slice, sei), false},
		{"too deep", avcc([]byte{0x09, 0xf0}, []byte{0x09, 0xf0}, []byte{0x09, 0xf0}, []byte{0x09, 0xf0}, []byte{0x09, 0xf0}, []byte{0x09, 0xf0}, sei, slice), false},
		{"bad length", append(avcc(sei), 0, 0, 0, 50, 1), true},
		{"bad first length", []byte{0, 0, 1, 0, 6, 5}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, ok := stampFromAVCC(tt.au)
			if ok != tt.wantOK || ok && ns != 99 {
				t.Errorf("stampFromAVCC = %d, %v; want ok=%v", ns, ok, tt.wantOK)
			}
		})
	}
}

func FuzzStampFromSEI(f *testing.F) {
	f.Add(appendStampSEI(nil, 0x0000000100000002))
	f.Add(appendStampSEI(nil, 1763736000123456789))
	f.Add(seiNAL(seiMessage(5, bytes.Repeat([]byte{0}, 300)), seiMessage(5, stampPayload(stampUUID, 3))))
	f.Add([]byte{0x06, 0xFF, 0xFF, 0x05})
	f.Fuzz(func(t *testing.T, nal []byte) {
		stampFromSEI(nal)
		if len(nal) >= 8 {
			ns := int64(binary.BigEndian.Uint64(nal))
			enc := appendStampSEI(nil, ns)
			if hasStartCodeEmulation(enc[1:]) {
				t.Fatalf("encoding of %#x emulates a start code: % x", ns, enc)
			}
			if got, ok := stampFromSEI(enc); !ok || got != ns {
				t.Fatalf("round trip of %#x: %#x, %v", ns, got, ok)
			}
		}
	})
}

func FuzzStampFromAVCC(f *testing.F) {
	f.Add(avcc(appendStampSEI(nil, 5), []byte{0x65, 0x88}))
	f.Add(avcc([]byte{0x67, 0x64}, []byte{0x68, 0xeb}, []byte{0x41}))
	f.Add([]byte{0, 0, 0, 200, 6})
	f.Fuzz(func(t *testing.T, au []byte) {
		stampFromAVCC(au)
		out, ok := appendStamped(nil, au, 77)
		if !ok {
			if !bytes.Equal(out, au) {
				t.Fatal("refused access unit was changed")
			}
			return
		}
		if want := len(au) + 4 + len(appendStampSEI(nil, 77)); len(out) != want {
			t.Fatalf("stamped length %d, want %d", len(out), want)
		}
	})
}
