package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Stream{App: "live", Name: "demo", PublishToken: "tok"}
	tests := []struct {
		name    string
		mod     func(*Stream)
		wantErr string // "" = valid
	}{
		{"minimal", func(*Stream) {}, ""},
		{"all fields", func(s *Stream) {
			s.PlayKey, s.Source, s.Profile = "k!~", "rtmp://h:1935/live/x?token=a", "hd_720.v2"
		}, ""},
		{"rtsp source", func(s *Stream) { s.Source = "rtsp://user:pw@10.0.0.1:554/s" }, ""},
		{"128-byte name", func(s *Stream) { s.Name = strings.Repeat("n", 128) }, ""},
		{"129-byte name", func(s *Stream) { s.Name = strings.Repeat("n", 129) }, "name: longer"},
		{"empty app", func(s *Stream) { s.App = "" }, "app: must not be empty"},
		{"dot app", func(s *Stream) { s.App = ".hidden" }, "app: must not start"},
		{"slash name", func(s *Stream) { s.Name = "a/b" }, "name: byte 1"},
		{"unicode name", func(s *Stream) { s.Name = "cafè" }, "name: byte 3"},
		{"empty token", func(s *Stream) { s.PublishToken = "" }, "publish_token: must not be empty"},
		{"token with space", func(s *Stream) { s.PublishToken = "a b" }, "publish_token: byte 1"},
		{"token with control", func(s *Stream) { s.PublishToken = "a\x7f" }, "publish_token: byte 1"},
		{"257-byte token", func(s *Stream) { s.PublishToken = strings.Repeat("t", 257) }, "publish_token: longer"},
		{"bad play key", func(s *Stream) { s.PlayKey = "a\tb" }, "play_key:"},
		{"http source", func(s *Stream) { s.Source = "http://h/x" }, "source: scheme"},
		{"source without host", func(s *Stream) { s.Source = "rtmp:///live/x" }, "source: host"},
		{"source not a URL", func(s *Stream) { s.Source = "rtmp://[::1" }, "source: not a URL"},
		{"bad profile", func(s *Stream) { s.Profile = "a b" }, "profile:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.mod(&s)
			err := s.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.wantErr)
			}
			if s.PublishToken != "" && strings.Contains(err.Error(), s.PublishToken) {
				t.Fatalf("error echoes the token: %v", err)
			}
		})
	}
}

func TestPatchApply(t *testing.T) {
	base := Stream{App: "live", Name: "x", PublishToken: "t", PlayKey: "k", Enabled: true, Source: "rtmp://h/a", Profile: "p"}
	var p StreamPatch
	if err := json.Unmarshal([]byte(`{"enabled":false,"profile":""}`), &p); err != nil {
		t.Fatal(err)
	}
	got, fields := p.Apply(base)
	want := base
	want.Enabled, want.Profile = false, ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Apply = %+v, want %+v", got, want)
	}
	if strings.Join(fields, ",") != "enabled,profile" {
		t.Errorf("fields = %v", fields)
	}
}

