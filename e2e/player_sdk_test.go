package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The player SDK (web/livefuse-player.js) in headless Chromium against the
// real binary and two nginx vendors: dispatch, fallback, line change on a
// vendor loss, CMCD from hls.js, and no route but to the origin and the
// vendors. Screenshots go to $LIVEFUSE_ARTEFACTS (make drill-player sets
// e2e/artefacts, gitignored), else to the test's temp dir.

// sdkEnv is one origin with vendors a and b (nginx) in front of it.
type sdkEnv struct {
	s       *server
	web     string
	ports   map[string]int // vendor → nginx port
	vendors map[string]*nginxVendor
}

// sdkWeb checks what the browser tests need and returns web/. The server
// must serve the libraries it embeds (make web-assets), not node_modules.
func sdkWeb(t *testing.T) string {
	t.Helper()
	nginxBin(t)
	web, err := filepath.Abs("../web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node not on PATH: run `make test-deps`")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatal("/usr/bin/chromium missing: run `make test-deps`")
	}
	if _, err := os.Stat(filepath.Join(web, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatal("web/node_modules/playwright-core missing: run `make test-deps`")
	}
	for _, f := range []string{"hls.min.js", "mpegts.js"} {
		if _, err := os.Stat(filepath.Join(web, "vendor", f)); err != nil {
			t.Fatalf("web/vendor/%s missing: run `make web-assets` before the e2e tests (the binary embeds them)", f)
		}
	}
	t.Setenv("LIVEFUSE_WEB_MODULES", "") // the embedded copies, as shipped
	return web
}

// startSDKEnv starts the origin (vendors a 60 %, b 40 % by commit, CORS
// for the pages served by either vendor) and the two nginx vendors, and
// publishes live/demo.
func startSDKEnv(t *testing.T) *sdkEnv {
	return startSDKEnvWith(t, "", "")
}

// startSDKEnvWith is startSDKEnv with YAML before the streams list and
// fields added to live/demo's entry.
func startSDKEnvWith(t *testing.T, before, demoFields string) *sdkEnv {
	t.Helper()
	e := &sdkEnv{web: sdkWeb(t), ports: map[string]int{"a": freePort(t), "b": freePort(t)}, vendors: map[string]*nginxVendor{}}
	e.s = startServer(t, before+fmt.Sprintf(`streams:
  - {app: live, name: demo, publish_token: "pubtok"%[3]s}
cdnmix:
  vendors:
    - {name: a, flv_base: "http://127.0.0.1:%[1]d", commit_mbps: 600, ceiling_mbps: 100000}
    - {name: b, flv_base: "http://127.0.0.1:%[2]d", commit_mbps: 400, ceiling_mbps: 100000}
  cors_origins: ["http://127.0.0.1:%[1]d", "http://127.0.0.1:%[2]d"]
  recompute: 500ms
  steering_ttl: 1s
`, e.ports["a"], e.ports["b"], demoFields))
	push(t, e.s.rtmpURL("demo", "token=pubtok"), true)
	waitLive(t, e.s.flvURL("demo"), 15*time.Second)
	for _, v := range []string{"a", "b"} {
		e.vendors[v] = startNginx(t, v, e.ports[v], e.s.http)
	}
	return e
}

func (e *sdkEnv) origin() string { return fmt.Sprintf("127.0.0.1:%d", e.s.http) }

// allow is every host the page may reach: the origin and the vendors.
func (e *sdkEnv) allow() []string {
	return []string{e.origin(), fmt.Sprintf("127.0.0.1:%d", e.ports["a"]), fmt.Sprintf("127.0.0.1:%d", e.ports["b"])}
}

// pageURL is the reference page at host (origin or a vendor), with query.
func pageURL(host string, q url.Values) string {
	return "http://" + host + "/player/?" + q.Encode()
}

