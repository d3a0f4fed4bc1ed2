package encryption

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"
)

// refDiscardEPB removes emulation prevention bytes the way hls.js's
// discardEPB does: scan for 00 00 03, note the 03, resume after it.
func refDiscardEPB(b []byte) []byte {
	skip := map[int]bool{}
	for i := 0; i < len(b)-2; {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 3 {
			skip[i+2] = true
			i += 2
		} else {
			i++
		}
	}
	var out []byte
	for i, c := range b {
		if !skip[i] {
			out = append(out, c)
		}
	}
	return out
}

// refDecryptTS is a SAMPLE-AES video decryptor written after hls.js's
// decryptAvcSample (and FFmpeg's decrypt_nal_unit): strip EPBs, decrypt
// one block at 32, 192, ... while pos < len-16 with CBC chained over the
// blocks, as a separate check of EncryptNALU. It returns what those
// players hand to the decoder.
func refDecryptTS(t *testing.T, k *Key, nal []byte) []byte {
	t.Helper()
	rbsp := refDiscardEPB(nal)
	if len(rbsp) <= 48 || (rbsp[0]&0x1f != 1 && rbsp[0]&0x1f != 5) {
		return rbsp
	}
	var enc []byte
	var offs []int
	for pos := 32; pos < len(rbsp)-16; pos += 160 {
		offs = append(offs, pos)
		enc = append(enc, rbsp[pos:pos+16]...)
	}
	b, _ := aes.NewCipher(k.Key[:])
	cipher.NewCBCDecrypter(b, k.IV[:]).CryptBlocks(enc, enc)
	for i, off := range offs {
		copy(rbsp[off:], enc[i*16:i*16+16])
	}
	return rbsp
}

// emulationFree reports whether an escaped NAL unit has no 00 00 0x (x ≤ 2)
// and no 00 00 03 that is not followed by a byte ≤ 3 or the end.
func emulationFree(b []byte) bool {
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] <= 2 {
			return false
		}
	}
	return true
}

func TestNALUWithEPBs(t *testing.T) {
	k := testKey(t)
	// A unit of 300 RBSP bytes with zero runs that need escaping in the
	// leader, in the first block and in the clear span.
	rbsp := countingNALU(300)
	copy(rbsp[5:], []byte{0, 0, 1})     // leader: escaped as 00 00 03 01
	copy(rbsp[20:], []byte{0, 0, 0, 0}) // leader: 00 00 03 00 00
	copy(rbsp[36:], []byte{0, 0, 2})    // inside the first block
	copy(rbsp[100:], []byte{0, 0, 3})   // clear span
	escaped := appendEscaped(nil, rbsp)
	if len(escaped) != len(rbsp)+4 {
		t.Fatalf("test vector has %d EPBs, want 4", len(escaped)-len(rbsp))
	}
	enc, err := EncryptNALU(nil, escaped, k)
	if err != nil {
		t.Fatal(err)
	}
	if !emulationFree(enc) {
		t.Fatal("encrypted NAL unit emulates a start code")
	}
	// Without the EPBs escaping added, the unit has its escaped length,
	// and the pattern sits on the escaped bytes: the blocks at 32 and 192
	// of the unit as the encoder wrote it.
	inner := unescape(nil, enc)
	if len(inner) != len(escaped) {
		t.Fatalf("unescaped length %d, want %d", len(inner), len(escaped))
	}
	if !bytes.Equal(inner[:32], escaped[:32]) || !bytes.Equal(inner[48:192], escaped[48:192]) || !bytes.Equal(inner[208:], escaped[208:]) {
		t.Fatal("clear bytes changed")
	}
	var ref [32]byte
	b, _ := aes.NewCipher(k.Key[:])
	plain := append(bytes.Clone(escaped[32:48]), escaped[192:208]...)
	cipher.NewCBCEncrypter(b, k.IV[:]).CryptBlocks(ref[:], plain)
	if !bytes.Equal(inner[32:48], ref[:16]) || !bytes.Equal(inner[192:208], ref[16:]) {
		t.Fatal("blocks differ from CBC over the unit's blocks")
	}
	// hls.js and FFmpeg hand the decoder exactly the unit the encoder wrote.
	if got := refDecryptTS(t, k, enc); !bytes.Equal(got, escaped) {
		t.Fatal("reference (hls.js-style) decryptor does not restore the unit")
	}
	dec, err := DecryptNALU(nil, enc, k)
	if err != nil || !bytes.Equal(dec, escaped) {
		t.Fatalf("DecryptNALU does not restore the unit (%v)", err)
	}
}

