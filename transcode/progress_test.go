package transcode

import (
	"strings"
	"testing"
	"time"
)

const progressSample = `frame=25
fps=24.50
stream_0_0_q=28.0
bitrate= 412.3kbits/s
total_size=51234
out_time_us=1000000
out_time_ms=1000000
out_time=00:00:01.000000
dup_frames=0
drop_frames=2
speed=0.98x
progress=continue
frame=50
fps=N/A
out_time_us=N/A
speed=N/A
progress=end
`

func TestReadProgress(t *testing.T) {
	var got []Progress
	if err := ReadProgress(strings.NewReader(progressSample), func(p Progress) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	want := []Progress{
		{Frame: 25, FPS: 24.5, OutTime: time.Second, Speed: 0.98, Size: 51234, Drop: 2},
		{Frame: 50, End: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("block %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReadProgressOddInput(t *testing.T) {
	cases := []struct {
		name, in string
		blocks   int
	}{
		{"empty", "", 0},
		{"no block end", "frame=1\nfps=2\n", 0},
		{"crlf", "frame=3\r\nprogress=continue\r\n", 1},
		{"garbage", "\x00\x01=\n==\nprogress\nprogress=continue", 1},
		{"long line", strings.Repeat("x", 10000) + "\nprogress=continue\n", 1},
		{"negative", "frame=-5\nspeed=-1x\nprogress=continue\n", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := ReadProgress(strings.NewReader(tc.in), func(p Progress) {
				n++
				if p.Frame < 0 || p.Speed < 0 {
					t.Errorf("negative values: %+v", p)
				}
			})
			if err != nil || n != tc.blocks {
				t.Fatalf("blocks %d err %v, want %d", n, err, tc.blocks)
			}
		})
	}
}

func FuzzReadProgress(f *testing.F) {
	f.Add([]byte(progressSample))
	f.Add([]byte("frame=1\nout_time_us=9223372036854775807\nspeed=1e308x\nprogress=continue\n"))
	f.Add([]byte("fps=NaN\nspeed=Infx\nprogress=end"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		err := ReadProgress(strings.NewReader(string(b)), func(p Progress) {
			n++
			if p.Frame < 0 || p.FPS < 0 || p.OutTime < 0 || p.Speed < 0 || p.Size < 0 || p.FPS != p.FPS || p.Speed != p.Speed {
				t.Fatalf("bad values %+v", p)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > strings.Count(string(b), "progress=") {
			t.Fatalf("%d blocks from %d progress lines", n, strings.Count(string(b), "progress="))
		}
	})
}
