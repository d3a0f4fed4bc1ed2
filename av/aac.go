package av

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// AudioConfig is a parsed AAC AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
type AudioConfig struct {
	// ObjectType is the audio object type of the core coder (2 for AAC LC,
	// also for HE-AAC, whose SBR layer is kept aside for Marshal).
	ObjectType int
	// SampleRate is the core sampling rate in Hz.
	SampleRate int
	// ChannelCount is 1–6 or 8; 0 means the layout is given by a program
	// config element in the stream.
	ChannelCount int

	// raw holds the bytes ParseAudioConfig read, so that Marshal of an
	// unchanged parsed config gives them back (SBR/PS signalling, the sync
	// extension ffmpeg appends). Unexported fields are plain values so that
	// AudioConfig stays comparable with ==.
	raw string
	// frame960 is the frameLengthFlag of a parsed config.
	frame960 bool
}

// ParseAudioConfig parses an AudioSpecificConfig. AAC LC, HE-AAC (SBR) and
// HE-AACv2 (PS) are supported.
func ParseAudioConfig(b []byte) (*AudioConfig, error) {
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("aac config: %w", err)
	}
	if asc.SampleRate <= 0 {
		return nil, fmt.Errorf("aac config: sample rate %d", asc.SampleRate)
	}
	return &AudioConfig{
		ObjectType:   int(asc.Type),
		SampleRate:   asc.SampleRate,
		ChannelCount: asc.ChannelCount,
		raw:          string(b),
		frame960:     asc.FrameLengthFlag,
	}, nil
}

// Marshal builds the AudioSpecificConfig bytes. A parsed config whose
// fields were not changed gives back the bytes it was parsed from. It
// returns nil when the config cannot be expressed (object type outside
// 1–30, a channel count other than 0–6 or 8, or a sample rate outside
// 1–16777215 Hz).
func (c *AudioConfig) Marshal() []byte {
	if c.raw != "" {
		if p, err := ParseAudioConfig([]byte(c.raw)); err == nil &&
			p.ObjectType == c.ObjectType && p.SampleRate == c.SampleRate && p.ChannelCount == c.ChannelCount {
			return []byte(c.raw)
		}
	}
	asc := mpeg4audio.AudioSpecificConfig{
		Type:         mpeg4audio.ObjectType(c.ObjectType),
		SampleRate:   c.SampleRate,
		ChannelCount: c.ChannelCount,
	}
	if asc.Type < 1 || asc.Type > 30 || asc.SampleRate <= 0 || asc.SampleRate >= 1<<24 {
		return nil
	}
	b, err := asc.Marshal()
	if err != nil {
		return nil
	}
	return b
}

// samplesPerFrame is 1024, or 960 when the config sets frameLengthFlag.
func (c *AudioConfig) samplesPerFrame() int {
	if c.frame960 {
		return 960
	}
	return 1024
}

// FrameDuration is the duration of one AAC frame: 1024 samples (960 when
// the parsed config sets frameLengthFlag) at the core sample rate; 0 when
// the sample rate is unknown.
func (c *AudioConfig) FrameDuration() time.Duration {
	if c.SampleRate <= 0 {
		return 0
	}
	return time.Duration(c.samplesPerFrame()) * time.Second / time.Duration(c.SampleRate)
}

// adtsSampleRates is the sampling_frequency_index table shared by ADTS and
// the AudioSpecificConfig.
var adtsSampleRates = [...]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

const (
	adtsHeaderSize  = 7
	adtsCRCSize     = 2
	adtsMaxFrameLen = 1<<13 - 1 // frame_length is 13 bits and counts the header
)

var errADTS = errors.New("adts")

// ParseADTS parses a run of ADTS frames into raw AAC frames plus the config
// of the first. Frames alias b. Frames with a CRC are accepted (the CRC is
// not checked); frames holding more than one raw data block are refused.
func ParseADTS(b []byte) (cfg *AudioConfig, frames [][]byte, err error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: no frames", errADTS)
	}
	for pos := 0; pos < len(b); {
		h := b[pos:]
		if len(h) < adtsHeaderSize {
			return nil, nil, fmt.Errorf("%w: frame %d header: %w", errADTS, len(frames), ErrTruncated)
		}
		if h[0] != 0xff || h[1]&0xf0 != 0xf0 {
			return nil, nil, fmt.Errorf("%w: frame %d: bad syncword", errADTS, len(frames))
		}
		if h[1]&0x06 != 0 {
			return nil, nil, fmt.Errorf("%w: frame %d: layer %d, want 0", errADTS, len(frames), h[1]>>1&0x03)
		}
		hdrLen := adtsHeaderSize
		if h[1]&0x01 == 0 {
			hdrLen += adtsCRCSize
		}
		srIndex := int(h[2] >> 2 & 0x0f)
		if srIndex >= len(adtsSampleRates) {
			return nil, nil, fmt.Errorf("%w: frame %d: sample rate index %d", errADTS, len(frames), srIndex)
		}
		chanCfg := int(h[2]&0x01)<<2 | int(h[3]>>6)
		frameLen := int(h[3]&0x03)<<11 | int(h[4])<<3 | int(h[5]>>5)
		if blocks := h[6] & 0x03; blocks != 0 {
			return nil, nil, fmt.Errorf("%w: frame %d: %d raw data blocks unsupported", errADTS, len(frames), blocks+1)
		}
		if frameLen <= hdrLen {
			return nil, nil, fmt.Errorf("%w: frame %d: length %d", errADTS, len(frames), frameLen)
		}
		if frameLen > len(h) {
			return nil, nil, fmt.Errorf("%w: frame %d of %d bytes, %d left: %w", errADTS, len(frames), frameLen, len(h), ErrTruncated)
		}
		if cfg == nil {
			channels := chanCfg
			if chanCfg == 7 {
				channels = 8
			}
			cfg = &AudioConfig{
				ObjectType:   int(h[2]>>6) + 1,
				SampleRate:   adtsSampleRates[srIndex],
				ChannelCount: channels,
			}
		}
		frames = append(frames, h[hdrLen:frameLen:frameLen])
		pos += frameLen
	}
	return cfg, frames, nil
}

// AppendADTS appends one frame with a 7-byte ADTS header (no CRC). It
// appends nothing when ADTS cannot express the frame: an object type
// outside 1–4, a sample rate not in the index table, a channel count other
// than 0–6 or 8, or a frame over 8184 bytes.
func AppendADTS(dst []byte, cfg *AudioConfig, frame []byte) []byte {
	srIndex := -1
	for i, r := range adtsSampleRates {
		if r == cfg.SampleRate {
			srIndex = i
			break
		}
	}
	chanCfg := cfg.ChannelCount
	switch {
	case chanCfg == 8:
		chanCfg = 7
	case chanCfg < 0 || chanCfg > 6:
		return dst
	}
	frameLen := adtsHeaderSize + len(frame)
	if srIndex < 0 || cfg.ObjectType < 1 || cfg.ObjectType > 4 || frameLen > adtsMaxFrameLen {
		return dst
	}
	const fullness = 0x7ff // variable bit rate, as ffmpeg writes it
	dst = append(dst,
		0xff,
		0xf1, // MPEG-4, layer 0, no CRC
		byte(cfg.ObjectType-1)<<6|byte(srIndex)<<2|byte(chanCfg>>2),
		byte(chanCfg&0x03)<<6|byte(frameLen>>11),
		byte(frameLen>>3),
		byte(frameLen&0x07)<<5|byte(fullness>>6),
		byte(fullness&0x3f)<<2, // one raw data block
	)
	return append(dst, frame...)
}
