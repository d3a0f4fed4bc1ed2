package origin

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestTSHLSSpool packages the same packets with segments kept in memory
// and spooled to disk, and checks that players get the same bytes, that
// only the segments still kept have files, and that close removes them; a
// directory the spool cannot use leaves the segments in memory.
func TestTSHLSSpool(t *testing.T) {
	cases := []struct {
		name   string
		dir    func(t *testing.T) string
		onDisk bool
	}{
		{"disk", func(t *testing.T) string { return t.TempDir() }, true},
		{"unusable dir", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "not-a-dir")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return f
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := tc.dir(t)
			cfg := tshlsConfig{Stream: "live/x", SegmentDuration: time.Second, SegmentCount: 3, Keep: 4}
			mem := newTSHLS(cfg)
			cfg.Dir, cfg.DirPrefix = parent, "live.x"
			disk := newTSHLS(cfg)
			t.Cleanup(func() { mem.close(); disk.close() })
			for _, p := range synthGOPs(t, 0, 12, 0) {
				mem.writePacket(p)
				disk.writePacket(p)
			}

			// The spool works on its own goroutine: wait for it to take
			// every finished segment (bounded).
			kept := func() []*tshlsSegment {
				disk.mu.Lock()
				defer disk.mu.Unlock()
				out := make([]*tshlsSegment, len(disk.segs))
				for i, s := range disk.segs {
					c := *s
					out[i] = &c
				}
				return out
			}
			var segs []*tshlsSegment
			for deadline := time.Now().Add(10 * time.Second); ; {
				segs = kept()
				spooled := 0
				for _, s := range segs {
					if s.file != "" {
						spooled++
					}
				}
				if !tc.onDisk || spooled == len(segs) || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if len(segs) != 4 || segs[0].seq != 7 {
				t.Fatalf("kept %d segments from %d, want 4 from 7", len(segs), segs[0].seq)
			}
			for _, s := range segs {
				if onDisk := s.file != "" && s.data == nil; onDisk != tc.onDisk {
					t.Fatalf("seg%d on disk: %v (file %q, %d bytes in memory), want %v", s.seq, onDisk, s.file, len(s.data), tc.onDisk)
				}
			}

			memSrv, diskSrv := httptest.NewServer(mem), httptest.NewServer(disk)
			defer memSrv.Close()
			defer diskSrv.Close()
			for _, s := range segs {
				name := "/live/x/seg" + strconv.FormatUint(s.seq, 10) + ".ts"
				wantCode, want, _ := tshlsDo(t, http.MethodGet, memSrv.URL+name)
				code, got, hd := tshlsDo(t, http.MethodGet, diskSrv.URL+name)
				if wantCode != 200 || code != 200 || !bytes.Equal(got, want) || len(got) != s.size {
					t.Fatalf("%s: %d, %d bytes; in memory %d, %d bytes (size %d)", name, code, len(got), wantCode, len(want), s.size)
				}
				if hd.Get("Content-Type") != "video/mp2t" || hd.Get("Content-Length") != strconv.Itoa(s.size) {
					t.Fatalf("%s: headers %v", name, hd)
				}
				code, body, hd := tshlsDo(t, http.MethodHead, diskSrv.URL+name)
				if code != 200 || len(body) != 0 || hd.Get("Content-Length") != strconv.Itoa(s.size) {
					t.Fatalf("HEAD %s: %d, %d bytes, Content-Length %q", name, code, len(body), hd.Get("Content-Length"))
				}
			}
			if code, _, _ := tshlsDo(t, http.MethodGet, diskSrv.URL+"/live/x/seg2.ts"); code != http.StatusNotFound {
				t.Fatalf("a segment no longer kept: %d, want 404", code)
			}

			if tc.onDisk {
				files, _ := filepath.Glob(filepath.Join(parent, "live.x.*", tsSegFileGlob))
				if len(files) != len(segs) {
					t.Fatalf("%d segment files %v, want one per kept segment (%d)", len(files), files, len(segs))
				}
			}
			disk.close()
			if tc.onDisk {
				left, _ := os.ReadDir(parent)
				if len(left) != 0 {
					t.Fatalf("after close the spool left %v", left)
				}
			}
		})
	}
}

// tshlsDo makes a request and returns the status, body and headers.
func tshlsDo(t *testing.T, method, u string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// TestSweepTSSpools checks that the sweep at start removes the segment
// files an earlier process left, and their directories, and nothing else.
func TestSweepTSSpools(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "live.x.123")
	mixed := filepath.Join(dir, "other")
	for _, d := range []string{stale, mixed} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(stale, "seg1.ts"))
	write(filepath.Join(stale, "seg22.ts"))
	write(filepath.Join(mixed, "seg3.ts"))
	write(filepath.Join(mixed, "notes.txt"))
	write(filepath.Join(dir, "seg4.ts")) // not in a spool's directory
	if err := sweepTSSpools(dir); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		stale: false, filepath.Join(mixed, "seg3.ts"): false,
		filepath.Join(mixed, "notes.txt"): true, filepath.Join(dir, "seg4.ts"): true,
	} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", p, err == nil, want)
		}
	}
}
