package av

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// FLV tag types.
const (
	TagAudio  = 8
	TagVideo  = 9
	TagScript = 18
)

// FLV codec identifiers used in tag bodies.
const (
	flvCodecAVC       = 7  // video CodecID
	flvSoundFormatAAC = 10 // audio SoundFormat
	flvAACHeaderByte  = 0xAF

	flvFrameKey   = 1
	flvFrameInter = 2
	flvFrameInfo  = 5 // video info/command frame: no picture

	avcPacketHeader = 0
	avcPacketNALU   = 1
	avcPacketEOS    = 2

	aacPacketHeader = 0
	aacPacketRaw    = 1
)

// Sizes of the fixed parts of an FLV stream.
const (
	FLVHeaderSize   = 13 // signature, version, flags, data offset and PreviousTagSize0
	TagHeaderSize   = 11 // type, data size, timestamp, stream id
	PrevTagSizeSize = 4
)

// DefaultMaxTagSize is the largest tag body an FLVReader accepts unless told otherwise.
const DefaultMaxTagSize = 8 << 20

// Errors of the FLV conversions. Returned errors wrap them, so test with errors.Is.
var (
	// ErrSkip marks a tag that carries nothing for a Packet (AVC end of
	// sequence, video info frames). Callers ignore the tag.
	ErrSkip = errors.New("av: tag carries no media")
	// ErrUnsupportedCodec is wrapped with the FLV codec id or sound format.
	ErrUnsupportedCodec = errors.New("av: unsupported codec")
	// ErrTruncated means the bytes end before the structure they announce.
	ErrTruncated = errors.New("av: truncated")
	// ErrTagTooLarge is returned by FLVReader for tags past its MaxTagSize.
	ErrTagTooLarge = errors.New("av: flv tag too large")
)

// TagToPacket converts the body of one FLV tag (as in RTMP audio, video and
// data messages and FLV files: starting with the video/audio tag header
// byte) to a Packet. timestamp is the tag timestamp in milliseconds and
// becomes DTS.
//
// Packet.Data is a copy, so body may be a recycled buffer. The payload is
// not validated beyond the tag framing: parse it (SplitAVCC,
// ParseAVCConfig, ParseAudioConfig) before trusting it.
//
// Errors: ErrSkip for tags without media (AVC end of sequence, video info
// frames), ErrUnsupportedCodec for codecs other than H.264 and AAC,
// ErrTruncated for short bodies; anything else means a malformed tag.
func TagToPacket(tagType uint8, timestamp uint32, body []byte) (*Packet, error) {
	dts := time.Duration(timestamp) * time.Millisecond
	switch tagType {
	case TagVideo:
		if len(body) < 1 {
			return nil, fmt.Errorf("video tag: %w", ErrTruncated)
		}
		if body[0]&0x80 != 0 {
			// Enhanced RTMP: the low nibble is a packet type and a FourCC follows.
			if len(body) >= 5 {
				return nil, fmt.Errorf("%w: enhanced rtmp video %q", ErrUnsupportedCodec, body[1:5])
			}
			return nil, fmt.Errorf("%w: enhanced rtmp video", ErrUnsupportedCodec)
		}
		frameType, codec := body[0]>>4, body[0]&0x0f
		if frameType == flvFrameInfo {
			return nil, ErrSkip
		}
		if codec != flvCodecAVC {
			return nil, fmt.Errorf("%w: video codec id %d", ErrUnsupportedCodec, codec)
		}
		if len(body) < 5 {
			return nil, fmt.Errorf("avc tag of %d bytes: %w", len(body), ErrTruncated)
		}
		p := &Packet{
			Kind:  KindVideo,
			Codec: CodecH264,
			Key:   frameType == flvFrameKey,
			DTS:   dts,
			CTS:   time.Duration(int24(body[2:5])) * time.Millisecond,
		}
		switch body[1] {
		case avcPacketHeader:
			p.Header = true
		case avcPacketNALU:
		case avcPacketEOS:
			return nil, ErrSkip
		default:
			return nil, fmt.Errorf("avc packet type %d: unknown", body[1])
		}
		p.Data = clone(body[5:])
		return p, nil

	case TagAudio:
		if len(body) < 1 {
			return nil, fmt.Errorf("audio tag: %w", ErrTruncated)
		}
		if format := body[0] >> 4; format != flvSoundFormatAAC {
			return nil, fmt.Errorf("%w: audio sound format %d", ErrUnsupportedCodec, format)
		}
		if len(body) < 2 {
			return nil, fmt.Errorf("aac tag of %d bytes: %w", len(body), ErrTruncated)
		}
		p := &Packet{Kind: KindAudio, Codec: CodecAAC, DTS: dts}
		switch body[1] {
		case aacPacketHeader:
			p.Header = true
		case aacPacketRaw:
		default:
			return nil, fmt.Errorf("aac packet type %d: unknown", body[1])
		}
		p.Data = clone(body[2:])
		return p, nil

	case TagScript:
		return &Packet{Kind: KindData, DTS: dts, Data: clone(body)}, nil
	}
	return nil, fmt.Errorf("flv tag type %d: unknown", tagType)
}