// sdkState is one status line of player_sdk.cjs (the controller's stats).
type sdkState struct {
	CT           float64 `json:"ct"`
	Ready        bool    `json:"ready"`
	Source       string  `json:"source"`
	Vendor       string  `json:"vendor"`
	LineChanges  int     `json:"lineChanges"`
	Stalls       int     `json:"stalls"`
	StepDowns    int     `json:"stepDowns"`
	Rendition    string  `json:"rendition"`
	FirstFrameMs int     `json:"firstFrameMs"`
	Errors       []string
	Candidates   []struct {
		Vendor string `json:"vendor"`
		URL    string `json:"url"`
	} `json:"candidates"`
	Freeze struct {
		MaxMs int   `json:"maxMs"`
		List  []int `json:"list"`
	} `json:"freeze"`
	Beacons struct {
		Sent, Accepted, Refused int
		ByEvent                 map[string]int `json:"byEvent"`
	} `json:"beacons"`
	CMCD struct {
		Sent, Accepted, Starved int
		Payloads                []string `json:"payloads"`
	} `json:"cmcd"`
	Shown struct {
		LastVideoTs int64 `json:"lastVideoTs"`
		Repeats     int   `json:"repeats"`
		VideoTags   int   `json:"videoTags"`
	} `json:"shown"`
	ReconnectMs []int  `json:"reconnectMs"`
	Pathway     string `json:"pathway"`
	FragHost    string `json:"fragHost"`
	Steering    struct {
		Loads    int      `json:"loads"`
		Priority []string `json:"priority"`
		Forced   int      `json:"forced"`
	} `json:"steering"`
	Resumes []struct {
		LastTs  int64 `json:"lastTs"`
		FirstTs int64 `json:"firstTs"`
		Key     bool  `json:"key"`
		Ms      int   `json:"ms"`
	} `json:"resumes"`
	Events    []map[string]any `json:"events"`
	EvalError string           `json:"evalError"`
}

type sdkFinal struct {
	Errors     []string         `json:"errors"`
	Blocked    []string         `json:"blocked"`
	Hosts      []string         `json:"hosts"`
	EvalResult json.RawMessage  `json:"evalResult"`
	Screenshot string           `json:"screenshot"`
	Last       sdkState         `json:"last"`
	Events     []map[string]any `json:"events"`
}

// sdkPage is one Chromium page driven by player_sdk.cjs.
type sdkPage struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan sdkState
	final chan sdkFinal
	last  sdkState
}

func openPage(t *testing.T, e *sdkEnv, name, pageURL string, allow []string, evalAtEnd string) *sdkPage {
	t.Helper()
	dir := os.Getenv("LIVEFUSE_ARTEFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]any{"url": pageURL, "seconds": 150, "allow": allow, "evalAtEnd": evalAtEnd,
		"screenshot": filepath.Join(dir, "player-sdk-"+name+".png")})
	p := &sdkPage{t: t, lines: make(chan sdkState, 1024), final: make(chan sdkFinal, 1)}
	p.cmd = exec.Command("node", "player_sdk.cjs", e.web, string(spec))
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = os.Stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 8<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), `{"final":true`) {
				var f sdkFinal
				json.Unmarshal(sc.Bytes(), &f)
				p.final <- f
				return
			}
			var st sdkState
			if json.Unmarshal(sc.Bytes(), &st) == nil {
				select {
				case p.lines <- st:
				default:
				}
			}
		}
		close(p.final)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cmd.Wait()
	})
	return p
}

// waitFor reads status lines until cond holds, within d.
func (p *sdkPage) waitFor(what string, d time.Duration, cond func(sdkState) bool) sdkState {
	p.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case st := <-p.lines:
			p.last = st
			if cond(st) {
				return st
			}
		case f := <-p.final:
			p.t.Fatalf("%s: the driver ended: %+v", what, f)
		case <-timeout:
			b, _ := json.Marshal(p.last)
			p.t.Fatalf("%s: not within %v; last state %s", what, d, b)
		}
	}
}

// settle waits for 0.75 s more of playback after st: the SDK samples the
// picture every 250 ms, so a freeze that just ended (the driver reads
// currentTime live) is in its list by then.
func (p *sdkPage) settle(st sdkState) sdkState {
	p.t.Helper()
	return p.waitFor("0.75 s more playback", 10*time.Second, func(s sdkState) bool { return s.CT >= st.CT+0.75 })
}

// quit ends the page and returns the driver's last report.
func (p *sdkPage) quit() sdkFinal {
	p.t.Helper()
	io.WriteString(p.stdin, "quit\n")
	select {
	case f, ok := <-p.final:
		if !ok {
			p.t.Fatal("the driver ended without a report")
		}
		if f.Screenshot != "" {
			p.t.Logf("screenshot: %s", f.Screenshot)
		}
		return f
	case <-time.After(30 * time.Second):
		p.t.Fatal("the driver did not end within 30 s of quit")
	}
	return sdkFinal{}
}

