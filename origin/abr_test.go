package origin

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/livefuse/livefuse/av"
)

// abrSPS are x264 (ultrafast, 25 fps) sequence parameter sets by size.
var abrSPS = map[string]string{
	"640x360": "6742c01eda0280bfe5c044000003000400000300c83c58ba80", // avc1.42c01e
	"320x180": "6742c00cda05067e7c0440000003004000000c83c50aa8",     // avc1.42c00c
}

// synthStream returns secs seconds of H.264 (25 fps, 1 s GOP, video
// payload at about kbps) and AAC LC, with real sequence headers for size.
func synthStream(t testing.TB, size string, kbps, secs int) []*av.Packet {
	t.Helper()
	sps, _ := hex.DecodeString(abrSPS[size])
	pps, _ := hex.DecodeString("68ce0fc8")
	c, err := av.BuildAVCConfig(sps, pps)
	if err != nil {
		t.Fatal(err)
	}
	ps := []*av.Packet{
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: c.Marshal()},
		{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
	}
	slice := bytes.Repeat([]byte{0xab}, kbps*1000/8/25)
	for i := range secs * 25 {
		nal := append([]byte{0x41}, slice...)
		if i%25 == 0 {
			nal[0] = 0x65
		}
		ps = append(ps,
			&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%25 == 0, DTS: ms(i * 40), Data: av.AppendAVCC(nil, [][]byte{nal})},
			&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: ms(i * 40), Data: bytes.Repeat([]byte{0x21}, 100)})
	}
	return ps
}

