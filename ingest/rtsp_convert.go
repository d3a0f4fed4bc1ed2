package ingest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpfragmented"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/sdp"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/livefuse/livefuse/av"
)

// errRTSPUnsupported marks a session description livefuse cannot carry.
var errRTSPUnsupported = errors.New("unsupported media")

// rtspPTSFunc returns the presentation time of an RTP packet in clock-rate
// units on the session's common timeline (ServerSession.PacketPTS2 or
// Client.PacketPTS2); ok is false while the track has no time base yet.
type rtspPTSFunc func(medi *description.Media, pkt *rtp.Packet) (int64, bool)

// rtspTracks are the medias of a session livefuse uses.
type rtspTracks struct {
	videoMedia *description.Media
	video      *format.H264
	audioMedia *description.Media
	// audio is AAC as *format.MPEG4Audio (mpeg4-generic, RFC 3640) or
	// *format.MPEG4AudioLATM (MP4A-LATM, RFC 6416, with its
	// StreamMuxConfig in the SDP, as GStreamer's rtspclientsink sends).
	audio       format.Format
	audioASC    *mpeg4audio.AudioSpecificConfig
	audioConfig []byte // AudioSpecificConfig; for mpeg4-generic exactly as the SDP carries it
	skipped     []string
}

// rtspPickTracks finds the H.264 and AAC tracks of desc. sdpBody is the raw
// SDP desc was parsed from (may be nil), used to keep the AAC config bytes
// as the encoder wrote them. With strict set (publishers) any other format
// refuses the whole session, because the outputs could not carry it; without
// (pulls) other formats are skipped and listed in skipped.
func rtspPickTracks(desc *description.Session, sdpBody []byte, strict bool) (*rtspTracks, error) {
	t := &rtspTracks{}
	for i, medi := range desc.Medias {
		for _, forma := range medi.Formats {
			reason := ""
			switch f := forma.(type) {
			case *format.H264:
				switch {
				case t.video != nil:
					reason = "a second H.264 track"
				case f.PacketizationMode >= 2:
					reason = "H.264 packetization-mode " + strconv.Itoa(f.PacketizationMode)
				default:
					t.videoMedia, t.video = medi, f
				}
			case *format.MPEG4Audio:
				switch {
				case t.audio != nil:
					reason = "a second AAC track"
				case f.Config == nil || f.Config.SampleRate <= 0:
					reason = "AAC without a config"
				default:
					t.audioMedia, t.audio, t.audioASC = medi, f, f.Config
					t.audioConfig = rtspSDPAudioConfig(sdpBody, i, f)
				}
			case *format.MPEG4AudioLATM:
				asc, why := rtspLATMConfig(f)
				switch {
				case t.audio != nil:
					reason = "a second AAC track"
				case why != "":
					reason = why
				default:
					cfg, err := asc.Marshal()
					if err != nil {
						reason = "MP4A-LATM: " + err.Error()
						break
					}
					t.audioMedia, t.audio, t.audioASC, t.audioConfig = medi, f, asc, cfg
				}
			default:
				reason = forma.Codec()
			}
			if reason == "" {
				continue
			}
			if strict {
				return nil, fmt.Errorf("%w: %s in %s track %d (livefuse carries H.264 video and AAC audio only)",
					errRTSPUnsupported, reason, medi.Type, i)
			}
			t.skipped = append(t.skipped, reason)
		}
	}
	if t.video == nil && t.audio == nil {
		return nil, fmt.Errorf("%w: no H.264 or AAC track", errRTSPUnsupported)
	}
	return t, nil
}

// rtspLATMConfig returns the AudioSpecificConfig of an MP4A-LATM track, or
// why livefuse cannot take it: the config must be in the SDP (cpresent=0;
// an in-band config could change mid-stream) and describe one program of
// one AAC layer.
//
// What the StreamMuxConfig says after the AudioSpecificConfig (frame
// length type, other data) is not used: GStreamer's rtpmp4apay ends its
// config with the encoder's AudioSpecificConfig (5 bytes from libav's
// encoder, whose SBR signalling gortsplib does not read), so those fields
// come out as garbage. AAC in LATM always carries frame lengths in the
// element (frame length type 0); rtspLATMFrames reads it that way, as
// ffmpeg does.
func rtspLATMConfig(f *format.MPEG4AudioLATM) (*mpeg4audio.AudioSpecificConfig, string) {
	c := f.StreamMuxConfig
	switch {
	case f.CPresent || c == nil:
		return nil, "MP4A-LATM with its config in band (cpresent=1)"
	case len(c.Programs) != 1 || len(c.Programs[0].Layers) != 1:
		return nil, "MP4A-LATM with several programs or layers"
	}
	asc := c.Programs[0].Layers[0].AudioSpecificConfig
	if asc == nil || asc.SampleRate <= 0 {
		return nil, "MP4A-LATM without an audio config"
	}
	return asc, ""
}

