package transcode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// ProfileStore holds the profiles by name where every node sees them (the
// lms collection "profiles"; lms.Collection satisfies it).
type ProfileStore interface {
	// All returns every stored profile by name.
	All() map[string]Profile
	// Update changes one profile atomically: fn gets the stored one (nil
	// when none) and returns the new one (nil deletes it); it is called
	// again when a concurrent write came first.
	Update(ctx context.Context, name string, fn func(cur *Profile) (*Profile, error)) (*Profile, error)
}

// API serves the profile and worker routes of the control API:
//
//	GET    /api/v1/profiles          every profile
//	POST   /api/v1/profiles          create one (409 when it exists)
//	GET    /api/v1/profiles/{name}   one profile
//	PUT    /api/v1/profiles/{name}   create or replace one
//	DELETE /api/v1/profiles/{name}   remove one (409 while a stream names it)
//	GET    /api/v1/transcode         the pool: workers, queue, ladders
//
// A change is validated with the other profiles (the set that would
// result must be valid), written to the store with compare-and-swap, and
// applied on this node before the answer; the other nodes apply it from
// their watch.
type API struct {
	Profiles ProfileStore
	// Pool is the node's pool; nil when transcoding is off (Reason says
	// why).
	Pool   *Pool
	Reason string
	// InUse lists the streams that name a profile (a profile in use
	// cannot be deleted).
	InUse func(profile string) []string
	// Applied is called after a change, once the store's copy on this
	// node shows it (to apply the profiles at once).
	Applied func()
}

// Router is what the control API mounts routes on (lms.Server.Handle).
type Router interface {
	Handle(pattern string, h http.Handler)
}

// Mount registers the routes on r.
func (a *API) Mount(r Router) {
	r.Handle("GET /api/v1/profiles", http.HandlerFunc(a.list))
	r.Handle("POST /api/v1/profiles", http.HandlerFunc(a.create))
	r.Handle("GET /api/v1/profiles/{name}", http.HandlerFunc(a.get))
	r.Handle("PUT /api/v1/profiles/{name}", http.HandlerFunc(a.put))
	r.Handle("DELETE /api/v1/profiles/{name}", http.HandlerFunc(a.delete))
	r.Handle("GET /api/v1/transcode", http.HandlerFunc(a.workers))
}

// SortedProfiles returns the profiles of s sorted by name.
func SortedProfiles(s ProfileStore) []Profile {
	m := s.All()
	out := make([]Profile, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

func (a *API) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"profiles": SortedProfiles(a.Profiles)})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	if p, ok := a.Profiles.All()[r.PathValue("name")]; ok {
		writeJSON(w, http.StatusOK, p)
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("profile %q not found", r.PathValue("name")))
}

func (a *API) create(w http.ResponseWriter, r *http.Request) { a.change(w, r, "", true) }

func (a *API) put(w http.ResponseWriter, r *http.Request) { a.change(w, r, r.PathValue("name"), false) }

// httpError is a refused change and its status.
type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

// answerError answers a failed change: its own status, or 503 when the
// store could not be written.
func answerError(w http.ResponseWriter, what string, err error) {
	var he httpError
	if errors.As(err, &he) {
		writeError(w, he.code, he.msg)
		return
	}
	writeError(w, http.StatusServiceUnavailable, what+": "+err.Error())
}

func (a *API) change(w http.ResponseWriter, r *http.Request, name string, create bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	p, err := ParseProfileJSON(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if name != "" && p.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("profile name %q does not match the URL (%q)", p.Name, name))
		return
	}
	replaced := false
	_, err = a.Profiles.Update(r.Context(), p.Name, func(cur *Profile) (*Profile, error) {
		if cur != nil && create {
			return nil, httpError{http.StatusConflict, fmt.Sprintf("profile %q exists: PUT /api/v1/profiles/%s replaces it", p.Name, p.Name)}
		}
		replaced = cur != nil
		set := a.Profiles.All()
		set[p.Name] = p
		ps := make([]Profile, 0, len(set))
		for _, k := range slices.Sorted(maps.Keys(set)) {
			ps = append(ps, set[k])
		}
		if _, err := ValidateProfiles(ps); err != nil {
			return nil, httpError{http.StatusBadRequest, err.Error()}
		}
		return &p, nil
	})
	if err != nil {
		answerError(w, "store profile", err)
		return
	}
	a.applied()
	status := http.StatusCreated
	if replaced {
		status = http.StatusOK
	}
	writeJSON(w, status, p)
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	_, err := a.Profiles.Update(r.Context(), name, func(cur *Profile) (*Profile, error) {
		if cur == nil {
			return nil, httpError{http.StatusNotFound, fmt.Sprintf("profile %q not found", name)}
		}
		if a.InUse != nil {
			if users := a.InUse(name); len(users) > 0 {
				return nil, httpError{http.StatusConflict, fmt.Sprintf("profile %q is used by %s", name, strings.Join(users, ", "))}
			}
		}
		return nil, nil
	})
	if err != nil {
		answerError(w, "delete profile", err)
		return
	}
	a.applied()
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) applied() {
	if a.Applied != nil {
		a.Applied()
	}
}

func (a *API) workers(w http.ResponseWriter, _ *http.Request) {
	if a.Pool == nil {
		writeJSON(w, http.StatusOK, map[string]any{"enabled": false, "reason": a.Reason, "streams": []any{}})
		return
	}
	cfg := a.Pool.Config()
	writeJSON(w, http.StatusOK, map[string]any{"enabled": true, "workers": cfg.Workers, "queue": cfg.Queue,
		"streams": a.Pool.List()})
}

// writeJSON answers v as the control API does: JSON, not cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers {"error": msg} (the control API's error body).
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