// publishSynth publishes a synthetic stream on app/name and waits until its
// HLS packager has segments. The feed stays open until the test ends.
func publishSynth(t *testing.T, h *Hub, name, size string, kbps int) {
	t.Helper()
	f, err := h.Publish("live", name, FeedMain, av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	for _, p := range synthStream(t, size, kbps, 4) {
		f.WritePacket(p)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if o := h.tsOut("live", name); o != nil {
			if _, _, n := o.pk.abrRates(0); n >= 2 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no HLS segments", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// abrSign is the fake play token of the tests: valid for exactly uri.
func abrSign(uri string) string { return "sig:" + uri }

// abrHub starts a hub whose live/cam has the renditions 180p (live) and
// gone (not live), a watermarked alias when alias, and a play key checked
// by abrSign when auth.
func abrHub(t *testing.T, alias, auth bool) (*Hub, string) {
	t.Helper()
	cfg := DefaultConfig()
	pol := StreamPolicy{Variants: []Variant{
		{Name: "180p", Stream: "cam_180p", Width: 320, Height: 180},
		{Name: "gone", Stream: "cam_gone", Width: 160, Height: 90},
	}}
	if alias {
		pol.PlayAlias = "cam_source"
	}
	if auth {
		cfg.Authorize = func(app, name, uri string, q url.Values) error {
			if q.Get("auth_key") != abrSign(uri) {
				return errors.New("bad key")
			}
			return nil
		}
	}
	h, srv, _ := newTestHub(t, cfg)
	if err := h.SetStreamPolicy("live", "cam", pol); err != nil {
		t.Fatal(err)
	}
	if err := h.SetStreamPolicy("live", "bad", StreamPolicy{Variants: []Variant{{Name: SourceVariant, Stream: "cam_x"}}}); err == nil {
		t.Fatal("a variant named source was accepted")
	}
	publishSynth(t, h, "cam", "640x360", 800)
	publishSynth(t, h, "cam_180p", "320x180", 200)
	publishSynth(t, h, "other", "320x180", 200)
	if alias {
		publishSynth(t, h, "cam_source", "320x180", 400)
	}
	return h, srv.URL
}

func abrGet(t *testing.T, u string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp := get(t, ctx, u)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// TestABRMultivariant checks the multivariant playlist: the source first
// (or its alias), then each live rendition, with measured BANDWIDTH,
// RESOLUTION and FRAME-RATE from the SPS, CODECS from the sequence
// headers, and the request's query carried into the variant URIs.
func TestABRMultivariant(t *testing.T) {
	type want struct {
		uri, res, codecs string
		kbps             int // video payload rate of the synthetic stream
	}
	cases := []struct {
		name  string
		alias bool
		query string
		want  []want
	}{
		{"ladder", false, "", []want{
			{"v/source/index.m3u8", "640x360", "avc1.42c01e,mp4a.40.2", 800},
			{"v/180p/index.m3u8", "320x180", "avc1.42c00c,mp4a.40.2", 200},
		}},
		{"query carried", false, "auth_key=a%2Fb&x=1", []want{
			{"v/source/index.m3u8?auth_key=a%2Fb&x=1", "640x360", "avc1.42c01e,mp4a.40.2", 800},
			{"v/180p/index.m3u8?auth_key=a%2Fb&x=1", "320x180", "avc1.42c00c,mp4a.40.2", 200},
		}},
		{"watermarked source", true, "", []want{
			{"v/source/index.m3u8", "320x180", "avc1.42c00c,mp4a.40.2", 400},
			{"v/180p/index.m3u8", "320x180", "avc1.42c00c,mp4a.40.2", 200},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, base := abrHub(t, tc.alias, false)
			u := base + "/live/cam/index.m3u8"
			if tc.query != "" {
				u += "?" + tc.query
			}
			code, hdr, body := abrGet(t, u)
			if code != 200 || hdr.Get("Content-Type") != "application/vnd.apple.mpegurl" {
				t.Fatalf("GET: %d %q: %s", code, hdr.Get("Content-Type"), body)
			}
			var m playlist.Multivariant
			if err := m.Unmarshal(body); err != nil {
				t.Fatalf("not a multivariant playlist: %v\n%s", err, body)
			}
			t.Logf("%s", body)
			if !m.IndependentSegments || len(m.Variants) != len(tc.want) {
				t.Fatalf("want %d variants (the one not live left out):\n%s", len(tc.want), body)
			}
			for i, w := range tc.want {
				v := m.Variants[i]
				if v.URI != w.uri || v.Resolution != w.res || strings.Join(v.Codecs, ",") != w.codecs {
					t.Errorf("variant %d: %s %s %v, want %s %s %s", i, v.URI, v.Resolution, v.Codecs, w.uri, w.res, w.codecs)
				}
				if v.FrameRate == nil || *v.FrameRate != 25 {
					t.Errorf("variant %d: FRAME-RATE %v, want 25", i, v.FrameRate)
				}
				// BANDWIDTH is the peak TS rate: the payload plus audio and TS/PES overhead.
				if lo, hi := w.kbps*1000, w.kbps*1000*13/10+100_000; v.Bandwidth < lo || v.Bandwidth > hi {
					t.Errorf("variant %d: BANDWIDTH %d, want %d..%d", i, v.Bandwidth, lo, hi)
				}
				if v.AverageBandwidth == nil || *v.AverageBandwidth > v.Bandwidth {
					t.Errorf("variant %d: AVERAGE-BANDWIDTH %v", i, v.AverageBandwidth)
				}
			}
		})
	}
}

// TestABRRouting checks which stream each ABR path reaches.
func TestABRRouting(t *testing.T) {
	h, base := abrHub(t, false, false)
	seq := func(stream string) uint64 {
		o := h.tsOut("live", stream)
		o.pk.mu.Lock()
		defer o.pk.mu.Unlock()
		return o.pk.segs[len(o.pk.segs)-1].seq
	}
	camSeg := fmt.Sprintf("seg%d.ts", seq("cam"))
	lowSeg := fmt.Sprintf("seg%d.ts", seq("cam_180p"))
	// The two streams carry different payload sizes, so a segment's length tells them apart.
	segLen := func(stream, name string) int {
		var n uint64
		fmt.Sscanf(name, "seg%d.ts", &n)
		_, _, size, _ := h.tsOut("live", stream).pk.segment(n)
		return size
	}
	cases := []struct {
		path string
		code int
		has  string // in the body
		len  int    // body length, when not 0
	}{
		{"/live/cam/v/source/index.m3u8", 200, "#EXTINF:", 0},
		{"/live/cam/v/180p/index.m3u8", 200, "#EXTINF:", 0},
		{"/live/cam/v/source/" + camSeg, 200, "", segLen("cam", camSeg)},
		{"/live/cam/v/180p/" + lowSeg, 200, "", segLen("cam_180p", lowSeg)},
		{"/live/cam/" + camSeg, 200, "", segLen("cam", camSeg)}, // the source's own segments stay where they were
		{"/live/cam_180p/index.m3u8", 200, "#EXTINF:", 0},       // a rendition is a stream of its own too
		{"/live/cam/v/gone/index.m3u8", 404, "", 0},             // listed, not live
		{"/live/cam/v/nope/index.m3u8", 404, "", 0},             // not a variant of cam
		{"/live/other/v/180p/index.m3u8", 404, "", 0},           // not a variant of other
		{"/live/other/index.m3u8", 200, "#EXTINF:", 0},          // no renditions: a media playlist as before
		{"/live/cam/v/180p/x.ts", 404, "", 0},
		{"/live/cam/v/180p/a/index.m3u8", 404, "", 0},
		{"/live/cam/v/../cam.flv", 404, "", 0},
		{"/live/cam/v/.x/index.m3u8", 404, "", 0},
		{"/live/cam/v/180p/seg999999.ts", 404, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			code, hdr, body := abrGet(t, base+tc.path)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if tc.has != "" && !bytes.Contains(body, []byte(tc.has)) {
				t.Fatalf("body lacks %q:\n%s", tc.has, body)
			}
			if tc.len != 0 && (len(body) != tc.len || body[0] != 0x47 || hdr.Get("Content-Type") != "video/mp2t") {
				t.Fatalf("segment: %d bytes (want %d), type %q", len(body), tc.len, hdr.Get("Content-Type"))
			}
		})
	}
}

// TestABRAlias: with a play alias, HTTP-FLV and HLS of cam play the alias
// (the watermarked rendition), never the original.
func TestABRAlias(t *testing.T) {
	h, base := abrHub(t, true, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := get(t, ctx, base+"/live/cam.flv")
	defer resp.Body.Close()
	r, err := av.NewFLVReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var avc *av.Packet
	for range 10 {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind == av.KindVideo && p.Header {
			avc = p
			break
		}
	}
	if c, err := av.ParseAVCConfig(avc.Data); err != nil || c.CodecString() != "avc1.42c00c" {
		t.Fatalf("cam.flv plays %v (%v), want the alias (avc1.42c00c)", c, err)
	}
	// The source variant's segments are the alias's.
	o := h.tsOut("live", "cam_source")
	o.pk.mu.Lock()
	last := o.pk.segs[len(o.pk.segs)-1]
	o.pk.mu.Unlock()
	code, _, body := abrGet(t, fmt.Sprintf("%s/live/cam/v/source/seg%d.ts", base, last.seq))
	if code != 200 || !bytes.Equal(body, last.data) {
		t.Fatalf("source variant segment: %d, %d bytes, want the alias's %d", code, len(body), len(last.data))
	}
}

// TestABRAuthorize: a key signed for /live/cam/index.m3u8 opens the
// multivariant playlist, every variant playlist and every segment, since
// the query is carried along; without it, or with a key signed for a
// variant's own path, each file is refused.
func TestABRAuthorize(t *testing.T) {
	_, base := abrHub(t, false, true)
	key := "auth_key=" + url.QueryEscape(abrSign("/live/cam/index.m3u8"))
	code, _, body := abrGet(t, base+"/live/cam/index.m3u8?"+key)
	if code != 200 {
		t.Fatalf("signed multivariant: %d", code)
	}
	var m playlist.Multivariant
	if err := m.Unmarshal(body); err != nil {
		t.Fatal(err)
	}
	plURL, _ := url.Parse(base + "/live/cam/index.m3u8")
	var files []string // every file the player fetches, as absolute paths with query
	for _, v := range m.Variants {
		vu, err := plURL.Parse(v.URI)
		if err != nil {
			t.Fatal(err)
		}
		code, _, body := abrGet(t, vu.String())
		if code != 200 {
			t.Fatalf("variant %s: %d", vu, code)
		}
		files = append(files, vu.RequestURI())
		var segs int
		for _, line := range strings.Split(string(body), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			su, _ := vu.Parse(line)
			files = append(files, su.RequestURI())
			segs++
		}
		if segs == 0 {
			t.Fatalf("variant %s lists no segments:\n%s", vu, body)
		}
	}
	for _, f := range files {
		if !strings.Contains(f, "?"+key) {
			t.Fatalf("%s: play key not carried", f)
		}
		if code, _, _ := abrGet(t, base+f); code != 200 {
			t.Errorf("%s: %d with the key", f, code)
		}
		path, _, _ := strings.Cut(f, "?")
		if code, _, _ := abrGet(t, base+path); code != 403 {
			t.Errorf("%s: %d without a key, want 403", path, code)
		}
		own := path + "?auth_key=" + url.QueryEscape(abrSign(path))
		if code, _, _ := abrGet(t, base+own); code != 403 && path != "/live/cam/index.m3u8" {
			t.Errorf("%s: %d with a key for its own path, want 403", path, code)
		}
	}
	if code, _, _ := abrGet(t, base+"/live/cam/index.m3u8"); code != 403 {
		t.Errorf("multivariant without key: %d", code)
	}
}

// TestABROtherVariants: without the mpegts output there is no ABR; the
// stream's own HLS is served.
func TestABROtherVariants(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HLSVariant = HLSFMP4
	h, _, _ := newTestHub(t, cfg)
	if err := h.SetStreamPolicy("live", "cam", StreamPolicy{Variants: []Variant{{Name: "180p", Stream: "cam_180p"}}}); err != nil {
		t.Fatal(err)
	}
	if vs := h.variants("live", "cam"); vs != nil {
		t.Fatalf("variants with fmp4: %v", vs)
	}
}

func TestSnapFPS(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{24.8, 25}, {29.97, 30}, {59.9, 60}, {0, 0}, {12.5, 12.5}, {0.4, 0.4}} {
		if got := snapFPS(tc.in); got != tc.want {
			t.Errorf("snapFPS(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzABRRoute(f *testing.F) {
	for _, s := range []string{"/live/cam/v/480p/seg3.ts", "/live/cam/v/source/index.m3u8", "/live/cam/v/../index.m3u8",
		"/live/cam/v//index.m3u8", "/live/cam/v/a/b/seg1.ts", "/live/cam/v/x/seg+1.ts"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parseRoute(p)
		if !ok || rt.variant == "" {
			return
		}
		if rt.kind != routeHLS || !validName(rt.app) || !validName(rt.name) || !validName(rt.variant) || !tsFileRe.MatchString(rt.file) {
			t.Fatalf("%q: accepted %+v", p, rt)
		}
		if want := "/" + rt.app + "/" + rt.name + "/v/" + rt.variant + "/" + rt.file; p != want {
			t.Fatalf("%q: parsed as %q", p, want)
		}
	})
}