// rtspSDPAudioConfig returns the config= bytes of the fmtp line of media
// index i in the raw SDP, when they describe the same AudioSpecificConfig
// gortsplib parsed; otherwise (or without an SDP) it marshals f.Config.
// Keeping the original bytes keeps e.g. ffmpeg's explicit "no SBR"
// extension, so the AAC header matches the encoder's to the byte.
func rtspSDPAudioConfig(sdpBody []byte, i int, f *format.MPEG4Audio) []byte {
	marshaled, err := f.Config.Marshal()
	if err != nil {
		marshaled = nil
	}
	if len(sdpBody) == 0 {
		return marshaled
	}
	var ssd sdp.SessionDescription
	if err := ssd.Unmarshal(sdpBody); err != nil || i >= len(ssd.MediaDescriptions) {
		return marshaled
	}
	prefix := strconv.Itoa(int(f.PayloadTyp)) + " "
	for _, attr := range ssd.MediaDescriptions[i].Attributes {
		if attr.Key != "fmtp" || !strings.HasPrefix(attr.Value, prefix) {
			continue
		}
		for _, kv := range strings.Split(attr.Value[len(prefix):], ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok || !strings.EqualFold(k, "config") {
				continue
			}
			raw, err := hex.DecodeString(v)
			if err != nil {
				return marshaled
			}
			if c, err := av.ParseAudioConfig(raw); err != nil || c.SampleRate != f.Config.SampleRate ||
				c.ChannelCount != f.Config.ChannelCount {
				return marshaled
			}
			return raw
		}
	}
	return marshaled
}

// rtspConverter turns the RTP packets of one RTSP session (a publisher on
// the server or a pulled source) into av.Packets on one timeline: DTS and
// PTS count from the session's first packet, video and audio alike.
//
// Output order: onMetaData, the AVC and AAC sequence headers, then frames.
// Video starts at the first IDR; a new AVC header precedes the keyframe
// whose in-band SPS/PPS differ from the last one sent. Video payloads are
// the access unit's NAL units as received, in AVCC, without access unit
// delimiters (FLV carries frame boundaries itself); in-band SPS/PPS and SEI
// stay, as ffmpeg keeps them when it remuxes the same stream to FLV.
type rtspConverter struct {
	log   *slog.Logger
	pts   rtspPTSFunc
	write func(*av.Packet)

	mu      sync.Mutex
	closed  bool
	started bool // metadata and known headers written
	video   *rtspVideo
	audio   *rtspAudio
	errs    int // decode errors, for rate-limited logging
}

type rtspVideo struct {
	media  *description.Media
	format *format.H264
	dec    *rtph264.Decoder
	dts    h264.DTSExtractor

	sps, pps         []byte // latest parameter sets (SDP or in-band)
	sentSPS, sentPPS []byte // parameter sets of the last header written
	synced           bool   // an IDR went out; later frames may follow
	lastDTS          time.Duration

	// mirror of the decoder's frame buffer: which RTP timestamp (and PTS)
	// its pending NAL units belong to, because it returns an access unit
	// either at the marker bit or when the timestamp changes.
	bufHas   bool
	bufTS    uint32
	bufPTS   int64
	bufPTSOK bool
}

type rtspAudio struct {
	media       *description.Media
	payloadType uint8
	asc         *mpeg4audio.AudioSpecificConfig
	// decode returns the AAC frames (raw, as FLV carries them) of an RTP
	// packet; rtpmpeg4audio.ErrMorePacketsNeeded or
	// rtpfragmented.ErrMorePacketsNeeded while a frame is incomplete.
	decode    func(*rtp.Packet) ([][]byte, error)
	config    []byte
	frameLen  int64 // samples per AAC frame, in clock-rate units
	clockRate int
	lastDTS   time.Duration
	sent      bool // a frame went out
}