// TestPatchIPLists: a list present in the patch replaces the stream's, []
// empties it, an absent one stays; bad entries do not validate.
func TestPatchIPLists(t *testing.T) {
	base := Stream{App: "live", Name: "x", PublishToken: "t",
		IPLists: IPLists{PublishDeny: []string{"10.0.0.0/8"}, PlayDeny: []string{"127.0.0.2"}}}
	tests := []struct {
		name    string
		patch   string
		want    IPLists
		fields  string
		invalid bool
	}{
		{"replace one", `{"play_allow":["192.0.2.0/24"]}`,
			IPLists{PublishDeny: []string{"10.0.0.0/8"}, PlayAllow: []string{"192.0.2.0/24"}, PlayDeny: []string{"127.0.0.2"}}, "play_allow", false},
		{"empty one", `{"play_deny":[]}`, IPLists{PublishDeny: []string{"10.0.0.0/8"}}, "play_deny", false},
		{"bad entry", `{"publish_allow":["nope"]}`,
			IPLists{PublishAllow: []string{"nope"}, PublishDeny: []string{"10.0.0.0/8"}, PlayDeny: []string{"127.0.0.2"}}, "publish_allow", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p StreamPatch
			if err := json.Unmarshal([]byte(tt.patch), &p); err != nil {
				t.Fatal(err)
			}
			got, fields := p.Apply(base)
			if !reflect.DeepEqual(got.IPLists, tt.want) {
				t.Errorf("lists %+v, want %+v", got.IPLists, tt.want)
			}
			if strings.Join(fields, ",") != tt.fields {
				t.Errorf("fields %v", fields)
			}
			if err := got.Validate(); (err != nil) != tt.invalid {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	if len(base.PlayDeny) != 1 {
		t.Error("Apply changed the stream it was given")
	}
}

func TestSplitPath(t *testing.T) {
	tests := []struct{ in, app, name string }{
		{"demo", "live", "demo"},
		{"events/demo", "events", "demo"},
	}
	for _, tc := range tests {
		if app, name := SplitPath(tc.in); app != tc.app || name != tc.name {
			t.Errorf("SplitPath(%q) = %q, %q", tc.in, app, name)
		}
	}
}

// FuzzStreamJSON: decoding any bytes as a stream, a create request or a
// patch, applying and validating never panics, and what validates survives a
// JSON round trip unchanged and still valid.
func FuzzStreamJSON(f *testing.F) {
	f.Add([]byte(`{"app":"live","name":"demo","publish_token":"t","enabled":true}`))
	f.Add([]byte(`{"name":"x","source":"rtsp://cam/1","record":true,"profile":"hd"}`))
	f.Add([]byte(`{"enabled":false,"play_key":"","source":null}`))
	f.Add([]byte(`{"name":".x","publish_token":"a b","source":"rtmp://[::1"}`))
	f.Add([]byte(`{"created_at":"2026-01-01T00:00:00Z","name":"\u00e9"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Stream
		if json.Unmarshal(b, &s) == nil && s.Validate() == nil {
			out, err := json.Marshal(s)
			if err != nil {
				t.Fatalf("marshal valid stream: %v", err)
			}
			var back Stream
			if err := json.Unmarshal(out, &back); err != nil || back.Validate() != nil {
				t.Fatalf("round trip of %s: %v / %v", out, err, back.Validate())
			}
		}
		var c CreateStreamRequest
		if json.Unmarshal(b, &c) == nil {
			_ = Stream{App: c.App, Name: c.Name, PublishToken: c.PublishToken, PlayKey: c.PlayKey,
				Source: c.Source, Profile: c.Profile}.Validate()
		}
		var p StreamPatch
		if json.Unmarshal(b, &p) == nil {
			got, _ := p.Apply(Stream{App: "live", Name: "x", PublishToken: "t"})
			_ = got.Validate()
		}
	})
}

// FuzzAlertRulesJSON: a PUT of alert rules is decoded and validated; any
// set that validates survives a round trip and still validates.
func FuzzAlertRulesJSON(f *testing.F) {
	f.Add([]byte(`{"rules":[{"name":"fps-low","kind":"ingest_fps_below","threshold":10,"for_s":2,"severity":"critical"}]}`))
	f.Add([]byte(`{"rules":[{"name":"x","kind":"stall_rate_above","threshold":5,"for_s":120,"min_users":20}]}`))
	f.Add([]byte(`{"rules":[{"name":"a b","kind":"nope","threshold":-1,"for_s":1e308}]}`))
	f.Add([]byte(`{"rules":[{"name":"d","kind":"switch","for_s":"NaN"}],"x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rs AlertRules
		if json.Unmarshal(b, &rs) != nil || ValidateAlertRules(rs.Rules) != nil {
			return
		}
		out, err := json.Marshal(rs)
		if err != nil {
			t.Fatalf("marshal valid rules: %v", err)
		}
		var back AlertRules
		if err := json.Unmarshal(out, &back); err != nil || ValidateAlertRules(back.Rules) != nil {
			t.Fatalf("round trip of %s: %v / %v", out, err, ValidateAlertRules(back.Rules))
		}
	})
}
