package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HLS Content Steering through the dispatcher (cdnmix/steering.go): stock
// hls.js in Chromium plays /dispatch/live/demo/steered.m3u8 (a pathway per
// vendor), and moves to the other vendor when the plan changes (the
// vendor it plays from blacklisted through the control API). Measured per
// trial: the time from the plan change to hls.js fetching fragments from
// the other vendor, and to the 302 dispatcher no longer sending new
// players to the blacklisted vendor (players already playing through a
// 302 do not move until they start again). PLAYER_TRIALS trials (3 by
// default), alternating the vendor blacklisted.
func TestSteering(t *testing.T) {
	e := startSDKEnv(t)
	trials := 3
	if n, err := strconv.Atoi(os.Getenv("PLAYER_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	body, err := httpGet(fmt.Sprintf("http://%s/dispatch/live/demo/steered.m3u8", e.origin()))
	if err != nil || !strings.Contains(body, "#EXT-X-CONTENT-STEERING:") || !strings.Contains(body, `PATHWAY-ID="a"`) || !strings.Contains(body, `PATHWAY-ID="b"`) {
		t.Fatalf("steered playlist: %v\n%s", err, body)
	}
	q := url.Values{"stream": {"live/demo"}, "format": {"hls"}, "steering": {"1"}}
	p := openPage(t, e, "steering", pageURL(e.origin(), q), e.allow(), "")
	p.playing("hls.js plays through a pathway", 0, 4, 90*time.Second)
	st := p.waitFor("a pathway and a steering manifest", 20*time.Second, func(s sdkState) bool {
		return s.Pathway != "" && s.Steering.Loads > 0
	})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	// dispatched302 reports whether the 302 dispatcher sent none of 20
	// new players to vendor v.
	avoids302 := func(v string) bool {
		for range 20 {
			resp, err := noRedirect.Get(fmt.Sprintf("http://%s/dispatch/live/demo/index.m3u8", e.origin()))
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound || strings.HasPrefix(resp.Header.Get("Location"), fmt.Sprintf("http://127.0.0.1:%d/", e.ports[v])) {
				return false
			}
		}
		return true
	}
	var moves, dispatches []time.Duration
	blacklisted := ""
	for i := range trials {
		from := st.Pathway
		if from != "a" && from != "b" {
			t.Fatalf("playing from pathway %q, want a or b", from)
		}
		to := map[string]string{"a": "b", "b": "a"}[from]
		if blacklisted != "" {
			if code, err := e.s.api("DELETE", "/cdn/blacklist?vendor="+blacklisted, nil, nil); err != nil || code != http.StatusNoContent {
				t.Fatalf("DELETE blacklist %s: %d %v", blacklisted, code, err)
			}
		}
		t0 := time.Now()
		if code, err := e.s.api("POST", "/cdn/blacklist", map[string]any{"vendor": from, "ttl": "10m", "reason": "steering test"}, nil); err != nil || code != http.StatusCreated {
			t.Fatalf("POST blacklist %s: %d %v", from, code, err)
		}
		blacklisted = from
		done302 := make(chan time.Duration, 1)
		go func() {
			for time.Since(t0) < 30*time.Second {
				if avoids302(from) {
					done302 <- time.Since(t0)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			done302 <- -1
		}()
		st = p.waitFor("hls.js moves to pathway "+to, 30*time.Second, func(s sdkState) bool { return s.Pathway == to })
		moved := time.Since(t0)
		d302 := <-done302
		if d302 < 0 {
			t.Fatalf("trial %d: the 302 dispatcher still sends players to %s after 30 s", i, from)
		}
		if !strings.HasSuffix(st.FragHost, fmt.Sprintf(":%d", e.ports[to])) {
			t.Fatalf("trial %d: pathway %s but fragments from %s", i, to, st.FragHost)
		}
		st = p.playing("plays on "+to, st.CT, 2, 20*time.Second)
		t.Logf("trial %d: %s blacklisted: hls.js on %s after %v (steering manifest loads %d, priority %v, forced by the SDK %d); 302 dispatch avoids %s after %v",
			i, from, to, moved.Round(time.Millisecond), st.Steering.Loads, st.Steering.Priority, st.Steering.Forced, from, d302.Round(time.Millisecond))
		moves = append(moves, moved)
		dispatches = append(dispatches, d302)
	}
	f := p.quit()
	if len(f.Blocked) > 0 {
		t.Fatalf("the page needed hosts beyond the origin and the vendors: %v", f.Blocked)
	}
	b, _ := json.Marshal(f.Last.Steering)
	slices.Sort(moves)
	slices.Sort(dispatches)
	t.Logf("FIGURE plan change to players moving over %d trials (steering_ttl 1s, recompute 500ms): Content Steering (hls.js %s) median %v, worst %v; 302 dispatch (new players only) median %v, worst %v; steering %s",
		trials, "1.7.4", moves[len(moves)/2].Round(time.Millisecond), moves[len(moves)-1].Round(time.Millisecond),
		dispatches[len(dispatches)/2].Round(time.Millisecond), dispatches[len(dispatches)-1].Round(time.Millisecond), b)
}
