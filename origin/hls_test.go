package origin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// needFFmpeg skips the test when ffmpeg and ffprobe are not on PATH.
func needFFmpeg(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH", tool)
		}
	}
}

// clips caches the media the HLS tests generate, one ffmpeg run per kind.
var clips struct {
	sync.Mutex
	dir  string
	byID map[string][]*av.Packet
}

// clip returns the packets of a generated FLV clip: "av" is 6 s of H.264
// (1 s GOP, B-frames) and AAC, "audio" 8 s of AAC only.
func clip(t *testing.T, id string) []*av.Packet {
	t.Helper()
	clips.Lock()
	defer clips.Unlock()
	if ps, ok := clips.byID[id]; ok {
		return ps
	}
	dir := t.TempDir()
	out := filepath.Join(dir, id+".flv")
	args := []string{"-hide_banner", "-nostdin", "-v", "error"}
	switch id {
	case "av":
		args = append(args, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
			"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "6",
			"-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "2", "-pix_fmt", "yuv420p",
			"-c:a", "aac", "-b:a", "64k")
	case "audio":
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
			"-c:a", "aac", "-b:a", "64k")
	}
	args = append(args, "-f", "flv", out)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	ps := readFLVFile(t, out)
	if clips.byID == nil {
		clips.byID = make(map[string][]*av.Packet)
	}
	clips.byID[id] = ps
	return ps
}

