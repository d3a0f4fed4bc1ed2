package transcode

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	cases := []struct {
		name, in string
		want     time.Duration
		err      bool
	}{
		{"plain", "1234 (ffmpeg) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 200", 3 * time.Second, false},
		{"spaces in name", "1 (a b) c) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0", 100 * time.Millisecond, false},
		{"short", "1 (x) R 1 2", 0, true},
		{"no name", "1 x R", 0, true},
		{"not a number", "1 (x) R 1 1 1 0 -1 0 0 0 0 0 a 3", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("got %v, %v; want %v, err %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestReadProcSelf(t *testing.T) {
	u, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS < 1<<20 {
		t.Fatalf("RSS of the test process %d bytes: too small", u.RSS)
	}
}
