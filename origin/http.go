package origin

import (
	"errors"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
)

// routeKind is what a request path names.
type routeKind uint8

const (
	routeFLV routeKind = iota + 1
	routeHLS
)

// route is a parsed play path.
type route struct {
	kind      routeKind
	app, name string
	file      string // HLS file name
	variant   string // ABR variant (abr.go), "" for the stream's own files
}

// hlsFileRe matches the file names gohlslib serves: the multivariant and
// media playlists, MPEG-TS and fMP4 segments, init files and LL-HLS parts.
// The muxer answers an empty 200 for anything else, so names are checked
// here first.
var hlsFileRe = regexp.MustCompile(`^(index\.m3u8|(main|video[0-9]{1,2}|audio[0-9]{1,2})_stream\.m3u8|` +
	`[0-9a-f]{12}_(main|video[0-9]{1,2}|audio[0-9]{1,2})_(seg[0-9]{1,20}\.(ts|mp4)|init\.mp4|part[0-9]{1,20}\.mp4))$`)

// parseRoute parses "/{app}/{name}.flv" and "/{app}/{name}/{hls file}".
func parseRoute(p string) (route, bool) {
	p, ok := strings.CutPrefix(p, "/")
	if !ok || len(p) > 512 {
		return route{}, false
	}
	app, rest, ok := strings.Cut(p, "/")
	if !ok || !validName(app) {
		return route{}, false
	}
	if name, file, ok := strings.Cut(rest, "/"); ok {
		if v, f, ok := variantFile(file); ok && validName(name) {
			return route{kind: routeHLS, app: app, name: name, file: f, variant: v}, true
		}
		if !validName(name) || !(hlsFileRe.MatchString(file) || tsFileRe.MatchString(file) || llFileRe.MatchString(file)) {
			return route{}, false
		}
		return route{kind: routeHLS, app: app, name: name, file: file}, true
	}
	name, ok := strings.CutSuffix(rest, ".flv")
	if !ok || !validName(name) {
		return route{}, false
	}
	return route{kind: routeFLV, app: app, name: name}, true
}

// Handler serves the play outputs:
//
//	GET /{app}/{name}.flv              HTTP-FLV
//	GET /{app}/{name}/index.m3u8       HLS (and the playlists and segments it lists)
//	GET /{app}/{name}/v/{variant}/...  ABR HLS variants (abr.go)
//
// with CORS on every answer, play authorization (Config.Authorize: 403 on
// refusal) and 404 for a stream that is not live.
func (h *Hub) Handler() http.Handler { return http.HandlerFunc(h.serveHTTP) }

func (h *Hub) serveHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		hdr.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			hdr.Set("Access-Control-Allow-Headers", req)
		}
		hdr.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if h.cfg.CheckAddress != nil {
		if err := h.cfg.CheckAddress(rt.app, rt.name, RemoteIP(r)); err != nil {
			h.log.Info("play refused", "stream", streamKey(rt.app, rt.name), "remote", r.RemoteAddr, "reason", err.Error())
			http.Error(w, "forbidden: address not allowed to play", http.StatusForbidden)
			return
		}
	}
	if h.cfg.Authorize != nil {
		uri := r.URL.Path
		if rt.kind == routeHLS {
			uri = "/" + rt.app + "/" + rt.name + "/index.m3u8"
		}
		if err := h.cfg.Authorize(rt.app, rt.name, uri, r.URL.Query()); err != nil {
			h.log.Debug("play refused", "stream", streamKey(rt.app, rt.name), "remote", r.RemoteAddr, "err", err)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
	}
	if reason := h.refused(rt.app, rt.name); reason != "" {
		hdr.Set("Retry-After", "1")
		http.Error(w, "not served by this unit: "+reason, http.StatusServiceUnavailable)
		return
	}
	switch rt.kind {
	case routeFLV:
		h.serveFLVAlias(w, r, rt)
	case routeHLS:
		h.sawHLS(rt.app, rt.name, r)
		h.serveABR(w, r, rt)
	}
}

// RemoteIP is the address of the peer that sent r (never a forwarded-for
// header: a client could name any address there).
func RemoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// notLive answers a request for a stream that is not live.
func notLive(w http.ResponseWriter, err error) bool {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrEnded) {
		http.Error(w, "stream not live", http.StatusNotFound)
		return true
	}
	return false
}
