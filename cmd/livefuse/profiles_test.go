package main

import "testing"

func TestDecodeProfile(t *testing.T) {
	good := `{"name":"low","renditions":[{"name":"a","width":320,"height":180,"video_kbps":300}]}`
	if p, err := decodeProfile("low", []byte(good)); err != nil || p.Name != "low" {
		t.Errorf("good profile: %+v %v", p, err)
	}
	for name, tc := range map[string]struct{ key, body string }{
		"under another name": {"other", good},
		"not json":           {"low", "{"},
		"invalid":            {"low", `{"name":"low","renditions":[{"name":"a","width":321,"height":180,"video_kbps":300}]}`},
	} {
		if _, err := decodeProfile(tc.key, []byte(tc.body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
