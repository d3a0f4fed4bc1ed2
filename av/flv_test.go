package av

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// cat concatenates byte slices, for building inputs by hand.
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func samePacket(a, b *Packet) bool {
	return a.Kind == b.Kind && a.Codec == b.Codec && a.Header == b.Header && a.Key == b.Key &&
		a.DTS == b.DTS && a.CTS == b.CTS && bytes.Equal(a.Data, b.Data)
}

func TestTagToPacket(t *testing.T) {
	nalus := []byte{0, 0, 0, 2, 0x65, 0x88}
	tests := []struct {
		name    string
		tagType uint8
		ts      uint32
		body    []byte
		want    *Packet
		wantErr error // nil: any error is fine when want is nil too
	}{
		{
			name: "avc sequence header", tagType: TagVideo, ts: 0,
			body: cat([]byte{0x17, 0, 0, 0, 0}, testAVCRecord),
			want: &Packet{Kind: KindVideo, Codec: CodecH264, Header: true, Key: true, Data: testAVCRecord},
		},
		{
			name: "avc keyframe with cts", tagType: TagVideo, ts: 80,
			body: cat([]byte{0x17, 1, 0, 0, 40}, nalus),
			want: &Packet{Kind: KindVideo, Codec: CodecH264, Key: true, DTS: 80 * time.Millisecond, CTS: 40 * time.Millisecond, Data: nalus},
		},
		{
			name: "avc inter frame, negative cts", tagType: TagVideo, ts: 120,
			body: cat([]byte{0x27, 1, 0xff, 0xff, 0xd8}, nalus),
			want: &Packet{Kind: KindVideo, Codec: CodecH264, DTS: 120 * time.Millisecond, CTS: -40 * time.Millisecond, Data: nalus},
		},
		{
			name: "largest timestamp", tagType: TagVideo, ts: 0xffffffff,
			body: cat([]byte{0x27, 1, 0x7f, 0xff, 0xff}, nalus),
			want: &Packet{Kind: KindVideo, Codec: CodecH264, DTS: 0xffffffff * time.Millisecond, CTS: (1<<23 - 1) * time.Millisecond, Data: nalus},
		},
		{name: "avc end of sequence", tagType: TagVideo, body: []byte{0x17, 2, 0, 0, 0}, wantErr: ErrSkip},
		{name: "video info frame", tagType: TagVideo, body: []byte{0x57, 0}, wantErr: ErrSkip},
		{name: "h263", tagType: TagVideo, body: []byte{0x22, 0, 0, 0}, wantErr: ErrUnsupportedCodec},
		{name: "enhanced rtmp hevc", tagType: TagVideo, body: []byte{0x90, 'h', 'v', 'c', '1', 0}, wantErr: ErrUnsupportedCodec},
		{name: "empty video", tagType: TagVideo, body: nil, wantErr: ErrTruncated},
		{name: "short avc", tagType: TagVideo, body: []byte{0x17, 1, 0}, wantErr: ErrTruncated},
		{name: "bad avc packet type", tagType: TagVideo, body: []byte{0x17, 3, 0, 0, 0}},
		{
			name: "aac sequence header", tagType: TagAudio, ts: 0,
			body: []byte{0xaf, 0, 0x12, 0x10},
			want: &Packet{Kind: KindAudio, Codec: CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
		},
		{
			name: "aac raw frame", tagType: TagAudio, ts: 23,
			body: []byte{0xaf, 1, 0x21, 0x1b, 0x80},
			want: &Packet{Kind: KindAudio, Codec: CodecAAC, DTS: 23 * time.Millisecond, Data: []byte{0x21, 0x1b, 0x80}},
		},
		{name: "mp3", tagType: TagAudio, body: []byte{0x2f, 0xff, 0xfb}, wantErr: ErrUnsupportedCodec},
		{name: "empty audio", tagType: TagAudio, body: nil, wantErr: ErrTruncated},
		{name: "short aac", tagType: TagAudio, body: []byte{0xaf}, wantErr: ErrTruncated},
		{name: "bad aac packet type", tagType: TagAudio, body: []byte{0xaf, 2, 1}},
		{
			name: "script", tagType: TagScript, ts: 5,
			body: []byte{2, 0, 1, 'x', 5},
			want: &Packet{Kind: KindData, DTS: 5 * time.Millisecond, Data: []byte{2, 0, 1, 'x', 5}},
		},
		{name: "unknown tag type", tagType: 7, body: []byte{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := TagToPacket(tt.tagType, tt.ts, tt.body)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("got %+v, want an error", p)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !samePacket(p, tt.want) {
				t.Fatalf("got %+v\nwant %+v", p, tt.want)
			}
			// The body goes back unchanged.
			body, tagType, ts := AppendTagBody(nil, p)
			if tagType != tt.tagType || ts != tt.ts || !bytes.Equal(body, tt.body) {
				t.Fatalf("AppendTagBody = %d %d % x, want %d %d % x", tagType, ts, body, tt.tagType, tt.ts, tt.body)
			}
		})
	}
}

func TestTagToPacketCopies(t *testing.T) {
	body := []byte{0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41}
	p, err := TagToPacket(TagVideo, 0, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 0xee
	}
	if !bytes.Equal(p.Data, []byte{0, 0, 0, 1, 0x41}) {
		t.Fatalf("Data changed with the caller's buffer: % x", p.Data)
	}
}

func TestAppendTagBody(t *testing.T) {
	tests := []struct {
		name     string
		p        Packet
		wantType uint8
		wantTS   uint32
		want     []byte
	}{
		{
			name:     "cts clamped to 24 bits",
			p:        Packet{Kind: KindVideo, Codec: CodecH264, CTS: 10000 * time.Hour, Data: []byte{9}},
			wantType: TagVideo, want: []byte{0x27, 1, 0x7f, 0xff, 0xff, 9},
		},
		{
			name:     "sub-millisecond dts truncated",
			p:        Packet{Kind: KindAudio, Codec: CodecAAC, DTS: 1500 * time.Microsecond, Data: []byte{1}},
			wantType: TagAudio, wantTS: 1, want: []byte{0xaf, 1, 1},
		},
		{
			name:     "timestamp wraps at 2^32 ms",
			p:        Packet{Kind: KindData, DTS: (1<<32 + 7) * time.Millisecond},
			wantType: TagScript, wantTS: 7, want: nil,
		},
		{name: "unknown kind", p: Packet{Data: []byte{1}}},
		{name: "video without codec", p: Packet{Kind: KindVideo, Data: []byte{1}}},
		{name: "audio as h264", p: Packet{Kind: KindAudio, Codec: CodecH264, Data: []byte{1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("xy")
			got, tagType, ts := AppendTagBody(prefix, &tt.p)
			if tagType != tt.wantType || ts != tt.wantTS || !bytes.Equal(got, cat(prefix, tt.want)) {
				t.Fatalf("got %d %d % x, want %d %d % x", tagType, ts, got, tt.wantType, tt.wantTS, cat(prefix, tt.want))
			}
			whole := AppendTag([]byte("xy"), &tt.p)
			if tt.wantType == 0 && string(whole) != "xy" {
				t.Fatalf("AppendTag appended % x for a packet FLV can't carry", whole[2:])
			}
		})
	}
}

func TestAppendTag(t *testing.T) {
	p := &Packet{Kind: KindAudio, Codec: CodecAAC, DTS: 0x12345678 * time.Millisecond, Data: []byte{0xde, 0xad}}
	got := AppendTag([]byte{0xaa}, p)
	want := []byte{
		0xaa,
		TagAudio, 0, 0, 4, // data size
		0x34, 0x56, 0x78, 0x12, // timestamp, then the extended upper byte
		0, 0, 0, // stream id
		0xaf, 1, 0xde, 0xad,
		0, 0, 0, 15, // previous tag size
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got  % x\nwant % x", got, want)
	}
	if raw := AppendRawTag([]byte{0xaa}, TagAudio, 0x12345678, []byte{0xaf, 1, 0xde, 0xad}); !bytes.Equal(raw, want) {
		t.Fatalf("AppendRawTag got % x", raw)
	}
}

func TestAppendTagNoAlloc(t *testing.T) {
	p := &Packet{Kind: KindVideo, Codec: CodecH264, Key: true, Data: make([]byte, 4096)}
	dst := make([]byte, 0, 8192)
	if n := testing.AllocsPerRun(100, func() { dst = AppendTag(dst[:0], p) }); n != 0 {
		t.Fatalf("AppendTag allocates %v times with room in dst", n)
	}
}

func TestFLVHeader(t *testing.T) {
	tests := []struct {
		video, audio bool
		flags        byte
	}{{true, true, 5}, {true, false, 1}, {false, true, 4}, {false, false, 0}}
	for _, tt := range tests {
		h := FLVHeader(tt.video, tt.audio)
		want := []byte{'F', 'L', 'V', 1, tt.flags, 0, 0, 0, 9, 0, 0, 0, 0}
		if !bytes.Equal(h, want) {
			t.Errorf("FLVHeader(%v, %v) = % x, want % x", tt.video, tt.audio, h, want)
		}
		r, err := NewFLVReader(bytes.NewReader(h))
		if err != nil {
			t.Fatal(err)
		}
		if r.HasVideo != tt.video || r.HasAudio != tt.audio {
			t.Errorf("reader flags %v %v, want %v %v", r.HasVideo, r.HasAudio, tt.video, tt.audio)
		}
		if _, err := r.ReadPacket(); !errors.Is(err, io.EOF) {
			t.Errorf("empty stream: %v, want io.EOF", err)
		}
	}
}

// testPackets is a short stream with every kind of packet.
func testPackets() []*Packet {
	return []*Packet{
		{Kind: KindData, Data: EncodeScript("onMetaData", MetaData(320, 240, 25, 500, 44100, 1))},
		{Kind: KindVideo, Codec: CodecH264, Header: true, Key: true, Data: testAVCRecord},
		{Kind: KindAudio, Codec: CodecAAC, Header: true, Data: []byte{0x12, 0x08}},
		{Kind: KindVideo, Codec: CodecH264, Key: true, CTS: 80 * time.Millisecond, Data: []byte{0, 0, 0, 2, 0x65, 1}},
		{Kind: KindAudio, Codec: CodecAAC, DTS: 23 * time.Millisecond, Data: []byte{0x21, 0x10}},
		{Kind: KindVideo, Codec: CodecH264, DTS: 40 * time.Millisecond, CTS: -40 * time.Millisecond, Data: []byte{0, 0, 0, 2, 0x41, 2}},
		{Kind: KindVideo, Codec: CodecH264, DTS: 0x1000000 * time.Millisecond, Data: []byte{0, 0, 0, 2, 0x41, 3}},
	}
}

func TestFLVReader(t *testing.T) {
	want := testPackets()
	stream := FLVHeader(true, true)
	for i, p := range want {
		stream = AppendTag(stream, p)
		if i == 2 {
			// Tags the reader skips: an unknown type and an AVC end of sequence.
			stream = AppendRawTag(stream, 15, 0, []byte{1, 2, 3})
			stream = AppendRawTag(stream, TagVideo, 0, []byte{0x17, 2, 0, 0, 0})
		}
	}
	r, err := NewFLVReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !samePacket(p, w) {
			t.Fatalf("packet %d: got %+v, want %+v", i, p, w)
		}
	}
	for range 2 {
		if _, err := r.ReadPacket(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last tag: %v, want io.EOF", err)
		}
	}
	if !errors.Is(r.Err(), io.EOF) {
		t.Fatalf("Err() = %v", r.Err())
	}
}

func TestFLVReaderDataOffset(t *testing.T) {
	// A header with a DataOffset past the 9 bytes, as the format allows.
	stream := []byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 12, 0xee, 0xee, 0xee, 0, 0, 0, 0}
	stream = AppendRawTag(stream, TagScript, 1, []byte{5})
	r, err := NewFLVReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.ReadPacket()
	if err != nil || p.Kind != KindData || p.DTS != time.Millisecond {
		t.Fatalf("got %+v, %v", p, err)
	}
}

