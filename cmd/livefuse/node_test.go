package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/livefuse/livefuse/ingest"
)

func TestIsPlayPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/live/demo.flv":               true,
		"/live/demo/index.m3u8":        true,
		"/live/demo/seg12.ts":          true,
		"/live/demo/v/720p/index.m3u8": true,
		"/keys/live/demo/k1":           false,
		"/player/":                     false,
		"/dispatch/live/demo.flv":      false,
		"/qos":                         false,
		"/recordings/live/demo/x.m3u8": false,
		"/healthz":                     false,
	} {
		if got := isPlayPath(p); got != want {
			t.Errorf("isPlayPath(%q) = %v, want %v", p, got, want)
		}
	}
}

type okPlay struct{}

func (okPlay) Subscribe(app, name string) (ingest.PacketReader, error) { return nil, nil }

type okAuth struct{}

func (okAuth) AuthorizePublish(app, name, token string) error          { return nil }
func (okAuth) AuthorizePlay(app, name, uri string, q url.Values) error { return nil }

// TestDrainGates: a draining node refuses new plays (503 with
// Retry-After, RTMP play) and publishes, and lets everything else through.
func TestDrainGates(t *testing.T) {
	var draining atomic.Bool
	n := &nodeLife{serving: func() bool { return !draining.Load() }}
	h := n.media(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	get := func(p string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		return w
	}
	play, auth := drainPlay{n, okPlay{}}, drainAuth{n, okAuth{}}
	if get("/live/demo.flv").Code != http.StatusTeapot || auth.AuthorizePublish("live", "demo", "t") != nil {
		t.Fatal("a serving node refused a play or a publish")
	}
	if _, err := play.Subscribe("live", "demo"); err != nil {
		t.Fatal(err)
	}
	draining.Store(true)
	if w := get("/live/demo/index.m3u8"); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("HLS on a draining node: %d %v", w.Code, w.Header())
	}
	if get("/keys/live/demo/k1").Code != http.StatusTeapot || get("/dispatch/live/demo.flv").Code != http.StatusTeapot {
		t.Fatal("a draining node refused keys or dispatch")
	}
	if _, err := play.Subscribe("live", "demo"); !errors.Is(err, ingest.ErrNotFound) {
		t.Fatalf("RTMP play on a draining node: %v", err)
	}
	if err := auth.AuthorizePublish("live", "demo", "t"); !errors.Is(err, ingest.ErrUnauthorized) {
		t.Fatalf("publish on a draining node: %v", err)
	}
	if auth.AuthorizePlay("live", "demo", "/live/demo.flv", nil) != nil {
		t.Fatal("play authorization changed by the drain")
	}
}
