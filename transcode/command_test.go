package transcode

import (
	"slices"
	"strings"
	"testing"
)

// argAfter returns the values following each occurrence of flag.
func argsAfter(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestBuildCommand(t *testing.T) {
	ladder := []Rendition{
		{Name: "720p", Width: 1280, Height: 720, VideoKbps: 2500, Preset: "veryfast"},
		{Name: "480p", Width: 854, Height: 480, VideoKbps: 1200, MaxFPS: 30, Preset: "veryfast"},
		{Name: "360p", Width: 640, Height: 360, VideoKbps: 700, Preset: "ultrafast"},
	}
	cases := []struct {
		name     string
		p        Profile
		outputs  []string
		graphHas []string
		graphNot []string
		inputs   int
		fpsmax   []string
		bitrates []string
	}{
		{
			name:     "ladder",
			p:        Profile{Name: "abr", Renditions: ladder},
			outputs:  []string{"720p", "480p", "360p"},
			graphHas: []string{"[0:v]split=3[s0][s1][s2]", "[s0]scale=1280:720,setsar=1,format=yuv420p[v0]", "[s2]scale=640:360"},
			graphNot: []string{"overlay", "drawtext"},
			inputs:   1,
			fpsmax:   []string{"30"},
			bitrates: []string{"2500k", "1200k", "700k"},
		},
		{
			name: "single rendition with image",
			p: Profile{Name: "wm", Renditions: ladder[2:],
				Watermark: &Watermark{Image: "/tmp/logo.png", Position: "top-left", Margin: 16, Opacity: 0.5}},
			outputs:  []string{"360p"},
			graphHas: []string{"[1:v]format=rgba,colorchannelmixer=aa=0.5[logo]", "[0:v][logo]overlay=x=16:y=16:", "[wm0]null[s0]"},
			graphNot: []string{"split", "drawtext"},
			inputs:   2,
			bitrates: []string{"700k"},
		},
		{
			name: "text with time and watermarked source",
			p: Profile{Name: "src", Renditions: ladder[:1], WatermarkSource: true, SourceKbps: 5000, Keyframes: KeyframesSource,
				Watermark: &Watermark{Text: "LIVE", Time: true, FontSize: 30, Position: "bottom-right", Margin: 10, Opacity: 1}},
			outputs:  []string{"720p", "source"},
			graphHas: []string{"[0:v]drawtext=text='LIVE %{localtime}':fontsize=30", "x=w-text_w-10:y=h-text_h-10", "[wm1]split=2[s0][ssrc]", "[ssrc]format=yuv420p[vsrc]"},
			graphNot: []string{"overlay"},
			inputs:   1,
			bitrates: []string{"2500k", "5000k"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.GOP = Duration(DefaultGOP)
			c := BuildCommand(&p)
			if !slices.Equal(c.Outputs, tc.outputs) {
				t.Fatalf("outputs %v, want %v", c.Outputs, tc.outputs)
			}
			if c.ProgressFD != 3+len(tc.outputs) {
				t.Fatalf("progress fd %d", c.ProgressFD)
			}
			if got := argsAfter(c.Args, "-progress"); !slices.Equal(got, []string{"pipe:" + itoa(c.ProgressFD)}) {
				t.Fatalf("-progress %v", got)
			}
			if in := argsAfter(c.Args, "-i"); len(in) != tc.inputs || in[0] != "pipe:0" {
				t.Fatalf("inputs %v", in)
			}
			var pipes []string
			for _, a := range c.Args {
				if strings.HasPrefix(a, "pipe:") && a != "pipe:0" && a != "pipe:"+itoa(c.ProgressFD) {
					pipes = append(pipes, a)
				}
			}
			for i := range tc.outputs {
				if i >= len(pipes) || pipes[i] != "pipe:"+itoa(3+i) {
					t.Fatalf("output pipes %v", pipes)
				}
			}
			graph := argsAfter(c.Args, "-filter_complex")
			if len(graph) != 1 {
				t.Fatalf("filter_complex %v", graph)
			}
			for _, s := range tc.graphHas {
				if !strings.Contains(graph[0], s) {
					t.Errorf("graph %q lacks %q", graph[0], s)
				}
			}
			for _, s := range tc.graphNot {
				if strings.Contains(graph[0], s) {
					t.Errorf("graph %q has %q", graph[0], s)
				}
			}
			// Aligned keyframes: the same forced-keyframe expression for
			// every output, scene cuts off, no natural keyframes.
			keys := argsAfter(c.Args, "-force_key_frames")
			if len(keys) != len(tc.outputs) {
				t.Fatalf("force_key_frames %v", keys)
			}
			want := "expr:gte(t,n_forced*2)"
			if p.Keyframes == KeyframesSource {
				want = "source"
			}
			for _, k := range keys {
				if k != want {
					t.Errorf("force_key_frames %q, want %q", k, want)
				}
			}
			if sc := argsAfter(c.Args, "-sc_threshold"); len(sc) != len(tc.outputs) || sc[0] != "0" {
				t.Errorf("sc_threshold %v", sc)
			}
			if got := argsAfter(c.Args, "-fpsmax"); !slices.Equal(got, tc.fpsmax) {
				t.Errorf("fpsmax %v, want %v", got, tc.fpsmax)
			}
			if got := argsAfter(c.Args, "-b:v"); !slices.Equal(got, tc.bitrates) {
				t.Errorf("bitrates %v, want %v", got, tc.bitrates)
			}
			if got := argsAfter(c.Args, "-c:a"); len(got) != len(tc.outputs) || got[0] != "copy" {
				t.Errorf("audio %v", got)
			}
			if got := argsAfter(c.Args, "-f"); len(got) != 1+len(tc.outputs) || slices.ContainsFunc(got, func(s string) bool { return s != "flv" }) {
				t.Errorf("formats %v", got)
			}
		})
	}
}

func TestPlace(t *testing.T) {
	cases := []struct{ pos, x, y string }{
		{"top-left", "8", "8"},
		{"top-right", "W-w-8", "8"},
		{"bottom-left", "8", "H-h-8"},
		{"bottom-right", "W-w-8", "H-h-8"},
		{"center", "(W-w)/2", "(H-h)/2"},
	}
	for _, tc := range cases {
		if x, y := place(tc.pos, 8, "W", "H", "w", "h"); x != tc.x || y != tc.y {
			t.Errorf("%s: %s,%s want %s,%s", tc.pos, x, y, tc.x, tc.y)
		}
	}
}

func itoa(i int) string { return formatFloat(float64(i)) }