// AppendTagBody appends the FLV tag body of p (tag header byte(s) + payload)
// to dst and returns it with the tag type and timestamp (milliseconds of
// DTS, wrapping at 2^32 as FLV does; always 0 for onMetaData).
//
// Video tags get frame type 1 when p.Key is set and 2 otherwise, so set Key
// on AVC sequence headers as encoders do. Audio tags always get the header
// byte 0xAF the FLV specification requires for AAC. A packet that FLV cannot
// carry (unknown kind or codec) appends nothing and returns tag type 0.
func AppendTagBody(dst []byte, p *Packet) ([]byte, uint8, uint32) {
	ts := uint32(p.DTS.Milliseconds())
	switch {
	case p.Kind == KindVideo && p.Codec == CodecH264:
		b0 := byte(flvFrameInter<<4 | flvCodecAVC)
		if p.Key {
			b0 = flvFrameKey<<4 | flvCodecAVC
		}
		pt := byte(avcPacketNALU)
		if p.Header {
			pt = avcPacketHeader
		}
		cts := clampInt24(p.CTS.Milliseconds())
		dst = append(dst, b0, pt, byte(cts>>16), byte(cts>>8), byte(cts))
		return append(dst, p.Data...), TagVideo, ts

	case p.Kind == KindAudio && p.Codec == CodecAAC:
		pt := byte(aacPacketRaw)
		if p.Header {
			pt = aacPacketHeader
		}
		dst = append(dst, flvAACHeaderByte, pt)
		return append(dst, p.Data...), TagAudio, ts

	case p.Kind == KindData:
		if IsMetaDataBody(p.Data) {
			// Players (ffmpeg) take script data at any other time for a
			// data track of its own, wherever onMetaData sits in the stream.
			ts = 0
		}
		return append(dst, p.Data...), TagScript, ts
	}
	return dst, 0, 0
}

// AppendTag appends a whole FLV tag (11-byte tag header, body and the 4-byte
// PreviousTagSize) to dst. It appends nothing for a packet FLV cannot carry
// (see AppendTagBody). It does not allocate when dst has room.
func AppendTag(dst []byte, p *Packet) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, TagHeaderSize)...) // no allocation: constant size
	dst, tagType, ts := AppendTagBody(dst, p)
	if tagType == 0 {
		return dst[:start]
	}
	size := len(dst) - start - TagHeaderSize
	putTagHeader(dst[start:], tagType, ts, size)
	return binary.BigEndian.AppendUint32(dst, uint32(TagHeaderSize+size))
}

// AppendRawTag appends a whole FLV tag built from an already encoded body,
// for relaying tags without converting them to Packets.
func AppendRawTag(dst []byte, tagType uint8, timestamp uint32, body []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, TagHeaderSize)...)
	putTagHeader(dst[start:], tagType, timestamp, len(body))
	dst = append(dst, body...)
	return binary.BigEndian.AppendUint32(dst, uint32(TagHeaderSize+len(body)))
}

func putTagHeader(b []byte, tagType uint8, ts uint32, size int) {
	b[0] = tagType
	b[1], b[2], b[3] = byte(size>>16), byte(size>>8), byte(size)
	b[4], b[5], b[6] = byte(ts>>16), byte(ts>>8), byte(ts)
	b[7] = byte(ts >> 24) // TimestampExtended
	b[8], b[9], b[10] = 0, 0, 0
}

// FLVHeader returns the 13-byte FLV file header (with PreviousTagSize0).
func FLVHeader(hasVideo, hasAudio bool) []byte {
	var flags byte
	if hasAudio {
		flags |= 0x04
	}
	if hasVideo {
		flags |= 0x01
	}
	return []byte{'F', 'L', 'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0}
}

// maxFLVHeaderSkip bounds the DataOffset of an FLV header we follow.
const maxFLVHeaderSkip = 1 << 16

// FLVReader reads FLV tags from a byte stream (a file, a pipe from ffmpeg or
// an HTTP-FLV body). It is not safe for concurrent use.
type FLVReader struct {
	r *bufio.Reader
	// MaxTagSize is the largest tag body accepted; larger tags fail with
	// ErrTagTooLarge. NewFLVReader sets it to DefaultMaxTagSize.
	MaxTagSize int
	// HasVideo and HasAudio are the flags of the file header. Writers do
	// not always set them right; treat them as hints.
	HasVideo, HasAudio bool

	buf []byte
	hdr [TagHeaderSize]byte
	err error // sticky: the stream is out of step after a failed read
}

// NewFLVReader reads and checks the FLV header and returns a reader
// positioned at the first tag.
func NewFLVReader(r io.Reader) (*FLVReader, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	var h [9]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, fmt.Errorf("flv header: %w", unexpectedEOF(err))
	}
	if h[0] != 'F' || h[1] != 'L' || h[2] != 'V' {
		return nil, fmt.Errorf("flv header: bad signature %q", h[:3])
	}
	if h[3] != 1 {
		return nil, fmt.Errorf("flv header: version %d unsupported", h[3])
	}
	off := binary.BigEndian.Uint32(h[5:9])
	if off < 9 || off > maxFLVHeaderSkip {
		return nil, fmt.Errorf("flv header: data offset %d out of range", off)
	}
	if _, err := br.Discard(int(off-9) + PrevTagSizeSize); err != nil {
		return nil, fmt.Errorf("flv header: %w", unexpectedEOF(err))
	}
	return &FLVReader{
		r:          br,
		MaxTagSize: DefaultMaxTagSize,
		HasAudio:   h[4]&0x04 != 0,
		HasVideo:   h[4]&0x01 != 0,
	}, nil
}

