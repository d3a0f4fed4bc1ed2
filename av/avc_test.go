package av

import (
	"bytes"
	"errors"
	"testing"
)

// SPS and PPS of a 320x240, 25 fps High profile stream, as x264 writes
// them (the record is what ffmpeg puts in the FLV sequence header).
var (
	testSPS = []byte{
		0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00,
		0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99, 0x60,
	}
	testPPS       = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
	testAVCRecord = cat(
		[]byte{0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, byte(len(testSPS))}, testSPS,
		[]byte{0x01, 0x00, byte(len(testPPS))}, testPPS,
		[]byte{0xfd, 0xf8, 0xf8, 0x00},
	)
)

func TestParseAVCConfig(t *testing.T) {
	baseSPS := []byte{0x67, 0x42, 0xc0, 0x1e, 0x01}
	tests := []struct {
		name                   string
		rec                    []byte
		profile, compat, level byte
		nSPS, nPPS             int
		ext                    []byte
		width, height          int
		fps                    float64
		wantErr                bool
	}{
		{
			name: "x264 high profile", rec: testAVCRecord,
			profile: 0x64, level: 0x0d, nSPS: 1, nPPS: 1, ext: []byte{0xfd, 0xf8, 0xf8, 0x00},
			width: 320, height: 240, fps: 25,
		},
		{
			name:    "baseline, reserved bits zero, broken sps",
			rec:     cat([]byte{1, 0x42, 0xc0, 0x1e, 0x03, 0x01, 0, 5}, baseSPS, []byte{1, 0, 2, 0x68, 0xce}),
			profile: 0x42, compat: 0xc0, level: 0x1e, nSPS: 1, nPPS: 1,
		},
		{
			name:    "two sps, no pps",
			rec:     cat([]byte{1, 0x42, 0, 0x1e, 0xff, 0xe2, 0, 5}, baseSPS, []byte{0, 5}, baseSPS, []byte{0}),
			profile: 0x42, level: 0x1e, nSPS: 2,
		},
		{name: "empty", rec: nil, wantErr: true},
		{name: "short", rec: []byte{1, 0x64, 0, 0x0d, 0xff, 0xe1}, wantErr: true},
		{name: "version 0", rec: cat([]byte{0}, testAVCRecord[1:]), wantErr: true},
		{name: "2-byte lengths", rec: cat(testAVCRecord[:4], []byte{0xfd}, testAVCRecord[5:]), wantErr: true},
		{name: "sps past the end", rec: testAVCRecord[:20], wantErr: true},
		{name: "no pps count", rec: testAVCRecord[:8+len(testSPS)], wantErr: true},
		{name: "pps past the end", rec: testAVCRecord[:8+len(testSPS)+5], wantErr: true},
		{name: "empty sps", rec: []byte{1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 0, 0}, wantErr: true},
		{name: "sps count with no sps", rec: []byte{1, 0x42, 0, 0x1e, 0xff, 0xe1, 0}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseAVCConfig(tt.rec)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Profile != tt.profile || c.Compat != tt.compat || c.Level != tt.level ||
				len(c.SPS) != tt.nSPS || len(c.PPS) != tt.nPPS || !bytes.Equal(c.Ext, tt.ext) {
				t.Fatalf("got %+v", c)
			}
			if got := c.Marshal(); !bytes.Equal(got, tt.rec) {
				t.Fatalf("Marshal\n got % x\nwant % x", got, tt.rec)
			}
			if w, h := c.Resolution(); w != tt.width || h != tt.height {
				t.Errorf("Resolution %dx%d, want %dx%d", w, h, tt.width, tt.height)
			}
			if fps := c.FPS(); fps != tt.fps {
				t.Errorf("FPS %v, want %v", fps, tt.fps)
			}
		})
	}
}

func TestAVCConfigMarshalHandBuilt(t *testing.T) {
	c := &AVCConfig{Profile: 0x42, Compat: 0xc0, Level: 0x1e, SPS: [][]byte{{0x67, 0x42}}, PPS: [][]byte{{0x68}}}
	want := []byte{1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68}
	if got := c.Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	if got := c.CodecString(); got != "avc1.42c01e" {
		t.Fatalf("CodecString %q", got)
	}
}

func TestBuildAVCConfig(t *testing.T) {
	tests := []struct {
		name     string
		sps, pps []byte
		want     []byte
		wantErr  bool
	}{
		// The same bytes ffmpeg writes for this SPS and PPS.
		{name: "high profile", sps: testSPS, pps: testPPS, want: testAVCRecord},
		{
			name: "baseline", sps: []byte{0x67, 0x42, 0xc0, 0x1e, 0x01}, pps: []byte{0x68, 0xce},
			want: []byte{1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 5, 0x67, 0x42, 0xc0, 0x1e, 0x01, 1, 0, 2, 0x68, 0xce},
		},
		{name: "swapped", sps: testPPS, pps: testSPS, wantErr: true},
		{name: "short sps", sps: []byte{0x67, 0x64}, pps: testPPS, wantErr: true},
		{name: "empty pps", sps: testSPS, pps: nil, wantErr: true},
		{name: "broken high profile sps", sps: []byte{0x67, 0x64, 0, 0x0d}, pps: testPPS, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := BuildAVCConfig(tt.sps, tt.pps)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("built %+v", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Marshal(); !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
		})
	}
}

