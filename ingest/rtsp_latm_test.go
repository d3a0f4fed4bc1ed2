package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/sdp"
	"github.com/pion/rtp"

	"github.com/livefuse/livefuse/av"
)

// rtspLATMSDP is what GStreamer 1.22's rtspclientsink announces for H.264
// and AAC from avenc_aac (its default AAC payloader, rtpmp4apay: MP4A-LATM
// with the StreamMuxConfig in the SDP).
const rtspLATMSDP = "v=0\r\no=- 2700396522 1 IN IP4 127.0.0.1\r\ns=Session streamed with GStreamer\r\n" +
	"i=rtspclientsink\r\nt=0 0\r\na=tool:GStreamer\r\n" +
	"m=audio 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 MP4A-LATM/44100\r\n" +
	"a=fmtp:96 cpresent=0;config=40002410adca00\r\na=control:stream=1\r\n" +
	"m=video 0 RTP/AVP 99\r\nc=IN IP4 0.0.0.0\r\nb=AS:2097\r\na=rtpmap:99 H264/90000\r\n" +
	"a=fmtp:99 packetization-mode=1;sprop-parameter-sets=Z2QAFKyyAoP2AtQYGBqUAAADAAQAAAMAyjxQqSA=,aOvMsiw=\r\n" +
	"a=control:stream=0\r\n"

func rtspParseSDP(t testing.TB, body string) *description.Session {
	t.Helper()
	var ssd sdp.SessionDescription
	if err := ssd.Unmarshal([]byte(body)); err != nil {
		t.Fatal(err)
	}
	var desc description.Session
	if err := desc.Unmarshal(&ssd); err != nil {
		t.Fatal(err)
	}
	return &desc
}