// playing waits until the page's video has advanced secs of media time
// past from (a currentTime).
func (p *sdkPage) playing(what string, from, secs float64, d time.Duration) sdkState {
	p.t.Helper()
	return p.waitFor(what, d, func(st sdkState) bool {
		for _, e := range st.Errors {
			if strings.Contains(e, "gave up") || strings.Contains(e, "start:") {
				p.t.Fatalf("%s: %v", what, st.Errors)
			}
		}
		return st.CT >= from+secs
	})
}

func cdnQualityNow(t *testing.T, s *server, vendor string) (users, stalled int) {
	t.Helper()
	var q struct {
		Now struct {
			Users        int `json:"users"`
			StalledUsers int `json:"stalled_users"`
		} `json:"now"`
	}
	if err := json.Unmarshal([]byte(httpGetAPI(t, s, "/api/v1/cdn/quality?vendor="+vendor)), &q); err != nil {
		t.Fatal(err)
	}
	return q.Now.Users, q.Now.StalledUsers
}

func accessLogHas(t *testing.T, n *nginxVendor, path string) bool {
	b, _ := os.ReadFile(filepath.Join(n.dir, "access.log"))
	return strings.Contains(string(b), path)
}

func TestPlayerSDK(t *testing.T) {
	e := startSDKEnv(t)

	// (a)+(e) The page is served by vendor a (another origin than the
	// dispatcher's: CORS), dispatches, plays HTTP-FLV through the vendor
	// the dispatcher picked and reports QoS; it never needs a host other
	// than the origin and the vendors (libraries embedded in the binary).
	t.Run("dispatch_offline", func(t *testing.T) {
		q := url.Values{"stream": {"live/demo"}, "format": {"flv"},
			"dispatch": {"http://" + e.origin() + "/dispatch/"}, "qos": {"http://" + e.origin() + "/qos"}}
		pageHost := fmt.Sprintf("127.0.0.1:%d", e.ports["a"])
		p := openPage(t, e, "dispatch", pageURL(pageHost, q), e.allow(), "")
		st := p.playing("play through dispatch", 0, 6, 60*time.Second)
		if st.Source != "dispatch" || len(st.Candidates) != 2 {
			t.Fatalf("source %q, candidates %+v", st.Source, st.Candidates)
		}
		picked := st.Candidates[0].Vendor
		if st.Vendor != picked || st.LineChanges != 0 {
			t.Fatalf("playing from %s after %d line changes; dispatch picked %s", st.Vendor, st.LineChanges, picked)
		}
		st = p.waitFor("beacons accepted", 20*time.Second, func(st sdkState) bool {
			return st.Beacons.Accepted >= 2 && st.Beacons.ByEvent["first_frame"] == 1
		})
		if st.FirstFrameMs <= 0 || st.Beacons.Refused > 0 {
			t.Fatalf("first frame %d ms, beacons %+v", st.FirstFrameMs, st.Beacons)
		}
		cdnPoll(t, 10*time.Second, "the stall-rate aggregates count the page", func() error {
			if users, _ := cdnQualityNow(t, e.s, picked); users != 1 {
				return fmt.Errorf("%d users on %s", users, picked)
			}
			return nil
		})
		f := p.quit()
		// nginx logs a request when it ends: the page has closed it now.
		cdnPoll(t, 5*time.Second, "vendor "+picked+" served the page's HTTP-FLV", func() error {
			if !accessLogHas(t, e.vendors[picked], "/live/demo.flv") {
				return fmt.Errorf("no /live/demo.flv in its access log")
			}
			return nil
		})
		if len(f.Blocked) > 0 {
			t.Fatalf("the page needed hosts beyond the origin and the vendors: %v", f.Blocked)
		}
		if len(f.Errors) > 0 {
			t.Fatalf("page errors: %v", f.Errors)
		}
		t.Logf("the page asked for hosts %v only (origin %s, vendors a %d, b %d)", f.Hosts, e.origin(), e.ports["a"], e.ports["b"])
		t.Logf("dispatch: vendor %s, first frame %d ms, beacons %+v", picked, st.FirstFrameMs, st.Beacons)
	})

	// (b) The dispatcher's port is closed: the page plays through
	// fallback.json; the selection function splits starts by the ratios.
	t.Run("fallback", func(t *testing.T) {
		closed := freePort(t)
		q := url.Values{"stream": {"live/demo"}, "format": {"flv"},
			"dispatch": {fmt.Sprintf("http://127.0.0.1:%d/dispatch/", closed)}, "fallback": {"/dispatch/fallback.json"}}
		const eval = `(async () => {
  const m = await import('/player/livefuse-player.js');
  const doc = await (await fetch('/dispatch/fallback.json')).json();
  const even = {}, random = {};
  for (let i = 0; i < 200; i++) {
    const a = m.fallbackCandidates(doc, 'live/demo', 'flv', '', (i + 0.5) / 200)[0].vendor;
    even[a] = (even[a] || 0) + 1;
    const b = m.fallbackCandidates(doc, 'live/demo', 'flv', '', Math.random())[0].vendor;
    random[b] = (random[b] || 0) + 1;
  }
  return { even, random, ratios: Object.fromEntries(doc.vendors.map((v) => [v.name, v.ratio])) };
})()`
		// Users the earlier subtests left in the one-minute window.
		before := map[string]int{}
		for _, v := range []string{"a", "b"} {
			before[v], _ = cdnQualityNow(t, e.s, v)
		}
		p := openPage(t, e, "fallback", pageURL(e.origin(), q), e.allow(), eval)
		st := p.playing("play through fallback", 0, 5, 60*time.Second)
		if st.Source != "fallback" {
			t.Fatalf("source %q", st.Source)
		}
		// Beacons still arrive: the page asks /qos/session for a token
		// for the vendor it picked.
		st = p.waitFor("fallback beacons accepted", 20*time.Second, func(st sdkState) bool {
			return st.Beacons.Accepted >= 2 && st.Beacons.ByEvent["first_frame"] == 1
		})
		if st.Beacons.Refused > 0 {
			t.Fatalf("beacons %+v", st.Beacons)
		}
		cdnPoll(t, 10*time.Second, "the stall-rate aggregates count the fallback page", func() error {
			if users, _ := cdnQualityNow(t, e.s, st.Vendor); users != before[st.Vendor]+1 {
				return fmt.Errorf("%d users on %s, %d before the fallback page", users, st.Vendor, before[st.Vendor])
			}
			return nil
		})
		f := p.quit()
		var res struct {
			Even, Random map[string]int
			Ratios       map[string]float64
		}
		if err := json.Unmarshal(f.EvalResult, &res); err != nil {
			t.Fatalf("eval: %v: %s", err, f.EvalResult)
		}
		if math.Abs(res.Ratios["a"]-0.6) > 1e-9 || math.Abs(res.Ratios["b"]-0.4) > 1e-9 {
			t.Fatalf("fallback ratios %v, want a 0.6 b 0.4", res.Ratios)
		}
		for v, r := range res.Ratios {
			if got := float64(res.Even[v]) / 200; math.Abs(got-r) > 0.05 {
				t.Errorf("vendor %s: %.3f of 200 starts, ratio %.3f", v, got, r)
			}
		}
		t.Logf("fallback: played from %s, beacons %+v; 200 starts over even draws %v, over Math.random %v (ratios %v)", st.Vendor, st.Beacons, res.Even, res.Random, res.Ratios)
	})

	// (c) The nginx of the vendor playing is stopped mid-play: the page
	// moves to the other one; the gap is the longest freeze of the picture.
	t.Run("vendor_loss", func(t *testing.T) {
		trials := 3
		if n, err := strconv.Atoi(os.Getenv("PLAYER_TRIALS")); err == nil && n > 0 {
			trials = n
		}
		q := url.Values{"stream": {"live/demo"}, "format": {"flv"}}
		p := openPage(t, e, "vendor-loss", pageURL(e.origin(), q), e.allow(), "")
		st := p.playing("first play", 0, 3, 60*time.Second)
		var gaps, resumes []time.Duration
		for i := range trials {
			reconnects := len(st.ReconnectMs)
			lost := st.Vendor
			freezes := len(st.Freeze.List)
			lastTs := st.Shown.LastVideoTs
			e.vendors[lost].stop()
			at := st.CT
			st = p.waitFor("line change", 20*time.Second, func(s sdkState) bool { return s.Vendor != lost && s.CT > at+2 })
			st = p.settle(st)
			gap := time.Duration(0)
			for _, ms := range st.Freeze.List[freezes:] {
				gap = max(gap, time.Duration(ms)*time.Millisecond)
			}
			gaps = append(gaps, gap)
			resume := time.Duration(-1)
			if len(st.ReconnectMs) > reconnects {
				resume = time.Duration(st.ReconnectMs[reconnects]) * time.Millisecond
				resumes = append(resumes, resume)
			}
			if st.Shown.LastVideoTs <= lastTs {
				t.Fatalf("trial %d: shown video timestamps did not go on: %d then %d", i, lastTs, st.Shown.LastVideoTs)
			}
			t.Logf("trial %d: lost %s, now on %s: picture frozen %v (freezes of 300 ms or more counted), next new frame %v after the loss; overlap dropped so far %d tags",
				i, lost, st.Vendor, gap, resume, st.Shown.Repeats)
			e.vendors[lost] = startNginx(t, lost, e.ports[lost], e.s.http)
		}
		f := p.quit()
		for _, err := range f.Errors {
			if strings.Contains(err, "pageerror") {
				t.Fatalf("page error: %v", err)
			}
		}
		slices.Sort(gaps)
		slices.Sort(resumes)
		t.Logf("vendor loss over %d trials: picture frozen median %v, worst %v", trials, gaps[len(gaps)/2], gaps[len(gaps)-1])
		if len(resumes) > 0 {
			t.Logf("vendor loss over %d trials: loss to the next new frame median %v, worst %v", len(resumes), resumes[len(resumes)/2], resumes[len(resumes)-1])
		}
		if worst := gaps[len(gaps)-1]; worst > 8*time.Second {
			t.Fatalf("worst gap %v", worst)
		}
	})
}

