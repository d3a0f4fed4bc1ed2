package recording

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestListDamagedManifest: a session whose manifest is damaged stays in
// the listing, marked damaged with the reason, with its segments and URLs
// that fetch them.
func TestListDamagedManifest(t *testing.T) {
	tests := []struct{ name, manifest string }{
		{"truncated", `{"app":"live","name":"cam","session":"20260101T000000Z","segm`},
		{"not json", "\x00\xff garbage"},
		{"inconsistent", `{"app":"live","name":"cam","session":"20260101T000000Z","segments":[{"seq":2,"file":"seg-000001.ts"}]}`},
		{"empty", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRecorder(t, Config{}, &testStream{}, nil)
			dir := filepath.Join(r.cfg.Local.Dir, "live", "cam", "20260101T000000Z")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			segs := map[string]string{"seg-000001.ts": "first segment", "seg-000002.ts": "second"}
			for f, b := range segs {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, manifestName), []byte(tc.manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			recs, err := r.List(ctx, "", "")
			if err != nil || len(recs) != 1 {
				t.Fatalf("list: %v %+v", err, recs)
			}
			rec := recs[0]
			if !strings.Contains(rec.Damaged, manifestName) || rec.App != "live" || rec.Name != "cam" ||
				rec.Session != "20260101T000000Z" || rec.Segments != 2 || len(rec.SegmentFiles) != 2 || rec.URL != "" {
				t.Fatalf("damaged session listed as %+v", rec)
			}
			for _, sf := range rec.SegmentFiles {
				if got := httpGet(t, sf.URL); got != segs[sf.File] || sf.Bytes != int64(len(got)) {
					t.Errorf("%s: got %q (%d bytes listed)", sf.File, got, sf.Bytes)
				}
			}
		})
	}
}
