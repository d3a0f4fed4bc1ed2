// Package encryption encrypts live streams without touching their container
// or headers, so that CDNs parse them as usual and the size of every packet
// stays the same.
//
// One cipher layout serves both outputs. It follows Apple's SAMPLE-AES
// ("MPEG-2 Stream Encryption Format for HTTP Live Streaming"): AES-128-CBC
// without padding, the IV restarting at every NAL unit and audio frame;
// H.264 NAL units of types 1 and 5 keep a 32-byte clear leader, then one
// 16-byte block of every 160 bytes is encrypted and the last 1–16 bytes stay
// clear; AAC frames keep 16 clear bytes and then every whole 16-byte block
// is encrypted.
//
// Both outputs apply the pattern to the NAL unit bytes as the encoder
// wrote them. FLV (EncryptAVCC, EncryptAAC and the Encryptor) stops there,
// which keeps every tag the size it was; FLV.md specifies the FLV scheme.
// HLS MPEG-TS (EncryptNALU, EncryptAnnexB, EncryptADTS) then applies
// emulation prevention to the encrypted unit so that ciphertext cannot
// emulate a start code; SAMPLE-AES decryptors (FFmpeg, hls.js) remove it
// before decrypting and pass the result to the decoder as it is.
//
// The package also holds the keys: generation, sealing at rest, a KeyStore
// interface and the HTTP handler that delivers keys to players.
package encryption

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// Layout constants (Apple SAMPLE-AES).
const (
	blockSize = 16
	// videoLeader is the clear start of a protected NAL unit (the NAL
	// header byte and 31 more).
	videoLeader = 32
	// videoSkip is the clear run after every encrypted video block: 1 of
	// every 10 blocks is encrypted.
	videoSkip = 144
	// audioLeader is the clear start of an AAC frame.
	audioLeader = 16
	// MinProtectedNALU is the smallest NAL unit that has an encrypted block:
	// units of 48 bytes or less stay entirely clear.
	MinProtectedNALU = videoLeader + blockSize + 1
)

// ErrMalformed is wrapped by errors about input the layout cannot walk
// (AVCC lengths past the end, truncated ADTS frames).
var ErrMalformed = errors.New("encryption: malformed input")

// errNilKey is returned when a nil key is passed.
var errNilKey = errors.New("encryption: nil key")

// protectedNALU reports whether a NAL unit of this header byte is encrypted:
// coded slices of non-IDR (1) and IDR (5) pictures only.
func protectedNALU(header byte) bool {
	t := header & 0x1f
	return t == 1 || t == 5
}

// encBlock encrypts the 16 bytes at p in place, chaining on iv.
func encBlock(b cipher.Block, iv *[16]byte, p []byte) {
	p = p[:blockSize]
	subtle.XORBytes(p, p, iv[:])
	b.Encrypt(p, p)
	copy(iv[:], p)
}

// decBlock decrypts the 16 bytes at p in place, chaining on iv.
func decBlock(b cipher.Block, iv *[16]byte, p []byte) {
	p = p[:blockSize]
	var next [16]byte
	copy(next[:], p)
	b.Decrypt(p, p)
	subtle.XORBytes(p, p, iv[:])
	*iv = next
}

// cryptVideo applies the video pattern in place to one NAL unit (at either
// level: escaped for FLV, unescaped for TS). The IV starts afresh and the
// CBC chain runs through the encrypted blocks only.
func cryptVideo(b cipher.Block, ivInit *[16]byte, nal []byte, encrypt bool) {
	if len(nal) < MinProtectedNALU {
		return
	}
	iv := *ivInit
	for pos := videoLeader; pos < len(nal); {
		if len(nal)-pos > blockSize {
			if encrypt {
				encBlock(b, &iv, nal[pos:])
			} else {
				decBlock(b, &iv, nal[pos:])
			}
			pos += blockSize
		}
		pos += min(videoSkip, len(nal)-pos)
	}
}

// cryptAudio applies the audio pattern in place to one raw AAC frame:
// 16 bytes clear, then every whole 16-byte block, the tail clear.
func cryptAudio(b cipher.Block, ivInit *[16]byte, frame []byte, encrypt bool) {
	iv := *ivInit
	for pos := audioLeader; pos+blockSize <= len(frame); pos += blockSize {
		if encrypt {
			encBlock(b, &iv, frame[pos:])
		} else {
			decBlock(b, &iv, frame[pos:])
		}
	}
}

// EncryptAVCC appends to dst the FLV form of AVCC data src (4-byte
// big-endian lengths, each followed by one NAL unit): NAL units of types 1
// and 5 get the video pattern applied to their bytes as they are (emulation
// prevention bytes included), every other byte is copied. The result has
// the length of src. dst may be src[:0] to encrypt in place; otherwise the
// two must not overlap. There is no allocation when dst has room.
//
// A length running past the end of src gives an error wrapping ErrMalformed
// and dst unchanged. Zero-length units are copied as they are.
func EncryptAVCC(dst, src []byte, k *Key) ([]byte, error) {
	return cryptAVCC(dst, src, k, true)
}

// DecryptAVCC reverses EncryptAVCC.
func DecryptAVCC(dst, src []byte, k *Key) ([]byte, error) {
	return cryptAVCC(dst, src, k, false)
}

func cryptAVCC(dst, src []byte, k *Key, encrypt bool) ([]byte, error) {
	if k == nil {
		return dst, errNilKey
	}
	if err := checkAVCC(src); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, src...)
	b := k.block()
	out := dst[start:]
	for pos := 0; pos < len(out); {
		l := int(binary.BigEndian.Uint32(out[pos:]))
		pos += 4
		nal := out[pos : pos+l]
		if l > 0 && protectedNALU(nal[0]) {
			cryptVideo(b, &k.IV, nal, encrypt)
		}
		pos += l
	}
	return dst, nil
}

// checkAVCC validates the framing of AVCC data.
func checkAVCC(b []byte) error {
	for pos, n := 0, 0; pos < len(b); n++ {
		if len(b)-pos < 4 {
			return fmt.Errorf("avcc unit %d: %d bytes left for a 4-byte length: %w", n, len(b)-pos, ErrMalformed)
		}
		l := binary.BigEndian.Uint32(b[pos:])
		pos += 4
		if uint64(l) > uint64(len(b)-pos) {
			return fmt.Errorf("avcc unit %d: length %d, %d bytes left: %w", n, l, len(b)-pos, ErrMalformed)
		}
		pos += int(l)
	}
	return nil
}

// EncryptAAC appends to dst one raw AAC frame (no ADTS header) with the
// audio pattern applied: the first 16 bytes clear, then every whole 16-byte
// block encrypted, the last len%16 bytes clear. Frames under 32 bytes stay
// clear. The result has the length of src; dst may be src[:0] to encrypt
// in place, otherwise they must not overlap.
func EncryptAAC(dst, src []byte, k *Key) ([]byte, error) {
	return cryptAAC(dst, src, k, true)
}

// DecryptAAC reverses EncryptAAC.
func DecryptAAC(dst, src []byte, k *Key) ([]byte, error) {
	return cryptAAC(dst, src, k, false)
}

func cryptAAC(dst, src []byte, k *Key, encrypt bool) ([]byte, error) {
	if k == nil {
		return dst, errNilKey
	}
	start := len(dst)
	dst = append(dst, src...)
	cryptAudio(k.block(), &k.IV, dst[start:], encrypt)
	return dst, nil
}
