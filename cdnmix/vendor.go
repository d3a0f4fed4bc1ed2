package cdnmix

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/livefuse/livefuse/authkey"
)

// Scheme names how a vendor's pull URLs are signed.
type Scheme string

// Signing schemes.
const (
	// SchemeNone leaves URLs unsigned.
	SchemeNone Scheme = "none"
	// SchemeAuthKey is "type A": ?auth_key=EXP-RAND-UID-md5(URI-EXP-RAND-UID-KEY),
	// see package authkey.
	SchemeAuthKey Scheme = "auth_key"
	// SchemeHMAC appends ?expires=EXP&signature=SIG where EXP is a Unix time
	// in seconds and SIG the lowercase hex HMAC-SHA256, keyed with the
	// vendor key, of "URI?expires=EXP" (URI is the URL path, without host
	// and query). It is what most CDNs call an HMAC or "type D" token and is
	// easy to check in an edge script; [VerifyHMAC] checks it.
	SchemeHMAC Scheme = "hmac_sha256"
)

// Limits are a committed and a ceiling bandwidth in Mbps. The commit is what
// is paid for whether used or not; the ceiling is the most the vendor
// accepts.
type Limits struct {
	CommitMbps  float64 `yaml:"commit_mbps" json:"commit_mbps"`
	CeilingMbps float64 `yaml:"ceiling_mbps" json:"ceiling_mbps"`
}

func (l Limits) validate() error {
	switch {
	case l.CommitMbps < 0:
		return fmt.Errorf("commit_mbps %g is negative", l.CommitMbps)
	case l.CeilingMbps <= 0:
		return fmt.Errorf("ceiling_mbps %g must be positive", l.CeilingMbps)
	case l.CommitMbps > l.CeilingMbps:
		return fmt.Errorf("commit_mbps %g is above ceiling_mbps %g", l.CommitMbps, l.CeilingMbps)
	}
	return nil
}

// Coverage lists the regions and ISPs a vendor serves; an empty list means
// all. A vendor with a region list does not serve clients whose region is
// unknown (and likewise for ISPs).
type Coverage struct {
	Regions []string `yaml:"regions,omitempty" json:"regions,omitempty"`
	ISPs    []string `yaml:"isps,omitempty" json:"isps,omitempty"`
}

// Covers reports whether the coverage includes bucket b.
func (c Coverage) Covers(b Bucket) bool {
	return within(c.Regions, b.Region) && within(c.ISPs, b.ISP)
}