func TestSplitAVCC(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    [][]byte
		wantErr error // nil: any error
	}{
		{name: "one", in: []byte{0, 0, 0, 2, 0x65, 1}, want: [][]byte{{0x65, 1}}},
		{name: "three", in: []byte{0, 0, 0, 1, 9, 0, 0, 0, 2, 6, 5, 0, 0, 0, 1, 0x41}, want: [][]byte{{9}, {6, 5}, {0x41}}},
		{name: "empty", in: nil},
		{name: "zero length", in: []byte{0, 0, 0, 0}},
		{name: "zero length after one", in: []byte{0, 0, 0, 1, 9, 0, 0, 0, 0}},
		{name: "length past the end", in: []byte{0, 0, 0, 3, 0x65, 1}, wantErr: ErrTruncated},
		{name: "huge length", in: []byte{0xff, 0xff, 0xff, 0xff, 0x65}, wantErr: ErrTruncated},
		{name: "partial length", in: []byte{0, 0, 0, 1, 9, 0, 0}, wantErr: ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SplitAVCC(tt.in)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("split into %x", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if _, err := AVCCToAnnexB(tt.in); err == nil {
					t.Fatal("AVCCToAnnexB accepted it")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %x, want %x", got, tt.want)
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Fatalf("unit %d: % x, want % x", i, got[i], tt.want[i])
				}
			}
			if &got[0][0] != &tt.in[4] {
				t.Error("SplitAVCC copied")
			}
			if back := AppendAVCC(nil, got); !bytes.Equal(back, tt.in) {
				t.Errorf("AppendAVCC gives % x", back)
			}
		})
	}
}

func TestAnnexB(t *testing.T) {
	tests := []struct {
		name    string
		annexB  []byte
		avcc    []byte
		wantErr bool
	}{
		{
			name:   "4-byte start codes",
			annexB: []byte{0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3, 4},
			avcc:   []byte{0, 0, 0, 2, 0x67, 1, 0, 0, 0, 2, 0x68, 2, 0, 0, 0, 3, 0x65, 3, 4},
		},
		{
			name:   "3-byte start codes and emulation prevention kept",
			annexB: []byte{0, 0, 1, 0x41, 0, 0, 3, 1, 0, 0, 1, 0x41, 7},
			avcc:   []byte{0, 0, 0, 5, 0x41, 0, 0, 3, 1, 0, 0, 0, 2, 0x41, 7},
		},
		{
			name:   "trailing zeros and empty units dropped",
			annexB: []byte{0, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 0, 1, 0, 0, 1, 0x65, 8, 0, 0},
			avcc:   []byte{0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 2, 0x65, 8},
		},
		{name: "empty", annexB: nil, wantErr: true},
		{name: "no start code", annexB: []byte{0x65, 0, 0, 1, 0x65}, wantErr: true},
		{name: "one zero", annexB: []byte{0, 1, 0x65}, wantErr: true},
		{name: "start code only", annexB: []byte{0, 0, 0, 1}, wantErr: true},
		{name: "zeros only", annexB: []byte{0, 0, 0, 1, 0, 0, 0}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AnnexBToAVCC(tt.annexB)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("converted to % x", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.avcc) {
				t.Fatalf("got  % x\nwant % x", got, tt.avcc)
			}
			annexB, err := AVCCToAnnexB(got)
			if err != nil {
				t.Fatal(err)
			}
			if again, err := AnnexBToAVCC(annexB); err != nil || !bytes.Equal(again, got) {
				t.Fatalf("round trip: % x, %v", again, err)
			}
		})
	}
}

func TestIsKeyframeAVCC(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{"idr", []byte{0, 0, 0, 1, 0x65}, true},
		{"idr after sei", []byte{0, 0, 0, 2, 0x06, 5, 0, 0, 0, 1, 0x25}, true},
		{"non-idr", []byte{0, 0, 0, 1, 0x41}, false},
		{"sei of type 5 is no idr", []byte{0, 0, 0, 2, 0x06, 0x05}, false},
		{"broken length before idr", []byte{0, 0, 0, 9, 0x41, 0, 0, 0, 1, 0x65}, false},
		{"zero length", []byte{0, 0, 0, 0, 0x65}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := IsKeyframeAVCC(tt.in); got != tt.want {
			t.Errorf("%s: got %v", tt.name, got)
		}
	}
}

func TestNALUType(t *testing.T) {
	tests := []struct {
		in   []byte
		want uint8
	}{{nil, 0}, {[]byte{0x65}, NALUTypeIDR}, {[]byte{0x67, 0}, NALUTypeSPS}, {[]byte{0x68}, NALUTypePPS}, {[]byte{0x09}, NALUTypeAUD}}
	for _, tt := range tests {
		if got := NALUType(tt.in); got != tt.want {
			t.Errorf("NALUType(% x) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
