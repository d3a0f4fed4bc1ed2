package av

// This file lists the API of package av that other packages code against.
// The helper implementing av replaces the bodies (and may move them to other files).

import (
	"errors"
	"io"
	"time"
)

var errTODO = errors.New("av: not implemented")

// FLV tag types.
const (
	TagAudio  = 8
	TagVideo  = 9
	TagScript = 18
)

// TagToPacket converts the body of one FLV tag (as in RTMP messages and FLV
// files: starting with the video/audio tag header byte) to a Packet.
// Unsupported codecs and truncated bodies give an error.
func TagToPacket(tagType uint8, timestamp uint32, body []byte) (*Packet, error) {
	return nil, errTODO
}

// AppendTagBody appends the FLV tag body of p (tag header byte(s) + payload)
// to dst and returns the tag type and timestamp (milliseconds of DTS).
func AppendTagBody(dst []byte, p *Packet) ([]byte, uint8, uint32) { return dst, 0, 0 }

// AppendTag appends a whole FLV tag (11-byte tag header, body and the 4-byte
// PreviousTagSize) to dst.
func AppendTag(dst []byte, p *Packet) []byte { return dst }

// FLVHeader returns the 13-byte FLV file header (with PreviousTagSize0).
func FLVHeader(hasVideo, hasAudio bool) []byte { return nil }

// FLVReader reads FLV tags from a byte stream (a file or HTTP-FLV body).
type FLVReader struct{ r io.Reader }

// NewFLVReader checks the FLV header and returns a reader.
func NewFLVReader(r io.Reader) (*FLVReader, error) { return nil, errTODO }

// ReadPacket returns the next tag as a Packet.
func (r *FLVReader) ReadPacket() (*Packet, error) { return nil, errTODO }

// AVCConfig is a parsed AVCDecoderConfigurationRecord.
type AVCConfig struct {
	Profile, Compat, Level byte
	SPS, PPS               [][]byte
}

// ParseAVCConfig parses an AVCDecoderConfigurationRecord.
func ParseAVCConfig(b []byte) (*AVCConfig, error) { return nil, errTODO }

// Marshal builds the record.
func (c *AVCConfig) Marshal() []byte { return nil }

// Width/Height/FPS come from the first SPS (0 when unknown).
func (c *AVCConfig) Resolution() (width, height int) { return 0, 0 }

// SplitAVCC splits AVCC data (4-byte lengths) into NAL units without copying.
func SplitAVCC(b []byte) ([][]byte, error) { return nil, errTODO }

// AppendAVCC appends NAL units in AVCC form.
func AppendAVCC(dst []byte, nalus [][]byte) []byte { return dst }

// AnnexBToAVCC converts Annex-B to AVCC.
func AnnexBToAVCC(b []byte) ([]byte, error) { return nil, errTODO }

// AVCCToAnnexB converts AVCC to Annex-B.
func AVCCToAnnexB(b []byte) ([]byte, error) { return nil, errTODO }

// AudioConfig is a parsed AAC AudioSpecificConfig.
type AudioConfig struct {
	ObjectType   int
	SampleRate   int
	ChannelCount int
}

// ParseAudioConfig parses an AudioSpecificConfig.
func ParseAudioConfig(b []byte) (*AudioConfig, error) { return nil, errTODO }

// FrameDuration is the duration of one AAC frame (1024 samples).
func (c *AudioConfig) FrameDuration() time.Duration { return 0 }

// ParseADTS parses ADTS frames into raw frames plus the config of the first.
func ParseADTS(b []byte) (cfg *AudioConfig, frames [][]byte, err error) { return nil, nil, errTODO }

// AppendADTS appends one frame with an ADTS header.
func AppendADTS(dst []byte, cfg *AudioConfig, frame []byte) []byte { return dst }

// Marshal builds the AudioSpecificConfig bytes.
func (c *AudioConfig) Marshal() []byte { return nil }
