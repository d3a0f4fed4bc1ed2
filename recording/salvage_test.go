package recording

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// TestSalvageTS cuts real segments short at every kind of place: what is
// kept ends before the last, possibly incomplete, frame and is measured
// from its timestamps.
func TestSalvageTS(t *testing.T) {
	c := makeClip(t, 10, "640x360")
	dir := t.TempDir()
	var segs []finished
	seg := &segmenter{target: 4 * time.Second,
		next: func() string { return filepath.Join(dir, openSegment) },
		done: func(f finished) error {
			p := filepath.Join(dir, segmentFile(len(segs)+1))
			segs = append(segs, f)
			return os.Rename(f.path, p)
		}}
	now := time.Now()
	for _, p := range append(append([]*av.Packet{}, c.headers...), c.media...) {
		if err := seg.write(p, now); err != nil {
			t.Fatal(err)
		}
	}
	seg.finish()
	b, err := os.ReadFile(filepath.Join(dir, segmentFile(1)))
	if err != nil {
		t.Fatal(err)
	}
	full := segs[0].duration
	tests := []struct {
		name   string
		cut    int
		wantOK bool
		minDur time.Duration
		maxDur time.Duration
	}{
		{"whole segment", len(b), true, full - 80*time.Millisecond, full},
		{"half, mid packet", len(b)/2 + 77, true, full/2 - time.Second, full/2 + time.Second},
		{"a few packets", 188 * 3, false, 0, 0},
		{"nothing", 0, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sv, ok := salvageTS(b[:tc.cut])
			if ok != tc.wantOK {
				t.Fatalf("ok %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if sv.n%tsPacketSize != 0 || sv.n > tc.cut {
				t.Fatalf("keeps %d bytes of %d", sv.n, tc.cut)
			}
			if sv.duration < tc.minDur || sv.duration > tc.maxDur {
				t.Fatalf("duration %v, want %v–%v", sv.duration, tc.minDur, tc.maxDur)
			}
			p := filepath.Join(t.TempDir(), "s.ts")
			os.WriteFile(p, b[:sv.n], 0o644)
			if e := decodeErrors(t, p); e != "" {
				t.Errorf("salvaged bytes do not decode cleanly: %s", e)
			}
		})
	}
}

// FuzzSalvageTS: spool bytes after a crash can be anything.
func FuzzSalvageTS(f *testing.F) {
	f.Add([]byte{0x47, 0x40, 0x00, 0x10, 0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1})
	f.Add(make([]byte, 188*4))
	f.Fuzz(func(t *testing.T, b []byte) {
		sv, ok := salvageTS(b)
		if ok && (sv.n <= 0 || sv.n > len(b) || sv.n%tsPacketSize != 0 || sv.duration <= 0) {
			t.Fatalf("salvage %+v of %d bytes", sv, len(b))
		}
	})
}
