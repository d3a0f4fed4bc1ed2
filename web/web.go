// Package web is the browser side of livefuse: the reference player
// (player.html), embedded in the binary and served by the node at
// /player/. It plays HTTP-FLV with mpegts.js through a loader that
// decrypts the livefuse FLV scheme with WebCrypto (flvdecrypt.js), and HLS
// (SAMPLE-AES included) with hls.js.
package web

import (
	"embed"
	"net/http"
	"os"
	"path"
	"path/filepath"
)

//go:embed player.html flvdecrypt.js
var files embed.FS

// Pinned player libraries (the versions e2e/browser/package.json locks).
const (
	HLSJSVersion    = "1.7.4"
	MpegtsJSVersion = "1.8.2"
)

// vendorFile maps a script name player.html loads to its place in an npm
// node_modules directory and on a public CDN.
func vendorFile(name string) (module, cdn string, ok bool) {
	switch name {
	case "hls.min.js":
		return "hls.js/dist/hls.min.js", "https://cdn.jsdelivr.net/npm/hls.js@" + HLSJSVersion + "/dist/hls.min.js", true
	case "mpegts.js":
		return "mpegts.js/dist/mpegts.js", "https://cdn.jsdelivr.net/npm/mpegts.js@" + MpegtsJSVersion + "/dist/mpegts.js", true
	}
	return "", "", false
}

// Handler serves the player: / and /player.html give the page,
// /flvdecrypt.js the decrypting loader, /vendor/{hls.min.js,mpegts.js}
// the libraries, from nodeModules (an npm node_modules directory with the
// pinned versions) when it has them, else by a redirect to the pinned
// version on jsDelivr.
func Handler(nodeModules string) http.Handler {
	fs := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch p := r.URL.Path; p {
		case "", "/", "/player.html":
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, files, "player.html")
		case "/flvdecrypt.js":
			w.Header().Set("Cache-Control", "no-cache")
			fs.ServeHTTP(w, r)
		default:
			module, cdn, ok := vendorFile(path.Base(p))
			if !ok || p != "/vendor/"+path.Base(p) {
				http.NotFound(w, r)
				return
			}
			if nodeModules != "" {
				f := filepath.Join(nodeModules, filepath.FromSlash(module))
				if _, err := os.Stat(f); err == nil {
					w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
					http.ServeFile(w, r, f)
					return
				}
			}
			http.Redirect(w, r, cdn, http.StatusFound)
		}
	})
}
