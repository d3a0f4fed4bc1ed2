package cdnmix

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// Router is what the control API mounts routes on (lms.Server.Handle has
// this shape).
type Router interface {
	Handle(pattern string, h http.Handler)
}

// Mount registers the control API routes on r:
//
//	GET    /api/v1/cdn/vendors          the vendors (keys redacted)
//	PUT    /api/v1/cdn/vendors          replace the list
//	GET    /api/v1/cdn/vendors/{name}   one vendor
//	PUT    /api/v1/cdn/vendors/{name}   add or replace one
//	DELETE /api/v1/cdn/vendors/{name}   remove one
//	GET    /api/v1/cdn/blacklist        active entries
//	POST   /api/v1/cdn/blacklist        {"vendor","region","isp","ttl":"10m","reason"}
//	DELETE /api/v1/cdn/blacklist        ?vendor=&region=&isp= (or the same JSON body)
//	GET    /api/v1/cdn/plan             pools and per-bucket candidates and ratios
//	GET    /api/v1/cdn/quality          ?vendor=&region=&isp=: per-minute history
//
// A vendor sent without "key" keeps its current key, so a GET, edit, PUT
// round trip does not need the secret.
func (m *Mixer) Mount(r Router) {
	r.Handle("GET /api/v1/cdn/vendors", http.HandlerFunc(m.getVendors))
	r.Handle("PUT /api/v1/cdn/vendors", http.HandlerFunc(m.putVendors))
	r.Handle("GET /api/v1/cdn/vendors/{name}", http.HandlerFunc(m.getVendor))
	r.Handle("PUT /api/v1/cdn/vendors/{name}", http.HandlerFunc(m.putVendor))
	r.Handle("DELETE /api/v1/cdn/vendors/{name}", http.HandlerFunc(m.deleteVendor))
	r.Handle("GET /api/v1/cdn/blacklist", http.HandlerFunc(m.getBlacklist))
	r.Handle("POST /api/v1/cdn/blacklist", http.HandlerFunc(m.postBlacklist))
	r.Handle("DELETE /api/v1/cdn/blacklist", http.HandlerFunc(m.deleteBlacklist))
	r.Handle("GET /api/v1/cdn/plan", http.HandlerFunc(m.getPlan))
	r.Handle("GET /api/v1/cdn/quality", http.HandlerFunc(m.getQuality))
}

// APIHandler serves the Mount routes on a mux of its own (without the
// control API's authentication: put it behind one).
func (m *Mixer) APIHandler() http.Handler {
	mux := http.NewServeMux()
	m.Mount(mux)
	return mux
}

// VendorView is a vendor as the API shows it: the key is never sent back.
type VendorView struct {
	Vendor
	Key    string `json:"key,omitempty"`
	KeySet bool   `json:"key_set"`
}

func view(v Vendor) VendorView { return VendorView{Vendor: v, KeySet: v.Key != ""} }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func apiError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

const maxAPIBody = 1 << 20

func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if len(b) > maxAPIBody {
		return errors.New("body too large")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	return nil
}

