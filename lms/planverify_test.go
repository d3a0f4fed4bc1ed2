package lms

import (
	"strings"
	"testing"
)

func TestPlanPlaylistChecks(t *testing.T) {
	for _, tc := range []struct {
		name, body, method string
		segs               int
	}{
		{"no key", "#EXTM3U\n#EXTINF:2,\nseg1.ts\n#EXTINF:2,\nseg2.ts\n", "NONE", 2},
		{"encrypted", "#EXTM3U\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"k\"\n#EXTINF:2,\nseg1.ts\n", "SAMPLE-AES", 1},
		{"turned off", "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"k\"\n#EXTINF:2,\nseg1.ts\n#EXT-X-KEY:METHOD=NONE\n#EXTINF:2,\nseg2.ts\n", "NONE", 2},
		{"turned on, newest not yet", "#EXTINF:2,\nseg1.ts\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"k\"\n", "NONE", 1},
		{"empty", "#EXTM3U\n", "NONE", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, n := lastKeyMethod(tc.body)
			if m != tc.method || n != tc.segs {
				t.Fatalf("got %s, %d segments; want %s, %d", m, n, tc.method, tc.segs)
			}
		})
	}
	if v, ok := firstVariant("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv/source/index.m3u8\n"); !ok || v != "v/source/index.m3u8" {
		t.Errorf("variant %q %v", v, ok)
	}
	for _, bad := range []string{"#EXT-X-STREAM-INF:X\nhttp://evil/x.m3u8\n", "#EXT-X-STREAM-INF:X\n/abs.m3u8\n", "#EXT-X-STREAM-INF:X\n../up.m3u8\n"} {
		if v, ok := firstVariant(bad); ok {
			t.Errorf("followed %q from %q", v, bad)
		}
	}
}

func TestRefusal(t *testing.T) {
	s := Stream{App: "live", Name: "ev"}
	if Refusal(s, "a") != "" {
		t.Error("a stream without serve_unit refused")
	}
	s.ServeUnit = "a"
	if Refusal(s, "a") != "" || !strings.Contains(Refusal(s, "b"), "unit a serves live/ev") {
		t.Errorf("serve_unit a: at a %q, at b %q", Refusal(s, "a"), Refusal(s, "b"))
	}
}

// FuzzPlanPlaylist: the verifier reads playlists from the units' media
// listeners; no input makes it panic or follow a URI outside the stream.
func FuzzPlanPlaylist(f *testing.F) {
	f.Add("#EXTM3U\n#EXT-X-KEY:METHOD=SAMPLE-AES\n#EXTINF:2,\nseg1.ts\n")
	f.Add("#EXT-X-STREAM-INF:BANDWIDTH=1\nv/a/index.m3u8\n")
	f.Fuzz(func(t *testing.T, body string) {
		lastKeyMethod(body)
		if v, ok := firstVariant(body); ok && (strings.Contains(v, "://") || strings.HasPrefix(v, "/") || strings.Contains(v, "..")) {
			t.Fatalf("followed %q", v)
		}
	})
}
