package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp"
	rtmpmsg "github.com/yutopp/go-rtmp/message"

	"github.com/livefuse/livefuse/av"
)

// TestConsoleLoad (make drill-console; LIVEFUSE_CONSOLE_LOAD=1) measures
// the console at 200 streams × 2 feeds: the event-to-card latency (a
// publisher dropped, and one coming back, to the card drawn in Chromium)
// and the server's CPU with and without the console open.
//
// The feeds come from a light synthetic publisher, not 400 encoders: one
// go-rtmp connection per feed sending the video tags of a tiny clip
// (64×36 H.264, 25 fps, made once by ffmpeg) in real time, looped with
// increasing timestamps, from four loopback source addresses (the RTMP
// listener allows 256 connections per address).
func TestConsoleLoad(t *testing.T) {
	if os.Getenv("LIVEFUSE_CONSOLE_LOAD") == "" {
		t.Skip("LIVEFUSE_CONSOLE_LOAD not set (make drill-console)")
	}
	const streams = 200
	tags := tinyClip(t)
	var cfg strings.Builder
	cfg.WriteString("streams:\n")
	for i := range streams {
		fmt.Fprintf(&cfg, "  - {app: live, name: s%03d, publish_token: pubtok}\n", i)
	}
	cfg.WriteString("console: {thresholds: {min_fps: 15, min_bitrate_kbps: 5}}\n") // the tiny clip's bitrate
	s := consoleServer(t, cfg.String())
	clk := clockTicks(t)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pubs := map[string]*synthPublisher{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	start := time.Now()
	for i := range streams {
		for _, feed := range []string{"main", "backup"} {
			name := fmt.Sprintf("s%03d", i)
			p := &synthPublisher{addr: fmt.Sprintf("127.0.0.1:%d", s.rtmp), src: net.IPv4(127, 0, 0, byte(2+len(pubs)%4)),
				name: name, feed: feed, tags: tags}
			pubs[name+"|"+feed] = p
			p.start(ctx, &wg)
			time.Sleep(10 * time.Millisecond) // 400 connections over 4 s
		}
	}
	t.Logf("400 publishers started in %v", time.Since(start).Round(time.Millisecond))
	waitAllLive := func(what string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			var info struct {
				Streams []struct {
					Live *struct {
						Switch *struct {
							Feeds []struct{ State string } `json:"feeds"`
						} `json:"switch"`
					} `json:"live"`
				} `json:"streams"`
			}
			live := 0
			if s.apiOK("GET", "/streams", nil, &info) == nil {
				for _, st := range info.Streams {
					if st.Live != nil && st.Live.Switch != nil {
						for _, f := range st.Live.Switch.Feeds {
							if f.State == "live" {
								live++
							}
						}
					}
				}
			}
			if live == 2*streams {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d feeds live after 60 s", what, live, 2*streams)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitAllLive("publishers")
	t.Logf("400 feeds live %v after the first publisher", time.Since(start).Round(time.Millisecond))

	pid := s.cmd.Process.Pid
	window := 15 * time.Second
	idle := cpuOver(t, pid, clk, window)
	t.Logf("server CPU, 400 feeds, no console open: %.1f %% of one core over %v", idle, window)

	page := openConsole(t, s, apiToken)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		page.eval(`document.querySelectorAll('.card[data-state=live]').length`, &n)
		if n == 2*streams {
			break
		}
		if time.Now().After(deadline) {
			page.shot("load-failed")
			t.Fatalf("%d of %d cards live in the console", n, 2*streams)
		}
		time.Sleep(500 * time.Millisecond)
	}
	page.shot("load-400")
	var bytes0 float64
	page.eval(`window.__lf.bytes`, &bytes0)
	open := cpuOver(t, pid, clk, window)
	var bytes1, events float64
	page.eval(`window.__lf.bytes`, &bytes1)
	page.eval(`window.__lf.events`, &events)
	t.Logf("server CPU, 400 feeds, one console open: %.1f %% of one core over %v (console: +%.1f points); push %.0f KB/s",
		open, window, open-idle, (bytes1-bytes0)/window.Seconds()/1000)

	// Events: 40 feeds dropped one every 250 ms, then brought back the
	// same way; each event's time to its card in the page.
	var keys []string
	for i := 0; i < streams; i += 5 {
		keys = append(keys, fmt.Sprintf("s%03d|%s", i, []string{"main", "backup"}[i/5%2]))
	}
	// reported polls the node's API for k's feed state every 10 ms and
	// returns when it first answers want (the node's report, which the
	// console then carries to the card).
	reported := func(k, want string, since time.Time) (time.Time, bool) {
		name, feed, _ := strings.Cut(k, "|")
		for time.Since(since) < 5*time.Second {
			var info struct {
				Live *struct {
					Switch *struct {
						Feeds []struct{ Feed, State string } `json:"feeds"`
					} `json:"switch"`
				} `json:"live"`
			}
			at := time.Now()
			if s.apiOK("GET", "/streams/live/"+name, nil, &info) == nil && info.Live != nil && info.Live.Switch != nil {
				for _, f := range info.Live.Switch.Feeds {
					if f.Feed == feed && f.State == want {
						return at, true
					}
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Time{}, false
	}
	measure := func(what, state string, act func(p *synthPublisher) time.Time) (fromEvent, fromReport []time.Duration) {
		at, rep := map[string]time.Time{}, map[string]time.Time{}
		for _, k := range keys {
			at[k] = act(pubs[k])
			if r, ok := reported(k, state, at[k]); ok {
				rep[k] = r
			}
			time.Sleep(250 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		for _, k := range keys {
			name, feed, _ := strings.Cut(k, "|")
			drawn, ok := page.firstMark("live/"+name+"|a|"+feed, state, at[k])
			if !ok {
				t.Errorf("%s: the card of %s never showed %s", what, k, state)
				continue
			}
			fromEvent = append(fromEvent, drawn.Sub(at[k]))
			if r, ok := rep[k]; ok {
				fromReport = append(fromReport, drawn.Sub(r))
			} else {
				t.Logf("%s: %s not reported %s by the API within 5 s", what, k, state)
			}
		}
		return fromEvent, fromReport
	}
	var gaps []int64
	down, downRep := measure("feed dropped", "offline", func(p *synthPublisher) time.Time { return p.stop() })
	up, upRep := measure("feed back", "live", func(p *synthPublisher) time.Time { return p.restart(ctx, &wg) })
	page.eval(`(window.__lf.gaps || []).slice().sort((a, b) => b - a).slice(0, 10)`, &gaps)
	var lags struct{ Transit, Drawn []float64 }
	page.eval(`(() => { const l = window.__lf.lags, q = (a, p) => { a.sort((x, y) => x - y); return a.length ? a[Math.round((a.length - 1) * p)] : 0; };
		const tr = l.map((x) => x.transit), dr = l.map((x) => x.drawn); return {Transit: [q(tr, .5), q(tr, .95)], Drawn: [q(dr, .5), q(dr, .95)]}; })()`, &lags)
	t.Logf("streams view, server sample to page: received p50 %.0f ms p95 %.0f ms, drawn p50 %.0f ms p95 %.0f ms; longest gaps between streams events %v ms",
		lags.Transit[0], lags.Transit[1], lags.Drawn[0], lags.Drawn[1], gaps)
	all := append(append([]time.Duration{}, down...), up...)
	allRep := append(append([]time.Duration{}, downRep...), upRep...)
	t.Logf("event-to-card latency, 200 streams × 2 feeds live (publisher dropped / first frame of a new publisher to the card drawn): "+
		"dropped p50 %s p95 %s; back p50 %s p95 %s; all %d events p50 %s p95 %s",
		fmtMs(percentile(down, .5)), fmtMs(percentile(down, .95)), fmtMs(percentile(up, .5)), fmtMs(percentile(up, .95)),
		len(all), fmtMs(percentile(all, .5)), fmtMs(percentile(all, .95)))
	t.Logf("report-to-card latency (the node's API answering the new state to the card drawn): dropped p50 %s p95 %s; back p50 %s p95 %s; all %d p50 %s p95 %s",
		fmtMs(percentile(downRep, .5)), fmtMs(percentile(downRep, .95)), fmtMs(percentile(upRep, .5)), fmtMs(percentile(upRep, .95)),
		len(allRep), fmtMs(percentile(allRep, .5)), fmtMs(percentile(allRep, .95)))
	// The goal is 1 s; a host busy with more than two runnable tasks per
	// core (other work, the 400 publishers, Chromium) is reported, not
	// failed.
	if p95 := percentile(allRep, .95); p95 > time.Second {
		if load := loadPerCore(); load > 2 {
			t.Logf("report-to-card p95 %v is over 1 s on a host with %.1f runnable tasks per core: not a verdict", p95, load)
		} else {
			t.Errorf("report-to-card p95 %v, want at most 1 s", p95)
		}
	}
	var met string
	if resp, err := httpGetString(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.apiPort)); err == nil {
		for _, l := range strings.Split(resp, "\n") {
			if strings.HasPrefix(l, "livefuse_console_sample_seconds_bucket") || strings.HasPrefix(l, "livefuse_console_sample_seconds_sum") || strings.HasPrefix(l, "livefuse_console_sample_seconds_count") ||
				strings.HasPrefix(l, "livefuse_console_dropped_total") || strings.HasPrefix(l, "livefuse_console_events_total") {
				met += l + "; "
			}
		}
	}
	var render struct{ Renders, RenderMs float64 }
	page.eval(`({Renders: window.__lf.renders, RenderMs: window.__lf.renderMs})`, &render)
	t.Logf("console metrics: %s page: %.0f events, streams view drawn %.0f times, %.1f ms each on average",
		met, events, render.Renders, render.RenderMs/max(render.Renders, 1))
	page.shot("load-end")
}

// tinyClip makes a 4 s 64×36 25 fps H.264 clip without audio and returns
// its video tags.
func tinyClip(t *testing.T) []flvTag {
	t.Helper()
	out := filepath.Join(t.TempDir(), "tiny.flv")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25",
		"-t", "4", "-an", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "flv", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tiny clip: %v: %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := av.NewFLVReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var tags []flvTag
	for {
		typ, ts, body, err := r.ReadTag()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if typ == 9 {
			tags = append(tags, flvTag{ts: ts, body: bytes.Clone(body)})
		}
	}
	if len(tags) < 50 {
		t.Fatalf("tiny clip: %d video tags", len(tags))
	}
	return tags
}

type flvTag struct {
	ts   uint32
	body []byte
}

// synthPublisher publishes one feed from the tiny clip.
type synthPublisher struct {
	addr       string
	src        net.IP
	name, feed string
	tags       []flvTag

	mu        sync.Mutex
	cancel    context.CancelFunc
	conn      *rtmp.ClientConn
	firstSent time.Time
}

func (p *synthPublisher) start(ctx context.Context, wg *sync.WaitGroup) {
	ctx, cancel := context.WithCancel(ctx)
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	ready := make(chan struct{})
	wg.Go(func() { p.run(ctx, ready) })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
	}
}

// stop closes the connection and returns when.
func (p *synthPublisher) stop() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancel()
	at := time.Now()
	if p.conn != nil {
		p.conn.Close()
	}
	return at
}

// restart publishes again and returns when the first frame was sent.
func (p *synthPublisher) restart(ctx context.Context, wg *sync.WaitGroup) time.Time {
	p.start(ctx, wg)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstSent
}

func (p *synthPublisher) run(ctx context.Context, ready chan struct{}) {
	defer func() {
		select {
		case <-ready:
		default:
			close(ready)
		}
	}()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: p.src}}
	cc, err := rtmp.DialWithDialer(d, "rtmp", p.addr, &rtmp.ConnConfig{Logger: quietLogrus()})
	if err != nil {
		return
	}
	defer cc.Close()
	p.mu.Lock()
	p.conn = cc
	p.mu.Unlock()
	if err := cc.Connect(&rtmpmsg.NetConnectionConnect{Command: rtmpmsg.NetConnectionConnectCommand{App: "live", TCURL: "rtmp://" + p.addr + "/live"}}); err != nil {
		return
	}
	st, err := cc.CreateStream(&rtmpmsg.NetConnectionCreateStream{}, 4096)
	if err != nil {
		return
	}
	name := p.name + "?token=pubtok"
	if p.feed == "backup" {
		name += "&feed=backup"
	}
	if err := st.Publish(&rtmpmsg.NetStreamPublish{PublishingName: name, PublishingType: "live"}); err != nil {
		return
	}
	clipDur := p.tags[len(p.tags)-1].ts + 40
	begin := time.Now()
	for loop := uint32(0); ; loop++ {
		for i, tg := range p.tags {
			if loop > 0 && i == 0 {
				continue // the sequence header once
			}
			ts := loop*clipDur + tg.ts
			if wait := time.Until(begin.Add(time.Duration(ts) * time.Millisecond)); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			if ctx.Err() != nil {
				return
			}
			if err := st.Write(6, ts, &rtmpmsg.VideoMessage{Payload: bytes.NewReader(tg.body)}); err != nil {
				return
			}
			if loop == 0 && i == 1 {
				p.mu.Lock()
				p.firstSent = time.Now()
				p.mu.Unlock()
				close(ready)
			}
		}
	}
}

// clockTicks returns USER_HZ, the unit of /proc/PID/stat's CPU times.
func clockTicks(t *testing.T) float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Fatalf("getconf CLK_TCK: %v", err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || v <= 0 {
		t.Fatalf("CLK_TCK %q", out)
	}
	return v
}

// procCPU returns utime+stime of pid in ticks.
func procCPU(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return u + s
}

// cpuOver returns pid's CPU over d in percent of one core.
func cpuOver(t *testing.T, pid int, clk float64, d time.Duration) float64 {
	c0, t0 := procCPU(t, pid), time.Now()
	time.Sleep(d)
	c1, t1 := procCPU(t, pid), time.Now()
	return (c1 - c0) / clk / t1.Sub(t0).Seconds() * 100
}

func httpGetString(u string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return string(b), err
}

// fmtMs formats a duration in milliseconds.
func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// percentile returns the p-th percentile of ds (sorted in place).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(float64(len(ds)-1)*p+0.5)]
}

// loadPerCore is the one-minute load average per CPU.
func loadPerCore() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	l, _ := strconv.ParseFloat(f[0], 64)
	return l / float64(runtime.NumCPU())
}

