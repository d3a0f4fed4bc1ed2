package cdnmix

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestSteering: the steered multivariant playlist repeats each variant and
// rendition group per live vendor with its PATHWAY-ID, on the vendor, and
// names the steering manifest; the manifest orders the bucket's live
// vendors, and follows a plan change (a vendor blacklisted).
func TestSteering(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	var query string
	env.d.media = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		if r.URL.Path != "/live/demo/index.m3u8" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n" +
			`#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="a",DEFAULT=YES,URI="audio1_stream.m3u8"` + "\n" +
			`#EXT-X-STREAM-INF:BANDWIDTH=1000000,CODECS="avc1.64001f,mp4a.40.2",AUDIO="audio"` + "\n" +
			"video1_stream.m3u8\n" +
			`#EXT-X-STREAM-INF:BANDWIDTH=300000,AUDIO="audio"` + "\nv/240p/index.m3u8\n"))
	})
	const remote = "198.51.100.1:1234" // GD telecom: vendors a, b, c
	w := env.get("/dispatch/live/demo/steered.m3u8?auth_key=x", remote)
	if w.Code != 200 {
		t.Fatalf("steered.m3u8: %d %s", w.Code, w.Body)
	}
	if query != "auth_key=x" {
		t.Errorf("the origin got query %q, want the client's", query)
	}
	pl := w.Body.String()
	first := strings.SplitN(strings.SplitN(pl, `PATHWAY-ID="`, 2)[1], `"`, 2)[0]
	if !strings.Contains(pl, `#EXT-X-CONTENT-STEERING:SERVER-URI="steering.json",PATHWAY-ID="`+first+`"`) {
		t.Fatalf("no steering tag:\n%s", pl)
	}
	for _, v := range []string{"a", "b", "c"} {
		if n := strings.Count(pl, `PATHWAY-ID="`+v+`"`); n != 2 && v != first || v == first && n != 3 {
			t.Errorf("vendor %s: %d PATHWAY-ID attributes:\n%s", v, n, pl)
		}
		if !strings.Contains(pl, `GROUP-ID="audio-`+v+`"`) || !strings.Contains(pl, `AUDIO="audio-`+v+`"`) {
			t.Errorf("vendor %s: no audio group of its own:\n%s", v, pl)
		}
	}
	if strings.Contains(pl, `PATHWAY-ID="sh"`) {
		t.Errorf("vendor sh (SH only) in a GD playlist")
	}
	if !strings.Contains(pl, "https://hls-b.example.com/edge/live/demo/v/240p/index.m3u8?") {
		t.Errorf("b's variant not on b's HLS base, signed:\n%s", pl)
	}

	manifest := func(cur string) (ttl int, order []string) {
		t.Helper()
		w := env.get("/dispatch/live/demo/steering.json?_HLS_pathway="+cur+"&_HLS_throughput=1000", remote)
		var m struct {
			Version  int      `json:"VERSION"`
			TTL      int      `json:"TTL"`
			Priority []string `json:"PATHWAY-PRIORITY"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || w.Code != 200 || m.Version != 1 {
			t.Fatalf("steering.json: %d %s (%v)", w.Code, w.Body, err)
		}
		return m.TTL, m.Priority
	}
	seen := map[string]int{}
	for range 100 {
		ttl, order := manifest("")
		if ttl != 10 || len(order) != 3 {
			t.Fatalf("TTL %d, order %v", ttl, order)
		}
		seen[order[0]]++
	}
	if seen["a"] < seen["b"] || seen["b"] < seen["c"] || seen["c"] == 0 {
		t.Errorf("first pathways over 100 manifests %v, want by ratio a > b > c > 0", seen)
	}

	// A player on b stays on b at every reload.
	for range 20 {
		if _, order := manifest("b"); order[0] != "b" {
			t.Fatalf("a player on b moved to %v", order)
		}
	}

	// A plan change: a blacklisted in GD telecom leaves the manifest.
	if err := env.alloc.SetBlacklist([]BlacklistEntry{{Vendor: "a", Region: "GD", ISP: "telecom"}}); err != nil {
		t.Fatal(err)
	}
	env.alloc.Recompute(env.now)
	for range 20 {
		if _, order := manifest("a"); len(order) != 2 || order[0] == "a" || order[1] == "a" {
			t.Fatalf("after a's blacklisting: %v", order)
		}
	}

	for _, bad := range []string{"/dispatch/live/other/steering.json", "/dispatch/live/demo/x/steering.json", "/dispatch/live/../steered.m3u8"} {
		if w := env.get(bad, remote); w.Code != 404 {
			t.Errorf("%s: %d, want 404", bad, w.Code)
		}
	}
}

// TestSteerMediaPlaylist: a media playlist at index.m3u8 (MPEG-TS HLS)
// becomes one variant per pathway.
func TestSteerMediaPlaylist(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	vs := env.alloc.Plan().vendors.list[2:3] // c: unsigned
	out, ok := steerPlaylist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg1.ts\n", "live", "demo", vs, testNow, "steering.json")
	want := "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"steering.json\",PATHWAY-ID=\"c\"\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=3000000,PATHWAY-ID=\"c\"\n" + vs[0].hlsPrefix + "/live/demo/index.m3u8\n"
	if !ok || out != want {
		t.Fatalf("got %v\n%s\nwant\n%s", ok, out, want)
	}
}

// TestSteerPlaylistRefuses: playlists that are not HLS and URIs off the stream's
// directory are not steered.
func TestSteerPlaylistRefuses(t *testing.T) {
	env := newDispatchEnv(t, dispatchVendors())
	vs := env.alloc.Plan().vendors.list[:1]
	for _, src := range []string{
		"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://evil.example/x.m3u8\n",
		"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n../other/x.m3u8\n",
		"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
		"not a playlist",
	} {
		if out, ok := steerPlaylist(src, "live", "demo", vs, testNow, "steering.json"); ok {
			t.Errorf("steered %q:\n%s", src, out)
		}
	}
}

// FuzzSteerPlaylist: any origin playlist either is refused or steers into
// a playlist whose every URI is on a vendor, with one PATHWAY-ID per
// variant and vendor.
func FuzzSteerPlaylist(f *testing.F) {
	f.Add("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\nmain_stream.m3u8\n")
	f.Add("#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"a.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\nv/240p/index.m3u8\n")
	f.Add("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg1.ts\n")
	f.Add("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,PATHWAY-ID=\"x\",NAME=\"a,b\"\n# c\n\nx.m3u8\n")
	env := newDispatchEnv(f, dispatchVendors())
	vs := env.alloc.Plan().vendors.list[1:3] // b (its own HLS base, signed) and c
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > maxSteeredPlaylist {
			return
		}
		out, ok := steerPlaylist(src, "live", "demo", vs, testNow, "steering.json")
		if !ok {
			return
		}
		for _, l := range strings.Split(out, "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if !strings.HasPrefix(l, vs[0].hlsPrefix+"/live/demo/") && !strings.HasPrefix(l, vs[1].hlsPrefix+"/live/demo/") {
				t.Fatalf("URI off the vendors: %q in\n%s", l, out)
			}
		}
	})
}