// (c') A vendor that hangs (its nginx stopped with SIGSTOP: connections
// open, no bytes): the picture stands still for 2 s, the page reports one
// stall against that vendor (the stall rate counts it) and moves line.
func TestPlayerSDKHungVendor(t *testing.T) {
	e := startSDKEnv(t)
	trials := 2
	if n, err := strconv.Atoi(os.Getenv("PLAYER_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	q := url.Values{"stream": {"live/demo"}, "format": {"flv"}}
	p := openPage(t, e, "hung", pageURL(e.origin(), q), e.allow(), "")
	st := p.playing("first play", 0, 3, 60*time.Second)
	var frozen []time.Duration
	for i := range trials {
		hung := st.Vendor
		pid := e.vendors[hung].cmd.Process.Pid
		freezes, stalls := len(st.Freeze.List), st.Stalls
		syscall.Kill(-pid, syscall.SIGSTOP)
		at := st.CT
		st = p.waitFor("line change after the stall", 20*time.Second, func(s sdkState) bool { return s.Vendor != hung && s.CT > at+3 })
		st = p.settle(st)
		syscall.Kill(-pid, syscall.SIGCONT)
		if st.Stalls != stalls+1 {
			t.Fatalf("trial %d: %d stalls reported, want %d", i, st.Stalls, stalls+1)
		}
		f := time.Duration(0)
		for _, ms := range st.Freeze.List[freezes:] {
			f = max(f, time.Duration(ms)*time.Millisecond)
		}
		frozen = append(frozen, f)
		cdnPoll(t, 10*time.Second, "the stall rate counts the page's stall on "+hung, func() error {
			if users, stalled := cdnQualityNow(t, e.s, hung); users != 1 || stalled != 1 {
				return fmt.Errorf("%s: %d users, %d stalled", hung, users, stalled)
			}
			return nil
		})
		t.Logf("trial %d: %s hung: picture frozen %v, then on %s", i, hung, f, st.Vendor)
		if f < 2*time.Second || f > 6*time.Second {
			t.Fatalf("trial %d: picture frozen %v, want 2-6 s (stall threshold 2 s, then a line change)", i, f)
		}
	}
	p.quit()
	slices.Sort(frozen)
	t.Logf("hung vendor over %d trials: picture frozen median %v, worst %v", trials, frozen[len(frozen)/2], frozen[len(frozen)-1])
}

// Stalls on both lines in a row: the first moves line, the second steps
// the HTTP-FLV page down to the rendition stream demo_240p, which the
// page learnt from the multivariant playlist (the dispatcher does not know
// rendition streams, so the lines in hand get the rendition's path).
// ladderYAML gives live/demo (with profile: ladder) a 240p rendition.
const ladderYAML = `transcode:
  workers: 1
  profiles:
    - name: ladder
      gop: 1s
      renditions:
        - {name: 240p, width: 426, height: 240, video_kbps: 200, preset: ultrafast}
`

func TestPlayerSDKStepDown(t *testing.T) {
	e := startSDKEnvWith(t, ladderYAML, `, profile: ladder`)
	waitLive(t, e.s.flvURL("demo_240p"), 30*time.Second)
	q := url.Values{"stream": {"live/demo"}, "format": {"flv"}}
	p := openPage(t, e, "stepdown", pageURL(e.origin(), q), e.allow(), "")
	st := p.playing("first play", 0, 3, 60*time.Second)
	hang := func(what string) sdkState {
		hung := st.Vendor
		pid := e.vendors[hung].cmd.Process.Pid
		syscall.Kill(-pid, syscall.SIGSTOP)
		defer syscall.Kill(-pid, syscall.SIGCONT)
		stalls := st.Stalls
		return p.waitFor(what, 20*time.Second, func(s sdkState) bool { return s.Stalls > stalls && s.Vendor != hung })
	}
	st = hang("first stall: line change")
	if st.StepDowns != 0 {
		t.Fatalf("stepped down on the first stall")
	}
	st = p.playing("play on the next line", st.CT, 2, 20*time.Second)
	st = hang("second stall: step down")
	st = p.waitFor("step down to 240p", 10*time.Second, func(s sdkState) bool { return s.StepDowns == 1 && s.Rendition == "240p" })
	from := st.CT
	st = p.waitFor("play the rendition", 30*time.Second, func(s sdkState) bool { return s.CT >= from+3 || (s.CT > 3 && s.CT < from) })
	st = p.playing("play the rendition", st.CT, 3, 30*time.Second)
	f := p.quit()
	for _, c := range st.Candidates {
		if !strings.HasSuffix(c.URL, "/live/demo_240p.flv") {
			t.Fatalf("candidate %s after the step down", c.URL)
		}
	}
	cdnPoll(t, 5*time.Second, "a vendor served demo_240p", func() error {
		if !accessLogHas(t, e.vendors["a"], "/live/demo_240p.flv") && !accessLogHas(t, e.vendors["b"], "/live/demo_240p.flv") {
			return fmt.Errorf("no /live/demo_240p.flv in the access logs")
		}
		return nil
	})
	b, _ := json.Marshal(f.Events)
	t.Logf("step down: %d stalls, on %s at 240p; events %s", st.Stalls, st.Vendor, b)
}

// (d) hls.js with CMCD on: /qos receives hls.js's own CMCD data with the
// session token, and the aggregates match what the page reports.
func TestPlayerSDKCMCD(t *testing.T) {
	e := startSDKEnv(t)
	metric := func() float64 {
		return metricValue(httpGetAPI(t, e.s, "/metrics"), `cdnmix_qos_beacons_total{result="accepted"}`)
	}
	before := max(metric(), 0)
	q := url.Values{"stream": {"live/demo"}, "format": {"hls"}, "cmcd": {"1"}}
	p := openPage(t, e, "cmcd", pageURL(e.origin(), q), e.allow(), "")
	p.playing("hls.js plays", 0, 6, 90*time.Second)
	st := p.waitFor("CMCD accepted", 30*time.Second, func(st sdkState) bool { return st.CMCD.Accepted >= 3 })
	vendor := st.Vendor
	if len(st.CMCD.Payloads) == 0 || !strings.Contains(st.CMCD.Payloads[0], "sid=") {
		t.Fatalf("hls.js sent no CMCD: %+v", st.CMCD)
	}
	f := p.quit()
	last := f.Last
	time.Sleep(500 * time.Millisecond) // the page's last posts land
	accepted := metric() - before
	pageAccepted := float64(last.Beacons.Accepted + last.CMCD.Accepted)
	pageSent := float64(last.Beacons.Sent + last.CMCD.Sent)
	if accepted < pageAccepted || accepted > pageSent {
		t.Fatalf("/qos accepted %.0f beacons; the page had %0.f accepted of %.0f sent", accepted, pageAccepted, pageSent)
	}
	users, stalled := cdnQualityNow(t, e.s, vendor)
	wantStalled := 0
	if last.Stalls > 0 {
		wantStalled = 1
	}
	if users != 1 || stalled != wantStalled {
		t.Fatalf("aggregates on %s: %d users, %d stalled; the page: 1 session, %d stalls", vendor, users, stalled, last.Stalls)
	}
	t.Logf("CMCD: %d payloads accepted (%d starved), JSON beacons %+v; aggregates %d user, %d stalled; sample %q",
		last.CMCD.Accepted, last.CMCD.Starved, last.Beacons, users, stalled, last.CMCD.Payloads[0])
}

// The player libraries are served by the binary: no redirect to a CDN.
func TestPlayerLibrariesEmbedded(t *testing.T) {
	sdkWeb(t)
	s := startServer(t, "")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/player/vendor/hls.min.js", "/player/vendor/mpegts.js", "/player/livefuse-player.js", "/player/flvdecrypt.js"} {
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", s.http, p))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n < 1000 {
			t.Fatalf("%s: %d, %d bytes", p, resp.StatusCode, n)
		}
	}
}