func httpGetBody(t *testing.T, u string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := get(t, ctx, u)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// uris returns the URI lines of a playlist.
func uris(pl string) []string {
	var out []string
	for _, l := range strings.Split(pl, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func ffprobeCodecs(t *testing.T, input string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", input).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", input, err, out)
	}
	codecs := strings.Fields(string(out))
	slices.Sort(codecs)
	return slices.Compact(codecs)
}

// TestHLS publishes a clip generated with ffmpeg and reads the HLS output
// with ffprobe: the playlist, then a segment on its own.
func TestHLS(t *testing.T) {
	needFFmpeg(t)
	cases := []struct {
		variant string
		clip    string
		want    []string
		store   string // with an HLSDir, as the livefuse wiring sets; "": none
	}{
		{HLSMPEGTS, "av", []string{"aac", "h264"}, ""},
		{HLSFMP4, "av", []string{"aac", "h264"}, ""},
		{HLSLowLatency, "av", []string{"aac", "h264"}, ""},
		{HLSMPEGTS, "audio", []string{"aac"}, ""},
		{HLSLowLatency, "audio", []string{"aac"}, ""},
		{HLSMPEGTS, "av", []string{"aac", "h264"}, HLSStoreDisk},
		{HLSMPEGTS, "av", []string{"aac", "h264"}, HLSStoreMemory},
		{HLSLowLatency, "av", []string{"aac", "h264"}, HLSStoreDisk}, // the disk store is MPEG-TS only
	}
	for _, tc := range cases {
		t.Run(tc.variant+"/"+tc.clip+"/"+tc.store, func(t *testing.T) {
			pkts := clip(t, tc.clip)
			cfg := DefaultConfig()
			cfg.HLSVariant = tc.variant
			var stale string
			if tc.store != "" {
				cfg.HLSStore, cfg.HLSDir = tc.store, filepath.Join(t.TempDir(), "hls")
				// What a run that did not exit cleanly left: swept at start
				// by the disk store (and left alone by the memory store).
				stale = filepath.Join(cfg.HLSDir, "live.old.1", "seg9.ts")
				if err := os.MkdirAll(filepath.Dir(stale), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(stale, []byte("old"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			spooled := tc.store == HLSStoreDisk && tc.variant == HLSMPEGTS
			h, srv, reg := newTestHub(t, cfg)
			if _, err := os.Stat(stale); stale != "" && (err == nil) == (tc.store == HLSStoreDisk) {
				t.Fatalf("a segment file an earlier run left: %v, want it gone only with the disk store", err)
			}
			f, err := h.Publish("live", "cam", "main", av.Source{Protocol: "rtmp"})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range pkts {
				f.WritePacket(p)
			}
			base := srv.URL + "/live/cam/"
			code, master := httpGetBody(t, base+"index.m3u8")
			if code != 200 || !strings.HasPrefix(master, "#EXTM3U") {
				t.Fatalf("index.m3u8: %d %q", code, master)
			}
			u := uris(master)
			if len(u) == 0 {
				t.Fatalf("no media playlist in %q", master)
			}
			media := master // tshls (mpegts) serves the media playlist as index.m3u8
			if !strings.Contains(master, "#EXTINF") {
				code, media = httpGetBody(t, base+u[0])
				if code != 200 || !strings.Contains(media, "#EXTINF") {
					t.Fatalf("%s: %d %q", u[0], code, media)
				}
			}
			if tc.variant == HLSLowLatency && !strings.Contains(media, "#EXT-X-PART:") {
				t.Fatalf("low-latency playlist without parts:\n%s", media)
			}
			if got := ffprobeCodecs(t, base+"index.m3u8"); !slices.Equal(got, tc.want) {
				t.Fatalf("ffprobe of the playlist: %v, want %v", got, tc.want)
			}
			if tc.variant == HLSMPEGTS {
				segs := uris(media)
				seg := segs[len(segs)-1]
				code, body := httpGetBody(t, base+seg)
				if code != 200 || len(body) == 0 {
					t.Fatalf("segment %s: %d, %d bytes", seg, code, len(body))
				}
				file := filepath.Join(t.TempDir(), "seg.ts")
				if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				if got := ffprobeCodecs(t, file); !slices.Equal(got, tc.want) {
					t.Fatalf("ffprobe of segment %s: %v, want %v", seg, got, tc.want)
				}
				// The other segments come from where the store keeps them:
				// the same bytes either way. (The packager may still be
				// working through the clip: a segment let go meanwhile is
				// skipped.)
				compared := 0
				for _, f := range spoolFiles(t, cfg.HLSDir, spooled, min(2, len(segs)-1)) {
					onDisk, err := os.ReadFile(f)
					if err != nil {
						continue
					}
					code, body := httpGetBody(t, base+filepath.Base(f))
					if code == http.StatusNotFound {
						continue
					}
					if code != 200 || body != string(onDisk) {
						t.Fatalf("%s: %d, %d bytes served, %d on disk", filepath.Base(f), code, len(body), len(onDisk))
					}
					compared++
				}
				if spooled && len(segs) > 1 && compared == 0 {
					t.Fatal("no segment on disk compared with what is served")
				}
			}
			if n := metricValue(t, reg, "livefuse_origin_bytes_out_total"); n == 0 {
				t.Errorf("bytes out counter is 0")
			}
			// The test's HLS clients (Go and ffprobe: two User-Agents)
			// are players; the packager is an internal reader.
			if st, _ := h.Status("live", "cam"); st.Readers != 2 || st.ReadersByProtocol[ProtoHLS] != 2 || st.InternalReaders != 1 ||
				st.AudioCodec != "aac" || st.SampleRate == 0 {
				t.Errorf("status %+v: want two HLS players, the packager and the AAC config", st)
			}
			// The publisher leaves: the muxer closes and the stream is gone.
			f.Unpublish()
			f.Close()
			if code, _ := httpGetBody(t, base+"index.m3u8"); code != http.StatusNotFound {
				t.Fatalf("playlist after the stream ended: %d, want 404", code)
			}
			if spooled {
				// The packager's end removes its files and directory.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					left, _ := os.ReadDir(cfg.HLSDir)
					if len(left) == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("after the stream ended hls_dir still holds %v", left)
					}
				}
			}
		})
	}
}

// spoolFiles returns the segment files of the disk store under dir: when
// spooled, at least want of them (waiting for the spool, bounded); else it
// checks there are none.
func spoolFiles(t *testing.T, dir string, spooled bool, want int) []string {
	t.Helper()
	glob := filepath.Join(dir, "live.cam.*", tsSegFileGlob)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		files, _ := filepath.Glob(glob)
		if dir == "" || !spooled {
			if len(files) > 0 {
				t.Fatalf("segment files %v without the disk store", files)
			}
			return nil
		}
		if len(files) >= want {
			return files
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d segment files on disk, want at least %d", len(files), want)
		}
	}
}

// FuzzHLSWrite feeds the HLS packager packets built from arbitrary bytes,
// as a publisher may send them: nothing may panic, not even inside the
// muxer (write recovers, so the test counts what it had to recover).
func FuzzHLSWrite(f *testing.F) {
	// A real SPS/PPS (libx264, 320x180 Constrained Baseline) and an IDR-looking frame.
	sps := []byte{0x67, 0x42, 0xc0, 0x0c, 0xda, 0x05, 0x06, 0x7e, 0x7c, 0x04, 0x40, 0x00, 0x00, 0x03,
		0x00, 0x40, 0x00, 0x00, 0x0c, 0x83, 0xc5, 0x0a, 0xa8}
	pps := []byte{0x68, 0xce, 0x0f, 0xc8}
	cfg, _ := av.BuildAVCConfig(sps, pps)
	var avcc []byte
	if cfg != nil {
		avcc = cfg.Marshal()
	}
	f.Add(avcc, []byte{0x12, 0x10}, []byte{0, 0, 0, 5, 0x65, 0x88, 0x84, 0, 0x33}, []byte{0x21, 0x10, 0x04})
	f.Add([]byte{1, 2, 3}, []byte{0xff}, []byte{0, 0, 0, 1}, []byte{})
	f.Add(avcc, []byte{0x11, 0x90}, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0x09}, []byte{0})
	f.Fuzz(func(t *testing.T, vhdr, ahdr, frame, afr []byte) {
		c := DefaultConfig()
		c.HLSSegmentDuration = 10 * time.Millisecond
		s := NewStream(c, nil)
		o := newHLSOutput(c, s.log, nil, s)
		defer o.stopMuxer()
		ps := []*av.Packet{
			{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: vhdr},
			{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: ahdr},
		}
		for i := 0; i < 30; i++ {
			ps = append(ps,
				&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%5 == 0, DTS: ms(i * 40), CTS: ms(80), Data: frame},
				&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: ms(i * 40), Data: afr})
		}
		for _, p := range ps {
			o.write(p)
		}
		if o.panics > 0 {
			t.Fatalf("the muxer panicked %d times", o.panics)
		}
	})
}

