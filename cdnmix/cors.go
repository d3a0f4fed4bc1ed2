package cdnmix

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// maxCORSOrigins bounds the allowed-origins list.
const maxCORSOrigins = 256

// corsPolicy is the cross-origin policy of the public handlers (dispatch,
// fallback.json, /qos): the page origins allowed to call them from a
// browser. Empty: same origin only (no CORS header is ever sent); "*":
// any origin, sent as "*" (answers carry no credentials); else the
// listed origins, each echoed only when it is the request's Origin
// exactly, with Vary: Origin. An Origin not listed is never reflected.
type corsPolicy struct {
	any     bool
	allowed map[string]bool
}

// newCORSPolicy checks a list of origins ("*" or scheme://host[:port]).
func newCORSPolicy(origins []string) (corsPolicy, error) {
	var c corsPolicy
	if len(origins) > maxCORSOrigins {
		return c, fmt.Errorf("cors_origins: %d origins (at most %d)", len(origins), maxCORSOrigins)
	}
	for _, o := range origins {
		if o == "*" {
			c.any = true
			continue
		}
		n, err := normalOrigin(o)
		if err != nil {
			return corsPolicy{}, err
		}
		if c.allowed == nil {
			c.allowed = make(map[string]bool, len(origins))
		}
		c.allowed[n] = true
	}
	return c, nil
}

// normalOrigin checks and lowercases one configured origin.
func normalOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("cors_origins: %q is not \"*\" or scheme://host[:port]", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// allow sets Access-Control-Allow-Origin when the request's Origin is
// allowed and reports whether it is (false too without an Origin).
func (c corsPolicy) allow(h http.Header, r *http.Request) bool {
	if !c.any && c.allowed == nil {
		return false
	}
	if !c.any {
		h.Add("Vary", "Origin")
	}
	origin := r.Header.Get("Origin")
	switch {
	case origin == "":
		return false
	case c.any:
		h.Set("Access-Control-Allow-Origin", "*")
		return true
	case len(origin) <= 256 && c.allowed[strings.ToLower(origin)]:
		h.Set("Access-Control-Allow-Origin", origin)
		return true
	}
	return false
}

var errOriginRefused = errors.New("origin not allowed")

// preflight answers an OPTIONS request: 204 with the allowed methods and
// headers for an allowed Origin, else 403 with no CORS header.
func (c corsPolicy) preflight(w http.ResponseWriter, r *http.Request, methods, headers string) {
	h := w.Header()
	if !c.allow(h, r) {
		http.Error(w, errOriginRefused.Error(), http.StatusForbidden)
		return
	}
	h.Set("Access-Control-Allow-Methods", methods)
	if headers != "" {
		h.Set("Access-Control-Allow-Headers", headers)
	}
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}