// TestRTSPLATMConvert: AAC in MP4A-LATM comes out as the raw frames and
// AudioSpecificConfig an RTMP publisher of the same audio would send.
func TestRTSPLATMConvert(t *testing.T) {
	desc := rtspParseSDP(t, rtspLATMSDP)
	tracks, err := rtspPickTracks(desc, []byte(rtspLATMSDP), true)
	if err != nil {
		t.Fatal(err)
	}
	latm, ok := tracks.audio.(*format.MPEG4AudioLATM)
	if !ok {
		t.Fatalf("audio track %T", tracks.audio)
	}
	// AAC LC, 44.1 kHz, mono: the AudioSpecificConfig avenc_aac writes.
	if want := []byte{0x12, 0x08}; !bytes.Equal(tracks.audioConfig, want) {
		t.Fatalf("audio config %x, want %x", tracks.audioConfig, want)
	}
	var got []*av.Packet
	conv, err := newRTSPConverter(tracks, func(_ *description.Media, pkt *rtp.Packet) (int64, bool) {
		return int64(pkt.Timestamp), true
	}, func(p *av.Packet) { got = append(got, p) }, rtspTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := latm.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	// Frame sizes around the 255-byte steps of LATM's length coding, and
	// one that spans several RTP packets.
	var frames [][]byte
	for i, n := range []int{1, 254, 255, 256, 600, 4000} {
		frame := bytes.Repeat([]byte{byte(i + 1)}, n)
		frames = append(frames, frame)
		pkts, err := enc.Encode(rtspLATMElement(frame))
		if err != nil {
			t.Fatal(err)
		}
		for _, pkt := range pkts {
			pkt.Timestamp = uint32(i * 1024)
			conv.handleRTP(tracks.audioMedia, pkt)
		}
	}
	if len(got) == 0 || got[0].Kind != av.KindData {
		t.Fatalf("first packet %+v: want onMetaData", got)
	}
	if _, md, err := av.DecodeScript(got[0].Data); err != nil || md["audiosamplerate"] != 44100.0 {
		t.Errorf("metadata %v: %v", md, err)
	}
	var hdr *av.Packet
	var out []*av.Packet
	for _, p := range got {
		switch {
		case p.Kind == av.KindAudio && p.Header:
			hdr = p
		case p.Kind == av.KindAudio:
			if hdr == nil {
				t.Fatal("AAC frame before the AAC header")
			}
			out = append(out, p)
		}
	}
	if hdr == nil || !bytes.Equal(hdr.Data, []byte{0x12, 0x08}) {
		t.Fatalf("AAC header %+v, want 1208", hdr)
	}
	if len(out) != len(frames) {
		t.Fatalf("%d frames out, want %d", len(out), len(frames))
	}
	for i, p := range out {
		want := time.Duration(i*1024) * time.Second / 44100
		if !bytes.Equal(p.Data, frames[i]) || p.DTS != want || p.Codec != av.CodecAAC {
			t.Errorf("frame %d: %d bytes at %v, want %d bytes at %v", i, len(p.Data), p.DTS, len(frames[i]), want)
		}
	}
	// A damaged element is dropped with a log line, not passed on.
	n := len(got)
	conv.handleRTP(tracks.audioMedia, &rtp.Packet{Header: rtp.Header{PayloadType: 96, Marker: true, Timestamp: 9 * 1024}, Payload: []byte{0xff, 0xff}})
	if len(got) != n {
		t.Errorf("damaged element gave %d packets", len(got)-n)
	}
}

// TestRTSPLATMRefused: LATM forms livefuse does not take are refused with a
// reason that names them.
func TestRTSPLATMRefused(t *testing.T) {
	cpresent := strings.Replace(rtspLATMSDP, "MP4A-LATM/44100", "MP4A-LATM/90000/1", 1)
	cpresent = strings.Replace(cpresent, "cpresent=0;config=40002410adca00", "cpresent=1", 1)
	_, err := rtspPickTracks(rtspParseSDP(t, cpresent), []byte(cpresent), true)
	if !errors.Is(err, errRTSPUnsupported) || !strings.Contains(err.Error(), "cpresent=1") {
		t.Errorf("cpresent=1: %v", err)
	}
	// A pull skips the track and keeps the video.
	tracks, err := rtspPickTracks(rtspParseSDP(t, cpresent), []byte(cpresent), false)
	if err != nil || tracks.audio != nil || tracks.video == nil || len(tracks.skipped) != 1 {
		t.Errorf("pull of cpresent=1: %+v, %v", tracks, err)
	}
}

// rtspLATMElement is an AudioMuxElement of one frame as rtpmp4apay
// writes it: the length in bytes of 255 and a last one below, the frame.
func rtspLATMElement(frame []byte) []byte {
	var el []byte
	n := len(frame)
	for ; n >= 255; n -= 255 {
		el = append(el, 255)
	}
	return append(append(el, byte(n)), frame...)
}

// TestRTSPLATMFrames: subframes, frame lengths at the 255 steps, and
// elements that end early.
func TestRTSPLATMFrames(t *testing.T) {
	two := append(rtspLATMElement(bytes.Repeat([]byte{1}, 255)), rtspLATMElement([]byte{2, 2})...)
	for _, tc := range []struct {
		name      string
		subFrames int
		el        []byte
		want      []int // frame sizes; nil: an error
	}{
		{"one frame", 1, rtspLATMElement(make([]byte, 300)), []int{300}},
		{"two subframes", 2, two, []int{255, 2}},
		{"other data after the frame", 1, append(rtspLATMElement([]byte{1}), 9, 9), []int{1}},
		{"empty frame", 1, []byte{0}, []int{0}},
		{"empty element", 1, nil, nil},
		{"length runs out", 1, []byte{255, 255}, nil},
		{"frame longer than the element", 1, []byte{10, 1, 2}, nil},
		{"second subframe missing", 2, rtspLATMElement([]byte{1}), nil},
	} {
		frames, err := rtspLATMFrames(tc.subFrames, tc.el)
		if (err != nil) != (tc.want == nil) {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		var sizes []int
		for _, f := range frames {
			sizes = append(sizes, len(f))
		}
		if fmt.Sprint(sizes) != fmt.Sprint(tc.want) && tc.want != nil {
			t.Errorf("%s: frames of %v bytes, want %v", tc.name, sizes, tc.want)
		}
	}
}

// FuzzRTSPLATMFrames parses arbitrary AudioMuxElements: no panic, frames
// only from within the input.
func FuzzRTSPLATMFrames(f *testing.F) {
	for _, s := range [][]byte{nil, {0}, {3, 1, 2, 3}, {0xff, 0x05, 1, 2}, {0xff, 0xff, 0xff}, append([]byte{0xff, 0x01}, make([]byte, 256)...)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, sub := range []int{1, 4, 64} {
			frames, err := rtspLATMFrames(sub, data)
			total := 0
			for _, fr := range frames {
				total += len(fr)
			}
			if err == nil && (total > len(data) || len(frames) != sub) {
				t.Fatalf("%d frames of %d bytes from %d bytes", len(frames), total, len(data))
			}
		}
	})
}
