package encryption

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
)

// testKey is the FIPS-197 example key with a counting IV; the known
// answers below were computed with `openssl enc -aes-128-cbc -nopad` over
// the concatenated protected blocks.
func testKey(t testing.TB) *Key {
	t.Helper()
	k := &Key{ID: "test"}
	mustHex(t, k.Key[:], "2b7e151628aed2a6abf7158809cf4f3c")
	mustHex(t, k.IV[:], "000102030405060708090a0b0c0d0e0f")
	return k
}

func mustHex(t testing.TB, dst []byte, s string) {
	t.Helper()
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countingNALU is a type-5 NAL unit whose byte i (i ≥ 1) is i*7+1.
func countingNALU(n int) []byte {
	b := make([]byte, n)
	b[0] = 0x65
	for i := 1; i < n; i++ {
		b[i] = byte(i*7 + 1)
	}
	return b
}

func avcc(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

// videoBlocks lists the offsets of the encrypted blocks of an n-byte NAL
// unit, written out from Apple's description rather than from cryptVideo.
func videoBlocks(n int) []int {
	var offs []int
	if n <= 48 {
		return nil
	}
	for off := 32; off+16 < n; off += 160 {
		offs = append(offs, off)
	}
	return offs
}

func TestVideoKnownAnswer(t *testing.T) {
	k := testKey(t)
	nal := countingNALU(400)
	out, err := EncryptAVCC(nil, avcc(nal), k)
	if err != nil {
		t.Fatal(err)
	}
	enc := out[4:]
	want := map[int]string{
		32:  "ab07c66be87c2974fc988954b69bed14",
		192: "9c15dc8eeb11bf73095fed8b9d7f00c5",
		352: "903b3e525112e781b645908c209f0d23",
	}
	for off, w := range want {
		if got := hex.EncodeToString(enc[off : off+16]); got != w {
			t.Errorf("block at %d = %s, want %s", off, got, w)
		}
	}
	clearAt := func(lo, hi int) {
		if !bytes.Equal(enc[lo:hi], nal[lo:hi]) {
			t.Errorf("bytes %d..%d changed", lo, hi)
		}
	}
	clearAt(0, 32)
	clearAt(48, 192)
	clearAt(208, 352)
	clearAt(368, 400) // the last 32 bytes: 16 too few for another block
}

func TestAudioKnownAnswer(t *testing.T) {
	k := testKey(t)
	frame := make([]byte, 100)
	for i := range frame {
		frame[i] = byte(i*13 + 5)
	}
	out, err := EncryptAAC(nil, frame, k)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "d4fd6d63e6f2c15f010750d9b2176608"+"90211c438f32650fa2e0030e4172dd1c"+
		"332c1356ac3e74024a4db57a71b780c4"+"83f8859753bda13b25e80e9161e024a8"+"03a5c50ccb45afa50fac73f83d09be08")
	if !bytes.Equal(out[16:96], want) {
		t.Errorf("encrypted blocks = %x\nwant %x", out[16:96], want)
	}
	if !bytes.Equal(out[:16], frame[:16]) || !bytes.Equal(out[96:], frame[96:]) {
		t.Error("clear leader or tail changed")
	}
}

// TestVideoPattern checks the clear leader, the 1:9 positions, the clear
// tail and that units of 48 bytes or less stay clear, against stdlib CBC
// over the concatenated blocks.
func TestVideoPattern(t *testing.T) {
	k := testKey(t)
	for _, n := range []int{1, 2, 16, 32, 33, 47, 48, 49, 50, 63, 64, 65, 191, 192, 193, 208, 209, 210, 352, 369, 1000, 4096} {
		nal := countingNALU(n)
		out, err := EncryptAVCC(nil, avcc(nal), k)
		if err != nil {
			t.Fatal(err)
		}
		enc := out[4:]
		blocks := videoBlocks(n)
		if n <= 48 && len(blocks) != 0 {
			t.Fatalf("n=%d: expected no blocks", n)
		}
		var plain []byte
		isEnc := make([]bool, n)
		for _, off := range blocks {
			plain = append(plain, nal[off:off+16]...)
			for i := off; i < off+16; i++ {
				isEnc[i] = true
			}
		}
		for i := range n {
			if !isEnc[i] && enc[i] != nal[i] {
				t.Fatalf("n=%d: clear byte %d changed", n, i)
			}
		}
		if len(blocks) > 0 {
			if isEnc[n-1] {
				t.Fatalf("n=%d: last byte encrypted", n)
			}
			ref := make([]byte, len(plain))
			b, _ := aes.NewCipher(k.Key[:])
			cipher.NewCBCEncrypter(b, k.IV[:]).CryptBlocks(ref, plain)
			var got []byte
			for _, off := range blocks {
				got = append(got, enc[off:off+16]...)
			}
			if !bytes.Equal(got, ref) {
				t.Fatalf("n=%d: encrypted blocks differ from CBC over the blocks", n)
			}
		}
		back, err := DecryptAVCC(nil, out, k)
		if err != nil || !bytes.Equal(back[4:], nal) {
			t.Fatalf("n=%d: round trip failed (%v)", n, err)
		}
	}
}

func TestNALUTypes(t *testing.T) {
	k := testKey(t)
	for _, tc := range []struct {
		header byte
		enc    bool
	}{
		{0x65, true}, {0x25, true}, {0x45, true}, {0x05, true}, // IDR, any nal_ref_idc
		{0x41, true}, {0x01, true}, // non-IDR slice
		{0x06, false}, {0x67, false}, {0x68, false}, {0x09, false}, // SEI SPS PPS AUD
		{0x02, false}, {0x0c, false}, {0x14, false}, // partition A, filler, extension
	} {
		nal := countingNALU(300)
		nal[0] = tc.header
		out, err := EncryptAVCC(nil, avcc(nal), k)
		if err != nil {
			t.Fatal(err)
		}
		if changed := !bytes.Equal(out[4:], nal); changed != tc.enc {
			t.Errorf("NAL header %#02x: encrypted=%v, want %v", tc.header, changed, tc.enc)
		}
	}
}

func TestAudioPattern(t *testing.T) {
	k := testKey(t)
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 100, 371, 1500} {
		frame := make([]byte, n)
		for i := range frame {
			frame[i] = byte(i*13 + 5)
		}
		out, err := EncryptAAC(nil, frame, k)
		if err != nil {
			t.Fatal(err)
		}
		end := n - n%16
		if n < 32 {
			end = 16
		}
		if !bytes.Equal(out[:min(16, n)], frame[:min(16, n)]) || (end < n && !bytes.Equal(out[end:], frame[end:])) {
			t.Errorf("n=%d: clear leader or tail changed", n)
		}
		if n >= 32 {
			ref := make([]byte, end-16)
			b, _ := aes.NewCipher(k.Key[:])
			cipher.NewCBCEncrypter(b, k.IV[:]).CryptBlocks(ref, frame[16:end])
			if !bytes.Equal(out[16:end], ref) {
				t.Errorf("n=%d: blocks differ from CBC", n)
			}
		} else if !bytes.Equal(out, frame) {
			t.Errorf("n=%d: short frame changed", n)
		}
		back, _ := DecryptAAC(nil, out, k)
		if !bytes.Equal(back, frame) {
			t.Errorf("n=%d: round trip failed", n)
		}
	}
}

