package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A drain of unit a during playback: new players land on unit b (through
// the edge, which retries a 503), players already on a keep playing until
// they leave, HLS through the edge plays on, and a reaches drained once
// its last player left. Then the drain is cancelled and a serves again.

type nodeRecord struct {
	ID    string `json:"id"`
	Unit  string `json:"unit"`
	State string `json:"state"`
	Load  struct {
		Players int `json:"players"`
	} `json:"load"`
}

// nodeOf returns the record of unit's node as s's API lists it.
func nodeOf(t *testing.T, s *server, unit string) (nodeRecord, bool) {
	t.Helper()
	var l struct {
		Nodes []nodeRecord `json:"nodes"`
	}
	if _, err := s.api("GET", "/nodes", nil, &l); err != nil {
		return nodeRecord{}, false
	}
	for _, n := range l.Nodes {
		if n.Unit == unit {
			return n, true
		}
	}
	return nodeRecord{}, false
}

// waitNodeState waits until s lists unit's node in state.
func waitNodeState(t *testing.T, s *server, unit, state string, within time.Duration) nodeRecord {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, ok := nodeOf(t, s, unit)
		if ok && n.State == state {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("unit %s's node not %s within %s (last %+v)", unit, state, within, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// flvCrowd is n HTTP-FLV players that read and discard, counting bytes.
type flvCrowd struct {
	bytes   atomic.Int64
	cancels []context.CancelFunc
	wg      sync.WaitGroup
}

func startCrowd(t *testing.T, url string, n int) *flvCrowd {
	t.Helper()
	c := &flvCrowd{}
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed by the reading goroutine below, or here on failure
		if err != nil || resp.StatusCode != http.StatusOK {
			if err == nil {
				resp.Body.Close()
			}
			cancel()
			t.Fatalf("crowd player %d: %v %v", i, err, resp)
		}
		c.cancels = append(c.cancels, cancel)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer resp.Body.Close()
			buf := make([]byte, 32<<10)
			for {
				k, err := resp.Body.Read(buf)
				c.bytes.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	t.Cleanup(c.stop)
	return c
}

func (c *flvCrowd) stop() {
	for _, cancel := range c.cancels {
		cancel()
	}
	c.wg.Wait()
}

func TestDrainUnitBehindEdge(t *testing.T) {
	a, b, edge := startDualBehindEdge(t, "dr", "drtok", "node: {report_period: 500ms}", "drain_timeout: 60s\n")

	// Players: 100 HTTP-FLV on unit a directly, one through the edge (it
	// lands on a, the edge's primary), and HLS through the edge.
	const crowd = 100
	players := startCrowd(t, a.flvURL("dr"), crowd)
	edgeFLV := playFLV(t, edge+".flv", false)
	hls := playHLSProgress(t, edge+"/index.m3u8")
	waitNodeState(t, b, "a", "serving", 10*time.Second)
	time.Sleep(6 * time.Second)
	if hls.outTime() == 0 {
		t.Fatalf("HLS through the edge made no progress: %s", hls.stderr.String())
	}
	n, _ := nodeOf(t, b, "a")
	if n.Load.Players < crowd {
		t.Errorf("unit a reports %d players, want at least %d", n.Load.Players, crowd)
	}
	before := hls.longestStill(time.Now().Add(-4*time.Second), time.Now())

	// Drain unit a through unit b's API.
	t0 := time.Now()
	var rec nodeRecord
	if code, err := b.api("POST", "/nodes/"+n.ID+"/drain", nil, &rec); err != nil || code != http.StatusOK || rec.State != "draining" {
		t.Fatalf("drain: %d %v %+v", code, err, rec)
	}
	// New players go elsewhere: a refuses them, the edge and its readyz say so.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", a.apiPort))
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("unit a readyz while draining: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(a.flvURL("dr"))
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a new player on draining unit a: %v %v, want 503", resp, err)
	}
	resp.Body.Close()
	newcomer := playFLV(t, edge+".flv", false)
	newcomer.waitFrames(t, 25, 10*time.Second)

	// Players already on a keep playing.
	got0 := players.bytes.Load()
	edgeFrames := edgeFLV.frames()
	time.Sleep(4 * time.Second)
	if players.bytes.Load() <= got0 || edgeFLV.frames() <= edgeFrames {
		t.Fatalf("players on unit a stopped during the drain (crowd bytes %d→%d, edge frames %d→%d)",
			got0, players.bytes.Load(), edgeFrames, edgeFLV.frames())
	}
	if rec, _ := nodeOf(t, b, "a"); rec.State != "draining" {
		t.Fatalf("unit a is %q with players left, want draining", rec.State)
	}
	hlsStill := hls.longestStill(t0, time.Now())
	select {
	case <-hls.exited:
		t.Fatalf("the HLS player exited during the drain: %s", hls.stderr.String())
	default:
	}
	t.Logf("FIGURE HLS through the edge during the drain: longest still %v (steady state %v)", hlsStill.Round(time.Millisecond), before.Round(time.Millisecond))
	if hlsStill-before > 2*time.Second {
		t.Errorf("HLS player stalled %v longer than in steady state during the drain", hlsStill-before)
	}

	// The players leave over 3 s: a reaches drained.
	left := time.Now()
	order := make([]int, crowd)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return (order[i]*7919)%crowd < (order[j]*7919)%crowd })
	for i, k := range order {
		players.cancels[k]()
		if i%10 == 9 {
			time.Sleep(300 * time.Millisecond)
		}
	}
	edgeFLV.stop()
	lastLeft := time.Now()
	waitNodeState(t, b, "a", "drained", 10*time.Second)
	t.Logf("FIGURE drain of %d players: they left over %v, unit a drained %v after the last one (drain started %v before)",
		crowd+1, lastLeft.Sub(left).Round(time.Millisecond), time.Since(lastLeft).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	// The newcomer, on b, plays on.
	nf := newcomer.frames()
	time.Sleep(2 * time.Second)
	newcomer.mu.Lock()
	nerr := newcomer.err
	newcomer.mu.Unlock()
	if nerr != nil || newcomer.frames() <= nf {
		t.Errorf("the player that joined during the drain stopped: %v (frames %d→%d)", nerr, nf, newcomer.frames())
	}

	// Undrain: a serves again.
	if code, err := b.api("POST", "/nodes/"+n.ID+"/undrain", nil, &rec); err != nil || code != http.StatusOK || rec.State != "serving" {
		t.Fatalf("undrain: %d %v %+v", code, err, rec)
	}
	resp, err = http.Get(a.flvURL("dr"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a new player on unit a after the undrain: %v %v", resp, err)
	}
	resp.Body.Close()
}
