package origin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// TestFLVResume: what a resuming HTTP-FLV player gets after the headers,
// as "V<ts>" (K for a keyframe) and "A<ts>", FLV timestamps in ms.
func TestFLVResume(t *testing.T) {
	v := func(dts int, key bool) *av.Packet {
		return &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: key, DTS: ms(dts), Data: []byte{1}}
	}
	a := func(dts int) *av.Packet {
		return &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: ms(dts), Data: []byte{1}}
	}
	// A GOP cache from the keyframe at 400, frames every 40 ms, then live.
	gop400 := []*av.Packet{v(400, true), a(410), v(440, false), a(450), v(480, false), v(520, false), a(530), v(560, false)}
	for _, tc := range []struct {
		name  string
		query string
		in    []*av.Packet
		want  string
	}{
		{"same GOP: the next frame after T", "resume_after=480&resume_key=400", gop400,
			"V520 A530 V560"},
		{"unit behind the player: waits for frames after T", "resume_after=600&resume_key=400",
			append(slices.Clone(gop400), a(590), v(600, false), v(640, false), a(650)),
			"V640 A650"},
		{"T older than the cache: from its keyframe (the gap)", "resume_after=200&resume_key=160", gop400,
			"K400 A410 V440 A450 V480 V520 A530 V560"},
		{"another GOP with its keyframe before T: shifted to follow T", "resume_after=440&resume_key=0",
			[]*av.Packet{v(400, true), a(410), v(440, false)},
			"K480 A490 V520"},
		{"a switch puts a keyframe at or before T mid-response: shifted from there", "resume_after=480&resume_key=400",
			[]*av.Packet{v(400, true), v(440, false), v(470, true), a(475), v(510, false)},
			"K510 A515 V550"}, // one measured frame (30 ms) after T
		{"a later keyframe after T: unchanged", "resume_after=440&resume_key=400",
			[]*av.Packet{v(400, true), v(440, false), v(480, false), v(520, true), v(560, false)},
			"V480 K520 V560"},
		{"another timeline far ahead: shifted to follow T", "resume_after=440&resume_key=400",
			[]*av.Packet{v(90000, true), a(90010), v(90040, false)},
			"K480 A490 V520"},
		{"shifted, a later keyframe stays shifted as before", "resume_after=5000&resume_key=4000",
			[]*av.Packet{v(400, true), v(440, false), v(480, true), v(520, false)},
			"K5040 V5080 K5120 V5160"},
		{"the cache starts mid-GOP (no keyframe first): waits for a keyframe", "resume_after=100&resume_key=0",
			[]*av.Packet{a(380), v(440, false), v(480, false), v(520, true)},
			"K520"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			rs := parseResume(q)
			if rs == nil {
				t.Fatalf("%s: not parsed", tc.query)
			}
			var got []string
			for _, p := range tc.in {
				if o := rs.filter(p); o != nil {
					k := map[bool]string{true: "K", false: "V"}[o.Key]
					if o.Kind == av.KindAudio {
						k = "A"
					}
					got = append(got, fmt.Sprintf("%s%d", k, o.DTS/time.Millisecond))
				}
			}
			if s := fmt.Sprint(got); s != "["+tc.want+"]" {
				t.Fatalf("got %s, want [%s]", s, tc.want)
			}
		})
	}
	// Headers and metadata always pass.
	rs := parseResume(url.Values{"resume_after": {"100"}, "resume_key": {"0"}})
	for _, p := range []*av.Packet{metaPkt(), avcHdr(1), aacHdr()} {
		if rs.filter(p) != p {
			t.Fatalf("%+v dropped", p)
		}
	}
	for _, q := range []string{"resume_after=100", "resume_key=0", "resume_after=10&resume_key=20", "resume_after=-1&resume_key=0",
		"resume_after=99999999999&resume_key=0", "resume_after=1e3&resume_key=0"} {
		qv, _ := url.ParseQuery(q)
		if parseResume(qv) != nil {
			t.Errorf("%s: parsed, want a plain start", q)
		}
	}
}

// FuzzFLVResume: any resume query either is refused or resumes so that no
// audio or video tag at or before T is sent and timestamps never go back.
func FuzzFLVResume(f *testing.F) {
	f.Add("resume_after=480&resume_key=400", []byte{0, 1, 2, 3, 4, 5})
	f.Add("resume_after=0&resume_key=0", []byte{200, 13, 7})
	f.Add("resume_after=4294967295&resume_key=1", []byte{255})
	f.Fuzz(func(t *testing.T, query string, steps []byte) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		rs := parseResume(q)
		if rs == nil {
			return
		}
		dts := rs.key - 200*time.Millisecond
		var last time.Duration = -1
		for i, b := range steps {
			if i > 1000 {
				break
			}
			dts += time.Duration(b%100) * time.Millisecond
			p := &av.Packet{Kind: av.KindVideo, Key: b%5 == 0, DTS: max(dts, 0), Data: []byte{1}}
			if b%3 == 0 {
				p.Kind = av.KindAudio
				p.Key = false
			}
			o := rs.filter(p)
			if o == nil {
				continue
			}
			if msOf(o.DTS) <= rs.after {
				t.Fatalf("sent %v at or before T %v", o.DTS, rs.after)
			}
			if o.Kind == av.KindVideo {
				if o.DTS < last {
					t.Fatalf("video went back: %v after %v", o.DTS, last)
				}
				last = o.DTS
			}
		}
	})
}

// TestHTTPFLVResume: through the origin's handler, a resuming player gets
// the headers, then only the frames after T of its GOP, then live.
func TestHTTPFLVResume(t *testing.T) {
	_, srv, f := servedFeed(t, flvConfig())
	for _, p := range []*av.Packet{metaPkt(), avcHdr(1), aacHdr(), vid(0, true), aud(10), vid(40, false), aud(50), vid(80, false), vid(120, false)} {
		f.WritePacket(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/cam.flv?resume_after=40&resume_key=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Livefuse-Resume") != "1" || resp.Header.Get("Access-Control-Expose-Headers") != "X-Livefuse-Resume" {
		t.Fatalf("headers %v", resp.Header)
	}
	rd, err := av.NewFLVReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	headers := 0
	for len(got) < 4 {
		typ, ts, body, err := rd.ReadTag()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch {
		case typ == 18 || len(body) > 1 && body[1] == 0 && (typ == 8 || typ == 9):
			headers++ // onMetaData, sequence headers
		case typ == 9:
			got = append(got, fmt.Sprintf("V%d", ts))
		case typ == 8:
			got = append(got, fmt.Sprintf("A%d", ts))
		}
		if len(got) == 3 {
			f.WritePacket(vid(160, false))
		}
	}
	if s := fmt.Sprint(got); s != "[A50 V80 V120 V160]" || headers != 3 {
		t.Fatalf("got %s after %d headers, want [A50 V80 V120 V160] after 3", s, headers)
	}
}

// servedFeed returns a hub with cfg served over HTTP and the main feed of
// live/cam published into it; all are closed at the end of the test.
func servedFeed(t *testing.T, cfg Config) (*Hub, *httptest.Server, *Feed) {
	t.Helper()
	h, err := NewHub(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(h.Close)
	f, err := h.Publish("live", "cam", "main", av.Source{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return h, srv, f
}
