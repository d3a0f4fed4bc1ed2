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
)

func hash(uri string, exp int64, rand, uid, key string) string {
	sum := md5.Sum([]byte(uri + "-" + strconv.FormatInt(exp, 10) + "-" + rand + "-" + uid + "-" + key))
	return hex.EncodeToString(sum[:])
}

// Sign returns the auth_key value for uri, valid until exp.
func Sign(uri, key string, exp time.Time, rand, uid string) string {
	e := exp.Unix()
	return fmt.Sprintf("%d-%s-%s-%s", e, rand, uid, hash(uri, e, rand, uid, key))
}

// Verify checks value (the auth_key query parameter) for uri at time now.
func Verify(uri, value, key string, now time.Time) error {
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
	want := hash(uri, exp, parts[1], parts[2], key)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(parts[3]))) != 1 {
		return ErrMismatch
	}
	return nil
}
