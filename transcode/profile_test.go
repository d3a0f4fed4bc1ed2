package transcode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProfileValidate(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "logo.png")
	if err := os.WriteFile(img, []byte("png"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := func() Profile {
		return Profile{Name: "hd", Renditions: []Rendition{{Name: "720p", Width: 1280, Height: 720, VideoKbps: 2500}}}
	}
	cases := []struct {
		name string
		edit func(p *Profile)
		want string // substring of the error; "" means valid
	}{
		{"valid", func(p *Profile) {}, ""},
		{"valid watermark image and text", func(p *Profile) {
			p.Watermark = &Watermark{Image: img, Text: "Live (c) 2026", Time: true}
		}, ""},
		{"valid watermarked source", func(p *Profile) {
			p.Watermark = &Watermark{Text: "x"}
			p.WatermarkSource, p.SourceKbps = true, 4000
		}, ""},
		{"no name", func(p *Profile) { p.Name = "" }, "name: empty"},
		{"bad name", func(p *Profile) { p.Name = "a/b" }, "only letters"},
		{"no renditions", func(p *Profile) { p.Renditions = nil }, "at least one"},
		{"odd width", func(p *Profile) { p.Renditions[0].Width = 641 }, "width 641 is odd"},
		{"odd height", func(p *Profile) { p.Renditions[0].Height = 359 }, "height 359 is odd"},
		{"zero width", func(p *Profile) { p.Renditions[0].Width = 0 }, "width 0"},
		{"huge height", func(p *Profile) { p.Renditions[0].Height = 10000 }, "height 10000"},
		{"no bitrate", func(p *Profile) { p.Renditions[0].VideoKbps = 0 }, "video_kbps 0"},
		{"bad preset", func(p *Profile) { p.Renditions[0].Preset = "turbo" }, `preset "turbo"`},
		{"bad fps", func(p *Profile) { p.Renditions[0].MaxFPS = -1 }, "max_fps"},
		{"duplicate rendition", func(p *Profile) { p.Renditions = append(p.Renditions, p.Renditions[0]) }, "used twice"},
		{"reserved rendition", func(p *Profile) { p.Renditions[0].Name = "source" }, "reserved"},
		{"missing watermark file", func(p *Profile) {
			p.Watermark = &Watermark{Image: filepath.Join(dir, "nope.png")}
		}, "no such file"},
		{"watermark dir", func(p *Profile) { p.Watermark = &Watermark{Image: dir} }, "not a regular file"},
		{"empty watermark", func(p *Profile) { p.Watermark = &Watermark{} }, "needs an image"},
		{"bad position", func(p *Profile) { p.Watermark = &Watermark{Text: "a", Position: "middle"} }, "position"},
		{"bad opacity", func(p *Profile) { p.Watermark = &Watermark{Text: "a", Opacity: 1.5} }, "opacity"},
		{"text with quote", func(p *Profile) { p.Watermark = &Watermark{Text: "it's"} }, "character"},
		{"text with colon", func(p *Profile) { p.Watermark = &Watermark{Text: "a:b"} }, "character"},
		{"text with percent", func(p *Profile) { p.Watermark = &Watermark{Text: "%{pts}"} }, "character"},
		{"tiny font", func(p *Profile) { p.Watermark = &Watermark{Text: "a", FontSize: 2} }, "font_size"},
		{"source without watermark", func(p *Profile) { p.WatermarkSource, p.SourceKbps = true, 100 }, "needs a watermark"},
		{"source without kbps", func(p *Profile) {
			p.Watermark = &Watermark{Text: "a"}
			p.WatermarkSource = true
		}, "source_kbps"},
		{"kbps without source", func(p *Profile) { p.SourceKbps = 100 }, "only used"},
		{"short gop", func(p *Profile) { p.GOP = Duration(100 * time.Millisecond) }, "gop"},
		{"source keyframes", func(p *Profile) { p.Keyframes = "source" }, ""},
		{"source keyframes with max_fps", func(p *Profile) {
			p.Keyframes = "source"
			p.Renditions[0].MaxFPS = 30
		}, "cannot be combined with max_fps"},
		{"bad keyframes", func(p *Profile) { p.Keyframes = "often" }, `keyframes "often"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := ok()
			tc.edit(&p)
			err := p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q, got nil", tc.want)
			}
			if !errors.Is(err, ErrInvalidProfile) {
				t.Errorf("error %v does not wrap ErrInvalidProfile", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestProfileDefaults(t *testing.T) {
	p := Profile{Name: "p", Renditions: []Rendition{{Name: "a", Width: 320, Height: 180, VideoKbps: 300}},
		Watermark: &Watermark{Text: "x"}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Renditions[0].Preset != DefaultPreset || time.Duration(p.GOP) != DefaultGOP ||
		p.Watermark.Position != "bottom-right" || p.Watermark.Opacity != 1 || p.Watermark.FontSize != 24 {
		t.Fatalf("defaults not filled: %+v %+v", p, *p.Watermark)
	}
}

func TestParseProfileJSON(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"valid", `{"name":"sd","gop":"1s","renditions":[{"name":"360p","width":640,"height":360,"video_kbps":800}]}`, ""},
		{"unknown rendition field", `{"name":"sd","renditions":[{"name":"360p","width":640,"height":360,"video_kbps":800,"bitrate":1}]}`, `unknown field "bitrate"`},
		{"unknown top field", `{"name":"sd","ladder":[]}`, `unknown field "ladder"`},
		{"bad gop", `{"name":"sd","gop":"soon","renditions":[{"name":"a","width":2,"height":2,"video_kbps":1}]}`, "invalid duration"},
		{"odd width", `{"name":"sd","renditions":[{"name":"a","width":641,"height":360,"video_kbps":800}]}`, "odd"},
		{"trailing", `{"name":"sd","renditions":[{"name":"a","width":2,"height":2,"video_kbps":1}]} {}`, "trailing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseProfileJSON([]byte(tc.in))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if time.Duration(p.GOP) != time.Second {
					t.Fatalf("gop %v", time.Duration(p.GOP))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidProfile) {
				t.Fatalf("error %v, want %q wrapping ErrInvalidProfile", err, tc.want)
			}
		})
	}
}

func TestValidateProfilesAllOrNothing(t *testing.T) {
	good := Profile{Name: "a", Renditions: []Rendition{{Name: "r", Width: 320, Height: 180, VideoKbps: 300}}}
	bad := good
	bad.Name = "b"
	bad.Renditions = []Rendition{{Name: "r", Width: 321, Height: 180, VideoKbps: 300}}
	in := []Profile{good, bad}
	if _, err := ValidateProfiles(in); err == nil || !strings.Contains(err.Error(), "profiles[1]") {
		t.Fatalf("want profiles[1] error, got %v", err)
	}
	if in[0].Renditions[0].Preset != "" {
		t.Fatal("ValidateProfiles changed its input")
	}
	if _, err := ValidateProfiles([]Profile{good, good}); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Fatalf("duplicate names: %v", err)
	}
}

// FuzzParseProfileJSON: whatever the API is given, an accepted profile
// builds a command whose filter graph user text cannot break out of.
func FuzzParseProfileJSON(f *testing.F) {
	f.Add([]byte(`{"name":"sd","renditions":[{"name":"360p","width":640,"height":360,"video_kbps":800}]}`))
	f.Add([]byte(`{"name":"t","watermark":{"text":"LIVE (c) 2026","time":true,"position":"center"},"renditions":[{"name":"a","width":2,"height":2,"video_kbps":1,"max_fps":29.97}]}`))
	f.Add([]byte(`{"name":"s","watermark":{"text":"x"},"watermark_source":true,"source_kbps":10,"gop":"1s"}`))
	f.Add([]byte(`{"name":"q","watermark":{"text":"a';b:c[d]"},"renditions":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProfileJSON(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidProfile) {
				t.Fatalf("error %v does not wrap ErrInvalidProfile", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted profile does not validate again: %v", err)
		}
		c := BuildCommand(&p)
		graph := argsAfter(c.Args, "-filter_complex")
		if len(graph) != 1 {
			t.Fatalf("filter_complex %v", graph)
		}
		// Outside quoted values only the builder's own characters appear.
		outside := ""
		for i, part := range strings.Split(graph[0], "'") {
			if i%2 == 0 {
				outside += part
			}
		}
		if strings.Count(graph[0], "'")%2 != 0 {
			t.Fatalf("unbalanced quotes in %q", graph[0])
		}
		for _, r := range outside {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789[]:;=,-*()/@._", r) {
				t.Fatalf("character %q outside quotes in %q", r, graph[0])
			}
		}
		if want := len(p.outputs()); len(c.Outputs) != want || c.ProgressFD != 3+want {
			t.Fatalf("outputs %v, progress fd %d", c.Outputs, c.ProgressFD)
		}
	})
}