// TestAVCCKeepsEPBLevel pins the FLV decision: the pattern runs over the
// escaped bytes, so an emulation prevention byte in the leader does not
// move the block, and the size never changes.
func TestAVCCKeepsEPBLevel(t *testing.T) {
	k := testKey(t)
	nal := countingNALU(120)
	copy(nal[10:], []byte{0, 0, 3, 1}) // an EPB at escaped offset 12
	copy(nal[40:], []byte{0, 0, 3, 0}) // and one inside the first block
	out, err := EncryptAVCC(nil, avcc(nal), k)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(nal)+4 {
		t.Fatalf("size changed: %d -> %d", len(nal)+4, len(out))
	}
	enc := out[4:]
	if !bytes.Equal(enc[:32], nal[:32]) || !bytes.Equal(enc[48:], nal[48:]) {
		t.Fatal("bytes outside [32,48) changed")
	}
	if bytes.Equal(enc[32:48], nal[32:48]) {
		t.Fatal("block [32,48) not encrypted")
	}
}

func TestAVCCMultipleUnitsAndInPlace(t *testing.T) {
	k := testKey(t)
	sei := []byte{0x06, 5, 1, 2, 3, 4, 0x80}
	idr := countingNALU(700)
	slice := countingNALU(260)
	slice[0] = 0x41
	src := avcc(sei, idr, []byte{}, slice)
	want, err := EncryptAVCC(nil, src, k)
	if err != nil {
		t.Fatal(err)
	}
	// In place.
	buf := bytes.Clone(src)
	got, err := EncryptAVCC(buf[:0], buf, k)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("in place differs (%v)", err)
	}
	// Appending after a prefix.
	got, _ = EncryptAVCC([]byte("prefix"), src, k)
	if string(got[:6]) != "prefix" || !bytes.Equal(got[6:], want) {
		t.Fatal("append after prefix differs")
	}
	// Each unit on its own gives the same bytes: the IV restarts per unit.
	var each []byte
	for _, n := range [][]byte{sei, idr, {}, slice} {
		each, _ = EncryptAVCC(each, avcc(n), k)
	}
	if !bytes.Equal(each, want) {
		t.Fatal("IV does not restart per NAL unit")
	}
	back, _ := DecryptAVCC(nil, want, k)
	if !bytes.Equal(back, src) {
		t.Fatal("round trip failed")
	}
}

