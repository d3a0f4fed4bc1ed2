package av

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// H.264 NAL unit types livefuse looks at.
const (
	NALUTypeNonIDR = 1
	NALUTypeIDR    = 5
	NALUTypeSEI    = 6
	NALUTypeSPS    = 7
	NALUTypePPS    = 8
	NALUTypeAUD    = 9
)

// NALUType returns the nal_unit_type of a NAL unit (0 for an empty one).
func NALUType(nalu []byte) uint8 {
	if len(nalu) == 0 {
		return 0
	}
	return nalu[0] & 0x1f
}

// AVCConfig is a parsed AVCDecoderConfigurationRecord (ISO/IEC 14496-15
// 5.3.3.1) with 4-byte NAL unit lengths, the only size livefuse carries.
type AVCConfig struct {
	Profile, Compat, Level byte
	SPS, PPS               [][]byte
	// Ext holds the bytes after the PPS list (the chroma format and bit
	// depth extension of High profiles) verbatim, so that Marshal of a
	// parsed record gives back the same bytes.
	Ext []byte

	// rsv keeps the reserved bits of bytes 4 and 5 of a parsed record;
	// hand-built configs get the all-ones the specification asks for.
	rsv    [2]byte
	hasRsv bool
}

// ParseAVCConfig parses an AVCDecoderConfigurationRecord. The slices of the
// result alias b.
func ParseAVCConfig(b []byte) (*AVCConfig, error) {
	if len(b) < 7 {
		return nil, fmt.Errorf("avc config of %d bytes: %w", len(b), ErrTruncated)
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("avc config: version %d unsupported", b[0])
	}
	if ls := b[4]&0x03 + 1; ls != 4 {
		return nil, fmt.Errorf("avc config: NAL unit length size %d unsupported (want 4)", ls)
	}
	c := &AVCConfig{
		Profile: b[1], Compat: b[2], Level: b[3],
		rsv:    [2]byte{b[4] &^ 0x03, b[5] &^ 0x1f},
		hasRsv: true,
	}
	pos := 5
	var err error
	c.SPS, pos, err = readParamSets(b, pos, int(b[5]&0x1f), "sps")
	if err != nil {
		return nil, err
	}
	if pos >= len(b) {
		return nil, fmt.Errorf("avc config: pps count: %w", ErrTruncated)
	}
	c.PPS, pos, err = readParamSets(b, pos, int(b[pos]), "pps")
	if err != nil {
		return nil, err
	}
	if pos < len(b) {
		c.Ext = b[pos:]
	}
	return c, nil
}

// readParamSets reads n length-prefixed parameter sets after the count
// byte at b[pos].
func readParamSets(b []byte, pos, n int, what string) ([][]byte, int, error) {
	pos++ // count byte
	if n == 0 {
		return nil, pos, nil
	}
	sets := make([][]byte, 0, n)
	for i := range n {
		if len(b)-pos < 2 {
			return nil, 0, fmt.Errorf("avc config: %s %d length: %w", what, i, ErrTruncated)
		}
		l := int(binary.BigEndian.Uint16(b[pos:]))
		pos += 2
		if l == 0 {
			return nil, 0, fmt.Errorf("avc config: %s %d is empty", what, i)
		}
		if len(b)-pos < l {
			return nil, 0, fmt.Errorf("avc config: %s %d of %d bytes: %w", what, i, l, ErrTruncated)
		}
		sets = append(sets, b[pos:pos+l:pos+l])
		pos += l
	}
	return sets, pos, nil
}

// Marshal builds the record. Counts and lengths that do not fit the record
// (more than 31 SPS, 255 PPS, or a set over 65535 bytes) are cut off.
func (c *AVCConfig) Marshal() []byte {
	n := 7 + len(c.Ext)
	for _, s := range c.SPS {
		n += 2 + len(s)
	}
	for _, s := range c.PPS {
		n += 2 + len(s)
	}
	rsv := [2]byte{0xfc, 0xe0}
	if c.hasRsv {
		rsv = c.rsv
	}
	b := make([]byte, 0, n)
	b = append(b, 1, c.Profile, c.Compat, c.Level, rsv[0]|0x03)
	b = appendParamSets(b, c.SPS, 31, rsv[1])
	b = appendParamSets(b, c.PPS, 255, 0)
	return append(b, c.Ext...)
}

