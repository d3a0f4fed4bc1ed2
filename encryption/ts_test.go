package encryption

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	mtscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/livefuse/livefuse/av"
)

func TestCRC32MPEG2(t *testing.T) {
	if got := av.CRC32MPEG2([]byte("123456789")); got != 0x0376e6e7 {
		t.Fatalf("check value %08x, want 0376e6e7", got)
	}
}

func TestSampleAESDescriptors(t *testing.T) {
	v := H264SampleAESStream(0x100)
	if v.Type != 0xdb || v.PID != 0x100 || string(v.Descriptors) != "\x0f\x04zavc" {
		t.Fatalf("video entry %+v", v)
	}
	asc := []byte{0x12, 0x10} // AAC-LC, 44.1 kHz, stereo
	a, err := AACSampleAESStream(0x101, asc)
	if err != nil {
		t.Fatal(err)
	}
	want := "\x0f\x04aacd" + "\x05\x0e" + "apad" + "zaac" + "\x00\x00" + "\x01" + "\x02" + "\x12\x10"
	if a.Type != 0xcf || string(a.Descriptors) != want {
		t.Fatalf("audio descriptors %x, want %x", a.Descriptors, want)
	}
	for _, tc := range []struct {
		asc  []byte
		want string
	}{
		{[]byte{0x12, 0x10}, "zaac"},
		{[]byte{0x2b, 0x92, 0x08, 0x00}, "zach"}, // AOT 5 (SBR), explicit
		{[]byte{0xeb, 0x8a, 0x08, 0x00}, "zacp"}, // AOT 29 (PS)
		{[]byte{0x0a, 0x10}, ""},                 // AOT 1 (Main)
		{[]byte{0xf8, 0x10}, ""},                 // escape
		{[]byte{0x12}, ""},                       // short
		{bytes.Repeat([]byte{0x12}, 250), ""},    // long
	} {
		info, err := AACSetupInfo(tc.asc)
		if tc.want == "" {
			if err == nil {
				t.Errorf("asc %x accepted", tc.asc)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParseAudioSetupInfo(info)
		if err != nil || p.AudioType != tc.want || p.Priming != 0 || p.Version != 1 || !bytes.Equal(p.SetupData, tc.asc) {
			t.Errorf("asc %x: %+v %v", tc.asc, p, err)
		}
	}
}

func TestAppendPMT(t *testing.T) {
	a, _ := AACSampleAESStream(0x101, []byte{0x12, 0x10})
	pmt, err := AppendPMT([]byte{0}, 1, 3, 0x100, []PMTStream{H264SampleAESStream(0x100), a})
	if err != nil {
		t.Fatal(err)
	}
	sec := pmt[1:]
	want := "02b0" + "33" + "0001" + "c7" + "0000" + "e100" + "f000" +
		"db" + "e100" + "f006" + hex.EncodeToString([]byte("\x0f\x04zavc")) +
		"cf" + "e101" + "f016" + hex.EncodeToString(a.Descriptors)
	if got := hex.EncodeToString(sec[:len(sec)-4]); got != want {
		t.Fatalf("pmt\n got %s\nwant %s", got, want)
	}
	if av.CRC32MPEG2(sec) != 0 {
		t.Fatal("CRC over the section does not check")
	}
	var many []PMTStream
	for i := range 16 {
		many = append(many, H264SampleAESStream(uint16(0x100+i)))
	}
	if _, err := AppendPMT(nil, 1, 0, 0x100, many); err == nil {
		t.Fatal("PMT larger than one TS packet accepted")
	}
}

func FuzzAudioSetupInfo(f *testing.F) {
	info, _ := AACSetupInfo([]byte{0x12, 0x10})
	f.Add(info)
	f.Add([]byte("zaac\x00\x00\x01\x09"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseAudioSetupInfo(b)
		if err != nil {
			return
		}
		if 8+len(p.SetupData) != len(b) {
			t.Fatal("setup data length mismatch")
		}
		if again, err := AACSetupInfo(p.SetupData); err == nil && p.AudioType == string(again[:4]) && p.Version == 1 && p.Priming == 0 && !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, parsed from %x", again, b)
		}
	})
}

// replacePMT rewrites the payload of every TS packet on pid with section.
func replacePMT(t *testing.T, ts []byte, pid uint16, section []byte) {
	t.Helper()
	payload := append([]byte{0}, section...)
	for len(payload) < 184 {
		payload = append(payload, 0xff)
	}
	n := 0
	for off := 0; off+188 <= len(ts); off += 188 {
		p := ts[off : off+188]
		if p[0] != 0x47 {
			t.Fatal("lost TS sync")
		}
		if uint16(p[1]&0x1f)<<8|uint16(p[2]) != pid {
			continue
		}
		p[1] |= 0x40            // payload_unit_start_indicator
		p[3] = 0x10 | p[3]&0x0f // payload only, keep the continuity counter
		copy(p[4:], payload)
		n++
	}
	if n == 0 {
		t.Fatal("no PMT packet found")
	}
}

// TestHLSSampleAESFFmpeg writes the ffmpeg clip as a SAMPLE-AES MPEG-TS
// segment (mediacommon's muxer carrying NAL units from EncryptNALU and AAC
// frames from EncryptAAC, with the PMT from AppendPMT) and has FFmpeg's HLS
// demuxer decrypt it: the decoded frames must equal those of the clear
// segment (framemd5).
func TestHLSSampleAESFFmpeg(t *testing.T) {
	needFFmpeg(t)
	dir := t.TempDir()
	if d := os.Getenv("KEEPDIR"); d != "" {
		dir = d
	}
	ps := makeFLV(t, dir)
	k, _ := NewKey()

	var asc []byte
	for _, p := range ps {
		if p.Kind == av.KindAudio && p.Header {
			asc = p.Data
		}
	}
	var conf mpeg4audio.AudioSpecificConfig
	if err := conf.Unmarshal(asc); err != nil {
		t.Fatal(err)
	}
	writeTS := func(encrypt bool) []byte {
		var buf bytes.Buffer
		video := &mpegts.Track{PID: 0x100, Codec: &mtscodecs.H264{}}
		audio := &mpegts.Track{PID: 0x101, Codec: &mtscodecs.MPEG4Audio{Config: conf}}
		w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{video, audio}}
		if err := w.Initialize(); err != nil {
			t.Fatal(err)
		}
		const offset = 90000 // keep PTS positive
		for _, p := range ps {
			if p.Header || p.Kind == av.KindData {
				continue
			}
			switch p.Kind {
			case av.KindVideo:
				nalus, err := av.SplitAVCC(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				if p.Key { // in-band parameter sets for the TS
					cfg, err := av.ParseAVCConfig(ps[1].Data)
					if err != nil {
						t.Fatal(err)
					}
					nalus = append(append(append([][]byte{}, cfg.SPS...), cfg.PPS...), nalus...)
				}
				if encrypt {
					for i, n := range nalus {
						if nalus[i], err = EncryptNALU(nil, n, k); err != nil {
							t.Fatal(err)
						}
					}
				}
				dts := int64(p.DTS*90000/time.Second) + offset
				pts := int64(p.PTS()*90000/time.Second) + offset
				if err := w.WriteH264(video, pts, dts, nalus); err != nil {
					t.Fatal(err)
				}
			case av.KindAudio:
				frame := p.Data
				if encrypt {
					frame, _ = EncryptAAC(nil, frame, k)
				}
				if err := w.WriteMPEG4Audio(audio, int64(p.DTS*90000/time.Second)+offset, [][]byte{frame}); err != nil {
					t.Fatal(err)
				}
			}
		}
		out := buf.Bytes()
		if encrypt {
			a, err := AACSampleAESStream(0x101, asc)
			if err != nil {
				t.Fatal(err)
			}
			pmt, err := AppendPMT(nil, 1, 0, 0x100, []PMTStream{H264SampleAESStream(0x100), a})
			if err != nil {
				t.Fatal(err)
			}
			replacePMT(t, out, 0x1000, pmt) // astits' PMT PID
		}
		return out
	}
	if ps[1].Kind != av.KindVideo || !ps[1].Header {
		t.Fatalf("packet 1 is not the AVC sequence header")
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"clear.ts", writeTS(false)}, {"enc.ts", writeTS(true)}, {"key.bin", k.Key[:]}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// FFmpeg 5.1's HLS demuxer leaves the last two video packets of the
	// last segment of a playlist encrypted (they come out of the end-of-file
	// flush; the same packets decrypt when another segment follows), so the
	// playlists list the segment twice and the first copy is compared.
	playlist := func(name, seg, key string) string {
		s := "#EXTM3U\n#EXT-X-VERSION:5\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:0\n" + key +
			"#EXTINF:4.0,\n" + seg + "\n#EXT-X-DISCONTINUITY\n#EXTINF:4.0,\n" + seg + "\n#EXT-X-ENDLIST\n"
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	clearPL := playlist("clear.m3u8", "clear.ts", "")
	encPL := playlist("enc.m3u8", "enc.ts", fmt.Sprintf("#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"key.bin\",IV=%s,KEYFORMAT=\"identity\"\n", k.IVHex()))

	framemd5 := func(pl, stream string) []string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
			"-allowed_extensions", "ALL", "-protocol_whitelist", "file,crypto,data",
			"-i", pl, "-map", "0:"+stream, "-f", "framemd5", "-").Output()
		if err != nil {
			t.Fatalf("ffmpeg %s: %v", pl, err)
		}
		var lines []string
		for _, l := range bytes.Split(out, []byte("\n")) {
			if len(l) > 0 && l[0] != '#' {
				lines = append(lines, string(l))
			}
		}
		return lines
	}
	for _, stream := range []string{"v", "a"} {
		c, e := framemd5(clearPL, stream), framemd5(encPL, stream)
		if len(e) != len(c) {
			t.Fatalf("%s: %d frames decrypted, %d clear", stream, len(e), len(c))
		}
		n := len(c) / 2 // the first copy of the segment
		if n < 50 {
			t.Fatalf("%s: only %d clear frames", stream, n)
		}
		for i := range n {
			if c[i] != e[i] {
				t.Fatalf("%s frame %d differs:\nclear     %s\ndecrypted %s", stream, i, c[i], e[i])
			}
		}
		t.Logf("%s: %d frames identical after FFmpeg's SAMPLE-AES decryption", stream, n)
	}
	// Without the key the segment does not decode to the same frames.
	if err := os.WriteFile(filepath.Join(dir, "key.bin"), make([]byte, 16), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "quiet", "-nostdin",
		"-allowed_extensions", "ALL", "-protocol_whitelist", "file,crypto,data",
		"-i", encPL, "-map", "0:v", "-f", "framemd5", "-").Output()
	if bytes.Contains(out, []byte(framemd5(clearPL, "v")[5])) {
		t.Fatal("wrong key decodes the same frames")
	}
}
