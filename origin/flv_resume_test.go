package origin

import (
	"fmt"
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
