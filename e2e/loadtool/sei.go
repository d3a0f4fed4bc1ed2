package main

import (
	"encoding/binary"
)

// Latency stamps travel inside the video as H.264 SEI NAL units (type 6)
// holding one user_data_unregistered message (payloadType 5): our UUID
// followed by the publisher's wall clock in Unix nanoseconds, big-endian.
// Decoders ignore SEI they do not recognise, so stamped video still plays.

// stampUUID marks our SEI messages (x264 puts its own, different UUID in
// the same kind of message).
var stampUUID = [16]byte{
	0x6c, 0x66, 0x2d, 0x6c, 0x6f, 0x61, 0x64, 0x2d, // "lf-load-"
	0x9a, 0x41, 0x7e, 0x02, 0xc3, 0x5d, 0x88, 0x1f,
}

const (
	naluTypeSEI          = 6
	seiUserDataUnreg     = 5
	stampPayloadSize     = len(stampUUID) + 8
	maxSEIMessagesPerNAL = 16
)

// appendStampSEI appends one complete SEI NAL unit (header byte included,
// no length prefix) carrying ns, with emulation prevention applied.
func appendStampSEI(dst []byte, ns int64) []byte {
	var rbsp [2 + stampPayloadSize + 1]byte
	rbsp[0] = seiUserDataUnreg
	rbsp[1] = byte(stampPayloadSize)
	copy(rbsp[2:], stampUUID[:])
	binary.BigEndian.PutUint64(rbsp[2+len(stampUUID):], uint64(ns))
	rbsp[len(rbsp)-1] = 0x80       // rbsp_stop_one_bit and alignment
	dst = append(dst, naluTypeSEI) // forbidden_zero_bit 0, nal_ref_idc 0
	return appendEmulationPrevention(dst, rbsp[:])
}

// appendEmulationPrevention appends rbsp to dst as NAL unit payload bytes:
// an emulation_prevention_three_byte (0x03) goes after every two zero bytes
// that would otherwise be followed by a byte <= 3 (H.264 7.4.1), and after a
// final pair of zeros.
func appendEmulationPrevention(dst, rbsp []byte) []byte {
	zeros := 0
	for _, b := range rbsp {
		if zeros >= 2 && b <= 3 {
			dst = append(dst, 3)
			zeros = 0
		}
		dst = append(dst, b)
		if b == 0 {
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

// rbspReader reads the RBSP bytes of a NAL unit payload, dropping the
// emulation prevention bytes as it goes, without copying.
type rbspReader struct {
	b     []byte
	zeros int
}

func (r *rbspReader) next() (byte, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	if r.zeros >= 2 && c == 3 {
		r.zeros = 0
		if len(r.b) == 0 {
			return 0, false
		}
		c = r.b[0]
		r.b = r.b[1:]
	}
	if c == 0 {
		r.zeros++
	} else {
		r.zeros = 0
	}
	return c, true
}

// seiValue reads a payloadType or payloadSize: a run of 0xFF bytes each
// adding 255, then a last byte.
func (r *rbspReader) seiValue() (int, bool) {
	v := 0
	for {
		c, ok := r.next()
		if !ok {
			return 0, false
		}
		v += int(c)
		if c != 0xFF {
			return v, true
		}
		if v > 1<<20 {
			return 0, false
		}
	}
}

// moreData reports whether an SEI message follows: anything but the
// trailing 0x80 stop byte.
func (r *rbspReader) moreData() bool {
	return len(r.b) > 1 || len(r.b) == 1 && r.b[0] != 0x80
}

// stampFromSEI returns the stamp carried by nal (one NAL unit with its
// header byte, no length prefix) when it is an SEI NAL unit holding our
// user_data_unregistered message.
func stampFromSEI(nal []byte) (int64, bool) {
	if len(nal) < 2 || nal[0]&0x1f != naluTypeSEI {
		return 0, false
	}
	r := rbspReader{b: nal[1:]}
	for i := 0; i < maxSEIMessagesPerNAL && r.moreData(); i++ {
		typ, ok := r.seiValue()
		if !ok {
			return 0, false
		}
		size, ok := r.seiValue()
		if !ok {
			return 0, false
		}
		if typ == seiUserDataUnreg && size >= stampPayloadSize {
			match := true
			for j := range stampUUID {
				c, ok := r.next()
				if !ok {
					return 0, false
				}
				if c != stampUUID[j] {
					match = false
				}
			}
			size -= len(stampUUID)
			if match {
				var v uint64
				for range 8 {
					c, ok := r.next()
					if !ok {
						return 0, false
					}
					v = v<<8 | uint64(c)
				}
				return int64(v), true
			}
		}
		for range size {
			if _, ok := r.next(); !ok {
				return 0, false
			}
		}
	}
	return 0, false
}

// maxNALsBeforeStamp bounds how many NAL units stampFromAVCC looks at: the
// stamp sits before the first slice, after at most an AUD, SPS, PPS and the
// encoder's own SEI.
const maxNALsBeforeStamp = 6

// stampFromAVCC finds our SEI stamp among the NAL units of an AVCC access
// unit (4-byte lengths) that come before the first slice.
func stampFromAVCC(b []byte) (int64, bool) {
	for i := 0; i < maxNALsBeforeStamp && len(b) >= 5; i++ {
		l := binary.BigEndian.Uint32(b)
		b = b[4:]
		if l == 0 || uint64(l) > uint64(len(b)) {
			return 0, false
		}
		nal := b[:l]
		switch t := nal[0] & 0x1f; {
		case t == naluTypeSEI:
			if ns, ok := stampFromSEI(nal); ok {
				return ns, true
			}
		case t >= 1 && t <= 5: // a slice: the stamp would have come before it
			return 0, false
		}
		b = b[l:]
	}
	return 0, false
}

// appendStamped appends AVCC access unit au to dst with our SEI stamp
// inserted right before the first slice, where H.264 wants SEI (after any
// AUD, SPS, PPS). A malformed au is appended unchanged with ok false.
func appendStamped(dst, au []byte, ns int64) (out []byte, ok bool) {
	if len(au) == 0 {
		return dst, false
	}
	pos := 0
	for pos < len(au) {
		if len(au)-pos < 4 {
			return append(dst, au...), false
		}
		l := binary.BigEndian.Uint32(au[pos:])
		if l == 0 || uint64(l) > uint64(len(au)-pos-4) {
			return append(dst, au...), false
		}
		if t := au[pos+4] & 0x1f; t >= 1 && t <= 5 {
			break
		}
		pos += 4 + int(l)
	}
	dst = append(dst, au[:pos]...)
	lenAt := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = appendStampSEI(dst, ns)
	binary.BigEndian.PutUint32(dst[lenAt:], uint32(len(dst)-lenAt-4))
	return append(dst, au[pos:]...), true
}