func TestAVCCMalformed(t *testing.T) {
	k := testKey(t)
	for name, b := range map[string][]byte{
		"short length": {0, 0, 1},
		"past end":     {0, 0, 0, 9, 0x65, 1},
		"second unit":  append(avcc(countingNALU(60)), 0, 0, 0, 200, 1),
		"huge":         {0xff, 0xff, 0xff, 0xff, 1, 2, 3},
	} {
		dst := []byte("keep")
		out, err := EncryptAVCC(dst, b, k)
		if !errors.Is(err, ErrMalformed) || string(out) != "keep" {
			t.Errorf("%s: got %q, %v; want dst unchanged and ErrMalformed", name, out, err)
		}
		if _, err := DecryptAVCC(nil, b, k); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decrypt err %v", name, err)
		}
	}
	if _, err := EncryptAVCC(nil, avcc(countingNALU(60)), nil); err == nil {
		t.Error("nil key accepted")
	}
}

func TestRoundTripRandom(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		var units [][]byte
		for range 1 + rng.IntN(4) {
			n := rng.IntN(3000)
			u := make([]byte, n)
			for j := range u {
				u[j] = byte(rng.Uint32())
			}
			if n > 0 && i%2 == 0 {
				u[0] = []byte{0x65, 0x41, 0x06}[rng.IntN(3)]
			}
			units = append(units, u)
		}
		src := avcc(units...)
		enc, err := EncryptAVCC(nil, src, k)
		if err != nil || len(enc) != len(src) {
			t.Fatalf("encrypt: %v, %d -> %d bytes", err, len(src), len(enc))
		}
		dec, err := DecryptAVCC(nil, enc, k)
		if err != nil || !bytes.Equal(dec, src) {
			t.Fatalf("round %d: AVCC round trip failed (%v)", i, err)
		}
		frame := units[0]
		encA, _ := EncryptAAC(nil, frame, k)
		decA, _ := DecryptAAC(nil, encA, k)
		if !bytes.Equal(decA, frame) {
			t.Fatalf("round %d: AAC round trip failed", i)
		}
	}
}

func TestNoAllocations(t *testing.T) {
	k := testKey(t)
	src := avcc(countingNALU(5000), countingNALU(300))
	dst := make([]byte, 0, len(src)*2)
	aac := make([]byte, 400)
	nal := countingNALU(3000)
	for name, f := range map[string]func(){
		"EncryptAVCC": func() { _, _ = EncryptAVCC(dst, src, k) },
		"DecryptAVCC": func() { _, _ = DecryptAVCC(dst, src, k) },
		"EncryptAAC":  func() { _, _ = EncryptAAC(dst, aac, k) },
		"EncryptNALU": func() { _, _ = EncryptNALU(dst, nal, k) },
		"DecryptNALU": func() { _, _ = DecryptNALU(dst, nal, k) },
	} {
		if n := testing.AllocsPerRun(50, f); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}

func FuzzEncryptDecryptAVCC(f *testing.F) {
	f.Add(avcc(countingNALU(400)))
	f.Add(avcc([]byte{0x67, 1, 2}, countingNALU(49), countingNALU(48)))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 5, 0x65})
	k := testKey(f)
	f.Fuzz(func(t *testing.T, src []byte) {
		enc, err := EncryptAVCC(nil, src, k)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(enc) != len(src) {
			t.Fatalf("size changed %d -> %d", len(src), len(enc))
		}
		dec, err := DecryptAVCC(nil, enc, k)
		if err != nil || !bytes.Equal(dec, src) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

func FuzzDecryptAVCC(f *testing.F) {
	f.Add([]byte{0, 0, 0, 60, 0x65})
	f.Add(avcc(countingNALU(1000)))
	f.Add([]byte{})
	k := testKey(f)
	f.Fuzz(func(t *testing.T, src []byte) {
		out, err := DecryptAVCC(nil, src, k)
		if err == nil && len(out) != len(src) {
			t.Fatalf("size changed %d -> %d", len(src), len(out))
		}
	})
}

func FuzzAAC(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef0123"))
	f.Add([]byte{})
	f.Add(make([]byte, 31))
	k := testKey(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		enc, _ := EncryptAAC(nil, frame, k)
		if len(enc) != len(frame) {
			t.Fatal("size changed")
		}
		if len(frame) < 32 && !bytes.Equal(enc, frame) {
			t.Fatal("frame under 32 bytes changed")
		}
		dec, _ := DecryptAAC(nil, enc, k)
		if !bytes.Equal(dec, frame) {
			t.Fatal("round trip failed")
		}
		// ADTS framing around it must never panic and round-trips when valid.
		if encA, err := EncryptADTS(nil, frame, k); err == nil {
			decA, err := DecryptADTS(nil, encA, k)
			if err != nil || !bytes.Equal(decA, frame) {
				t.Fatalf("ADTS round trip failed: %v", err)
			}
		}
	})
}
