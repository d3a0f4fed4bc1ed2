package encryption

import (
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// stream6M returns two seconds of a 6 Mbit/s-like H.264 stream at 25 fps
// (one 150 kB IDR, then P slices of about 28 kB, each after a small SEI)
// and its 128 kbit/s AAC track (about 370-byte frames).
func stream6M() (video, audio [][]byte) {
	rng := rand.New(rand.NewPCG(6, 6))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	sei := []byte{0x06, 5, 1, 2, 3, 4, 0x80}
	for f := range 50 {
		n := 24_000 + rng.IntN(8_000)
		hdr := byte(0x41)
		if f == 0 {
			n, hdr = 150_000, 0x65
		}
		nal := fill(n)
		nal[0] = hdr
		video = append(video, avcc(sei, nal))
	}
	for range 86 {
		audio = append(audio, fill(340+rng.IntN(60)))
	}
	return video, audio
}

func totalLen(bs [][]byte) int64 {
	var n int64
	for _, b := range bs {
		n += int64(len(b))
	}
	return n
}

// BenchmarkEncryptAVCC measures the FLV video layout over the packets of a
// 6 Mbit/s stream (MB/s of stream bytes).
func BenchmarkEncryptAVCC(b *testing.B) {
	k, _ := NewKey()
	video, _ := stream6M()
	dst := make([]byte, 0, 200_000)
	b.SetBytes(totalLen(video))
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range video {
			if _, err := EncryptAVCC(dst, p, k); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEncryptAAC measures the audio layout (every block but the first
// encrypted) over the AAC frames of the same stream.
func BenchmarkEncryptAAC(b *testing.B) {
	k, _ := NewKey()
	_, audio := stream6M()
	dst := make([]byte, 0, 1024)
	b.SetBytes(totalLen(audio))
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range audio {
			_, _ = EncryptAAC(dst, p, k)
		}
	}
}

// BenchmarkEncryptNALUTS measures the TS (Apple) video layout, with the
// EPB removal and re-escaping, over the same NAL units.
func BenchmarkEncryptNALUTS(b *testing.B) {
	k, _ := NewKey()
	video, _ := stream6M()
	dst := make([]byte, 0, 300_000)
	b.SetBytes(totalLen(video))
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range video {
			_, _ = EncryptNALU(dst, p[4+7+4:], k)
		}
	}
}

// BenchmarkRawCBC is Go's AES-128-CBC over every byte of the same video
// packets: the cost of encrypting the whole stream, for comparison.
func BenchmarkRawCBC(b *testing.B) {
	k, _ := NewKey()
	video, _ := stream6M()
	blk, _ := aes.NewCipher(k.Key[:])
	dst := make([]byte, 200_000)
	b.SetBytes(totalLen(video))
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range video {
			n := len(p) &^ 15
			cipher.NewCBCEncrypter(blk, k.IV[:]).CryptBlocks(dst[:n], p[:n])
		}
	}
}

// BenchmarkEncryptor measures the whole packet path (signals, packet
// copies) for two seconds of the 6 Mbit/s stream with audio.
func BenchmarkEncryptor(b *testing.B) {
	k, _ := NewKey()
	video, audio := stream6M()
	var ps []*av.Packet
	var n int64
	for i, v := range video {
		dts := time.Duration(i) * 40 * time.Millisecond
		ps = append(ps, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i == 0, DTS: dts, Data: v})
		n += int64(len(v))
	}
	for i, a := range audio {
		ps = append(ps, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: time.Duration(i) * 23 * time.Millisecond, Data: a})
		n += int64(len(a))
	}
	e, _ := NewEncryptor(EncryptorConfig{Stream: "live/bench", Key: k, Enabled: true, Logger: quietLog()})
	out := make([]*av.Packet, 0, 4)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range ps {
			var err error
			if out, err = e.Encrypt(out[:0], p); err != nil {
				b.Fatal(err)
			}
		}
	}
}
