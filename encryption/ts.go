package encryption

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/livefuse/livefuse/av"
)

// MPEG-TS signalling of SAMPLE-AES (Apple, "Transport Stream Signaling"):
// encrypted elementary streams get their own stream types, a private data
// indicator descriptor, and for audio the audio setup information in a
// registration descriptor. The PMT must fit in one TS packet.

// PMT stream types.
const (
	StreamTypeH264          = 0x1b
	StreamTypeAAC           = 0x0f // ADTS
	StreamTypeH264SampleAES = 0xdb
	StreamTypeAACSampleAES  = 0xcf
)

// Descriptor tags (ISO/IEC 13818-1 table 2-45).
const (
	descRegistration         = 0x05
	descPrivateDataIndicator = 0x0f
)

// MaxPMTSection is the largest PMT section that fits in one TS packet
// after the 4-byte packet header and the pointer field.
const MaxPMTSection = 188 - 4 - 1

// PMTStream is one elementary stream entry of a PMT.
type PMTStream struct {
	Type        byte
	PID         uint16
	Descriptors []byte // the ES_info descriptor loop
}

// H264SampleAESStream returns the PMT entry of a SAMPLE-AES H.264 stream:
// stream type 0xdb with a private data indicator descriptor 'zavc'.
func H264SampleAESStream(pid uint16) PMTStream {
	return PMTStream{Type: StreamTypeH264SampleAES, PID: pid, Descriptors: appendPrivateDataIndicator(nil, "zavc")}
}

// AACSampleAESStream returns the PMT entry of a SAMPLE-AES AAC (ADTS)
// stream: stream type 0xcf with a private data indicator descriptor 'aacd'
// and a registration descriptor 'apad' carrying the audio setup
// information built from the AudioSpecificConfig asc.
func AACSampleAESStream(pid uint16, asc []byte) (PMTStream, error) {
	info, err := AACSetupInfo(asc)
	if err != nil {
		return PMTStream{}, err
	}
	d := appendPrivateDataIndicator(nil, "aacd")
	d = append(d, descRegistration, byte(4+len(info)))
	d = append(d, "apad"...)
	d = append(d, info...)
	return PMTStream{Type: StreamTypeAACSampleAES, PID: pid, Descriptors: d}, nil
}

func appendPrivateDataIndicator(dst []byte, fourCC string) []byte {
	return append(append(dst, descPrivateDataIndicator, 4), fourCC...)
}

// AACSetupInfo returns the audio setup information of an AAC stream:
// audio_type ('zaac' for AAC-LC, 'zach' for HE-AAC, 'zacp' for HE-AAC v2,
// from the object type of asc), priming 0, version 1, the length of asc
// and asc itself.
func AACSetupInfo(asc []byte) ([]byte, error) {
	if len(asc) < 2 || len(asc) > 255-4-8 {
		return nil, fmt.Errorf("aac setup info: AudioSpecificConfig of %d bytes", len(asc))
	}
	var audioType string
	switch aot := asc[0] >> 3; aot {
	case 2:
		audioType = "zaac"
	case 5:
		audioType = "zach"
	case 29:
		audioType = "zacp"
	case 31: // escape: 32 + the next 6 bits; none of them is signalled
		return nil, fmt.Errorf("aac setup info: audio object type %d unsupported", 32+int(asc[0]&7)<<3|int(asc[1]>>5))
	default:
		return nil, fmt.Errorf("aac setup info: audio object type %d unsupported", aot)
	}
	b := make([]byte, 0, 8+len(asc))
	b = append(b, audioType...)
	b = append(b, 0, 0, 1, byte(len(asc)))
	return append(b, asc...), nil
}

// AudioSetupInfo is a parsed audio setup information.
type AudioSetupInfo struct {
	AudioType string // 'zaac', 'zach', 'zacp', 'zac3', 'zec3'
	Priming   uint16
	Version   byte
	SetupData []byte
}

// ParseAudioSetupInfo parses an audio setup information.
func ParseAudioSetupInfo(b []byte) (*AudioSetupInfo, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("audio setup info of %d bytes: %w", len(b), ErrMalformed)
	}
	n := int(b[7])
	if len(b) != 8+n {
		return nil, fmt.Errorf("audio setup info: %d bytes of setup data announced, %d present: %w", n, len(b)-8, ErrMalformed)
	}
	return &AudioSetupInfo{
		AudioType: string(b[:4]),
		Priming:   binary.BigEndian.Uint16(b[4:]),
		Version:   b[6],
		SetupData: b[8:],
	}, nil
}

// AppendPMT appends a complete PMT section (table_id 2 through CRC_32) for
// one program to dst. It fails when the section would not fit in one TS
// packet (MaxPMTSection), as Apple requires for SAMPLE-AES streams.
func AppendPMT(dst []byte, programNumber uint16, version byte, pcrPID uint16, streams []PMTStream) ([]byte, error) {
	n := 9 + 4 // fixed fields after section_length, and the CRC
	for _, s := range streams {
		n += 5 + len(s.Descriptors)
		if len(s.Descriptors) > 0x3ff {
			return dst, errors.New("pmt: descriptor loop too long")
		}
	}
	if 3+n > MaxPMTSection {
		return dst, fmt.Errorf("pmt section of %d bytes does not fit in one TS packet (%d)", 3+n, MaxPMTSection)
	}
	start := len(dst)
	dst = append(dst, 0x02, 0xb0|byte(n>>8), byte(n))
	dst = binary.BigEndian.AppendUint16(dst, programNumber)
	dst = append(dst, 0xc1|(version&0x1f)<<1, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, 0xe000|pcrPID&0x1fff)
	dst = append(dst, 0xf0, 0) // program_info_length 0
	for _, s := range streams {
		dst = append(dst, s.Type)
		dst = binary.BigEndian.AppendUint16(dst, 0xe000|s.PID&0x1fff)
		dst = binary.BigEndian.AppendUint16(dst, 0xf000|uint16(len(s.Descriptors)))
		dst = append(dst, s.Descriptors...)
	}
	return binary.BigEndian.AppendUint32(dst, av.CRC32MPEG2(dst[start:])), nil
}
