package main

import (
	"strings"
	"testing"

	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/transcode"
)

// TestEncryptionVariantRefusal: an encrypted stream of the config file is
// refused, with the reason, when the HLS variant has no encrypted form.
func TestEncryptionVariantRefusal(t *testing.T) {
	streams := []StreamConfig{{Name: "a"}, {Name: "b", Encryption: true}}
	for _, tc := range []struct {
		variant string
		refused bool
	}{{"", false}, {"mpegts", false}, {"off", false}, {"fmp4", true}, {"lowlatency", true}} {
		err := EncryptionConfig{}.checkHLSVariant(tc.variant, streams)
		if (err != nil) != tc.refused {
			t.Errorf("%q: %v, refused want %v", tc.variant, err, tc.refused)
		}
		if err != nil && (!strings.Contains(err.Error(), "streams[1] (b)") || !strings.Contains(err.Error(), "hls_variant mpegts")) {
			t.Errorf("%q: reason %q", tc.variant, err)
		}
		if got := encryptionRefusal(tc.variant) != ""; got != tc.refused {
			t.Errorf("%q: registry refusal %v", tc.variant, got)
		}
	}
	if err := (EncryptionConfig{}).checkHLSVariant("fmp4", streams[:1]); err != nil {
		t.Errorf("clear streams refused: %v", err)
	}
}

// TestStreamPolicyOf: the policy pushed to origin takes the feed policy
// and encryption from the registry, the play alias and the renditions from
// the stream's profile (the watermarked source is the alias, not a
// variant).
func TestStreamPolicyOf(t *testing.T) {
	tc := &transcoder{}
	profs := map[string]transcode.Profile{
		"ladder": {Name: "ladder", Renditions: []transcode.Rendition{{Name: "360p", Width: 640, Height: 360, MaxFPS: 25}}},
		"wm":     {Name: "wm", WatermarkSource: true, Renditions: []transcode.Rendition{{Name: "180p", Width: 320, Height: 180}}},
	}
	tc.profs.Store(&profs)
	p := &policyPusher{tc: tc}
	for _, c := range []struct {
		s    lms.Stream
		want origin.StreamPolicy
	}{
		{lms.Stream{App: "live", Name: "a", FeedPolicy: "main", Encryption: true}, origin.StreamPolicy{Feed: "main", Encrypted: true}},
		{lms.Stream{App: "live", Name: "b", Profile: "ladder"}, origin.StreamPolicy{Variants: []origin.Variant{{Name: "360p", Stream: "b_360p", Width: 640, Height: 360, FrameRate: 25}}}},
		{lms.Stream{App: "live", Name: "c", Profile: "wm"}, origin.StreamPolicy{PlayAlias: "c_source", Variants: []origin.Variant{{Name: "180p", Stream: "c_180p", Width: 320, Height: 180}}}},
		{lms.Stream{App: "live", Name: "d", Profile: "gone"}, origin.StreamPolicy{}},
	} {
		got := p.policy(c.s)
		if got.Feed != c.want.Feed || got.Encrypted != c.want.Encrypted || got.PlayAlias != c.want.PlayAlias || len(got.Variants) != len(c.want.Variants) {
			t.Errorf("%s: %+v, want %+v", c.s.Name, got, c.want)
			continue
		}
		for i := range got.Variants {
			if got.Variants[i] != c.want.Variants[i] {
				t.Errorf("%s: variant %+v, want %+v", c.s.Name, got.Variants[i], c.want.Variants[i])
			}
		}
	}
}
