// Package web is the browser side of livefuse: the reference player
// (player.html) and its SDK (livefuse-player.js), embedded in the binary
// and served by the node at /player/. The SDK dispatches, falls back,
// changes line, reports QoS and plays HTTP-FLV with mpegts.js (through a
// loader that decrypts the livefuse FLV scheme with WebCrypto,
// flvdecrypt.js) or HLS (SAMPLE-AES included) with hls.js.
//
// The pinned libraries are embedded too: `make web-assets` copies them
// from web/node_modules into web/vendor before `go build`; nothing is
// fetched from outside.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
)

//go:embed player.html flvdecrypt.js livefuse-player.js vendor
var files embed.FS

// Pinned player libraries (the versions web/package-lock.json locks; a
// test checks that they agree).
const (
	HLSJSVersion    = "1.7.4"
	MpegtsJSVersion = "1.8.2"
)

// AssetsTarget is the make target that puts the libraries in web/vendor.
const AssetsTarget = "make web-assets"

// vendorModule maps a library name the player loads to its place in an
// npm node_modules directory (and, by the same name, in web/vendor).
func vendorModule(name string) (module string, ok bool) {
	switch name {
	case "hls.min.js":
		return "hls.js/dist/hls.min.js", true
	case "mpegts.js":
		return "mpegts.js/dist/mpegts.js", true
	}
	return "", false
}

// HasLibraries reports whether the binary embeds the player libraries.
func HasLibraries() bool {
	for _, n := range []string{"hls.min.js", "mpegts.js"} {
		if _, err := fs.Stat(files, "vendor/"+n); err != nil {
			return false
		}
	}
	return true
}

// Handler serves the player: / and /player.html give the page,
// /livefuse-player.js the SDK, /flvdecrypt.js the decrypting loader,
// /vendor/{hls.min.js,mpegts.js} the libraries. The libraries come from
// nodeModules (an npm node_modules directory, LIVEFUSE_WEB_MODULES, for
// development) when it has them, else from the copies embedded at build
// time; a binary built without them answers 503 naming the make target.
// Nothing is redirected to the internet.
func Handler(nodeModules string) http.Handler {
	static := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch p := r.URL.Path; p {
		case "", "/", "/player.html":
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, files, "player.html")
		case "/flvdecrypt.js", "/livefuse-player.js":
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			static.ServeHTTP(w, r)
		default:
			name := path.Base(p)
			module, ok := vendorModule(name)
			if !ok || p != "/vendor/"+name {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			if nodeModules != "" {
				f := filepath.Join(nodeModules, filepath.FromSlash(module))
				if _, err := os.Stat(f); err == nil {
					http.ServeFile(w, r, f)
					return
				}
			}
			if _, err := fs.Stat(files, "vendor/"+name); err != nil {
				w.Header().Set("Cache-Control", "no-store")
				http.Error(w, name+" is not built into this binary: run `"+AssetsTarget+
					"` (or `make build`), which copies the pinned libraries from web/node_modules, then build again",
					http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Cache-Control", "max-age=86400")
			static.ServeHTTP(w, r)
		}
	})
}

//go:embed console
var consoleFiles embed.FS

// ConsoleHandler serves the operator console (the war room): the page at
// / and /console/, its script and style under /console/. Everything is
// embedded; the page loads nothing from elsewhere (its Content Security
// Policy says so) and talks only to the control API it came from.
func ConsoleHandler() http.Handler {
	sub, _ := fs.Sub(consoleFiles, "console")
	static := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
			"img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		switch p := r.URL.Path; p {
		case "/", "/console", "/console/", "/console/index.html":
			http.ServeFileFS(w, r, sub, "index.html")
		case "/console/console.js", "/console/console.css":
			r2 := *r
			u := *r.URL
			u.Path = p[len("/console"):]
			r2.URL = &u
			static.ServeHTTP(w, &r2)
		default:
			http.NotFound(w, r)
		}
	})
}
