package av

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"cam", true},
		{"Cam-1_a.b", true},
		{strings.Repeat("a", MaxNameLen), true},
		{"", false},
		{strings.Repeat("a", MaxNameLen+1), false},
		{".hidden", false},
		{"a/b", false},
		{"a b", false},
		{"a?b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		err := CheckName(tt.name)
		if (err == nil) != tt.ok || ValidName(tt.name) != tt.ok {
			t.Errorf("CheckName(%q) = %v, ValidName %v; want ok=%v", tt.name, err, ValidName(tt.name), tt.ok)
		}
	}
}

func TestRenditionNames(t *testing.T) {
	if got := RenditionStream("cam", "720p"); got != "cam_720p" {
		t.Fatalf("RenditionStream = %q", got)
	}
	for _, tt := range []struct {
		r  string
		ok bool
	}{{"720p", true}, {"hd_720", true}, {"a-b", true}, {"", false}, {"a.b", false}, {strings.Repeat("r", MaxRenditionLen+1), false}} {
		if err := CheckRendition(tt.r); (err == nil) != tt.ok {
			t.Errorf("CheckRendition(%q) = %v, want ok=%v", tt.r, err, tt.ok)
		}
	}
	streams := map[string]bool{"cam": true, "my_cam": true, "x": true}
	has := func(n string) bool { return streams[n] }
	tests := []struct {
		s, name, r string
		ok         bool
	}{
		{"cam_720p", "cam", "720p", true},
		{"cam_hd_720", "cam", "hd_720", true},   // a rendition with '_'
		{"my_cam_720p", "my_cam", "720p", true}, // a stream with '_'
		{"cam", "", "", false},
		{"cam_", "", "", false},
		{"_720p", "", "", false},
		{"other_720p", "", "", false},
		{"x_a.b", "", "", false}, // not a rendition name
	}
	for _, tt := range tests {
		name, r, ok := SplitRendition(tt.s, has)
		if name != tt.name || r != tt.r || ok != tt.ok {
			t.Errorf("SplitRendition(%q) = %q, %q, %v; want %q, %q, %v", tt.s, name, r, ok, tt.name, tt.r, tt.ok)
		}
		if ok && RenditionStream(name, r) != tt.s {
			t.Errorf("RenditionStream(%q, %q) does not give %q back", name, r, tt.s)
		}
	}
}

func TestCRC32MPEG2(t *testing.T) {
	// The CRC-32/MPEG-2 check value.
	if got := CRC32MPEG2([]byte("123456789")); got != 0x0376e6e7 {
		t.Fatalf("CRC32MPEG2(123456789) = %#08x, want 0x0376e6e7", got)
	}
	// A PAT (program 1 on PID 0x1000) with its CRC checks to 0.
	pat := []byte{0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00}
	crc := CRC32MPEG2(pat)
	sec := append(pat, byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc))
	if CRC32MPEG2(sec) != 0 {
		t.Fatalf("a section with its CRC does not check to 0")
	}
}

func TestMetaDataBody(t *testing.T) {
	meta := EncodeScript("onMetaData", map[string]any{"width": 640.0})
	cue := EncodeScript("onCuePoint", map[string]any{"name": "x"})
	set := append([]byte(amfSetDataFrame), meta...)
	tests := []struct {
		name string
		b    []byte
		body []byte
		ok   bool
	}{
		{"onMetaData", meta, meta, true},
		{"@setDataFrame form", set, meta, true},
		{"other script", cue, nil, false},
		{"@setDataFrame of another", append([]byte(amfSetDataFrame), cue...), nil, false},
		{"empty", nil, nil, false},
		{"truncated name", meta[:5], nil, false},
	}
	for _, tt := range tests {
		body, ok := MetaDataBody(tt.b)
		if ok != tt.ok || IsMetaDataBody(tt.b) != tt.ok || ok && string(body) != string(tt.body) {
			t.Errorf("%s: MetaDataBody = %q, %v; want %q, %v", tt.name, body, ok, tt.body, tt.ok)
		}
	}
}