// TestNALUReescape finds a block whose ciphertext ends in 00 00 before a
// clear 01, so that escaping must add a byte: the unit grows by one and
// still decrypts.
func TestNALUReescape(t *testing.T) {
	k := testKey(t)
	b, _ := aes.NewCipher(k.Key[:])
	rbsp := countingNALU(120)
	rbsp[48] = 0x01 // the byte after the only block
	var found bool
	for i := range 1 << 22 {
		rbsp[33], rbsp[34], rbsp[35] = byte(i), byte(i>>8), byte(i>>16)
		var c [16]byte
		for j := range 16 {
			c[j] = rbsp[32+j] ^ k.IV[j]
		}
		b.Encrypt(c[:], c[:])
		if c[14] == 0 && c[15] == 0 {
			found = true
			break
		}
	}
	if !found {
		t.Skip("no block ending in 00 00 found")
	}
	escaped := appendEscaped(nil, rbsp)
	enc, err := EncryptNALU(nil, escaped, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != len(escaped)+1 {
		t.Fatalf("escaped length %d -> %d, want one EPB more", len(escaped), len(enc))
	}
	if !emulationFree(enc) {
		t.Fatal("start code emulation in the output")
	}
	if got := refDecryptTS(t, k, enc); !bytes.Equal(got, rbsp) {
		t.Fatal("reference decryptor does not restore the RBSP")
	}
	dec, _ := DecryptNALU(nil, enc, k)
	if !bytes.Equal(dec, escaped) {
		t.Fatal("DecryptNALU does not restore the unit")
	}
}

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ rbsp, esc string }{
		{"\x00\x00\x00", "\x00\x00\x03\x00"},
		{"\x00\x00\x01", "\x00\x00\x03\x01"},
		{"\x00\x00\x03", "\x00\x00\x03\x03"},
		{"\x00\x00\x04", "\x00\x00\x04"},
		{"\x00\x00", "\x00\x00\x03"},
		{"\x00\x00\x00\x00\x00", "\x00\x00\x03\x00\x00\x03\x00"},
		{"\x01\x00", "\x01\x00"},
	} {
		got := appendEscaped(nil, []byte(tc.rbsp))
		if string(got) != tc.esc {
			t.Errorf("escape(%x) = %x, want %x", tc.rbsp, got, tc.esc)
		}
		buf := make([]byte, 0, 64)
		buf = buf[:8+len(tc.rbsp)]
		copy(buf[8:], tc.rbsp)
		n := escapeForward(buf, 8)
		if string(buf[:n]) != tc.esc {
			t.Errorf("escapeForward(%x) = %x, want %x", tc.rbsp, buf[:n], tc.esc)
		}
		if back := unescape(nil, got); string(back) != tc.rbsp {
			t.Errorf("unescape(%x) = %x, want %x", got, back, tc.rbsp)
		}
	}
}

func TestAnnexB(t *testing.T) {
	k := testKey(t)
	idr := appendEscaped(nil, countingNALU(500))
	slice := appendEscaped(nil, countingNALU(200))
	slice[0] = 0x41
	var src []byte
	src = append(src, 0, 0, 0, 1, 0x09, 0xf0)    // AUD, 4-byte start code
	src = append(src, 0, 0, 0, 1, 0x67, 1, 2, 3) // SPS
	src = append(src, 0, 0, 1)                   // 3-byte start code
	src = append(src, idr...)                    //
	src = append(src, 0, 0, 0, 1)                //
	src = append(src, slice...)                  //
	enc, err := EncryptAnnexB(nil, src, k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc[:14], src[:14]) {
		t.Fatal("AUD/SPS changed")
	}
	// Split the output at start codes and check each slice with the
	// reference decryptor.
	var units [][]byte
	for pos := findStartCode(enc, 0) + 3; pos < len(enc); {
		next := findStartCode(enc, pos)
		end := next
		if next < 0 {
			end, next = len(enc), len(enc)-3
		} else if enc[end-1] == 0 {
			end--
		}
		units = append(units, enc[pos:end])
		pos = next + 3
	}
	if len(units) != 4 {
		t.Fatalf("%d units after encryption, want 4", len(units))
	}
	if got := refDecryptTS(t, k, units[2]); !bytes.Equal(got, countingNALU(500)) {
		t.Fatal("IDR does not decrypt")
	}
	dec, err := DecryptAnnexB(nil, enc, k)
	if err != nil || !bytes.Equal(dec, src) {
		t.Fatalf("Annex-B round trip failed (%v)", err)
	}
	if _, err := EncryptAnnexB(nil, []byte{1, 2, 3, 4}, k); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no start code: err %v", err)
	}
}