// TestConsoleOtherUnit (make drill-console) measures how soon a console
// shows a change at another unit, which reaches it through the unit
// reports in the store (console.unit_report_period: 2 s by default, then
// 1 s and 500 ms; its own unit it reads directly). Units a and b share a's etcd; the main
// encoder goes into a, which relays it to b; the console is b's. Each
// trial kills the encoder and times a's card on b's console going N/A.
func TestConsoleOtherUnit(t *testing.T) {
	if os.Getenv("LIVEFUSE_CONSOLE_LOAD") == "" {
		t.Skip("LIVEFUSE_CONSOLE_LOAD not set (make drill-console)")
	}
	for _, period := range []string{"2s", "1s", "500ms"} {
		t.Run("report every "+period, func(t *testing.T) { consoleOtherUnit(t, period) })
	}
}

func consoleOtherUnit(t *testing.T, period string) {
	a, b := newUnit(t), newUnit(t)
	etcdPort := freePort(t)
	units := fmt.Sprintf(`units:
  - {name: a, relay: "127.0.0.1:%d"}
  - {name: b, relay: "127.0.0.1:%d"}
relay_secret: "e2e-relay-secret"
streams:
  - {app: live, name: duo, publish_token: pubtok}
console: {unit_report_period: %s}
`, a.rtmp, b.rtmp, period)
	a.configure(fmt.Sprintf("unit: a\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {listen: \"127.0.0.1:%d\"}}\n", a.apiPort, apiToken, etcdPort) + units)
	b.configure(fmt.Sprintf("unit: b\nlms: {api_addr: \"127.0.0.1:%d\", api_token: %q, etcd: {endpoints: [\"127.0.0.1:%d\"]}}\n", b.apiPort, apiToken, etcdPort) + units)
	a.start()
	t.Cleanup(a.stop)
	b.start()
	t.Cleanup(b.stop)
	page := openConsole(t, b, apiToken)
	var remote, local []time.Duration
	for trial := range 6 {
		enc := push(t, a.rtmpURL("duo", "token=pubtok"), true)
		page.waitCard("a's card live on b's console", "live/duo|a|main", 20*time.Second, func(c consoleCard) bool { return c.State == "live" })
		page.waitCard("b's card live", "live/duo|b|main", 20*time.Second, func(c consoleCard) bool { return c.State == "live" })
		if trial == 0 {
			page.shot("two-units")
		}
		if trial == 0 {
			var info struct {
				Units []json.RawMessage `json:"units"`
			}
			if b.apiOK("GET", "/streams/live/duo", nil, &info) == nil && len(info.Units) > 0 {
				t.Logf("one stream's state in a unit report: about %d bytes", len(info.Units[0]))
			}
		}
		time.Sleep(time.Duration(300+trial*170) * time.Millisecond) // spread over the report period
		killEncoder(enc)
		at := time.Now()
		page.waitCard("a's card N/A on b's console", "live/duo|a|main", 10*time.Second, func(c consoleCard) bool { return !c.Found || c.State != "live" })
		if drawn, ok := page.firstMark("live/duo|a|main", "offline", at); ok {
			remote = append(remote, drawn.Sub(at))
		} else {
			remote = append(remote, time.Since(at)) // the unit's card went away with its report
		}
		if drawn, ok := page.firstMark("live/duo|b|main", "offline", at); ok {
			local = append(local, drawn.Sub(at))
		}
		time.Sleep(time.Second)
	}
	t.Logf("encoder killed at unit a to the card drawn on unit b's console: unit a's card (through the reports, every %s) p50 %s max %s; unit b's own card p50 %s max %s (%d trials)",
		period, fmtMs(percentile(remote, .5)), fmtMs(percentile(remote, 1)), fmtMs(percentile(local, .5)), fmtMs(percentile(local, 1)), len(remote))
}
