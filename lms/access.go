package lms

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/livefuse/livefuse/lms/api"
)

// Roles of API tokens: viewer reads; operator also runs the war room's
// actions (switch, kick, drain, blacklist, plans); admin may do anything.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// APIToken is one more bearer token of the control API, with a role.
// lms.api_token (or the generated token) is the admin token "admin".
type APIToken struct {
	// Name says who holds the token, in the audit log (never the token).
	Name  string `yaml:"name"`
	Token string `yaml:"token"`
	Role  string `yaml:"role"`
}

// ValidateTokens checks names, tokens and roles of lms.tokens, and that
// none repeats.
func ValidateTokens(ts []APIToken) error {
	names, toks := map[string]bool{"admin": true}, map[string]bool{}
	for i, t := range ts {
		if err := api.ValidateName(t.Name); err != nil {
			return fmt.Errorf("lms.tokens[%d]: name: %w", i, err)
		}
		if names[t.Name] {
			return fmt.Errorf("lms.tokens[%d]: name %q used twice (admin is the api_token's)", i, t.Name)
		}
		names[t.Name] = true
		if err := api.ValidateToken(t.Token); err != nil {
			return fmt.Errorf("lms.tokens[%d] (%s): token: %w", i, t.Name, err)
		}
		if len(t.Token) < 16 {
			return fmt.Errorf("lms.tokens[%d] (%s): token: at least 16 characters", i, t.Name)
		}
		if toks[t.Token] {
			return fmt.Errorf("lms.tokens[%d] (%s): the same token as another entry", i, t.Name)
		}
		toks[t.Token] = true
		switch t.Role {
		case RoleViewer, RoleOperator, RoleAdmin:
		default:
			return fmt.Errorf("lms.tokens[%d] (%s): role %q: want viewer, operator or admin", i, t.Name, t.Role)
		}
	}
	return nil
}

// principal is who made a request.
type principal struct{ name, role string }

type principalKey struct{}

// tokenEntry is a token's hash and its holder.
type tokenEntry struct {
	sum [sha256.Size]byte
	who principal
}

// identify returns the holder of tok; every entry is compared, in
// constant time, so the answer's timing says nothing about which matched.
func identify(entries []tokenEntry, tok string) (principal, bool) {
	got := sha256.Sum256([]byte(tok))
	var who principal
	found := false
	for _, e := range entries {
		if subtle.ConstantTimeCompare(got[:], e.sum[:]) == 1 {
			who, found = e.who, true
		}
	}
	return who, found
}

// operatorAction reports whether a request is one of the war room's
// actions an operator may take: force a feed, drop a publisher, drain a
// node, change the CDN blacklist, and emergency plans.
func operatorAction(method, path string) bool {
	switch {
	case method == http.MethodPost && (strings.HasSuffix(path, "/switch") || strings.HasSuffix(path, "/kick")) &&
		strings.HasPrefix(path, "/api/v1/streams/"):
		return true
	case method == http.MethodPost && strings.HasPrefix(path, "/api/v1/nodes/") &&
		(strings.HasSuffix(path, "/drain") || strings.HasSuffix(path, "/undrain")):
		return true
	case (method == http.MethodPost || method == http.MethodDelete) && strings.HasPrefix(path, "/api/v1/cdn/blacklist"):
		return true
	case strings.HasPrefix(path, "/api/v1/plans"):
		return true
	case method == http.MethodPost && strings.HasPrefix(path, "/api/v1/alerts/") &&
		(strings.HasSuffix(path, "/ack") || path == "/api/v1/alerts/silences"):
		return true // acknowledge and silence alerts (rules are admin's)
	}
	return false
}

// permitted says whether role may make the request.
func permitted(role, method, path string) error {
	switch role {
	case RoleAdmin:
		return nil
	case RoleOperator:
		if method == http.MethodGet || method == http.MethodHead || operatorAction(method, path) {
			return nil
		}
	case RoleViewer:
		if method == http.MethodGet || method == http.MethodHead {
			return nil
		}
	}
	return errForbidden
}

var errForbidden = errors.New("forbidden")

// withCaller adds p to ctx.
func withCaller(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}