// readFLVFile returns every packet of the FLV file at path.
func readFLVFile(t *testing.T, path string) []*av.Packet {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := av.NewFLVReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var ps []*av.Packet
	for {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			return ps
		}
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
}

// llFeed writes pkts to a new llhls packager; from > 0 starts it mid-stream
// (a unit restarted, or started late): the sequence headers, then the
// packets from that time on.
func llFeed(pkts []*av.Packet, from time.Duration) *llhls {
	l := newLLHLS(llhlsConfig{SegmentDuration: time.Second, SegmentCount: 7, Keep: 100})
	for _, p := range pkts {
		if p.Header || p.DTS >= from {
			l.writePacket(p)
		}
	}
	l.close()
	return l
}

// llPartLines returns the EXT-X-PART durations and URIs of a playlist.
func llPlaylist(l *llhls) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.playlistLocked(""))
}

// TestLLHLSTimeline: the low-latency packager names its segments and parts
// after the encoder's timeline and writes the same bytes whether it saw the
// stream from its start or from the middle (a second unit, a restarted
// unit); its parts hold whole frames, all of one duration but a segment's
// last, under a PART-TARGET that never changes.
func TestLLHLSTimeline(t *testing.T) {
	needFFmpeg(t)
	pkts := clip(t, "av") // 25 fps, 1 s GOP, B-frames, AAC
	a := llFeed(pkts, 0)
	pt := a.partTarget
	if a.partDur != 200*time.Millisecond || pt != 202*time.Millisecond || a.segDur != time.Second {
		t.Fatalf("durations: part %v, part target %v, segment %v; want 200ms, 202ms, 1s", a.partDur, pt, a.segDur)
	}
	for _, from := range []time.Duration{1040 * time.Millisecond, 1500 * time.Millisecond} {
		b := llFeed(pkts, from)
		if b.partTarget != pt {
			t.Errorf("from %v: part target %v, want %v", from, b.partTarget, pt)
		}
		byName := map[string]*llSeg{}
		for _, s := range a.segs {
			byName[s.name] = s
		}
		same := 0
		for i, s := range b.segs {
			o := byName[s.name]
			if o == nil {
				t.Fatalf("from %v: segment %s (msn %d) unknown to the unit that saw the start", from, s.name, s.msn)
			}
			if i == 0 {
				continue // (where b started: a whole GOP in both, since b starts at a keyframe)
			}
			if s.msn != o.msn || !bytes.Equal(s.data, o.data) || len(s.parts) != len(o.parts) {
				t.Fatalf("from %v: segment %s differs: msn %d/%d, %d/%d bytes, %d/%d parts", from, s.name, s.msn, o.msn, len(s.data), len(o.data), len(s.parts), len(o.parts))
			}
			for j, p := range s.parts {
				if p.name != o.parts[j].name || !bytes.Equal(p.data, o.parts[j].data) {
					t.Fatalf("from %v: part %s differs from %s", from, p.name, o.parts[j].name)
				}
			}
			same++
		}
		if same < 2 {
			t.Fatalf("from %v: only %d segments compared", from, same)
		}
	}
	for _, s := range a.segs {
		for j, p := range s.parts {
			last := j == len(s.parts)-1
			if p.dur > pt || (!last && p.dur != a.partDur) || p.dur*100 < pt*85 && !last {
				t.Errorf("segment %s part %d: %v (target %v)", s.name, j, p.dur, pt)
			}
		}
	}
	pl := llPlaylist(a)
	for _, want := range []string{"#EXT-X-PART-INF:PART-TARGET=0.20200", "CAN-BLOCK-RELOAD=YES", "PART-HOLD-BACK=0.60600", "#EXT-X-MAP:URI=\"init"} {
		if !strings.Contains(pl, want) {
			t.Errorf("playlist without %s:\n%s", want, pl)
		}
	}
}