func TestFLVReaderErrors(t *testing.T) {
	tag := AppendRawTag(nil, TagVideo, 0, cat([]byte{0x17, 1, 0, 0, 0}, make([]byte, 100)))
	tests := []struct {
		name       string
		stream     []byte
		maxTagSize int
		headerErr  bool  // NewFLVReader fails
		wantErr    error // from ReadPacket, when non-nil
	}{
		{name: "empty", stream: nil, headerErr: true},
		{name: "bad signature", stream: []byte("FLX\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"), headerErr: true},
		{name: "version 2", stream: []byte("FLV\x02\x05\x00\x00\x00\x09\x00\x00\x00\x00"), headerErr: true},
		{name: "short header", stream: []byte("FLV\x01\x05\x00"), headerErr: true},
		{name: "data offset too small", stream: []byte("FLV\x01\x05\x00\x00\x00\x08\x00\x00\x00\x00"), headerErr: true},
		{name: "data offset huge", stream: []byte("FLV\x01\x05\xff\xff\xff\xff\x00\x00\x00\x00"), headerErr: true},
		{name: "no PreviousTagSize0", stream: []byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00"), headerErr: true},
		{name: "tag over the limit", stream: cat(FLVHeader(true, false), tag), maxTagSize: 50, wantErr: ErrTagTooLarge},
		{name: "truncated tag header", stream: cat(FLVHeader(true, false), tag[:5]), wantErr: io.ErrUnexpectedEOF},
		{name: "truncated tag body", stream: cat(FLVHeader(true, false), tag[:60]), wantErr: io.ErrUnexpectedEOF},
		{name: "missing PreviousTagSize", stream: cat(FLVHeader(true, false), tag[:len(tag)-2]), wantErr: io.ErrUnexpectedEOF},
		{name: "filtered tag", stream: cat(FLVHeader(true, false), []byte{0x29}, tag[1:])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewFLVReader(bytes.NewReader(tt.stream))
			if tt.headerErr {
				if err == nil {
					t.Fatal("NewFLVReader accepted a bad header")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxTagSize > 0 {
				r.MaxTagSize = tt.maxTagSize
			}
			_, err = r.ReadPacket()
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("ReadPacket: %v, want an error", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadPacket: %v, want %v", err, tt.wantErr)
			}
			if _, again := r.ReadPacket(); !errors.Is(again, err) || !errors.Is(r.Err(), err) {
				t.Fatalf("error not final: then %v", again)
			}
		})
	}
}

func TestFLVReaderGoesOnAfterUnsupportedCodec(t *testing.T) {
	stream := FLVHeader(true, true)
	stream = AppendRawTag(stream, TagAudio, 0, []byte{0x2f, 0xff, 0xfb, 0x90}) // MP3
	stream = AppendRawTag(stream, TagAudio, 26, []byte{0xaf, 1, 0x21})
	r, err := NewFLVReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadPacket(); !errors.Is(err, ErrUnsupportedCodec) || r.Err() != nil {
		t.Fatalf("first tag: %v (Err %v), want ErrUnsupportedCodec", err, r.Err())
	}
	p, err := r.ReadPacket()
	if err != nil || p.DTS != 26*time.Millisecond {
		t.Fatalf("second tag: %+v, %v", p, err)
	}
}

func TestFLVWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewFLVWriter(&buf, true, true)
	want := testPackets()
	for _, p := range want {
		if err := w.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePacket(&Packet{Kind: KindVideo}); err == nil {
		t.Fatal("wrote a video packet without codec")
	}
	r, err := NewFLVReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		p, err := r.ReadPacket()
		if err != nil || !samePacket(p, w) {
			t.Fatalf("packet %d: %+v, %v", i, p, err)
		}
	}
	if _, err := r.ReadPacket(); !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want io.EOF", err)
	}
}

func TestFLVWriterError(t *testing.T) {
	w := NewFLVWriter(failWriter{}, true, false)
	if err := w.WritePacket(testPackets()[0]); err == nil {
		t.Fatal("write error lost")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func BenchmarkAppendTag(b *testing.B) {
	p := &Packet{Kind: KindVideo, Codec: CodecH264, Key: true, DTS: time.Hour, CTS: 80 * time.Millisecond, Data: make([]byte, 16<<10)}
	dst := make([]byte, 0, 32<<10)
	b.SetBytes(int64(len(p.Data)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendTag(dst[:0], p)
	}
}

func BenchmarkTagToPacket(b *testing.B) {
	body := cat([]byte{0x27, 1, 0, 0, 0}, make([]byte, 16<<10))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := TagToPacket(TagVideo, 40, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFLVReader(b *testing.B) {
	stream := FLVHeader(true, true)
	for i := range 100 {
		stream = AppendTag(stream, &Packet{Kind: KindVideo, Codec: CodecH264, DTS: time.Duration(i) * 40 * time.Millisecond, Data: make([]byte, 8<<10)})
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewFLVReader(bytes.NewReader(stream))
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, _, _, err := r.ReadTag(); err != nil {
				break
			}
		}
	}
}
