package authkey

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	good := Sign("/live/demo.flv", "secret", now.Add(time.Minute), "abc", "0")
	tests := []struct {
		name, uri, value, key string
		want                  error
	}{
		{"good", "/live/demo.flv", good, "secret", nil},
		{"missing", "/live/demo.flv", "", "secret", ErrMissing},
		{"wrong key", "/live/demo.flv", good, "other", ErrMismatch},
		{"other uri", "/live/other.flv", good, "secret", ErrMismatch},
		{"expired", "/live/demo.flv", Sign("/live/demo.flv", "secret", now.Add(-time.Second), "abc", "0"), "secret", ErrExpired},
		{"three parts", "/live/demo.flv", "1-2-3", "secret", ErrMalformed},
		{"bad exp", "/live/demo.flv", "x-a-0-" + strings.Repeat("0", 32), "secret", ErrMalformed},
		{"short hash", "/live/demo.flv", "1700000060-a-0-abc", "secret", ErrMalformed},
		{"a day ahead", "/live/demo.flv", Sign("/live/demo.flv", "secret", now.Add(DefaultMaxTTL), "abc", "0"), "secret", nil},
		{"past a day", "/live/demo.flv", Sign("/live/demo.flv", "secret", now.Add(DefaultMaxTTL+time.Second), "abc", "0"), "secret", ErrTooFar},
		{"year 2286", "/live/demo.flv", Sign("/live/demo.flv", "secret", time.Unix(9_999_999_999, 0), "abc", "0"), "secret", ErrTooFar},
		{"max int64", "/live/demo.flv", "9223372036854775807-a-0-" + strings.Repeat("0", 32), "secret", ErrTooFar},
	}
	for _, tc := range tests {
		if err := Verify(tc.uri, tc.value, tc.key, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestTypeAConfigMaxTTL: the configured maximum, not the default, bounds
// the expiry.
func TestTypeAConfigMaxTTL(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	week := TypeAConfig{MaxTTL: 7 * 24 * time.Hour}
	tests := []struct {
		name string
		cfg  TypeAConfig
		exp  time.Time
		want error
	}{
		{"default, an hour", TypeAConfig{}, now.Add(time.Hour), nil},
		{"default, two days", TypeAConfig{}, now.Add(48 * time.Hour), ErrTooFar},
		{"week, two days", week, now.Add(48 * time.Hour), nil},
		{"week, eight days", week, now.Add(8 * 24 * time.Hour), ErrTooFar},
		{"minute, an hour", TypeAConfig{MaxTTL: time.Minute}, now.Add(time.Hour), ErrTooFar},
		{"minute, expired", TypeAConfig{MaxTTL: time.Minute}, now.Add(-time.Second), ErrExpired},
	}
	for _, tc := range tests {
		v := Sign("/live/a.flv", "k", tc.exp, "r", "0")
		if err := tc.cfg.Verify("/live/a.flv", v, "k", now); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// The vector from the usual CDN documentation layout: md5("URI-EXP-RAND-UID-KEY").
func TestSignLayout(t *testing.T) {
	v := Sign("/video/standard/1K.html", "aliyuncdnexp1234", time.Unix(1444435200, 0), "0", "0")
	if v != "1444435200-0-0-80cd3862d699b7118eed99103f2a3a4f" {
		t.Fatalf("got %s", v)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("/live/a.flv", "1444435200-0-0-80cd3862d699b7118eed99103f2a3a4f")
	f.Add("", "---")
	f.Fuzz(func(t *testing.T, uri, value string) {
		_ = Verify(uri, value, "k", time.Unix(0, 0))
	})
}
