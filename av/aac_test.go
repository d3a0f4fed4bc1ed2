package av

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

func TestParseAudioConfig(t *testing.T) {
	tests := []struct {
		name    string
		asc     []byte
		want    AudioConfig
		frame   time.Duration
		wantErr bool
	}{
		{name: "lc 44.1k stereo", asc: []byte{0x12, 0x10}, want: AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}, frame: 23219954},
		// ffmpeg appends the sync extension saying "no SBR".
		{name: "ffmpeg lc 44.1k mono", asc: []byte{0x12, 0x08, 0x56, 0xe5, 0x00}, want: AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 1}, frame: 23219954},
		{name: "lc 44.1k mono", asc: []byte{0x12, 0x08}, want: AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 1}, frame: 23219954},
		{name: "lc 48k 5.1", asc: []byte{0x11, 0xb0}, want: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 6}, frame: 21333333},
		{name: "lc 7.1", asc: []byte{0x11, 0xb8}, want: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 8}, frame: 21333333},
		// HE-AAC: SBR at 44.1 kHz over an AAC LC core at 22.05 kHz.
		{name: "he-aac", asc: []byte{0x2b, 0x92, 0x08, 0x00}, want: AudioConfig{ObjectType: 2, SampleRate: 22050, ChannelCount: 2}, frame: 46439909},
		// frameLengthFlag: 960-sample frames.
		{name: "960 samples", asc: []byte{0x11, 0x94}, want: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 2}, frame: 20 * time.Millisecond},
		{name: "empty", asc: nil, wantErr: true},
		{name: "one byte", asc: []byte{0x12}, wantErr: true},
		{name: "aac main", asc: []byte{0x0a, 0x10}, wantErr: true},
		{name: "bad sample rate index", asc: []byte{0x16, 0x90}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseAudioConfig(tt.asc)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ObjectType != tt.want.ObjectType || c.SampleRate != tt.want.SampleRate || c.ChannelCount != tt.want.ChannelCount {
				t.Fatalf("got %+v, want %+v", c, tt.want)
			}
			if got := c.Marshal(); !bytes.Equal(got, tt.asc) {
				t.Fatalf("Marshal % x, want % x", got, tt.asc)
			}
			if d := c.FrameDuration(); d != tt.frame {
				t.Errorf("FrameDuration %v, want %v", d, tt.frame)
			}
		})
	}
}

func TestAudioConfigMarshal(t *testing.T) {
	tests := []struct {
		name string
		c    AudioConfig
		want []byte
	}{
		{name: "lc 44.1k stereo", c: AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}, want: []byte{0x12, 0x10}},
		{name: "lc 48k mono", c: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 1}, want: []byte{0x11, 0x88}},
		{name: "explicit rate", c: AudioConfig{ObjectType: 2, SampleRate: 12345, ChannelCount: 1}, want: []byte{0x17, 0x80, 0x18, 0x1c, 0x88}},
		{name: "7 channels", c: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 7}},
		{name: "no object type", c: AudioConfig{SampleRate: 48000, ChannelCount: 2}},
		{name: "no sample rate", c: AudioConfig{ObjectType: 2, ChannelCount: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.c.Marshal()
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got % x, want % x", got, tt.want)
			}
			if got == nil {
				return
			}
			back, err := ParseAudioConfig(got)
			if err != nil || back.SampleRate != tt.c.SampleRate || back.ChannelCount != tt.c.ChannelCount {
				t.Fatalf("parsed back %+v, %v", back, err)
			}
		})
	}
	// A parsed config changed by hand is marshalled from its fields.
	c, err := ParseAudioConfig([]byte{0x2b, 0x92, 0x08, 0x00})
	if err != nil {
		t.Fatal(err)
	}
	c.SampleRate = 48000
	if got := c.Marshal(); !bytes.Equal(got, []byte{0x11, 0x90}) {
		t.Fatalf("edited config: % x", got)
	}
	if (&AudioConfig{}).FrameDuration() != 0 {
		t.Fatal("FrameDuration without sample rate")
	}
}