// TestLLHLSBlocking: a playlist request with _HLS_msn/_HLS_part waits
// until the playlist holds that part, the hinted next part waits until it
// is written, a request too far ahead is refused.
func TestLLHLSBlocking(t *testing.T) {
	needFFmpeg(t)
	pkts := clip(t, "av")
	l := newLLHLS(llhlsConfig{SegmentDuration: time.Second, SegmentCount: 7})
	srv := httptest.NewServer(l)
	defer srv.Close()
	i := 0
	feedTo := func(until time.Duration) {
		for ; i < len(pkts) && (pkts[i].Header || pkts[i].DTS < until); i++ {
			l.writePacket(pkts[i])
		}
	}
	feedTo(3 * time.Second) // learning GOP, then segment 11 and part of 12
	code, pl := httpGetBody(t, srv.URL+"/index.m3u8?token=x")
	if code != 200 || !strings.Contains(pl, "s11000.m4s?token=x") || !strings.Contains(pl, `PRELOAD-HINT:TYPE=PART,URI="p12800.m4s?token=x"`) {
		t.Fatalf("playlist %d:\n%s", code, pl)
	}
	type answer struct {
		code int
		body string
	}
	wait := func(u string) chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.Get(srv.URL + u)
			if err != nil {
				ch <- answer{}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			ch <- answer{resp.StatusCode, string(b)}
		}()
		return ch
	}
	plCh := wait("/index.m3u8?token=x&_HLS_msn=13&_HLS_part=2")
	hintCh := wait("/p12800.m4s?token=x")
	aheadCh := wait("/p13200.m4s") // two parts past the hint (a player from a unit ahead)
	if code, _ := httpGetBody(t, srv.URL+"/p12700.m4s"); code != http.StatusNotFound {
		t.Fatalf("a part this packager never writes: %d, want 404", code)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case a := <-plCh:
		t.Fatalf("blocking playlist answered early: %d\n%s", a.code, a.body)
	case a := <-hintCh:
		t.Fatalf("hinted part answered early: %d", a.code)
	default:
	}
	feedTo(3500 * time.Millisecond)
	if a := <-hintCh; a.code != 200 || len(a.body) == 0 {
		t.Fatalf("hinted part: %d, %d bytes", a.code, len(a.body))
	}
	if a := <-aheadCh; a.code != 200 || len(a.body) == 0 {
		t.Fatalf("part ahead of the hint: %d, %d bytes", a.code, len(a.body))
	}
	select {
	case a := <-plCh:
		t.Fatalf("blocking playlist answered before part 2 of 13: %d\n%s", a.code, a.body)
	default:
	}
	feedTo(5 * time.Second)
	a := <-plCh
	if a.code != 200 || !strings.Contains(a.body, `URI="p13400.m4s?token=x"`) || strings.Contains(a.body, "_HLS_") {
		t.Fatalf("blocking playlist: %d\n%s", a.code, a.body)
	}
	if code, _ := httpGetBody(t, srv.URL+"/index.m3u8?_HLS_msn=30"); code != http.StatusBadRequest {
		t.Fatalf("msn too far ahead: %d, want 400", code)
	}
	if code, _ := httpGetBody(t, srv.URL+"/index.m3u8?_HLS_part=1"); code != http.StatusBadRequest {
		t.Fatalf("part without msn: %d, want 400", code)
	}
	if code, _ := httpGetBody(t, srv.URL+"/p99999.m4s"); code != http.StatusNotFound {
		t.Fatalf("unknown part: %d, want 404", code)
	}
	// The stream ends: waiting requests are answered at once.
	endCh := wait("/index.m3u8?_HLS_msn=16&_HLS_part=0")
	l.close()
	if a := <-endCh; a.code != http.StatusNotFound {
		t.Fatalf("blocking playlist at the end: %d", a.code)
	}
}