func (m *Mixer) getVendors(w http.ResponseWriter, _ *http.Request) {
	vs := m.alloc.Vendors()
	out := make([]VendorView, len(vs))
	for i, v := range vs {
		out[i] = view(v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": m.alloc.Plan().VendorVersion(), "vendors": out})
}

func (m *Mixer) getVendor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	for _, v := range m.alloc.Vendors() {
		if v.Name == name {
			writeJSON(w, http.StatusOK, view(v))
			return
		}
	}
	apiError(w, http.StatusNotFound, fmt.Errorf("vendor %q not found", name))
}

// codeError is a refused change and its HTTP status.
type codeError struct {
	code int
	err  error
}

func (e codeError) Error() string { return e.err.Error() }
func (e codeError) Unwrap() error { return e.err }

// storeError answers a failed change: the refusal's own status, or 503
// when the store could not be written (unreachable, or writers still
// colliding after the store's retries).
func storeError(w http.ResponseWriter, err error) {
	var ce codeError
	if errors.As(err, &ce) {
		apiError(w, ce.code, ce.err)
		return
	}
	apiError(w, http.StatusServiceUnavailable, fmt.Errorf("cdn store: %w", err))
}

// keepKey gives next the key of cur when next was sent without one and
// signs the same way (so a GET, edit, PUT round trip needs no secret).
func keepKey(next *Vendor, cur Vendor) {
	if next.Key == "" && next.Signing == cur.Signing {
		next.Key = cur.Key
	}
}

func (m *Mixer) getVendorsAfter(w http.ResponseWriter, code int) {
	vs := m.alloc.Vendors()
	out := make([]VendorView, len(vs))
	for i, v := range vs {
		out[i] = view(v)
	}
	writeJSON(w, code, map[string]any{"version": m.alloc.Plan().VendorVersion(), "vendors": out})
}

func (m *Mixer) putVendors(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Vendors []Vendor `json:"vendors"`
	}
	if err := readJSON(r, &body); err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	err := m.vendors.UpdateAll(r.Context(), func(cur map[string]StoredVendor) (map[string]StoredVendor, error) {
		vs := make([]Vendor, len(body.Vendors))
		for i, v := range body.Vendors {
			vs[i] = v.clone()
			if c, ok := cur[v.Name]; ok {
				keepKey(&vs[i], c.Vendor)
			}
		}
		if err := ValidateVendors(vs); err != nil {
			return nil, codeError{http.StatusBadRequest, err}
		}
		return StoreVendors(vs), nil
	})
	if err != nil {
		storeError(w, err)
		return
	}
	m.SyncVendors()
	m.getVendorsAfter(w, http.StatusOK)
}

func (m *Mixer) putVendor(w http.ResponseWriter, r *http.Request) {
	var v Vendor
	if err := readJSON(r, &v); err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	name := r.PathValue("name")
	if v.Name == "" {
		v.Name = name
	}
	if v.Name != name {
		apiError(w, http.StatusBadRequest, fmt.Errorf("name %q in the body differs from %q in the path", v.Name, name))
		return
	}
	code := http.StatusOK
	_, err := m.vendors.Update(r.Context(), name, func(cur *StoredVendor) (*StoredVendor, error) {
		next := StoredVendor{Vendor: v.clone()}
		if cur != nil {
			code, next.Pos = http.StatusOK, cur.Pos
			keepKey(&next.Vendor, cur.Vendor)
		}
		if err := next.Vendor.Validate(); err != nil {
			return nil, codeError{http.StatusBadRequest, err}
		}
		if cur != nil {
			return &next, nil
		}
		// A new vendor goes last. Two created at once on two nodes may
		// get the same place: they are then ordered by name.
		code, next.Pos = http.StatusCreated, 0
		for _, sv := range m.vendors.All() {
			next.Pos = max(next.Pos, sv.Pos+1)
		}
		return &next, nil
	})
	if err != nil {
		storeError(w, err)
		return
	}
	m.SyncVendors()
	m.getVendorsAfter(w, code)
}

func (m *Mixer) deleteVendor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	_, err := m.vendors.Update(r.Context(), name, func(cur *StoredVendor) (*StoredVendor, error) {
		if cur == nil {
			return nil, codeError{http.StatusNotFound, fmt.Errorf("vendor %q not found", name)}
		}
		return nil, nil
	})
	if err != nil {
		storeError(w, err)
		return
	}
	m.SyncVendors()
	m.getVendorsAfter(w, http.StatusOK)
}

// blacklistRequest is the body of POST and DELETE /api/v1/cdn/blacklist.
type blacklistRequest struct {
	Vendor string `json:"vendor"`
	Region string `json:"region"`
	ISP    string `json:"isp"`
	// TTL is a Go duration ("10m"); empty or "0" lasts until removed.
	TTL    string `json:"ttl"`
	Reason string `json:"reason"`
}

