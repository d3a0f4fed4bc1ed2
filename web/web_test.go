package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPinnedVersions: the versions the package names are the ones
// package-lock.json pins (what make web-assets copies).
func TestPinnedVersions(t *testing.T) {
	b, err := os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatal(err)
	}
	for mod, want := range map[string]string{"hls.js": HLSJSVersion, "mpegts.js": MpegtsJSVersion} {
		if got := lock.Packages["node_modules/"+mod].Version; got != want {
			t.Errorf("%s: package-lock.json pins %q, web.go says %q", mod, got, want)
		}
	}
}

// TestHandlerNeverRedirects: every library answer is the file itself or
// a 503 naming the make target, never a redirect to the internet.
func TestHandlerNeverRedirects(t *testing.T) {
	mods := t.TempDir()
	p := filepath.Join(mods, "hls.js", "dist", "hls.min.js")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("/* hls from node_modules */"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, modules, path string
		wantBody            string // a substring; "" skips
		wantStatus          []int
	}{
		{"page", "", "/", "livefuse-player.js", []int{200}},
		{"sdk", "", "/livefuse-player.js", "", []int{200}},
		{"decrypt", "", "/flvdecrypt.js", "FLVDecryptor", []int{200}},
		{"hls from modules", mods, "/vendor/hls.min.js", "from node_modules", []int{200}},
		{"mpegts embedded or 503", mods, "/vendor/mpegts.js", "", []int{200, 503}},
		{"hls embedded or 503", "", "/vendor/hls.min.js", "", []int{200, 503}},
		{"unknown library", "", "/vendor/evil.js", "", []int{404}},
		{"readme not served as a library", "", "/vendor/README.md", "", []int{404}},
		{"traversal", mods, "/vendor/../web.go", "", []int{404}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Handler(tc.modules).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			ok := false
			for _, s := range tc.wantStatus {
				ok = ok || rec.Code == s
			}
			if !ok {
				t.Fatalf("status %d, want one of %v: %s", rec.Code, tc.wantStatus, rec.Body.String())
			}
			if rec.Code == 503 && !strings.Contains(rec.Body.String(), AssetsTarget) {
				t.Errorf("503 does not name %q: %s", AssetsTarget, rec.Body.String())
			}
			if rec.Code == 503 && HasLibraries() {
				t.Errorf("503 although the libraries are embedded")
			}
			if tc.wantBody != "" && !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body lacks %q", tc.wantBody)
			}
		})
	}
}