// newRTSPConverter prepares decoders for the picked tracks. write receives
// every packet; it is called with the converter's lock held, in order.
func newRTSPConverter(t *rtspTracks, pts rtspPTSFunc, write func(*av.Packet), log *slog.Logger) (*rtspConverter, error) {
	c := &rtspConverter{log: log, pts: pts, write: write}
	if t.video != nil {
		dec, err := t.video.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("h264 rtp decoder: %w", err)
		}
		v := &rtspVideo{media: t.videoMedia, format: t.video, dec: dec}
		v.dts.Initialize()
		sps, pps := t.video.SafeParams()
		if len(sps) > 0 && len(pps) > 0 && av.NALUType(sps) == av.NALUTypeSPS && av.NALUType(pps) == av.NALUTypePPS {
			v.sps, v.pps = bytes.Clone(sps), bytes.Clone(pps)
		}
		c.video = v
	}
	if t.audio != nil {
		decode, err := rtspAudioDecoder(t.audio)
		if err != nil {
			return nil, err
		}
		frameLen := int64(1024)
		if t.audioASC.FrameLengthFlag {
			frameLen = 960
		}
		c.audio = &rtspAudio{
			media: t.audioMedia, payloadType: t.audio.PayloadType(), asc: t.audioASC, decode: decode,
			config: t.audioConfig, frameLen: frameLen, clockRate: t.audio.ClockRate(),
		}
	}
	return c, nil
}

// rtspAudioDecoder returns the frame decoder for an AAC track: gortsplib's
// for mpeg4-generic; for MP4A-LATM gortsplib's reassembly of the
// AudioMuxElement, then rtspLATMFrames.
func rtspAudioDecoder(f format.Format) (func(*rtp.Packet) ([][]byte, error), error) {
	switch f := f.(type) {
	case *format.MPEG4Audio:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("aac rtp decoder: %w", err)
		}
		return dec.Decode, nil
	case *format.MPEG4AudioLATM:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("mp4a-latm rtp decoder: %w", err)
		}
		subFrames := int(f.StreamMuxConfig.NumSubFrames) + 1
		return func(pkt *rtp.Packet) ([][]byte, error) {
			el, err := dec.Decode(pkt)
			if err != nil {
				return nil, err
			}
			return rtspLATMFrames(subFrames, el)
		}, nil
	}
	return nil, fmt.Errorf("%w: audio format %s", errRTSPUnsupported, f.Codec())
}

// rtspLATMFrames returns the AAC frames of an AudioMuxElement of
// subFrames subframes, one program of one layer each, without a config in
// band (cpresent=0; ISO 14496-3 §1.7.3): each frame is its length (bytes of
// 255 summed, up to one below 255), then the frame. Lengths are checked
// against what is left; bytes after the last frame (other data) are
// ignored. The frames share element's memory.
func rtspLATMFrames(subFrames int, element []byte) ([][]byte, error) {
	frames := make([][]byte, 0, subFrames)
	for range subFrames {
		n := 0
		for {
			if len(element) == 0 {
				return nil, errors.New("mp4a-latm: element ends inside a frame length")
			}
			b := element[0]
			element = element[1:]
			n += int(b)
			if b != 255 {
				break
			}
		}
		if n > len(element) {
			return nil, fmt.Errorf("mp4a-latm: frame of %d bytes, %d left in the element", n, len(element))
		}
		frames = append(frames, element[:n:n])
		element = element[n:]
	}
	return frames, nil
}

// close stops the converter; packets after it are ignored.
func (c *rtspConverter) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// handleRTP takes one RTP packet of the session.
func (c *rtspConverter) handleRTP(medi *description.Media, pkt *rtp.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	switch {
	case c.video != nil && medi == c.video.media && pkt.PayloadType == c.video.format.PayloadTyp:
		c.handleVideo(pkt)
	case c.audio != nil && medi == c.audio.media && pkt.PayloadType == c.audio.payloadType:
		c.handleAudio(pkt)
	}
}