// FuzzLLHLSWrite feeds the low-latency packager packets built from
// arbitrary bytes and times: nothing may panic, and a playlist is always
// well formed.
func FuzzLLHLSWrite(f *testing.F) {
	sps := []byte{0x67, 0x42, 0xc0, 0x0c, 0xda, 0x05, 0x06, 0x7e, 0x7c, 0x04, 0x40, 0x00, 0x00, 0x03,
		0x00, 0x40, 0x00, 0x00, 0x0c, 0x83, 0xc5, 0x0a, 0xa8}
	pps := []byte{0x68, 0xce, 0x0f, 0xc8}
	cfg, _ := av.BuildAVCConfig(sps, pps)
	var avcc []byte
	if cfg != nil {
		avcc = cfg.Marshal()
	}
	f.Add(avcc, []byte{0x12, 0x10}, []byte{0, 0, 0, 5, 0x65, 0x88, 0x84, 0, 0x33}, []byte{0x21, 0x10, 0x04}, uint16(40), uint8(5))
	f.Add([]byte{1, 2, 3}, []byte{0xff}, []byte{0, 0, 0, 1}, []byte{}, uint16(0), uint8(0))
	f.Add(avcc, []byte{0x11, 0x90}, []byte{0, 0, 0, 1, 0x65}, []byte{0}, uint16(1), uint8(1))
	f.Fuzz(func(t *testing.T, vhdr, ahdr, frame, afr []byte, step uint16, gop uint8) {
		l := newLLHLS(llhlsConfig{SegmentDuration: 10 * time.Millisecond})
		ps := []*av.Packet{
			{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: vhdr},
			{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: ahdr},
		}
		for i := 0; i < 60; i++ {
			d := time.Duration(i) * time.Duration(step) * time.Millisecond / 4
			ps = append(ps,
				&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: gop == 0 || i%int(gop) == 0, DTS: d, CTS: ms(80), Data: frame},
				&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: d - 15*time.Second, Data: afr},
				&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: d, Data: afr})
		}
		for _, p := range ps {
			l.writePacket(p)
		}
		l.close()
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.segs) > 0 && !strings.HasPrefix(string(l.playlistLocked("")), "#EXTM3U\n") {
			t.Fatal("bad playlist")
		}
	})
}

// FuzzLLHLSRequest sends any path and query to a live LL-HLS packager:
// blocking-reload parameters and segment and part names are the request
// side's hostile bytes. Every answer comes within the request's deadline
// (blocking waits end with it) and nothing panics.
func FuzzLLHLSRequest(f *testing.F) {
	f.Add("index.m3u8", "_HLS_msn=3&_HLS_part=1")
	f.Add("index.m3u8", "_HLS_msn=99999999999&_HLS_part=0")
	f.Add("index.m3u8", "_HLS_part=2")
	f.Add("p1200.m4s", "token=x")
	f.Add("s99999999999999999999.m4s", "")
	f.Add("init00000000.mp4", "")
	f.Add("p-1.m4s", "_HLS_msn=-1")
	sps := []byte{0x67, 0x42, 0xc0, 0x0c, 0xda, 0x05, 0x06, 0x7e, 0x7c, 0x04, 0x40, 0x00, 0x00, 0x03,
		0x00, 0x40, 0x00, 0x00, 0x0c, 0x83, 0xc5, 0x0a, 0xa8}
	cfg, err := av.BuildAVCConfig(sps, []byte{0x68, 0xce, 0x0f, 0xc8})
	if err != nil {
		f.Fatal(err)
	}
	l := newLLHLS(llhlsConfig{SegmentDuration: 200 * time.Millisecond, PlaylistWait: 10 * time.Millisecond})
	l.writePacket(&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: cfg.Marshal()})
	l.writePacket(&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}})
	for i := 0; i < 75; i++ { // 3 s at 25 fps, a keyframe every 5 frames
		d := time.Duration(i) * 40 * time.Millisecond
		l.writePacket(&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%5 == 0, DTS: d,
			Data: []byte{0, 0, 0, 5, 0x65, 0x88, 0x84, 0, 0x33}})
		l.writePacket(&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: d, Data: []byte{0x21, 0x10, 0x04}})
	}
	f.Fuzz(func(t *testing.T, name, query string) {
		u := &url.URL{Path: "/" + name, RawQuery: query}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		req.URL = u
		start := time.Now()
		w := httptest.NewRecorder()
		l.ServeHTTP(w, req)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%q ?%q answered after %v", name, query, d)
		}
	})
}
