package cdnmix

import (
	"net/http"
	"strings"

	"github.com/livefuse/livefuse/authkey"
)

// serveSession answers GET /qos/session?stream=APP/NAME&vendor=V: a QoS
// session token (as a dispatch answer gives) for a player that chose its
// vendor itself from fallback.json because the dispatcher did not answer,
// so its beacons still count:
//
//	200 {"qos_token": "..."}
//
// The token names the stream, the vendor and the client's region and ISP
// as located here, like one from dispatch: anyone may ask, as anyone may
// dispatch; /qos bounds the new sessions per client network the same way.
// 404 for an unknown stream or vendor, 503 without token signing.
func (d *Dispatcher) serveSession(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		d.cors.preflight(w, r, "GET, OPTIONS", "")
		return
	}
	d.cors.allow(w.Header(), r)
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	app, name, _ := strings.Cut(q.Get("stream"), "/")
	vendor := q.Get("vendor")
	if !validName(app) || !validName(name) || !validName(vendor) ||
		d.cfg.StreamExists != nil && !d.cfg.StreamExists(app, name) {
		http.NotFound(w, r)
		return
	}
	known := false
	for _, v := range d.cfg.Allocator.Plan().vendors.list {
		if v.Name == vendor {
			known = true
			break
		}
	}
	if !known {
		http.NotFound(w, r)
		return
	}
	if d.cfg.Tokens == nil {
		http.Error(w, "no session tokens here", http.StatusServiceUnavailable)
		return
	}
	b := d.bucketOf(r)
	sess := d.session(app, name, b)
	tok := d.token(sess, vendor)
	if tok == "" {
		http.Error(w, "no session token", http.StatusServiceUnavailable)
		return
	}
	out := appendJSONString([]byte(`{"qos_token":`), tok)
	out = append(out, "}\n"...)
	h := w.Header()
	h["Content-Type"] = d.hdrJSON
	h["Cache-Control"] = d.hdrNoStore
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// session is a new player session of app/name in bucket b.
func (d *Dispatcher) session(app, name string, b Bucket) authkey.Session {
	sess := authkey.Session{Stream: app + "/" + name, Region: b.Region, ISP: b.ISP, Expires: d.cfg.Now().Add(d.cfg.TokenTTL)}
	if d.cfg.Tokens != nil {
		sess.ID = authkey.NewSessionID()
	}
	return sess
}