func TestADTS(t *testing.T) {
	cfg := &AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}
	frames := [][]byte{{0x21, 0x10, 0x04}, bytes.Repeat([]byte{0x55}, 1000), {0x01}}
	var stream []byte
	for _, f := range frames {
		stream = AppendADTS(stream, cfg, f)
	}
	// mediacommon writes the same headers.
	var pkts mpeg4audio.ADTSPackets
	for _, f := range frames {
		pkts = append(pkts, &mpeg4audio.ADTSPacket{Type: 2, SampleRate: 44100, ChannelCount: 2, AU: f})
	}
	ref, err := pkts.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stream, ref) {
		t.Fatalf("ADTS differs from mediacommon's:\n% x\n% x", stream[:16], ref[:16])
	}
	gotCfg, got, err := ParseADTS(stream)
	if err != nil {
		t.Fatal(err)
	}
	if *gotCfg != *cfg || len(got) != len(frames) {
		t.Fatalf("got %+v and %d frames", gotCfg, len(got))
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d: % x", i, got[i])
		}
	}
}

func TestParseADTS(t *testing.T) {
	// 48 kHz mono LC, one 3-byte frame: frame_length 10.
	ok := []byte{0xff, 0xf1, 0x4c, 0x40, 0x01, 0x5f, 0xfc, 1, 2, 3}
	withCRC := []byte{0xff, 0xf0, 0x4c, 0x40, 0x01, 0x9f, 0xfc, 0xab, 0xcd, 1, 2, 3}
	eightCh := []byte{0xff, 0xf1, 0x4d, 0xc0, 0x01, 0x5f, 0xfc, 1, 2, 3}
	tests := []struct {
		name    string
		in      []byte
		cfg     AudioConfig
		frames  int
		wantErr error // nil with frames 0: any error
	}{
		{name: "one frame", in: ok, cfg: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 1}, frames: 1},
		{name: "with crc", in: withCRC, cfg: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 1}, frames: 1},
		{name: "two frames", in: cat(ok, withCRC), cfg: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 1}, frames: 2},
		{name: "8 channels", in: eightCh, cfg: AudioConfig{ObjectType: 2, SampleRate: 48000, ChannelCount: 8}, frames: 1},
		{name: "empty", in: nil},
		{name: "short header", in: ok[:6], wantErr: ErrTruncated},
		{name: "frame past the end", in: ok[:9], wantErr: ErrTruncated},
		{name: "garbage after a frame", in: cat(ok, []byte{0, 1}), wantErr: ErrTruncated},
		{name: "bad syncword", in: cat([]byte{0xff, 0xe1}, ok[2:])},
		{name: "layer 1", in: cat([]byte{0xff, 0xf3}, ok[2:])},
		{name: "sample rate index 13", in: cat(ok[:2], []byte{0x74}, ok[3:])},
		{name: "frame length below header", in: cat(ok[:4], []byte{0x00, 0xdf}, ok[6:])},
		{name: "two raw data blocks", in: cat(ok[:6], []byte{0xfd}, ok[7:])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, frames, err := ParseADTS(tt.in)
			if tt.frames == 0 {
				if err == nil {
					t.Fatalf("parsed %+v %x", cfg, frames)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *cfg != tt.cfg || len(frames) != tt.frames {
				t.Fatalf("got %+v and %d frames", cfg, len(frames))
			}
			for _, f := range frames {
				if !bytes.Equal(f, []byte{1, 2, 3}) {
					t.Fatalf("frame % x", f)
				}
			}
		})
	}
}

func TestAppendADTSRefuses(t *testing.T) {
	tests := []struct {
		name  string
		cfg   AudioConfig
		frame []byte
	}{
		{"sample rate not in the table", AudioConfig{ObjectType: 2, SampleRate: 12345, ChannelCount: 2}, []byte{1}},
		{"object type 5", AudioConfig{ObjectType: 5, SampleRate: 44100, ChannelCount: 2}, []byte{1}},
		{"7 channels", AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 7}, []byte{1}},
		{"frame too big", AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}, make([]byte, 8185)},
	}
	for _, tt := range tests {
		if got := AppendADTS([]byte("x"), &tt.cfg, tt.frame); string(got) != "x" {
			t.Errorf("%s: appended %d bytes", tt.name, len(got)-1)
		}
	}
	big := AppendADTS(nil, &AudioConfig{ObjectType: 2, SampleRate: 44100, ChannelCount: 2}, make([]byte, 8184))
	if _, frames, err := ParseADTS(big); err != nil || len(frames[0]) != 8184 {
		t.Fatalf("largest frame: %v", err)
	}
}