// Unit a (the edge's primary) is killed while the page plays HTTP-FLV
// through the nginx edge: the page reconnects through the edge to unit b
// and asks the origin to resume after the last frame it has
// (origin/flv_resume.go). It continues within 2 s; no video frame comes
// twice (the page drops none as already had); the media time skipped is
// no more than the wall-clock gap plus the page's lag behind the unit. PLAYER_TRIALS trials (1 by default):
// the killed unit is started again and its encoder pushes again, and the
// next trial kills the unit the page is on.
func TestPlayerSDKUnitLost(t *testing.T) {
	web := sdkWeb(t)
	trials := 1
	if n, err := strconv.Atoi(os.Getenv("PLAYER_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	a, b, edge := startDualBehindEdge(t, "pl", "pltok", "", "")
	eu, _ := url.Parse(edge)
	p := openPage(t, &sdkEnv{web: web}, "unit-lost", pageURL(eu.Host, url.Values{"src": {edge + ".flv"}}), []string{eu.Host}, "")
	st := p.playing("first play", 0, 4, 60*time.Second)
	units := []*server{a, b}
	pushes := []string{a.rtmpURL("pl", "token=pltok"), b.rtmpURL("pl", "token=pltok&feed=backup")}
	var freezes, resumes, skips []time.Duration
	for i := range trials {
		victim := i % 2 // a first; the page is then on b, and so on
		u := units[victim]
		n, repeats, nFreeze := len(st.Resumes), st.Shown.Repeats, len(st.Freeze.List)
		syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
		<-u.exited
		at := st.CT
		st = p.waitFor("resumed on the other unit", 30*time.Second, func(s sdkState) bool { return len(s.Resumes) > n && s.CT > at+2 })
		st = p.settle(st)
		r := st.Resumes[n]
		frozen := time.Duration(0)
		for _, ms := range st.Freeze.List[nFreeze:] {
			frozen = max(frozen, time.Duration(ms)*time.Millisecond)
		}
		wall := time.Duration(r.Ms) * time.Millisecond
		skipped := time.Duration(r.FirstTs-r.LastTs) * time.Millisecond
		t.Logf("trial %d: unit %s killed: next new frame %v after the reconnect, picture frozen %v; video timestamps %d then %d (keyframe %v), %d tags dropped as already had",
			i, "ab"[victim:victim+1], wall, frozen, r.LastTs, r.FirstTs, r.Key, st.Shown.Repeats-repeats)
		freezes = append(freezes, frozen)
		resumes = append(resumes, wall)
		skips = append(skips, skipped)
		if wall > 2*time.Second || frozen > 2*time.Second {
			t.Errorf("trial %d: the page went on %v after the reconnect, picture frozen %v; want within 2 s", i, wall, frozen)
		}
		if st.Shown.Repeats != repeats {
			t.Errorf("trial %d: the origin sent %d video frames the page had", i, st.Shown.Repeats-repeats)
		}
		// The step is one frame when the other unit still holds the
		// frames after T; when its GOP began after T (it was ahead of
		// the page, or switched feed), the frames between are gone: at
		// most the page's lag behind the unit, well under 1 s.
		if r.FirstTs <= r.LastTs || skipped > wall+time.Second {
			t.Errorf("trial %d: video %d ms then %d ms: %v of media skipped over a %v gap", i, r.LastTs, r.FirstTs, skipped, wall)
		}
		if i+1 < trials { // the killed unit comes back with its encoder
			u.start()
			push(t, pushes[victim], true)
			waitLive(t, u.flvURL("pl"), 20*time.Second)
			time.Sleep(5 * time.Second)
			st = p.playing("steady again", st.CT, 2, 20*time.Second)
		}
	}
	f := p.quit()
	for _, err := range f.Errors {
		if strings.Contains(err, "page:") {
			t.Fatalf("page error: %v", err)
		}
	}
	if len(f.Blocked) > 0 {
		t.Fatalf("the page needed hosts beyond the edge: %v", f.Blocked)
	}
	slices.Sort(freezes)
	slices.Sort(resumes)
	slices.Sort(skips)
	t.Logf("FIGURE unit lost behind the edge over %d trials: reconnect to the next new frame median %v, worst %v; picture frozen median %v, worst %v; video timestamp step at the resume median %v, worst %v",
		trials, resumes[len(resumes)/2], resumes[len(resumes)-1], freezes[len(freezes)/2], freezes[len(freezes)-1], skips[len(skips)/2], skips[len(skips)-1])
}

// Stalls forced by throttling vendor a (nginx limit_rate after a few
// seconds of each response): the page, bytes still arriving, steps down to
// the 240p rendition on a; throttled there too, it moves line to b from
// the lowest rendition. Its stalls reach the stall rate of vendor a.
func TestPlayerSDKThrottled(t *testing.T) {
	e := startSDKEnvWith(t, ladderYAML, `, profile: ladder`)
	waitLive(t, e.s.flvURL("demo_240p"), 30*time.Second)
	loc := func(path, after, rate string) string {
		return fmt.Sprintf(`    location = %s {
      proxy_pass http://127.0.0.1:%d;
      proxy_http_version 1.1;
      # limit_rate needs proxy buffering; without temp files (which
      # nginx would send in bursts seconds apart) the rate stays smooth.
      proxy_max_temp_file_size 0;
      proxy_buffers 64 4k;
      proxy_busy_buffers_size 4k;
      limit_rate_after %s;
      limit_rate %s;
    }`, path, e.s.http, after, rate)
	}
	// The source is about 100 KB/s, the rendition about 40 KB/s.
	e.vendors["a"].stop()
	e.vendors["a"] = startNginx(t, "a", e.ports["a"], e.s.http,
		loc("/live/demo.flv", "700k", "40k"), loc("/live/demo_240p.flv", "200k", "8k"))
	// Dispatch sends 60 % of starts to a: open the page until it starts there.
	q := url.Values{"stream": {"live/demo"}, "format": {"flv"}}
	var p *sdkPage
	for try := 0; try < 8 && p == nil; try++ {
		p = openPage(t, e, "throttled", pageURL(e.origin(), q), e.allow(), "")
		if st := p.waitFor("dispatch", 30*time.Second, func(s sdkState) bool { return s.Vendor != "" }); st.Vendor != "a" {
			p.quit()
			p = nil
		}
	}
	if p == nil {
		t.Fatal("dispatch never picked vendor a in 8 starts")
	}
	p.playing("first play on a", 0, 3, 60*time.Second)
	st := p.waitFor("step down", 60*time.Second, func(s sdkState) bool { return s.StepDowns >= 1 })
	if st.Rendition != "240p" || st.Vendor != "a" || st.LineChanges != 0 {
		t.Fatalf("first stall: rendition %q on %s after %d line changes, want 240p on a (a slow line steps down in place)", st.Rendition, st.Vendor, st.LineChanges)
	}
	st = p.waitFor("move line to b", 60*time.Second, func(s sdkState) bool { return s.Vendor == "b" })
	if st.Rendition != "240p" {
		t.Fatalf("on b at rendition %q, want 240p", st.Rendition)
	}
	st = p.playing("play 240p on b", st.CT, 3, 30*time.Second)
	f := p.quit()
	var order []string
	for _, ev := range f.Events {
		if _, beacon := ev["fields"]; beacon {
			continue
		}
		switch ev["event"] {
		case "stall":
			order = append(order, fmt.Sprintf("stall(%v, slow %v)", ev["vendor"], ev["slow"]))
		case "stepdown":
			if ev["available"] == true {
				order = append(order, fmt.Sprintf("stepdown(%v)", ev["rendition"]))
			}
		case "line":
			order = append(order, fmt.Sprintf("line(%v: %v)", ev["vendor"], ev["reason"]))
		}
	}
	got := strings.Join(order, " → ")
	t.Logf("throttled a: %s", got)
	if want := "line(a: start) → stall(a, slow true) → stepdown(240p) → line(a: step down) → stall(a, slow true) → line(b: stall (slow line, lowest rendition))"; got != want {
		b, _ := json.Marshal(f.Events)
		t.Errorf("events %s, want %s; all events %s", got, want, b)
	}
	if st.Stalls < 2 {
		t.Fatalf("%d stalls, want 2 (source on a, then 240p on a)", st.Stalls)
	}
	cdnPoll(t, 10*time.Second, "the stall rate counts the page's stalls on a", func() error {
		if users, stalled := cdnQualityNow(t, e.s, "a"); users != 1 || stalled != 1 {
			return fmt.Errorf("a: %d users, %d stalled", users, stalled)
		}
		return nil
	})
}
