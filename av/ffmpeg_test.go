package av

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFFmpegFLV checks the conversions against a real FLV that ffmpeg
// writes (x264 with B-frames, AAC, onMetaData), and checks what they
// produce with ffmpeg's own demuxers and decoders.
func TestFFmpegFLV(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not on PATH")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "out.flv")
	runFFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine",
		"-t", "2", "-c:v", "libx264", "-g", "50", "-bf", "2", "-c:a", "aac", "-f", "flv", src)
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("remux is byte exact", func(t *testing.T) {
		r, err := NewFLVReader(bytes.NewReader(orig))
		if err != nil {
			t.Fatal(err)
		}
		out := FLVHeader(r.HasVideo, r.HasAudio)
		tags, skipped := 0, 0
		for {
			tagType, ts, body, err := r.ReadTag()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			tags++
			p, err := TagToPacket(tagType, ts, body)
			switch {
			case errors.Is(err, ErrSkip):
				skipped++
				out = AppendRawTag(out, tagType, ts, body)
				continue
			case err != nil:
				t.Fatalf("tag %d: %v", tags, err)
			}
			n := len(out)
			out = AppendTag(out, p)
			if got := out[n+TagHeaderSize : len(out)-PrevTagSizeSize]; !bytes.Equal(got, body) {
				t.Fatalf("tag %d (type %d at %d ms): payload differs", tags, tagType, ts)
			}
		}
		if tags < 100 || skipped != 1 {
			t.Fatalf("%d tags, %d skipped: want 50 video + ~87 audio + metadata, and the end of sequence skipped", tags, skipped)
		}
		if !bytes.Equal(out, orig) {
			t.Fatalf("remuxed file differs (%d bytes, original %d)", len(out), len(orig))
		}
	})

	packets := readAllPackets(t, orig)

	t.Run("packets through FLVWriter keep ffmpeg's framemd5", func(t *testing.T) {
		var buf bytes.Buffer
		w := NewFLVWriter(&buf, true, true)
		for _, p := range packets {
			if err := w.WritePacket(p); err != nil {
				t.Fatal(err)
			}
		}
		remuxed := filepath.Join(dir, "remuxed.flv")
		if err := os.WriteFile(remuxed, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		want := framemd5(t, true, "-i", src, "-c", "copy")
		got := framemd5(t, true, "-i", remuxed, "-c", "copy")
		if !slicesEqual(got, want) || len(want) < 100 {
			t.Fatalf("framemd5 differs: %d packets, want %d", len(got), len(want))
		}
	})

	t.Run("codec configuration", func(t *testing.T) {
		var gotVideo, gotAudio, gotMeta bool
		for _, p := range packets {
			switch {
			case p.Kind == KindVideo && p.Header:
				gotVideo = true
				c, err := ParseAVCConfig(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				if w, h := c.Resolution(); w != 320 || h != 240 {
					t.Errorf("resolution %dx%d", w, h)
				}
				if fps := c.FPS(); fps != 25 {
					t.Errorf("fps %v", fps)
				}
				if !bytes.Equal(c.Marshal(), p.Data) {
					t.Error("Marshal of the parsed record differs")
				}
				built, err := BuildAVCConfig(c.SPS[0], c.PPS[0])
				if err != nil || !bytes.Equal(built.Marshal(), p.Data) {
					t.Errorf("BuildAVCConfig differs from ffmpeg's record: %v", err)
				}
			case p.Kind == KindAudio && p.Header:
				gotAudio = true
				c, err := ParseAudioConfig(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				if c.ObjectType != 2 || c.SampleRate != 44100 || c.ChannelCount != 1 {
					t.Errorf("audio config %+v", c)
				}
				if !bytes.Equal(c.Marshal(), p.Data) {
					t.Error("Marshal of the parsed ASC differs")
				}
			case p.Kind == KindData:
				gotMeta = true
				name, v, err := DecodeScript(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				if name != "onMetaData" || v["width"] != 320.0 || v["height"] != 240.0 || v["videocodecid"] != 7.0 || v["stereo"] != false {
					t.Errorf("metadata %q %v", name, v)
				}
				name2, v2, err := DecodeScript(EncodeScript(name, v))
				if err != nil || name2 != name || !amfEqual(v, v2) {
					t.Errorf("metadata round trip: %v", err)
				}
			}
		}
		if !gotVideo || !gotAudio || !gotMeta {
			t.Fatalf("headers seen: video %v audio %v metadata %v", gotVideo, gotAudio, gotMeta)
		}
	})

	t.Run("video frames", func(t *testing.T) {
		frames, keys := 0, 0
		for _, p := range packets {
			if p.Kind != KindVideo || p.Header {
				continue
			}
			frames++
			nalus, err := SplitAVCC(p.Data)
			if err != nil {
				t.Fatalf("frame %d: %v", frames, err)
			}
			if p.Key != IsKeyframeAVCC(p.Data) {
				t.Fatalf("frame %d: Key %v but IsKeyframeAVCC %v", frames, p.Key, !p.Key)
			}
			if p.Key {
				keys++
			}
			annexB, err := AVCCToAnnexB(p.Data)
			if err != nil {
				t.Fatal(err)
			}
			back, err := AnnexBToAVCC(annexB)
			if err != nil || !bytes.Equal(back, p.Data) {
				t.Fatalf("frame %d: Annex-B round trip differs (%d units)", frames, len(nalus))
			}
		}
		if frames != 50 || keys < 1 {
			t.Fatalf("%d frames, %d keyframes", frames, keys)
		}
	})

	t.Run("annex-b decodes like the flv", func(t *testing.T) {
		var cfg *AVCConfig
		var stream []byte
		for _, p := range packets {
			if p.Kind != KindVideo {
				continue
			}
			if p.Header {
				var err error
				if cfg, err = ParseAVCConfig(p.Data); err != nil {
					t.Fatal(err)
				}
				continue
			}
			au := p.Data
			if p.Key {
				au = AppendAVCC(AppendAVCC(nil, cfg.SPS), cfg.PPS)
				au = append(au, p.Data...)
			}
			annexB, err := AVCCToAnnexB(au)
			if err != nil {
				t.Fatal(err)
			}
			stream = append(stream, annexB...)
		}
		raw := filepath.Join(dir, "video.h264")
		if err := os.WriteFile(raw, stream, 0o644); err != nil {
			t.Fatal(err)
		}
		want := framemd5(t, false, "-i", src, "-map", "0:v")
		got := framemd5(t, false, "-f", "h264", "-i", raw, "-map", "0:v")
		if !slicesEqual(got, want) || len(want) != 50 {
			t.Fatalf("decoded frames differ: %d frames, want %d", len(got), len(want))
		}
	})

	t.Run("adts decodes like the flv", func(t *testing.T) {
		var cfg *AudioConfig
		var stream []byte
		for _, p := range packets {
			if p.Kind != KindAudio {
				continue
			}
			if p.Header {
				var err error
				if cfg, err = ParseAudioConfig(p.Data); err != nil {
					t.Fatal(err)
				}
				continue
			}
			n := len(stream)
			if stream = AppendADTS(stream, cfg, p.Data); len(stream) == n {
				t.Fatal("AppendADTS refused a frame")
			}
		}
		if _, frames, err := ParseADTS(stream); err != nil || len(frames) < 80 {
			t.Fatalf("ParseADTS: %d frames, %v", len(frames), err)
		}
		raw := filepath.Join(dir, "audio.aac")
		if err := os.WriteFile(raw, stream, 0o644); err != nil {
			t.Fatal(err)
		}
		want := framemd5(t, false, "-i", src, "-map", "0:a")
		got := framemd5(t, false, "-f", "aac", "-i", raw, "-map", "0:a")
		if !slicesEqual(got, want) || len(want) < 80 {
			t.Fatalf("decoded audio differs: %d frames, want %d", len(got), len(want))
		}
	})
}

func readAllPackets(t *testing.T, flv []byte) []*Packet {
	t.Helper()
	r, err := NewFLVReader(bytes.NewReader(flv))
	if err != nil {
		t.Fatal(err)
	}
	var packets []*Packet
	for range 10000 {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			return packets
		}
		if err != nil {
			t.Fatal(err)
		}
		packets = append(packets, p)
	}
	t.Fatal("too many packets")
	return nil
}

func runFFmpeg(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-nostdin", "-y"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// framemd5 returns ffmpeg's framemd5 lines for the input args; without
// times only the stream index and hash of each line (raw streams get
// made-up timestamps).
func framemd5(t *testing.T, times bool, args ...string) []string {
	t.Helper()
	out := runFFmpeg(t, append(args, "-f", "framemd5", "-")...)
	var sums []string
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if times {
			sums = append(sums, line)
			continue
		}
		f := strings.Split(strings.TrimSpace(line), ",")
		sums = append(sums, strings.TrimSpace(f[0])+" "+strings.TrimSpace(f[len(f)-1]))
	}
	return sums
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