// ReadTag returns the next tag of any type. body is valid until the next
// call. At the end of the stream it returns io.EOF; a stream cut inside a
// tag gives io.ErrUnexpectedEOF. The PreviousTagSize field is not checked,
// since writers often get it wrong. Errors are final: once ReadTag failed,
// every later call returns the same error.
func (r *FLVReader) ReadTag() (tagType uint8, timestamp uint32, body []byte, err error) {
	if r.err != nil {
		return 0, 0, nil, r.err
	}
	tagType, timestamp, body, err = r.readTag()
	if err != nil {
		r.err = err
	}
	return tagType, timestamp, body, err
}

func (r *FLVReader) readTag() (tagType uint8, timestamp uint32, body []byte, err error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return 0, 0, nil, io.EOF
		}
		return 0, 0, nil, fmt.Errorf("flv tag header: %w", err)
	}
	h := r.hdr[:]
	if h[0]&0x20 != 0 {
		return 0, 0, nil, fmt.Errorf("flv tag type %d: filtered (encrypted) tags are not supported", h[0]&0x1f)
	}
	tagType = h[0] & 0x1f
	size := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	timestamp = uint32(h[7])<<24 | uint32(h[4])<<16 | uint32(h[5])<<8 | uint32(h[6])
	maxSize := r.MaxTagSize
	if maxSize <= 0 {
		maxSize = DefaultMaxTagSize
	}
	if size > maxSize {
		return 0, 0, nil, fmt.Errorf("flv tag of %d bytes, limit %d: %w", size, maxSize, ErrTagTooLarge)
	}
	n := size + PrevTagSizeSize
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return 0, 0, nil, fmt.Errorf("flv tag body: %w", unexpectedEOF(err))
	}
	return tagType, timestamp, r.buf[:size], nil
}

// ReadPacket returns the next audio, video or script tag as a Packet. It
// skips tags of unknown types and tags TagToPacket answers with ErrSkip.
// Other TagToPacket errors (such as ErrUnsupportedCodec) are returned with
// the reader positioned at the next tag, so a caller may log them and call
// again; read errors (see ReadTag) are final. Tell them apart with Err.
func (r *FLVReader) ReadPacket() (*Packet, error) {
	for {
		tagType, ts, body, err := r.ReadTag()
		if err != nil {
			return nil, err
		}
		switch tagType {
		case TagAudio, TagVideo, TagScript:
		default:
			continue
		}
		p, err := TagToPacket(tagType, ts, body)
		if errors.Is(err, ErrSkip) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("flv tag at %d ms: %w", ts, err)
		}
		return p, nil
	}
}

// Err returns the read error that stopped the reader (io.EOF at the end of
// the stream), or nil while it can go on.
func (r *FLVReader) Err() error { return r.err }

// FLVWriter writes Packets as an FLV stream: the file header first, then one
// tag per packet. It is not safe for concurrent use.
type FLVWriter struct {
	w                  io.Writer
	hasVideo, hasAudio bool
	started            bool
	buf                []byte
}

// NewFLVWriter returns a writer; the header flags say which tracks follow.
func NewFLVWriter(w io.Writer, hasVideo, hasAudio bool) *FLVWriter {
	return &FLVWriter{w: w, hasVideo: hasVideo, hasAudio: hasAudio}
}

// WritePacket writes p as one tag, preceded by the FLV header on the first
// call. Packets FLV cannot carry give an error and write nothing.
func (w *FLVWriter) WritePacket(p *Packet) error {
	w.buf = w.buf[:0]
	if !w.started {
		w.buf = append(w.buf, FLVHeader(w.hasVideo, w.hasAudio)...)
	}
	n := len(w.buf)
	w.buf = AppendTag(w.buf, p)
	if len(w.buf) == n {
		return fmt.Errorf("flv write: cannot carry %s/%s packet", p.Kind, p.Codec)
	}
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("flv write: %w", err)
	}
	w.started = true
	return nil
}

// int24 decodes a big-endian signed 24-bit integer.
func int24(b []byte) int32 {
	return int32(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8) >> 8
}

func clampInt24(v int64) int32 {
	const lim = 1<<23 - 1
	switch {
	case v > lim:
		return lim
	case v < -lim-1:
		return -lim - 1
	}
	return int32(v)
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