// decodeErr logs a bad packet; a broken or hostile stream logs a bounded
// number of lines rather than one per packet.
func (c *rtspConverter) decodeErr(what string, err error) {
	c.errs++
	if c.errs <= 10 || c.errs%1000 == 0 {
		c.log.Warn("rtsp: dropping undecodable data", "track", what, "err", err, "count", c.errs)
	}
}

// start writes onMetaData and the sequence headers known so far, once,
// at dts (the time of the first frame).
func (c *rtspConverter) start(dts time.Duration) {
	if c.started {
		return
	}
	c.started = true
	var (
		width, height int
		fps           float64
		rate, chans   int
	)
	if v := c.video; v != nil && v.sps != nil {
		var s h264.SPS
		if err := s.Unmarshal(v.sps); err == nil {
			width, height, fps = s.Width(), s.Height(), s.FPS()
		}
	}
	if a := c.audio; a != nil {
		rate, chans = a.asc.SampleRate, a.asc.ChannelCount
		if a.asc.ExtensionSampleRate != 0 {
			rate = a.asc.ExtensionSampleRate
		}
	}
	c.write(&av.Packet{
		Kind: av.KindData,
		DTS:  dts,
		Data: av.EncodeScript("onMetaData", av.MetaData(width, height, fps, 0, rate, chans)),
	})
	if v := c.video; v != nil && v.sps != nil {
		c.writeVideoHeader(dts)
	}
	if a := c.audio; a != nil && len(a.config) > 0 {
		c.write(&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, DTS: dts, Data: bytes.Clone(a.config)})
	}
}

// writeVideoHeader sends the AVC decoder configuration for the current
// SPS/PPS at dts.
func (c *rtspConverter) writeVideoHeader(dts time.Duration) bool {
	v := c.video
	cfg, err := av.BuildAVCConfig(v.sps, v.pps)
	if err != nil {
		c.decodeErr("video", fmt.Errorf("sequence header: %w", err))
		return false
	}
	c.write(&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, DTS: dts, Data: cfg.Marshal()})
	v.sentSPS, v.sentPPS = v.sps, v.pps
	return true
}

func (c *rtspConverter) handleVideo(pkt *rtp.Packet) {
	v := c.video
	pts, ptsOK := c.pts(v.media, pkt)
	au, err := v.dec.Decode(pkt)

	// Which timestamp does the returned access unit carry?
	fragmentPending := len(pkt.Payload) >= 2 && pkt.Payload[0]&0x1f == byte(h264.NALUTypeFUA) && pkt.Payload[1]&0x40 == 0
	auPTS, auOK := pts, ptsOK
	switch {
	case err == nil:
		if v.bufHas && v.bufTS != pkt.Timestamp {
			// split by timestamp: the previous access unit came out and
			// this packet's NAL units wait in the decoder.
			auPTS, auOK = v.bufPTS, v.bufPTSOK
			v.bufTS, v.bufPTS, v.bufPTSOK = pkt.Timestamp, pts, ptsOK
		} else {
			v.bufHas = false
		}
	case errors.Is(err, rtph264.ErrMorePacketsNeeded):
		if !fragmentPending {
			v.bufHas, v.bufTS, v.bufPTS, v.bufPTSOK = true, pkt.Timestamp, pts, ptsOK
		}
		return
	case errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious):
		return // joined in the middle of a fragmented NAL unit
	default:
		c.decodeErr("video", err)
		return
	}
	if !auOK {
		return // no time base yet (before the track's first random access point)
	}
	c.handleAccessUnit(au, auPTS)
}

