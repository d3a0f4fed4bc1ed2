package origin

import (
	"encoding/binary"
	"math"
)

// FLV codec ids used in onMetaData.
const (
	flvCodecAVC = 7
	flvCodecAAC = 10
)

// appendMetaData appends an AMF0 onMetaData script body describing the
// stream, for HTTP-FLV players of a source that sent none.
func appendMetaData(dst []byte, hasVideo, hasAudio bool, info mediaInfo, fps float64) []byte {
	dst = amfAppendString(dst, "onMetaData")
	n := 1
	if hasVideo {
		n += 4
	}
	if hasAudio {
		n += 3
	}
	dst = append(dst, 8) // ECMA array
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = amfAppendNumberProp(dst, "duration", 0)
	if hasVideo {
		dst = amfAppendNumberProp(dst, "width", float64(info.width))
		dst = amfAppendNumberProp(dst, "height", float64(info.height))
		dst = amfAppendNumberProp(dst, "framerate", math.Round(fps*1000)/1000)
		dst = amfAppendNumberProp(dst, "videocodecid", flvCodecAVC)
	}
	if hasAudio {
		dst = amfAppendNumberProp(dst, "audiocodecid", flvCodecAAC)
		dst = amfAppendNumberProp(dst, "audiosamplerate", float64(info.sampleRate))
		dst = amfAppendKey(dst, "stereo")
		b := byte(0)
		if info.channels >= 2 {
			b = 1
		}
		dst = append(dst, 1, b) // boolean
	}
	return append(dst, 0, 0, 9) // object end
}

func amfAppendString(dst []byte, s string) []byte {
	dst = append(dst, 2)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func amfAppendKey(dst []byte, k string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(k)))
	return append(dst, k...)
}

func amfAppendNumberProp(dst []byte, k string, v float64) []byte {
	dst = amfAppendKey(dst, k)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, math.Float64bits(v))
}
