// Package authkey implements "type A" URL signing, the scheme the large CDNs
// offer, so that the origin and every CDN vendor can share one play key:
//
//	?auth_key=EXP-RAND-UID-HASH   HASH = md5("URI-EXP-RAND-UID-KEY")
//
// EXP is a Unix time in seconds after which the URL is refused, RAND a
// random string without '-', UID a user id (often "0"), URI the request
// path without the query.
//
// It is a top-level package (not in ARCHITECTURE.md's table) because origin,
// encryption (key delivery) and cdnmix all sign or check the same URLs and
// none of them may import the others.
package authkey

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors returned by Verify.
var (
	ErrMissing   = errors.New("auth_key missing")
	ErrMalformed = errors.New("auth_key malformed")
	ErrExpired   = errors.New("auth_key expired")
	ErrMismatch  = errors.New("auth_key signature mismatch")
	// ErrTooFar: the expiry lies further ahead than TypeAConfig.MaxTTL, so
	// the URL would be a near-permanent credential (one in 2286 was
	// accepted before).
	ErrTooFar = errors.New("auth_key expiry too far in the future")
)

// DefaultMaxTTL is the default TypeAConfig.MaxTTL: 24 hours. Type-A URLs
// are handed out per play session (dispatch signs them for an hour by
// default, CDNs advise minutes to hours); a day covers the longest event,
// time zones and clock skew, while a leaked URL stops playing within a day
// rather than never.
const DefaultMaxTTL = 24 * time.Hour

// TypeAConfig configures the checking of type-A URLs (the `auth_key`
// section of livefuse.yaml).
type TypeAConfig struct {
	// MaxTTL is how far in the future an expiry may lie; a URL expiring
	// later is refused with ErrTooFar. Zero means DefaultMaxTTL.
	MaxTTL time.Duration `yaml:"max_ttl"`
}

// DefaultTypeAConfig returns the defaults.
func DefaultTypeAConfig() TypeAConfig { return TypeAConfig{MaxTTL: DefaultMaxTTL} }

func hash(uri string, exp int64, rand, uid, key string) string {
	sum := md5.Sum([]byte(uri + "-" + strconv.FormatInt(exp, 10) + "-" + rand + "-" + uid + "-" + key))
	return hex.EncodeToString(sum[:])
}

// Sign returns the auth_key value for uri, valid until exp.
func Sign(uri, key string, exp time.Time, rand, uid string) string {
	e := exp.Unix()
	return fmt.Sprintf("%d-%s-%s-%s", e, rand, uid, hash(uri, e, rand, uid, key))
}

// Verify checks value (the auth_key query parameter) for uri at time now,
// with the default configuration (see TypeAConfig.Verify).
func Verify(uri, value, key string, now time.Time) error {
	return TypeAConfig{}.Verify(uri, value, key, now)
}

// Verify checks value (the auth_key query parameter) for uri at time now:
// well formed, not expired, expiring within MaxTTL of now, and signed with
// key.
func (c TypeAConfig) Verify(uri, value, key string, now time.Time) error {
	maxTTL := c.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	if value == "" {
		return ErrMissing
	}
	if len(value) > 512 {
		return ErrMalformed
	}
	parts := strings.Split(value, "-")
	if len(parts) != 4 {
		return ErrMalformed
	}
	exp, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || exp < 0 {
		return ErrMalformed
	}
	if len(parts[3]) != 32 {
		return ErrMalformed
	}
	if now.Unix() > exp {
		return ErrExpired
	}
	if exp-now.Unix() > int64(maxTTL/time.Second) {
		return ErrTooFar
	}
	want := hash(uri, exp, parts[1], parts[2], key)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(parts[3]))) != 1 {
		return ErrMismatch
	}
	return nil
}