func within(list []string, s string) bool {
	if len(list) == 0 {
		return true
	}
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Vendor is one CDN vendor as configured in the YAML file or through the
// control API.
//
// Limits: the overall CommitMbps/CeilingMbps apply to all traffic outside the
// regions listed in Regions; a region listed there has its own limits
// instead (so the vendor's total ceiling is the overall one plus the
// regional ones). See [Allocator] for how a shared limit is split.
type Vendor struct {
	Name string `yaml:"name" json:"name"`
	// FLVBase and HLSBase are pull base URLs: FLVBase
	// "http://cdn-a.example.com" serves "http://cdn-a.example.com/live/NAME.flv".
	// A base may carry a path prefix. When one is empty the other is used.
	FLVBase string `yaml:"flv_base" json:"flv_base"`
	HLSBase string `yaml:"hls_base,omitempty" json:"hls_base,omitempty"`
	// Signing is one of none (default), auth_key, hmac_sha256.
	Signing Scheme `yaml:"signing,omitempty" json:"signing,omitempty"`
	// Key is the signing secret shared with the vendor.
	Key         string            `yaml:"key,omitempty" json:"key,omitempty"`
	CommitMbps  float64           `yaml:"commit_mbps" json:"commit_mbps"`
	CeilingMbps float64           `yaml:"ceiling_mbps" json:"ceiling_mbps"`
	Regions     map[string]Limits `yaml:"regions,omitempty" json:"regions,omitempty"`
	Coverage    Coverage          `yaml:"coverage,omitempty" json:"coverage,omitempty"`
	// StatsURL, if set, is polled for the vendor's current bandwidth (see
	// [ParseVendorStats]); while its answers are fresh they replace the
	// bandwidth computed from the vendor's log lines.
	StatsURL string `yaml:"stats_url,omitempty" json:"stats_url,omitempty"`
	// Enabled defaults to true when absent from YAML or JSON.
	Enabled bool `yaml:"enabled" json:"enabled"`
}

// vendorNoMethods has Vendor's fields without its methods, so the
// Unmarshal methods can default Enabled without recursing.
type vendorNoMethods Vendor

// UnmarshalYAML decodes a vendor, with Enabled true unless stated.
func (v *Vendor) UnmarshalYAML(unmarshal func(any) error) error {
	tmp := vendorNoMethods{Enabled: true}
	if err := unmarshal(&tmp); err != nil {
		return err
	}
	*v = Vendor(tmp)
	return nil
}

// UnmarshalJSON decodes a vendor, with Enabled true unless stated.
func (v *Vendor) UnmarshalJSON(b []byte) error {
	tmp := vendorNoMethods{Enabled: true}
	if err := json.Unmarshal(b, &tmp); err != nil {
		return err
	}
	*v = Vendor(tmp)
	return nil
}

// Validate checks one vendor and says what is wrong in terms of its fields.
func (v *Vendor) Validate() error {
	if err := v.validate(); err != nil {
		if v.Name == "" {
			return fmt.Errorf("vendor: %w", err)
		}
		return fmt.Errorf("vendor %q: %w", v.Name, err)
	}
	return nil
}

func (v *Vendor) validate() error {
	if !validName(v.Name) {
		return errors.New("name must be 1-128 of letters, digits, '-', '_', '.'")
	}
	if v.FLVBase == "" && v.HLSBase == "" {
		return errors.New("flv_base or hls_base is required")
	}
	for field, base := range map[string]string{"flv_base": v.FLVBase, "hls_base": v.HLSBase} {
		if base == "" {
			continue
		}
		if _, _, err := splitBase(base); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	if v.StatsURL != "" {
		if _, _, err := splitStatsURL(v.StatsURL); err != nil {
			return fmt.Errorf("stats_url: %w", err)
		}
	}
	switch v.Signing {
	case "", SchemeNone:
	case SchemeAuthKey, SchemeHMAC:
		if v.Key == "" {
			return fmt.Errorf("signing %s needs a key", v.Signing)
		}
	default:
		return fmt.Errorf("signing %q unknown (want none, auth_key or hmac_sha256)", v.Signing)
	}
	if err := (Limits{v.CommitMbps, v.CeilingMbps}).validate(); err != nil {
		return err
	}
	for r, l := range v.Regions {
		if r == "" {
			return errors.New("regions: empty region name")
		}
		if err := l.validate(); err != nil {
			return fmt.Errorf("regions[%s]: %w", r, err)
		}
	}
	for _, r := range v.Coverage.Regions {
		if r == "" {
			return errors.New("coverage.regions: empty region name")
		}
	}
	for _, i := range v.Coverage.ISPs {
		if i == "" {
			return errors.New("coverage.isps: empty ISP name")
		}
	}
	return nil
}

// ValidateVendors checks every vendor and that names are unique.
func ValidateVendors(vs []Vendor) error {
	seen := make(map[string]bool, len(vs))
	var errs []error
	for i := range vs {
		if err := vs[i].Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[vs[i].Name] {
			errs = append(errs, fmt.Errorf("vendor %q: name used twice", vs[i].Name))
		}
		seen[vs[i].Name] = true
	}
	return errors.Join(errs...)
}

// splitBase checks a base URL and returns its "scheme://host" and path
// prefix (no trailing slash).
func splitBase(base string) (origin, path string, err error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", "", fmt.Errorf("parse %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", "", fmt.Errorf("%q: scheme must be http or https", base)
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("%q: no host", base)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", fmt.Errorf("%q: no query, fragment or user info allowed", base)
	}
	return u.Scheme + "://" + u.Host, strings.TrimRight(u.EscapedPath(), "/"), nil
}

// Format is what a player asks for.
type Format uint8

// Formats.
const (
	FormatFLV Format = iota // /app/name.flv
	FormatHLS               // /app/name/index.m3u8
)

func (f Format) String() string {
	if f == FormatHLS {
		return "hls"
	}
	return "flv"
}

// PullURL returns the vendor's unsigned URL for stream app/name.
func (v *Vendor) PullURL(f Format, app, name string) (string, error) {
	base := v.FLVBase
	if f == FormatHLS && v.HLSBase != "" || base == "" {
		base = v.HLSBase
	}
	origin, path, err := splitBase(base)
	if err != nil {
		return "", fmt.Errorf("vendor %q: %w", v.Name, err)
	}
	return origin + path + streamSuffix(f, app, name), nil
}

func streamSuffix(f Format, app, name string) string {
	if f == FormatHLS {
		return "/" + app + "/" + name + "/index.m3u8"
	}
	return "/" + app + "/" + name + ".flv"
}

// SignURL returns rawURL ("scheme://host/path", no query) signed with
// scheme and key, valid until exp. rnd is the type-A random part (no '-').
func SignURL(scheme Scheme, key, rawURL string, exp time.Time, rnd string) string {
	uri := uriOf(rawURL)
	switch scheme {
	case SchemeAuthKey:
		return rawURL + "?auth_key=" + authkey.Sign(uri, key, exp, rnd, "0")
	case SchemeHMAC:
		e := strconv.FormatInt(exp.Unix(), 10)
		return rawURL + "?expires=" + e + "&signature=" + hmacSig(key, uri, e)
	default:
		return rawURL
	}
}

// uriOf returns the path of "scheme://host/path".
func uriOf(rawURL string) string {
	i := strings.Index(rawURL, "://")
	if i < 0 {
		return rawURL
	}
	rest := rawURL[i+3:]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		return rest[j:]
	}
	return "/"
}

func hmacSig(key, uri, exp string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(uri))
	m.Write([]byte("?expires="))
	m.Write([]byte(exp))
	return hex.EncodeToString(m.Sum(nil))
}

// Errors returned by VerifyHMAC.
var (
	ErrHMACMissing  = errors.New("expires or signature missing")
	ErrHMACExpired  = errors.New("signed URL expired")
	ErrHMACMismatch = errors.New("signature mismatch")
)

// VerifyHMAC checks a [SchemeHMAC] signature for uri (the path) at now.
func VerifyHMAC(uri, expires, signature, key string, now time.Time) error {
	if expires == "" || signature == "" {
		return ErrHMACMissing
	}
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil {
		return fmt.Errorf("expires %q: %w", expires, err)
	}
	if now.Unix() > exp {
		return ErrHMACExpired
	}
	want := hmacSig(key, uri, expires)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(signature))) != 1 {
		return ErrHMACMismatch
	}
	return nil
}

// validName reports whether s can be a vendor, app or stream name: 1–128
// bytes of letters, digits, '-', '_' and '.', not starting with '.'.
func validName(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
