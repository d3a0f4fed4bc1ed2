package encryption

import (
	"bytes"
	"fmt"
	"slices"
)

// This file is the HLS MPEG-TS side of the layout. The video pattern is
// applied to the NAL unit as the encoder escaped it (the bytes FLV
// encrypts), and emulation prevention is then applied to the result, so
// that ciphertext never emulates a start code; a NAL unit may grow by a
// few bytes. Decryptors remove the emulation prevention bytes, decrypt the
// pattern, and hand the result to the decoder as it is.
//
// That is what the SAMPLE-AES decryptors of FFmpeg
// (libavformat/hls_sample_encryption.c: remove_scep_3_bytes, decrypt,
// no re-escaping) and hls.js (discardEPB, decrypt, the unit goes to the
// remuxer as it is) do. Applying the pattern to the unescaped bytes
// instead would hand those decoders a unit without its emulation
// prevention bytes, which they would unescape once more: every slice
// with a 00 00 0x sequence would decode wrong (checked with FFmpeg 5.1).

// EncryptNALU appends to dst one H.264 NAL unit (escaped, as it appears in
// a stream, without start code or length prefix) encrypted as SAMPLE-AES
// for MPEG-TS: for types 1 and 5 of more than 48 bytes, the video pattern
// is applied to the unit's bytes and emulation prevention is applied to
// the result; other types and short units are copied. dst and nalu must
// not overlap. There is no allocation when dst has len(nalu)*3/2+4 bytes
// of room.
func EncryptNALU(dst, nalu []byte, k *Key) ([]byte, error) {
	return cryptNALU(dst, nalu, k, true)
}

// DecryptNALU reverses EncryptNALU, as FFmpeg and hls.js do: emulation
// prevention bytes are removed and the pattern is decrypted, which gives
// back the unit as the encoder wrote it, byte for byte.
func DecryptNALU(dst, nalu []byte, k *Key) ([]byte, error) {
	return cryptNALU(dst, nalu, k, false)
}

func cryptNALU(dst, nalu []byte, k *Key, encrypt bool) ([]byte, error) {
	if k == nil {
		return dst, errNilKey
	}
	// Decryptors decide on the length of the unit as it is in the stream
	// (escaped); escaping never shortens a unit, so the two sides agree.
	if len(nalu) < MinProtectedNALU || !protectedNALU(nalu[0]) {
		return append(dst, nalu...), nil
	}
	start := len(dst)
	if !encrypt {
		dst = unescape(dst, nalu)
		cryptVideo(k.block(), &k.IV, dst[start:], false)
		return dst, nil
	}
	// The encrypted unit is staged slack bytes past the output position,
	// and escaping writes forward from the output position: escaping
	// inserts at most one byte per two zero bytes read, so the writer
	// stays behind the reader.
	slack := len(nalu)/2 + 2
	dst = slices.Grow(dst, slack+len(nalu))
	staged := append(dst[start+slack:start+slack], nalu...)
	cryptVideo(k.block(), &k.IV, staged, true)
	n := escapeForward(dst[start:start+slack+len(staged)], slack)
	return dst[:start+n], nil
}

var (
	epb      = []byte{0, 0, 3}
	zeroZero = []byte{0, 0}
)

// unescape appends nalu without its emulation prevention bytes (every 0x03
// following two zero bytes, counting from the last one removed, as
// decoders and SAMPLE-AES decryptors remove them) to dst.
func unescape(dst, nalu []byte) []byte {
	for {
		i := bytes.Index(nalu, epb)
		if i < 0 {
			return append(dst, nalu...)
		}
		dst = append(dst, nalu[:i+2]...)
		nalu = nalu[i+3:]
	}
}

// escapeForward escapes the bytes buf[off:] into buf from index 0: a 0x03
// goes before any byte ≤ 3 that follows two zero bytes (counting from the
// last 0x03 inserted), and after a unit that ends in two zero bytes. buf
// must have room for the extra bytes past its length (cap); off must
// exceed the number of bytes inserted, which len(rbsp)/2+2 does, so that
// the writer never overtakes the reader. It returns the escaped length.
func escapeForward(buf []byte, off int) int {
	end := len(buf)
	buf = buf[:cap(buf)]
	w, r := 0, off
	for {
		i := bytes.Index(buf[r:end], zeroZero)
		if i < 0 {
			return w + copy(buf[w:], buf[r:end])
		}
		w += copy(buf[w:], buf[r:r+i+2])
		r += i + 2
		if r == end || buf[r] <= 3 {
			buf[w] = 3
			w++
		}
		if r == end {
			return w
		}
	}
}

