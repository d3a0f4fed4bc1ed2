package ingest

import (
	"testing"

	"github.com/livefuse/livefuse/av"
)

func TestParseStreamPath(t *testing.T) {
	tests := []struct {
		in        string
		app, name string
		token     string
		wantErr   bool
	}{
		{in: "live/demo?token=abc", app: "live", name: "demo", token: "abc"},
		{in: "/live/demo", app: "live", name: "demo"},
		{in: "demo?token=x&feed=backup", app: "live", name: "demo", token: "x"},
		{in: "a/b/c", wantErr: true},
		{in: "live/", wantErr: true},
		{in: "live/../x", wantErr: true},
		{in: "live/de mo", wantErr: true},
		{in: "live/demo?%zz", wantErr: true},
	}
	for _, tc := range tests {
		app, name, q, err := ParseStreamPath(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%q: want error, got %s/%s", tc.in, app, name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if app != tc.app || name != tc.name || q.Get("token") != tc.token {
			t.Errorf("%q: got %s/%s token %q", tc.in, app, name, q.Get("token"))
		}
	}
}

func FuzzParseStreamPath(f *testing.F) {
	for _, s := range []string{"live/demo?token=abc&feed=backup", "demo", "/a/b", "a/b/c?x=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		app, name, q, err := ParseStreamPath(s)
		if err != nil {
			return
		}
		if !av.ValidName(app) || !av.ValidName(name) || q == nil {
			t.Fatalf("accepted bad path %q -> %q %q", s, app, name)
		}
		_, _ = FeedFromQuery(q)
	})
}
