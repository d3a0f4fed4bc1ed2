package origin

import (
	"hash/maphash"
	"net/http"
	"sync"
	"time"
)

// hlsViewers counts the HLS players of one stream. HLS players hold no
// connection: a player is a distinct client (peer address and
// User-Agent) that fetched a playlist or a segment of the stream within
// the window, a few target durations. The table is bounded: past
// maxHLSViewers clients, expired ones are swept, and when none is
// expired a new client is not added (the count saturates).
type hlsViewers struct {
	seed   maphash.Seed
	window time.Duration

	mu   sync.Mutex
	seen map[uint64]time.Time
}

// maxHLSViewers bounds the table of one stream (about 40 bytes a client).
const maxHLSViewers = 1 << 16

func newHLSViewers(cfg Config) *hlsViewers {
	return &hlsViewers{seed: maphash.MakeSeed(), window: hlsViewerWindow(cfg), seen: make(map[uint64]time.Time)}
}

// hlsViewerWindow is how long an HLS client counts after its last
// request: three target durations, at least 6 s (a player refreshes its
// playlist about once a target duration).
func hlsViewerWindow(cfg Config) time.Duration {
	return max(3*cfg.HLSSegmentDuration, 6*time.Second)
}

// saw notes a request of r's client at now.
func (v *hlsViewers) saw(r *http.Request, now time.Time) {
	var h maphash.Hash
	h.SetSeed(v.seed)
	h.WriteString(RemoteIP(r).String())
	h.WriteByte(0)
	h.WriteString(r.Header.Get("User-Agent"))
	id := h.Sum64()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[id]; !ok && len(v.seen) >= maxHLSViewers {
		v.sweepLocked(now)
		if len(v.seen) >= maxHLSViewers {
			return
		}
	}
	v.seen[id] = now
}

// count returns the clients seen within the window before now, and
// forgets the others.
func (v *hlsViewers) count(now time.Time) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sweepLocked(now)
	return len(v.seen)
}

func (v *hlsViewers) sweepLocked(now time.Time) {
	for id, t := range v.seen {
		if now.Sub(t) > v.window {
			delete(v.seen, id)
		}
	}
}