// adtsFrameBytes builds an ADTS frame (CRC optional) around payload.
func adtsFrameBytes(payload []byte, crc bool) []byte {
	hdr := 7
	if crc {
		hdr = 9
	}
	n := hdr + len(payload)
	h := []byte{0xff, 0xf1, 0x50, 0x80 | byte(n>>11)&0x03, byte(n >> 3), byte(n<<5) | 0x1f, 0xfc}
	if crc {
		h[1] = 0xf0
		h = append(h, 0xab, 0xcd)
	}
	return append(h, payload...)
}

func TestADTS(t *testing.T) {
	k := testKey(t)
	p1 := bytes.Repeat([]byte{0x21}, 100)
	p2 := bytes.Repeat([]byte{0x42}, 37)
	src := append(adtsFrameBytes(p1, false), adtsFrameBytes(p2, true)...)
	enc, err := EncryptADTS(nil, src, k)
	if err != nil {
		t.Fatal(err)
	}
	want1, _ := EncryptAAC(nil, p1, k)
	want2, _ := EncryptAAC(nil, p2, k)
	want := append(adtsFrameBytes(want1, false), adtsFrameBytes(want2, true)...)
	if !bytes.Equal(enc, want) {
		t.Fatal("ADTS frames not encrypted payload by payload with headers clear")
	}
	dec, _ := DecryptADTS(nil, enc, k)
	if !bytes.Equal(dec, src) {
		t.Fatal("ADTS round trip failed")
	}
	for name, b := range map[string][]byte{
		"short":     src[:5],
		"truncated": src[:len(src)-1],
		"sync":      append([]byte{0xfe}, src[1:]...),
	} {
		out, err := EncryptADTS([]byte("x"), b, k)
		if !errors.Is(err, ErrMalformed) || string(out) != "x" {
			t.Errorf("%s: %q %v", name, out, err)
		}
	}
}

func FuzzEncryptDecryptNALU(f *testing.F) {
	f.Add(appendEscaped(nil, countingNALU(300)))
	f.Add([]byte{0x65, 0, 0, 3, 0, 0, 3})
	f.Add(append([]byte{0x41}, make([]byte, 200)...))
	k := testKey(f)
	f.Fuzz(func(t *testing.T, nal []byte) {
		enc, err := EncryptNALU(nil, nal, k)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := DecryptNALU(nil, enc, k)
		if err != nil {
			t.Fatal(err)
		}
		// Equal at the RBSP level; byte-equal when nal was escaped canonically.
		if !bytes.Equal(unescape(nil, dec), unescape(nil, nal)) {
			t.Fatal("RBSP round trip failed")
		}
		if canon := appendEscaped(nil, unescape(nil, nal)); bytes.Equal(canon, nal) && !bytes.Equal(dec, nal) {
			t.Fatal("canonical unit not restored byte for byte")
		}
		if _, err := DecryptAnnexB(nil, nal, k); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
	})
}

// appendEscaped appends rbsp with emulation prevention applied to dst: the
// byte-by-byte reference for escapeForward.
func appendEscaped(dst, rbsp []byte) []byte {
	zeros := 0
	for _, c := range rbsp {
		if zeros >= 2 && c <= 3 {
			dst = append(dst, 3)
			zeros = 0
		}
		dst = append(dst, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	if zeros >= 2 {
		dst = append(dst, 3)
	}
	return dst
}

func FuzzEscape(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 3, 0, 0, 1, 0, 0})
	f.Add([]byte{0, 0, 3, 0, 0, 3, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := unescape(nil, b), refDiscardEPB(b); !bytes.Equal(got, want) {
			t.Fatalf("unescape(%x) = %x, reference %x", b, got, want)
		}
		want := appendEscaped(nil, b)
		buf := make([]byte, len(b)/2+2, len(b)*2+4)
		buf = append(buf, b...)
		n := escapeForward(buf, len(b)/2+2)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("escapeForward(%x) = %x, reference %x", b, buf[:n], want)
		}
		if back := unescape(nil, want); !bytes.Equal(back, b) {
			t.Fatalf("unescape(escape(%x)) = %x", b, back)
		}
	})
}