func appendParamSets(b []byte, sets [][]byte, maxCount int, countBits byte) []byte {
	var kept [][]byte
	for _, s := range sets {
		if len(s) > 0 && len(s) <= 0xffff && len(kept) < maxCount {
			kept = append(kept, s)
		}
	}
	b = append(b, countBits|byte(len(kept)))
	for _, s := range kept {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b
}

// BuildAVCConfig builds a record from one SPS and one PPS NAL unit (as
// RTSP SDP or Annex-B streams carry them). Profile, compatibility and level
// come from the SPS; High profiles get the chroma format and bit depth
// extension, as ffmpeg writes it.
func BuildAVCConfig(sps, pps []byte) (*AVCConfig, error) {
	if NALUType(sps) != NALUTypeSPS || len(sps) < 4 {
		return nil, errors.New("avc config: not an SPS")
	}
	if NALUType(pps) != NALUTypePPS || len(pps) < 2 {
		return nil, errors.New("avc config: not a PPS")
	}
	if len(sps) > 0xffff || len(pps) > 0xffff {
		return nil, errors.New("avc config: parameter set over 65535 bytes")
	}
	c := &AVCConfig{
		Profile: sps[1], Compat: sps[2], Level: sps[3],
		SPS: [][]byte{clone(sps)}, PPS: [][]byte{clone(pps)},
	}
	switch c.Profile {
	case 100, 110, 122, 144:
		var s h264.SPS
		if err := s.Unmarshal(sps); err != nil {
			return nil, fmt.Errorf("avc config: sps: %w", err)
		}
		c.Ext = []byte{
			0xfc | byte(s.ChromaFormatIdc&0x03),
			0xf8 | byte(s.BitDepthLumaMinus8&0x07),
			0xf8 | byte(s.BitDepthChromaMinus8&0x07),
			0, // numOfSequenceParameterSetExt
		}
	}
	return c, nil
}

// sps parses the first SPS; ok is false when there is none or it is broken.
func (c *AVCConfig) sps() (h264.SPS, bool) {
	var s h264.SPS
	if len(c.SPS) == 0 {
		return s, false
	}
	if err := s.Unmarshal(c.SPS[0]); err != nil {
		return s, false
	}
	return s, true
}

// Resolution returns the picture size from the first SPS (0, 0 when unknown).
func (c *AVCConfig) Resolution() (width, height int) {
	s, ok := c.sps()
	if !ok {
		return 0, 0
	}
	return s.Width(), s.Height()
}

// FPS returns the frame rate from the VUI timing of the first SPS (0 when
// the SPS has none).
func (c *AVCConfig) FPS() float64 {
	s, ok := c.sps()
	if !ok {
		return 0
	}
	return s.FPS()
}

// CodecString returns the RFC 6381 codecs value, as HLS playlists use it
// ("avc1.64001e").
func (c *AVCConfig) CodecString() string {
	return fmt.Sprintf("avc1.%02x%02x%02x", c.Profile, c.Compat, c.Level)
}

// errAVCC describes malformed AVCC data.
var errAVCC = errors.New("avcc")

// SplitAVCC splits AVCC data (4-byte lengths) into NAL units without
// copying: the units alias b. It refuses empty input, empty units and
// lengths running past the end.
func SplitAVCC(b []byte) ([][]byte, error) {
	n, err := countAVCC(b)
	if err != nil {
		return nil, err
	}
	nalus := make([][]byte, 0, n)
	for len(b) > 0 {
		l := int(binary.BigEndian.Uint32(b))
		nalus = append(nalus, b[4:4+l:4+l])
		b = b[4+l:]
	}
	return nalus, nil
}

// countAVCC validates AVCC data and counts its NAL units.
func countAVCC(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, fmt.Errorf("%w: no NAL units", errAVCC)
	}
	n := 0
	for pos := 0; pos < len(b); n++ {
		if len(b)-pos < 4 {
			return 0, fmt.Errorf("%w: NAL unit %d length: %w", errAVCC, n, ErrTruncated)
		}
		l := binary.BigEndian.Uint32(b[pos:])
		pos += 4
		if l == 0 {
			return 0, fmt.Errorf("%w: NAL unit %d is empty", errAVCC, n)
		}
		if uint64(l) > uint64(len(b)-pos) {
			return 0, fmt.Errorf("%w: NAL unit %d of %d bytes, %d left: %w", errAVCC, n, l, len(b)-pos, ErrTruncated)
		}
		pos += int(l)
	}
	return n, nil
}

// AppendAVCC appends NAL units in AVCC form (each with a 4-byte length).
func AppendAVCC(dst []byte, nalus [][]byte) []byte {
	for _, nalu := range nalus {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(nalu)))
		dst = append(dst, nalu...)
	}
	return dst
}

// IsKeyframeAVCC reports whether AVCC data contains an IDR slice. It stops
// at the first malformed length.
func IsKeyframeAVCC(b []byte) bool {
	for len(b) >= 4 {
		l := binary.BigEndian.Uint32(b)
		b = b[4:]
		if l == 0 || uint64(l) > uint64(len(b)) {
			return false
		}
		if NALUType(b) == NALUTypeIDR {
			return true
		}
		b = b[l:]
	}
	return false
}

// AnnexBToAVCC converts an Annex-B access unit (NAL units after 00 00 01 or
// 00 00 00 01 start codes) to AVCC. Zero bytes before a start code
// (trailing_zero_8bits) are dropped, and so are empty units between two
// start codes. The input must begin with a start code.
func AnnexBToAVCC(b []byte) ([]byte, error) {
	i := 0
	for i < len(b) && b[i] == 0 {
		i++
	}
	if i < 2 || i >= len(b) || b[i] != 1 {
		return nil, errors.New("annex-b: no start code at the beginning")
	}
	b = b[i+1:]
	out := make([]byte, 0, len(b)+16)
	for len(b) > 0 {
		end, next := nextStartCode(b)
		nalu := b[:end]
		for len(nalu) > 0 && nalu[len(nalu)-1] == 0 {
			nalu = nalu[:len(nalu)-1]
		}
		if len(nalu) > 0 {
			out = binary.BigEndian.AppendUint32(out, uint32(len(nalu)))
			out = append(out, nalu...)
		}
		b = b[next:]
	}
	if len(out) == 0 {
		return nil, errors.New("annex-b: no NAL units")
	}
	return out, nil
}

// nextStartCode finds the next 00 00 01 in b: end is where it begins and
// next is the index after it (len(b) for both when there is none).
func nextStartCode(b []byte) (end, next int) {
	for i := 0; i+2 < len(b); i++ {
		if b[i+2] > 1 {
			i += 2 // no start code begins at i, i+1 or i+2
			continue
		}
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			return i, i + 3
		}
	}
	return len(b), len(b)
}

// AVCCToAnnexB converts AVCC data to Annex-B with 4-byte start codes.
func AVCCToAnnexB(b []byte) ([]byte, error) {
	if _, err := countAVCC(b); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		l := int(binary.BigEndian.Uint32(b))
		out = append(out, 0, 0, 0, 1)
		out = append(out, b[4:4+l]...)
		b = b[4+l:]
	}
	return out, nil
}
