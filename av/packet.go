// Package av is the media model every livefuse stage shares: the Packet,
// codec configuration helpers and conversions between FLV tags, AVCC and
// Annex-B H.264, and AAC AudioSpecificConfig/ADTS.
//
// A Packet carries FLV/AVCC semantics because RTMP and HTTP-FLV are the hot
// path: video payloads are AVCC (4-byte length-prefixed NAL units), audio
// payloads are raw AAC frames, and codec configuration travels as header
// packets (AVCDecoderConfigurationRecord, AudioSpecificConfig).
package av

import "time"

// Kind tells what a Packet carries.
type Kind uint8

// Packet kinds.
const (
	KindVideo Kind = iota + 1
	KindAudio
	// KindData is an FLV script-data body (AMF0), such as onMetaData.
	KindData
)

func (k Kind) String() string {
	switch k {
	case KindVideo:
		return "video"
	case KindAudio:
		return "audio"
	case KindData:
		return "data"
	}
	return "unknown"
}

// Codec identifies the codec of a video or audio Packet.
type Codec uint8

// Codecs livefuse carries.
const (
	CodecNone Codec = iota
	CodecH264
	CodecAAC
)

func (c Codec) String() string {
	switch c {
	case CodecH264:
		return "h264"
	case CodecAAC:
		return "aac"
	}
	return "none"
}

// Packet is one media unit. Once written to a stream it is shared by every
// reader and must not be modified.
type Packet struct {
	Kind  Kind
	Codec Codec
	// Header marks a sequence header: Data is an AVCDecoderConfigurationRecord
	// (H.264) or an AudioSpecificConfig (AAC).
	Header bool
	// Key marks a video keyframe (a point a decoder can start from).
	Key bool
	// DTS is the decode time from the start of the stream.
	DTS time.Duration
	// CTS is the composition offset: PTS = DTS + CTS.
	CTS time.Duration
	// Data is the payload: AVCC NAL units, one raw AAC frame, a
	// configuration record, or an AMF0 script body for KindData.
	Data []byte
}

// PTS returns the presentation time.
func (p *Packet) PTS() time.Duration { return p.DTS + p.CTS }

// Source describes where a feed comes from, for status and logs.
type Source struct {
	Protocol string // "rtmp", "rtsp", "rtmp-pull", "rtsp-pull", "relay"
	Remote   string // remote address (host:port) or pull URL without credentials
	// RTT, when set, reports the connection's smoothed round-trip time
	// (TCP_INFO); false when it cannot be read.
	RTT func() (time.Duration, bool)
	// Session identifies the upstream session of a relayed feed: a relay
	// that reconnects with the same Session continues the same encoder
	// timeline (and may resend packets the unit already has).
	Session string
}
