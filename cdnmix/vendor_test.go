package cdnmix

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"gopkg.in/yaml.v3"
)

func TestVendorValidate(t *testing.T) {
	good := func() Vendor {
		return Vendor{Name: "a", FLVBase: "http://cdn-a.example.com", CommitMbps: 100, CeilingMbps: 200, Enabled: true}
	}
	tests := []struct {
		name   string
		modify func(v *Vendor)
		want   string // substring of the error; "" = valid
	}{
		{"good", func(v *Vendor) {}, ""},
		{"hls only", func(v *Vendor) { v.FLVBase, v.HLSBase = "", "https://h.example.com/p/" }, ""},
		{"no name", func(v *Vendor) { v.Name = "" }, "name must be"},
		{"bad name", func(v *Vendor) { v.Name = "a b" }, "name must be"},
		{"no base", func(v *Vendor) { v.FLVBase = "" }, "flv_base or hls_base is required"},
		{"ftp base", func(v *Vendor) { v.FLVBase = "ftp://x" }, "scheme must be http or https"},
		{"base with query", func(v *Vendor) { v.FLVBase = "http://x/?a=1" }, "no query"},
		{"no host", func(v *Vendor) { v.HLSBase = "http:///p" }, "hls_base"},
		{"unknown scheme", func(v *Vendor) { v.Signing = "md5" }, `signing "md5" unknown`},
		{"auth_key without key", func(v *Vendor) { v.Signing = SchemeAuthKey }, "needs a key"},
		{"negative commit", func(v *Vendor) { v.CommitMbps = -1 }, "negative"},
		{"zero ceiling", func(v *Vendor) { v.CommitMbps, v.CeilingMbps = 0, 0 }, "must be positive"},
		{"commit above ceiling", func(v *Vendor) { v.CommitMbps = 300 }, "above ceiling"},
		{"bad region limit", func(v *Vendor) { v.Regions = map[string]Limits{"GD": {CommitMbps: 5, CeilingMbps: 1}} }, "regions[GD]"},
		{"empty coverage isp", func(v *Vendor) { v.Coverage.ISPs = []string{""} }, "coverage.isps"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := good()
			tc.modify(&v)
			err := v.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	dup := []Vendor{good(), good()}
	if err := ValidateVendors(dup); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Fatalf("duplicate names: got %v", err)
	}
}

func TestVendorEnabledDefault(t *testing.T) {
	var y struct{ Vendors []Vendor }
	src := "vendors:\n- {name: a, flv_base: 'http://a'}\n- {name: b, flv_base: 'http://b', enabled: false}\n"
	if err := yaml.Unmarshal([]byte(src), &y); err != nil {
		t.Fatal(err)
	}
	if !y.Vendors[0].Enabled || y.Vendors[1].Enabled {
		t.Fatalf("yaml enabled: got %v, %v", y.Vendors[0].Enabled, y.Vendors[1].Enabled)
	}
	var j []Vendor
	if err := json.Unmarshal([]byte(`[{"name":"a"},{"name":"b","enabled":false}]`), &j); err != nil {
		t.Fatal(err)
	}
	if !j[0].Enabled || j[1].Enabled {
		t.Fatalf("json enabled: got %v, %v", j[0].Enabled, j[1].Enabled)
	}
}

func TestPullAndSign(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(time.Hour)
	v := Vendor{Name: "a", FLVBase: "http://cdn-a.example.com/", HLSBase: "https://hls.example.com/edge"}
	tests := []struct {
		f    Format
		want string
	}{
		{FormatFLV, "http://cdn-a.example.com/live/demo.flv"},
		{FormatHLS, "https://hls.example.com/edge/live/demo/index.m3u8"},
	}
	for _, tc := range tests {
		got, err := v.PullURL(tc.f, "live", "demo")
		if err != nil || got != tc.want {
			t.Errorf("%v: got %q %v, want %q", tc.f, got, err, tc.want)
		}
	}

	raw := "https://hls.example.com/edge/live/demo/index.m3u8"
	signed := SignURL(SchemeAuthKey, "k1", raw, exp, "r4nd")
	u, err := url.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if err := authkey.Verify(u.Path, u.Query().Get("auth_key"), "k1", now); err != nil {
		t.Errorf("auth_key: %v (%s)", err, signed)
	}

	signed = SignURL(SchemeHMAC, "k2", raw, exp, "")
	u, _ = url.Parse(signed)
	q := u.Query()
	if err := VerifyHMAC(u.Path, q.Get("expires"), q.Get("signature"), "k2", now); err != nil {
		t.Errorf("hmac: %v (%s)", err, signed)
	}
	if err := VerifyHMAC(u.Path, q.Get("expires"), q.Get("signature"), "other", now); !errors.Is(err, ErrHMACMismatch) {
		t.Errorf("hmac wrong key: %v", err)
	}
	if err := VerifyHMAC(u.Path, q.Get("expires"), q.Get("signature"), "k2", exp.Add(time.Second)); !errors.Is(err, ErrHMACExpired) {
		t.Errorf("hmac expired: %v", err)
	}
	if got := SignURL(SchemeNone, "", raw, exp, ""); got != raw {
		t.Errorf("none: %s", got)
	}
}
