package origin

import (
	"encoding/binary"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// A small MPEG-TS writer for the tshls packager: PAT, PMT (through
// encryption.AppendPMT, which also builds the SAMPLE-AES entries), and PES
// packets with PTS/DTS, PCR on the first packet of every PCR-PID PES,
// random_access_indicator on keyframes and continuity counters that run on
// across segments. It writes into an in-memory byte slice.

// TS PIDs and stream ids of the packager's single program.
const (
	tsPacketSize   = 188
	tsPIDPAT       = 0x0000
	tsPIDPMT       = 0x1000
	tsPIDVideo     = 0x0100
	tsPIDAudio     = 0x0101
	tsProgram      = 1
	tsStreamVideo  = 0xe0
	tsStreamAudio  = 0xc0
	tsTimestampMax = 1 << 33
)

// tsWriter appends TS packets to buf. It is not safe for concurrent use.
type tsWriter struct {
	buf     []byte
	cc      [4]uint8 // PAT, PMT, video, audio
	scratch []byte
}

func (w *tsWriter) counter(pid uint16) *uint8 {
	switch pid {
	case tsPIDVideo:
		return &w.cc[1]
	case tsPIDAudio:
		return &w.cc[2]
	case tsPIDPMT:
		return &w.cc[3]
	default:
		return &w.cc[0]
	}
}

// writeTables writes a PAT and a PMT for streams, with the PCR on pcrPID.
func (w *tsWriter) writeTables(version byte, pcrPID uint16, streams []encryption.PMTStream) error {
	pat := []byte{0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0, 0, 0, tsProgram, 0xe0 | tsPIDPMT>>8, tsPIDPMT & 0xff}
	pat = binary.BigEndian.AppendUint32(pat, av.CRC32MPEG2(pat))
	w.writeSection(tsPIDPAT, pat)
	pmt, err := encryption.AppendPMT(w.scratch[:0], tsProgram, version, pcrPID, streams)
	if err != nil {
		return err
	}
	w.scratch = pmt
	w.writeSection(tsPIDPMT, pmt)
	return nil
}

// writeSection writes one PSI section that fits in one packet.
func (w *tsWriter) writeSection(pid uint16, section []byte) {
	cc := w.counter(pid)
	w.buf = append(w.buf, 0x47, 0x40|byte(pid>>8), byte(pid), 0x10|*cc&0x0f, 0)
	*cc = (*cc + 1) & 0x0f
	w.buf = append(w.buf, section...)
	for range tsPacketSize - 5 - len(section) {
		w.buf = append(w.buf, 0xff)
	}
}

// writePES writes one PES packet carrying payload. pts and dts are in
// 90 kHz units; dts < 0 means no DTS. pcr < 0 means no PCR. The PES
// packet length is set whenever it fits (0, unbounded, for larger video
// access units), so that demuxers can hand out a frame without waiting for
// the next one: FFmpeg decrypts SAMPLE-AES with the key of the segment
// being read when a packet comes out, and a frame held back until the
// next segment would meet the wrong key.
func (w *tsWriter) writePES(pid uint16, streamID byte, pts, dts, pcr int64, rai bool, payload []byte) {
	hdr := w.scratch[:0]
	hdr = append(hdr, 0, 0, 1, streamID, 0, 0, 0x80)
	if dts >= 0 && dts != pts {
		hdr = append(hdr, 0xc0, 10)
		hdr = appendTimestamp(hdr, 0x3, pts)
		hdr = appendTimestamp(hdr, 0x1, dts)
	} else {
		hdr = append(hdr, 0x80, 5)
		hdr = appendTimestamp(hdr, 0x2, pts)
	}
	if n := len(hdr) - 6 + len(payload); n <= 0xffff {
		binary.BigEndian.PutUint16(hdr[4:], uint16(n))
	}
	w.scratch = hdr
	cc := w.counter(pid)
	first := true
	for len(hdr) > 0 || len(payload) > 0 {
		// Adaptation field body (after its length byte).
		var af [8]byte
		afLen := -1 // -1: no adaptation field
		if first && (pcr >= 0 || rai) {
			af[0] = 0
			afLen = 1
			if rai {
				af[0] |= 0x40
			}
			if pcr >= 0 {
				af[0] |= 0x10
				base := uint64(pcr) % tsTimestampMax
				af[1] = byte(base >> 25)
				af[2] = byte(base >> 17)
				af[3] = byte(base >> 9)
				af[4] = byte(base >> 1)
				af[5] = byte(base<<7) | 0x7e
				af[6] = 0
				afLen = 7
			}
		}
		space := tsPacketSize - 4
		if afLen >= 0 {
			space -= 1 + afLen
		}
		n := len(hdr) + len(payload)
		stuff := 0
		if n < space {
			stuff = space - n
		}
		if stuff > 0 && afLen < 0 {
			// An adaptation field of length 0 takes one byte; one of
			// length 1 or more also has the flags byte.
			afLen = 0
			stuff--
			if stuff > 0 {
				af[0] = 0
				afLen = 1
				stuff--
			}
		}
		b0 := byte(pid>>8) & 0x1f
		if first {
			b0 |= 0x40
		}
		afc := byte(0x10)
		if afLen >= 0 {
			afc = 0x30
		}
		w.buf = append(w.buf, 0x47, b0, byte(pid), afc|*cc&0x0f)
		*cc = (*cc + 1) & 0x0f
		if afLen >= 0 {
			w.buf = append(w.buf, byte(afLen+stuff))
			w.buf = append(w.buf, af[:afLen]...)
			for range stuff {
				w.buf = append(w.buf, 0xff)
			}
		}
		room := tsPacketSize - 4
		if afLen >= 0 {
			room -= 1 + afLen + stuff
		}
		k := min(room, len(hdr))
		w.buf = append(w.buf, hdr[:k]...)
		hdr = hdr[k:]
		room -= k
		k = min(room, len(payload))
		w.buf = append(w.buf, payload[:k]...)
		payload = payload[k:]
		first = false
	}
}

// appendTimestamp appends a 5-byte PES PTS or DTS field.
func appendTimestamp(b []byte, prefix byte, ts int64) []byte {
	t := uint64(ts) % tsTimestampMax
	return append(b,
		prefix<<4|byte(t>>29)&0x0e|1,
		byte(t>>22),
		byte(t>>14)|1,
		byte(t>>7),
		byte(t<<1)|1)
}