func (m *Mixer) getBlacklist(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"entries": nonNil(m.alloc.Blacklist())})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (m *Mixer) postBlacklist(w http.ResponseWriter, r *http.Request) {
	var req blacklistRequest
	if err := readJSON(r, &req); err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	if !slices.ContainsFunc(m.alloc.Vendors(), func(v Vendor) bool { return v.Name == req.Vendor }) {
		apiError(w, http.StatusBadRequest, fmt.Errorf("vendor %q unknown", req.Vendor))
		return
	}
	e := BlacklistEntry{Vendor: req.Vendor, Region: req.Region, ISP: req.ISP, Reason: req.Reason}
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil || ttl < 0 {
			apiError(w, http.StatusBadRequest, fmt.Errorf("ttl %q: want a duration such as 10m", req.TTL))
			return
		}
		if ttl > 0 {
			// An absolute time (UTC, no monotonic reading), so that
			// every node that gets the entry ends it at the same moment.
			e.Until = m.opts.now().Add(ttl).UTC()
		}
	}
	if e.Reason == "" {
		e.Reason = "control API"
	}
	if _, err := m.blacklist.Update(r.Context(), BlacklistName(e.Vendor, e.Region, e.ISP),
		func(*BlacklistEntry) (*BlacklistEntry, error) { return &e, nil }); err != nil {
		storeError(w, err)
		return
	}
	m.pruneBlacklist(r.Context())
	m.SyncBlacklist()
	m.log.Info("blacklist add", "vendor", e.Vendor, "bucket", Bucket{e.Region, e.ISP}.String(), "until", e.Until, "reason", e.Reason)
	writeJSON(w, http.StatusCreated, e)
}

func (m *Mixer) deleteBlacklist(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := blacklistRequest{Vendor: q.Get("vendor"), Region: q.Get("region"), ISP: q.Get("isp")}
	if req.Vendor == "" && r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
	}
	if req.Vendor == "" {
		apiError(w, http.StatusBadRequest, errors.New("vendor is required"))
		return
	}
	manual := false
	if _, err := m.blacklist.Update(r.Context(), BlacklistName(req.Vendor, req.Region, req.ISP),
		func(cur *BlacklistEntry) (*BlacklistEntry, error) { manual = cur != nil; return nil, nil }); err != nil {
		storeError(w, err)
		return
	}
	m.SyncBlacklist()
	// The stall rule's entry of this node, if any, goes too.
	_, auto := m.alloc.removeBlacklist(req.Vendor, req.Region, req.ISP)
	if !manual && !auto {
		apiError(w, http.StatusNotFound, errors.New("no such blacklist entry"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// PlanView is GET /api/v1/cdn/plan.
type PlanView struct {
	At      time.Time    `json:"at"`
	Version uint64       `json:"vendor_version"`
	Pools   []PoolStatus `json:"pools"`
	Buckets []BucketView `json:"buckets"`
}

// BucketView is one bucket of a plan.
type BucketView struct {
	Region     string      `json:"region"`
	ISP        string      `json:"isp"`
	Candidates []Candidate `json:"candidates"`
}

func (m *Mixer) getPlan(w http.ResponseWriter, _ *http.Request) {
	p := m.alloc.Plan()
	pv := PlanView{At: p.At, Version: p.VendorVersion(), Pools: nonNil(p.Pools), Buckets: []BucketView{}}
	for _, b := range p.Buckets() {
		bp, _ := p.Bucket(b)
		pv.Buckets = append(pv.Buckets, BucketView{Region: b.Region, ISP: b.ISP, Candidates: bp.Candidates})
	}
	writeJSON(w, http.StatusOK, pv)
}

func (m *Mixer) getQuality(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	k := Key{q.Get("vendor"), Bucket{q.Get("region"), q.Get("isp")}}
	if k.Vendor == "" {
		apiError(w, http.StatusBadRequest, errors.New("vendor is required"))
		return
	}
	ob := m.obs.Snapshot()[k]
	writeJSON(w, http.StatusOK, map[string]any{"vendor": k.Vendor, "region": k.Bucket.Region, "isp": k.Bucket.ISP,
		"now": ob, "minutes": nonNil(m.minutes(k))})
}
