package origin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// TestStreamPolicyRefuse: a stream another unit serves is refused to
// players here (HTTP-FLV, HLS, RTMP, and its alias), the players already
// attached are disconnected, and the publisher stays; clearing Refuse
// serves it again.
func TestStreamPolicyRefuse(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HLSVariant = HLSMPEGTS
	h, srv, _ := newTestHub(t, cfg)
	f, err := h.Publish("live", "cam", "main", av.Source{Protocol: "rtmp", Remote: "127.0.0.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	for _, p := range []*av.Packet{avcHdr(1), aacHdr(), vid(0, true), aud(10)} {
		f.WritePacket(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := get(t, ctx, srv.URL+"/live/cam.flv") //nolint:bodyclose // closed by the defer below
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("before: status %d", resp.StatusCode)
	}
	rtmp, err := h.Play("live", "cam")
	if err != nil {
		t.Fatal(err)
	}
	defer rtmp.Close()

	pol := StreamPolicy{Refuse: "unit b serves live/cam", PlayAlias: "cam_source"}
	if err := h.SetStreamPolicy("live", "cam", pol); err != nil {
		t.Fatal(err)
	}
	// The attached HTTP-FLV player is cut off (its body ends) and so is
	// the RTMP reader.
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the attached HTTP-FLV player was not disconnected")
	}
	if _, err := rtmp.ReadPackets(ctx, nil); err == nil {
		// It may hand what it held first; the next read ends.
		if _, err := rtmp.ReadPackets(ctx, nil); err == nil {
			t.Error("the attached RTMP reader was not disconnected")
		}
	}
	for _, path := range []string{"/live/cam.flv", "/live/cam/index.m3u8", "/live/cam_source.flv"} {
		r := get(t, ctx, srv.URL+path)
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "unit b serves") || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d %q, want 503 with the reason", path, r.StatusCode, b)
		}
	}
	if _, err := h.Play("live", "cam"); !errors.Is(err, ErrNotServed) {
		t.Errorf("RTMP play: %v, want ErrNotServed", err)
	}
	if st, ok := h.Status("live", "cam"); !ok || st.Protocol != "rtmp" {
		t.Fatalf("the publisher left: %+v %v", st, ok)
	}
	pol.Refuse, pol.PlayAlias = "", ""
	if err := h.SetStreamPolicy("live", "cam", pol); err != nil {
		t.Fatal(err)
	}
	r := get(t, ctx, srv.URL+"/live/cam.flv")
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("served again: status %d", r.StatusCode)
	}
}
