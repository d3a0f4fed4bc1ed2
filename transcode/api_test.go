package transcode

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeProfiles is a ProfileStore in memory (this package's tests only).
type fakeProfiles struct {
	mu sync.Mutex
	m  map[string]Profile
}

func (f *fakeProfiles) All() map[string]Profile {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.m)
}

func (f *fakeProfiles) Update(_ context.Context, name string, fn func(cur *Profile) (*Profile, error)) (*Profile, error) {
	var cur *Profile
	if p, ok := f.All()[name]; ok {
		cur = &p
	}
	next, err := fn(cur)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if next == nil {
		delete(f.m, name)
	} else {
		f.m[name] = *next
	}
	return next, nil
}

func TestProfileAPI(t *testing.T) {
	store := &fakeProfiles{m: map[string]Profile{}}
	applied := 0
	a := &API{Profiles: store, Reason: "no ffmpeg here", Applied: func() { applied++ },
		InUse: func(name string) []string {
			if name == "used" {
				return []string{"live/x"}
			}
			return nil
		}}
	mux := http.NewServeMux()
	a.Mount(mux)
	prof := func(name string, kbps int) string {
		return `{"name":"` + name + `","renditions":[{"name":"a","width":640,"height":360,"video_kbps":` + itoa(kbps) + `}]}`
	}
	for _, tc := range []struct {
		name, method, target, body string
		code                       int
		want                       string // in the body
		applied                    bool
	}{
		{"create", "POST", "/api/v1/profiles", prof("low", 300), 201, `"name":"low"`, true},
		{"create again", "POST", "/api/v1/profiles", prof("low", 400), 409, "exists", false},
		{"bad profile", "POST", "/api/v1/profiles", `{"name":"x","renditions":[{"name":"a","width":641,"height":360,"video_kbps":1}]}`, 400, "odd", false},
		{"name differs from the URL", "PUT", "/api/v1/profiles/other", prof("low", 500), 400, "does not match", false},
		{"replace", "PUT", "/api/v1/profiles/low", prof("low", 500), 200, `"video_kbps":500`, true},
		{"put creates", "PUT", "/api/v1/profiles/used", prof("used", 100), 201, `"name":"used"`, true},
		{"get", "GET", "/api/v1/profiles/low", "", 200, `"video_kbps":500`, false},
		{"list", "GET", "/api/v1/profiles", "", 200, `{"profiles":[{"name":"low"`, false},
		{"delete in use", "DELETE", "/api/v1/profiles/used", "", 409, "live/x", false},
		{"delete", "DELETE", "/api/v1/profiles/low", "", 204, "", true},
		{"delete again", "DELETE", "/api/v1/profiles/low", "", 404, "not found", false},
		{"get gone", "GET", "/api/v1/profiles/low", "", 404, "not found", false},
		{"workers without a pool", "GET", "/api/v1/transcode", "", 200, "no ffmpeg here", false},
	} {
		before := applied
		r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, w.Code, w.Body, tc.code, tc.want)
		}
		if (applied > before) != tc.applied {
			t.Errorf("%s: applied %v, want %v", tc.name, applied > before, tc.applied)
		}
		if w.Code >= 400 && w.Code != 404 {
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Errorf("%s: error body %s", tc.name, w.Body)
			}
		}
	}
	if _, ok := store.All()["used"]; !ok || len(store.All()) != 1 {
		t.Errorf("stored afterwards: %v", store.All())
	}
}
