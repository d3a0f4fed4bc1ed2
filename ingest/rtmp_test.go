package ingest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

func TestRTMPConfigDefaults(t *testing.T) {
	tests := []struct {
		in, want RTMPConfig
	}{
		{RTMPConfig{}, RTMPConfig{Addr: ":1935", MaxMessageSize: 8 << 20, ChunkSize: 4096}},
		{RTMPConfig{Addr: ":1", MaxMessageSize: 1 << 30, ChunkSize: 1}, RTMPConfig{Addr: ":1", MaxMessageSize: rtmpMaxPayload, ChunkSize: 128}},
		{RTMPConfig{ChunkSize: 1 << 20}, RTMPConfig{Addr: ":1935", MaxMessageSize: 8 << 20, ChunkSize: 64 << 10}},
	}
	if got := DefaultRTMPConfig(); got != tests[0].want {
		t.Errorf("DefaultRTMPConfig() = %+v", got)
	}
	for _, tt := range tests {
		if got := tt.in.normalize(); got != tt.want {
			t.Errorf("normalize(%+v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestRTMPStartErrors(t *testing.T) {
	s := NewRTMPServer(RTMPConfig{Addr: "127.0.0.1:0"}, Deps{Sink: newRTMPFakeSink()}, nil)
	if err := s.Start(); err == nil {
		t.Error("Start without Auth succeeded")
	}
	a, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, nil)
	b := NewRTMPServer(RTMPConfig{Addr: a.Addr().String()}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}}, nil)
	if err := b.Start(); err == nil || !strings.Contains(err.Error(), a.Addr().String()) {
		t.Errorf("Start on a used port: %v", err)
	}
	b.Close()
}

// TestRTMPPublishFFmpeg pushes an H.264 (B-frames) + AAC clip with ffmpeg
// -c copy and checks the feed gets exactly the clip's packets.
func TestRTMPPublishFFmpeg(t *testing.T) {
	clip := rtmpClip(t, 3)
	ref := rtmpReadClip(t, clip)
	nVideo := rtmpProbeVideoPackets(t, clip)

	sink := newRTMPFakeSink()
	s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: sink, Auth: &rtmpFakeAuth{token: "T"}}, nil)
	out, err := rtmpRun(t, 60*time.Second, "ffmpeg", "-hide_banner", "-nostdin", "-re", "-i", clip,
		"-c", "copy", "-f", "flv", rtmpURL(s, "/live/demo?token=T"))
	if err != nil {
		t.Fatalf("ffmpeg push: %v\n%s", err, out)
	}
	w := sink.waitWriter(t, 1)
	rtmpWaitFor(t, 10*time.Second, "feed closed", w.isClosed)
	if w.stream != "live/demo" || w.feed != "main" || w.src.Protocol != "rtmp" || !strings.HasPrefix(w.src.Remote, "127.0.0.1:") {
		t.Errorf("publish %s feed %s source %+v", w.stream, w.feed, w.src)
	}
	got := w.packets()

	// Metadata is the FLV script body: "onMetaData" and an ECMA array.
	data := rtmpOfKind(got, av.KindData, false)
	if len(data) != 1 {
		t.Fatalf("%d data packets, want 1", len(data))
	}
	if name, vals, err := av.DecodeScript(data[0].Data); err != nil || name != "onMetaData" || vals["width"] != 320.0 {
		t.Errorf("metadata %q %v: %v", name, vals, err)
	}
	if !bytes.HasPrefix(data[0].Data, []byte("\x02\x00\x0aonMetaData")) {
		t.Errorf("metadata starts %q, want the onMetaData string", data[0].Data[:min(16, len(data[0].Data))])
	}

	// Sequence headers come before the media of their kind.
	for _, k := range []av.Kind{av.KindVideo, av.KindAudio} {
		var first *av.Packet
		for _, p := range got {
			if p.Kind == k {
				first = p
				break
			}
		}
		if first == nil || !first.Header {
			t.Errorf("first %v packet is not a sequence header: %+v", k, first)
		}
	}
	video := rtmpOfKind(got, av.KindVideo, false)
	if len(video) != nVideo {
		t.Errorf("%d video packets, ffprobe counts %d", len(video), nVideo)
	}
	if len(video) == 0 || !video[0].Key {
		t.Fatal("first video packet is not a keyframe")
	}
	for _, k := range []av.Kind{av.KindVideo, av.KindAudio} {
		ps := rtmpOfKind(got, k, false)
		for i := 1; i < len(ps); i++ {
			if ps[i].DTS < ps[i-1].DTS {
				t.Fatalf("%v DTS goes back at %d: %v after %v", k, i, ps[i].DTS, ps[i-1].DTS)
			}
		}
	}
	// -c copy: every video and audio packet is the clip's, in order.
	for _, k := range []av.Kind{av.KindVideo, av.KindAudio} {
		want, have := rtmpOfKind(ref, k, false), rtmpOfKind(got, k, false)
		if len(want) != len(have) {
			t.Errorf("%v: %d packets, clip has %d", k, len(have), len(want))
			continue
		}
		for i := range want {
			if err := rtmpSamePacket(have[i], want[i]); err != nil {
				t.Fatalf("%v packet %d: %v", k, i, err)
			}
		}
	}
}

func rtmpSamePacket(got, want *av.Packet) error {
	switch {
	case got.Kind != want.Kind || got.Codec != want.Codec || got.Header != want.Header || got.Key != want.Key:
		return fmt.Errorf("got %v/%v header=%v key=%v, want %v/%v header=%v key=%v",
			got.Kind, got.Codec, got.Header, got.Key, want.Kind, want.Codec, want.Header, want.Key)
	case got.DTS != want.DTS || got.CTS != want.CTS:
		return fmt.Errorf("got DTS %v CTS %v, want %v %v", got.DTS, got.CTS, want.DTS, want.CTS)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Errorf("data differs (%d bytes, want %d)", len(got.Data), len(want.Data))
	}
	return nil
}