// EncryptAnnexB appends to dst an Annex-B access unit (NAL units after
// 00 00 01 or 00 00 00 01 start codes) with every NAL unit encrypted by
// EncryptNALU. Start codes and bytes before the first one are copied. A NAL
// unit ends where the next start code begins, less one zero byte before it
// (the leading zero of a 4-byte start code), as FFmpeg's decryptor cuts
// them. dst and src must not overlap.
func EncryptAnnexB(dst, src []byte, k *Key) ([]byte, error) {
	return cryptAnnexB(dst, src, k, true)
}

// DecryptAnnexB reverses EncryptAnnexB.
func DecryptAnnexB(dst, src []byte, k *Key) ([]byte, error) {
	return cryptAnnexB(dst, src, k, false)
}

func cryptAnnexB(dst, src []byte, k *Key, encrypt bool) ([]byte, error) {
	if k == nil {
		return dst, errNilKey
	}
	sc := findStartCode(src, 0)
	if sc < 0 {
		return dst, fmt.Errorf("annex-b: no start code: %w", ErrMalformed)
	}
	dst = append(dst, src[:sc+3]...)
	pos := sc + 3
	for pos < len(src) {
		end, next := len(src), len(src)
		if sc = findStartCode(src, pos); sc >= 0 {
			end, next = sc, sc+3
			if end > pos && src[end-1] == 0 {
				end--
			}
		}
		var err error
		if dst, err = cryptNALU(dst, src[pos:end], k, encrypt); err != nil {
			return dst, err
		}
		dst = append(dst, src[end:next]...)
		pos = next
	}
	return dst, nil
}

// findStartCode returns the index of the next 00 00 01 at or after from, or -1.
func findStartCode(b []byte, from int) int {
	for i := from; i+2 < len(b); i++ {
		if b[i+2] > 1 {
			i += 2
			continue
		}
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			return i
		}
	}
	return -1
}

// EncryptADTS appends to dst a run of ADTS frames with each frame's raw
// payload encrypted by the audio pattern and every ADTS header (7 bytes, 9
// with CRC) left clear, as SAMPLE-AES for MPEG-TS asks. Each frame's length
// is taken from its header. dst and src must not overlap unless dst is
// src[:0].
func EncryptADTS(dst, src []byte, k *Key) ([]byte, error) {
	return cryptADTS(dst, src, k, true)
}

// DecryptADTS reverses EncryptADTS.
func DecryptADTS(dst, src []byte, k *Key) ([]byte, error) {
	return cryptADTS(dst, src, k, false)
}

func cryptADTS(dst, src []byte, k *Key, encrypt bool) ([]byte, error) {
	if k == nil {
		return dst, errNilKey
	}
	// Walk the framing before writing anything, so that an error leaves dst as it was.
	for pos, n := 0, 0; pos < len(src); n++ {
		_, frameLen, err := adtsFrame(src[pos:])
		if err != nil {
			return dst, fmt.Errorf("adts frame %d: %w", n, err)
		}
		pos += frameLen
	}
	start := len(dst)
	dst = append(dst, src...)
	out := dst[start:]
	b := k.block()
	for pos := 0; pos < len(out); {
		hdrLen, frameLen, _ := adtsFrame(out[pos:])
		cryptAudio(b, &k.IV, out[pos+hdrLen:pos+frameLen], encrypt)
		pos += frameLen
	}
	return dst, nil
}

// adtsFrame reads the header length and frame length of the ADTS frame at
// the start of b.
func adtsFrame(b []byte) (hdrLen, frameLen int, err error) {
	if len(b) < 7 {
		return 0, 0, fmt.Errorf("%d bytes for a 7-byte header: %w", len(b), ErrMalformed)
	}
	if b[0] != 0xff || b[1]&0xf6 != 0xf0 {
		return 0, 0, fmt.Errorf("bad syncword or layer: %w", ErrMalformed)
	}
	hdrLen = 7
	if b[1]&0x01 == 0 { // protection_absent = 0: a CRC follows
		hdrLen = 9
	}
	frameLen = int(b[3]&0x03)<<11 | int(b[4])<<3 | int(b[5]>>5)
	if frameLen < hdrLen || frameLen > len(b) {
		return 0, 0, fmt.Errorf("frame length %d, header %d, %d bytes left: %w", frameLen, hdrLen, len(b), ErrMalformed)
	}
	return hdrLen, frameLen, nil
}