func (c *rtspConverter) handleAccessUnit(au [][]byte, pts int64) {
	v := c.video
	nalus := au[:0]
	idr, slice := false, false
	paramsChanged := false
	for _, nalu := range au {
		if len(nalu) == 0 {
			continue
		}
		switch av.NALUType(nalu) {
		case av.NALUTypeAUD:
			continue
		case av.NALUTypeIDR:
			idr, slice = true, true
		case av.NALUTypeNonIDR, 2, 3, 4: // coded slices and data partitions
			slice = true
		case av.NALUTypeSPS:
			if !bytes.Equal(nalu, v.sps) {
				v.sps = bytes.Clone(nalu)
				paramsChanged = true
			}
		case av.NALUTypePPS:
			if !bytes.Equal(nalu, v.pps) {
				v.pps = bytes.Clone(nalu)
				paramsChanged = true
			}
		}
		nalus = append(nalus, nalu)
	}
	if !slice {
		return // parameter sets or SEI alone: no picture to send
	}
	if !v.synced && !idr {
		return // decoders start at an IDR
	}
	if v.sps == nil || v.pps == nil {
		if idr {
			c.decodeErr("video", errors.New("IDR without SPS/PPS (none in the SDP nor in band)"))
		}
		return
	}

	// The DTS extractor reads the SPS from the access unit; give it the
	// current one when the IDR came without (SPS only in the SDP).
	dtsIn := nalus
	if idr && !rtspHasNALU(nalus, av.NALUTypeSPS) {
		dtsIn = append([][]byte{v.sps, v.pps}, nalus...)
	}
	if paramsChanged && !idr {
		// new parameter sets take effect at the next IDR; the extractor
		// would reset on the SPS here and then refuse the non-IDR frame.
		dtsIn = rtspWithoutParams(nalus)
	}
	dtsTicks, err := v.dts.Extract(dtsIn, pts)
	if err != nil {
		c.decodeErr("video", fmt.Errorf("dts: %w", err))
		// start over at the next IDR with a fresh extractor
		v.synced = false
		v.dts = h264.DTSExtractor{}
		v.dts.Initialize()
		return
	}
	clock := v.format.ClockRate()
	ptsD := rtspTicks(pts, clock)
	dts := max(rtspTicks(dtsTicks, clock), 0, v.lastDTS)
	if ptsD < dts {
		ptsD = dts
	}

	c.start(dts)
	if idr && (!bytes.Equal(v.sps, v.sentSPS) || !bytes.Equal(v.pps, v.sentPPS)) {
		if !c.writeVideoHeader(dts) {
			return
		}
	}
	v.synced = true
	v.lastDTS = dts
	c.write(&av.Packet{
		Kind:  av.KindVideo,
		Codec: av.CodecH264,
		Key:   idr,
		DTS:   dts,
		CTS:   ptsD - dts,
		Data:  av.AppendAVCC(make([]byte, 0, rtspAVCCSize(nalus)), nalus),
	})
}

func (c *rtspConverter) handleAudio(pkt *rtp.Packet) {
	a := c.audio
	pts, ok := c.pts(a.media, pkt)
	aus, err := a.decode(pkt)
	if err != nil {
		if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) && !errors.Is(err, rtpfragmented.ErrMorePacketsNeeded) {
			c.decodeErr("audio", err)
		}
		return
	}
	if !ok {
		return
	}
	// a fragmented AU comes out with the last packet, whose timestamp is
	// the AU's; several AUs in one packet follow each other by one frame.
	c.start(max(rtspTicks(pts, a.clockRate), 0))
	for i, au := range aus {
		if len(au) == 0 {
			continue
		}
		dts := max(rtspTicks(pts+int64(i)*a.frameLen, a.clockRate), 0)
		if a.sent && dts < a.lastDTS {
			dts = a.lastDTS
		}
		a.sent, a.lastDTS = true, dts
		c.write(&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: dts, Data: bytes.Clone(au)})
	}
}

// rtspTicks converts clock-rate units to a Duration without overflowing.
func rtspTicks(v int64, clockRate int) time.Duration {
	if clockRate <= 0 {
		return 0
	}
	cr := int64(clockRate)
	return time.Duration(v/cr)*time.Second + time.Duration(v%cr*int64(time.Second)/cr)
}

func rtspHasNALU(nalus [][]byte, typ uint8) bool {
	for _, n := range nalus {
		if av.NALUType(n) == typ {
			return true
		}
	}
	return false
}

func rtspWithoutParams(nalus [][]byte) [][]byte {
	out := make([][]byte, 0, len(nalus))
	for _, n := range nalus {
		if t := av.NALUType(n); t != av.NALUTypeSPS && t != av.NALUTypePPS {
			out = append(out, n)
		}
	}
	return out
}

func rtspAVCCSize(nalus [][]byte) int {
	n := 0
	for _, nalu := range nalus {
		n += 4 + len(nalu)
	}
	return n
}
