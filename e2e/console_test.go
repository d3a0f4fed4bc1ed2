package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The war room console (web/console, served on the API listener) in
// headless Chromium against the real binary: feed cards from a real
// encoder (25 fps, then 5 fps, then gone), main and backup lines, the
// audience ranked from real QoS beacons, and a viewer's page without plan
// buttons. Screenshots go to $LIVEFUSE_ARTEFACTS, else to the test's
// artifact directory (go test -artifacts keeps it); their paths are
// logged. TestConsoleLoad (make drill-console) measures event-to-card
// latency and the server's CPU with 200 streams × 2 feeds.

const consoleViewerToken = "console-viewer-token-0123"

// consoleServer starts livefuse with a viewer token besides the admin's.
func consoleServer(t *testing.T, extra string) *server {
	t.Helper()
	s := newUnit(t)
	s.configure(fmt.Sprintf("lms: {api_addr: \"127.0.0.1:%d\", api_token: %q, tokens: [{name: watch, token: %q, role: viewer}]}\n",
		s.apiPort, apiToken, consoleViewerToken) + extra)
	s.start()
	t.Cleanup(s.stop)
	return s
}

// consolePage is one Chromium page driven by console.cjs.
type consolePage struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	answers chan consoleAnswer
	id      int
	dir     string
	blocked []string
	errors  []string
	// allowHTTP are answers of 400 or more the test expects ("403
	// /api/v1/plans/ID/confirm"), not counted as page errors.
	allowHTTP []string
}

type consoleAnswer struct {
	ID      int             `json:"id"`
	OK      bool            `json:"ok"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Errors  []string        `json:"errors"`
	Blocked []string        `json:"blocked"`
	HTTP    []string        `json:"httpErrors"`
}

// openConsole starts the driver and opens the console of s, allowing no
// request but to the API listener, and logs in with token.
func openConsole(t *testing.T, s *server, token string) *consolePage {
	t.Helper()
	web := sdkWebModules(t)
	dir := os.Getenv("LIVEFUSE_ARTEFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &consolePage{t: t, answers: make(chan consoleAnswer, 16), dir: dir}
	p.cmd = exec.Command("node", "console.cjs", web)
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
		defer close(p.answers)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var a consoleAnswer
			if json.Unmarshal(sc.Bytes(), &a) == nil {
				p.answers <- a
			}
		}
	}()
	t.Cleanup(func() {
		io.WriteString(p.stdin, `{"op":"quit"}`+"\n")
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if len(p.blocked) > 0 {
			t.Errorf("the console asked for other hosts than its API listener: %v", p.blocked)
		}
		if len(p.errors) > 0 {
			t.Errorf("page errors: %v", p.errors)
		}
	})
	host := fmt.Sprintf("127.0.0.1:%d", s.apiPort)
	p.do(map[string]any{"op": "goto", "url": "http://" + host + "/", "allow": []string{host}})
	var role string
	json.Unmarshal(p.do(map[string]any{"op": "login", "token": token}), &role)
	t.Logf("console open as %s", role)
	return p
}

// sdkWebModules returns web/ when Chromium, node and playwright-core are there.
func sdkWebModules(t *testing.T) string {
	t.Helper()
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
	return web
}

// do sends one command and returns its result; a failed command fails t.
func (p *consolePage) do(cmd map[string]any) json.RawMessage {
	p.t.Helper()
	p.id++
	cmd["id"] = p.id
	b, _ := json.Marshal(cmd)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("driver: %v", err)
	}
	for {
		select {
		case a, ok := <-p.answers:
			if !ok {
				p.t.Fatal("the driver ended")
			}
			p.blocked = append(p.blocked, a.Blocked...)
			p.errors = append(p.errors, a.Errors...)
			for _, e := range a.HTTP {
				// Alerts and plans are other parts of the node: a node
				// without them answers 404, which the page says in words.
				if e != "404 /api/v1/alerts" && e != "404 /api/v1/plans" && !slices.Contains(p.allowHTTP, e) {
					p.errors = append(p.errors, "HTTP "+e)
				}
			}
			if a.ID != p.id {
				continue
			}
			if !a.OK {
				p.t.Fatalf("driver %v: %s", cmd["op"], a.Error)
			}
			return a.Result
		case <-time.After(60 * time.Second):
			p.t.Fatalf("driver %v: no answer within 60 s", cmd["op"])
		}
	}
}

// eval evaluates js in the page into out.
func (p *consolePage) eval(js string, out any) {
	p.t.Helper()
	r := p.do(map[string]any{"op": "eval", "js": js})
	if out != nil {
		if err := json.Unmarshal(r, out); err != nil {
			p.t.Fatalf("eval %s: %v (%s)", js, err, r)
		}
	}
}

// waitCard polls the card of stream × unit × feed every 100 ms until cond
// holds, within d, and returns it.
func (p *consolePage) waitCard(what, key string, d time.Duration, cond func(consoleCard) bool) consoleCard {
	p.t.Helper()
	deadline := time.Now().Add(d)
	var c consoleCard
	for {
		c = p.card(key)
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			p.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			p.t.Fatalf("%s: not within %v; card %s: %+v", what, d, key, c)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// consoleCard is what a feed card shows.
type consoleCard struct {
	Found   bool   `json:"found"`
	Class   string `json:"class"`
	State   string `json:"state"`
	FPS     string `json:"fps"`
	FPSCls  string `json:"fpsClass"`
	Bitrate string `json:"bitrate"`
	BitCls  string `json:"bitrateClass"`
}

func (c consoleCard) has(class string) bool { return slices.Contains(strings.Fields(c.Class), class) }

func (p *consolePage) card(key string) consoleCard {
	p.t.Helper()
	var c consoleCard
	p.eval(fmt.Sprintf(`(() => {
		const el = document.querySelector('.card[data-key=' + JSON.stringify(%q) + ']');
		if (!el) return {found: false};
		const f = el.querySelector('.fps'), b = el.querySelector('.bitrate');
		return {found: true, class: el.className, state: el.dataset.state, fps: f.textContent, fpsClass: f.className,
			bitrate: b.textContent, bitrateClass: b.className};
	})()`, key), &c)
	return c
}

// firstMark returns when the page first drew key's card with a label
// starting with prefix (window.__lf.marks, page clock = host clock), at
// or after since.
func (p *consolePage) firstMark(key, prefix string, since time.Time) (time.Time, bool) {
	p.t.Helper()
	var ms int64
	p.eval(fmt.Sprintf(`(() => { const m = window.__lf.marks.find((m) => m.key === %q && m.what.startsWith(%q) && m.t >= %d); return m ? m.t : 0; })()`,
		key, prefix, since.UnixMilli()), &ms)
	return time.UnixMilli(ms), ms > 0
}

// shot saves a screenshot and logs its path.
func (p *consolePage) shot(name string) {
	p.t.Helper()
	path := filepath.Join(p.dir, "console-"+name+".png")
	p.do(map[string]any{"op": "screenshot", "path": path})
	p.t.Logf("screenshot: %s", path)
}

// firstReport polls GET /api/v1/streams/{stream} every 20 ms until the
// node reports feed live with a frame rate, and returns when.
func firstReport(t *testing.T, s *server, stream, feed string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var info struct {
			Live *struct {
				Switch *struct {
					Feeds []struct {
						Feed  string  `json:"feed"`
						State string  `json:"state"`
						FPS   float64 `json:"fps"`
					} `json:"feeds"`
				} `json:"switch"`
			} `json:"live"`
		}
		at := time.Now()
		if s.apiOK("GET", "/streams/"+stream, nil, &info) == nil && info.Live != nil && info.Live.Switch != nil {
			for _, f := range info.Live.Switch.Feeds {
				if f.Feed == feed && f.State == "live" && f.FPS > 0 {
					return at
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s %s: not reported live within %v", stream, feed, within)
	return time.Time{}
}

// consoleEncoder pushes a test pattern at fps, encoded live (the clip is 25 fps).
func consoleEncoder(t *testing.T, url string, fps int) *exec.Cmd {
	return ffmpegCmd(t, "-re", "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=320x180:rate=%d", fps),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", fmt.Sprint(2*fps),
		"-b:v", "400k", "-maxrate", "400k", "-bufsize", "400k", "-f", "flv", url)
}

func killEncoder(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
}

func TestConsoleWarRoom(t *testing.T) {
	geo, err := filepath.Abs("../cdnmix/testdata/geo.csv")
	if err != nil {
		t.Fatal(err)
	}
	s := consoleServer(t, fmt.Sprintf(`streams:
  - {app: live, name: demo, publish_token: "pubtok"}
  - {app: live, name: war, publish_token: "pubtok"}
  - {app: live, name: dual, publish_token: "pubtok"}
console: {thresholds: {min_fps: 15, min_bitrate_kbps: 50}}
cdnmix:
  vendors:
    - {name: a, flv_base: "http://cdn-a.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
    - {name: b, flv_base: "http://cdn-b.example.com", commit_mbps: 1000, ceiling_mbps: 4000}
  geo: {cidr_file: %q}
  trusted_proxies: [127.0.0.1]
  regions: [GD, SH]
  isps: [telecom]
  recompute: 500ms
`, geo))
	p := openConsole(t, s, apiToken)

	// 25 fps: the card shows the figures within 1 s of the node reporting them.
	t.Run("25 fps within 1 s", func(t *testing.T) {
		p.t = t
		start := time.Now()
		enc := consoleEncoder(t, s.rtmpURL("war", "token=pubtok"), 25)
		defer killEncoder(enc)
		reported := firstReport(t, s, "live/war", "main", 20*time.Second)
		p.waitCard("card live", "live/war|a|main", 5*time.Second, func(c consoleCard) bool { return c.State == "live" })
		drawn, ok := p.firstMark("live/war|a|main", "live", start)
		if !ok {
			t.Fatal("no mark of the card going live")
		}
		lag := drawn.Sub(reported)
		t.Logf("reported live by the API at +%v, card drawn live at +%v: %v after", reported.Sub(start).Round(time.Millisecond),
			drawn.Sub(start).Round(time.Millisecond), lag.Round(time.Millisecond))
		if lag > time.Second {
			t.Errorf("card drawn %v after the node reported the feed, want at most 1 s", lag)
		}
		// Figures settle at 25 fps, blue, bitrate green.
		c := p.waitCard("25 fps shown", "live/war|a|main", 10*time.Second, func(c consoleCard) bool {
			var fps float64
			fmt.Sscanf(c.FPS, "%f", &fps)
			return fps >= 23 && fps <= 27
		})
		if c.has("low") || c.FPSCls != "fps" || c.BitCls != "bitrate ok" || !strings.HasSuffix(c.Bitrate, "kbps") {
			t.Errorf("25 fps card: %+v, want blue fps and green bitrate", c)
		}
		p.shot("25fps")

		// The encoder restarted at 5 fps: the card turns red.
		killEncoder(enc)
		restart := time.Now()
		enc5 := consoleEncoder(t, s.rtmpURL("war", "token=pubtok"), 5)
		defer killEncoder(enc5)
		c = p.waitCard("red at 5 fps", "live/war|a|main", 15*time.Second, func(c consoleCard) bool { return c.State == "live" && c.has("low") })
		t.Logf("card red %v after the 5 fps encoder started: %s, %s", time.Since(restart).Round(time.Millisecond), c.FPS, c.Bitrate)
		if !strings.Contains(c.FPSCls, "low") {
			t.Errorf("5 fps card: %+v, want the frame rate red", c)
		}
		p.shot("5fps")

		// The feed killed: N/A.
		killEncoder(enc5)
		kill := time.Now()
		c = p.waitCard("N/A", "live/war|a|main", 10*time.Second, func(c consoleCard) bool { return c.FPS == "N/A" || !c.Found })
		t.Logf("card N/A %v after the encoder was killed (%+v)", time.Since(kill).Round(time.Millisecond), c)
		if c.Found && (!c.has("na") || c.Bitrate != "N/A") {
			t.Errorf("card of a killed feed: %+v", c)
		}
		p.shot("killed")
	})

	// Main and backup: both lines at the unit.
	t.Run("main and backup", func(t *testing.T) {
		p.t = t
		push(t, s.rtmpURL("dual", "token=pubtok"), true)
		push(t, s.rtmpURL("dual", "token=pubtok&feed=backup"), true)
		m := p.waitCard("main live", "live/dual|a|main", 20*time.Second, func(c consoleCard) bool { return c.State == "live" })
		b := p.waitCard("backup live", "live/dual|a|backup", 20*time.Second, func(c consoleCard) bool { return c.State == "live" })
		if m.FPS == "N/A" || b.FPS == "N/A" {
			t.Errorf("main %+v, backup %+v: want figures on both", m, b)
		}
		if !m.has("active") || b.has("active") {
			t.Errorf("main should be the feed shown: main %q, backup %q", m.Class, b.Class)
		}
		p.shot("main-backup")
	})

	// Audience: the stalled province first, with its one-minute stall rate.
	t.Run("audience ranking", func(t *testing.T) {
		p.t = t
		var gd []map[string]any
		for i := range 12 {
			sess := fmt.Sprintf("gd-%d", i)
			gd = append(gd, map[string]any{"session": sess, "stream": "live/demo", "vendor": "a", "event": "start"},
				map[string]any{"session": sess, "vendor": "a", "event": "first_frame", "first_frame_ms": 400})
			if i < 3 { // 3 of 12 stall: 25 %
				gd = append(gd, map[string]any{"session": sess, "vendor": "a", "event": "stall", "buffer_empty_ms": 3000})
			}
		}
		var sh []map[string]any
		for i := range 20 {
			sess := fmt.Sprintf("sh-%d", i)
			sh = append(sh, map[string]any{"session": sess, "stream": "live/demo", "vendor": "a", "event": "start"},
				map[string]any{"session": sess, "vendor": "a", "event": "first_frame", "first_frame_ms": 300})
		}
		postQoS(t, s, "203.0.113.9", sh)
		postQoS(t, s, "198.51.100.7", gd)
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=audience]"})
		type row struct {
			Region, ISP, Vendor string
			Users               string
			Stall               string
		}
		var rows []row
		deadline := time.Now().Add(20 * time.Second)
		for {
			p.eval(`Array.from(document.querySelectorAll('#audience tbody tr')).map((tr) => { const td = tr.querySelectorAll('td');
				return {Region: td[0].textContent, ISP: td[1].textContent, Vendor: td[2].textContent, Users: td[3].textContent, Stall: td[4].textContent}; })`, &rows)
			if len(rows) >= 2 && rows[0].Users == "12" && rows[1].Users == "20" {
				break
			}
			if time.Now().After(deadline) {
				p.shot("failed-audience")
				t.Fatalf("audience rows not there within 20 s: %+v", rows)
			}
			time.Sleep(200 * time.Millisecond)
		}
		want := []row{{"GD", "telecom", "a", "12", "25.0 %"}, {"SH", "telecom", "a", "20", "0.0 %"}}
		if !slices.Equal(rows[:2], want) {
			t.Errorf("audience %+v, want %+v (the stalled province first)", rows, want)
		}
		p.shot("audience")
	})

	// CDN: both vendors' pools against commit and ceiling, with a chart.
	t.Run("cdn", func(t *testing.T) {
		p.t = t
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=cdn]"})
		var pools []string
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.eval(`Array.from(document.querySelectorAll('#pools tbody tr')).map((tr) => Array.from(tr.children).slice(0, 6).map((td) => td.textContent).join(' '))`, &pools)
			if len(pools) >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CDN pools not shown: %v", pools)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !slices.ContainsFunc(pools, func(r string) bool { return strings.HasPrefix(r, "a all ") && strings.HasSuffix(r, " 1000 4000") }) ||
			!slices.ContainsFunc(pools, func(r string) bool { return strings.HasPrefix(r, "b all ") }) {
			t.Errorf("pools %q, want vendors a and b with commit 1000 and ceiling 4000", pools)
		}
		var charts int
		p.eval(`document.querySelectorAll('#cdn-charts canvas').length`, &charts)
		if charts < 2 {
			t.Errorf("%d charts, want one per vendor", charts)
		}
		p.shot("cdn")
	})

	// Audit: a change made through the API is listed, newest first.
	t.Run("audit", func(t *testing.T) {
		p.t = t
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=audit]"})
		if err := s.apiOK("PATCH", "/streams/live/dual", map[string]any{"record": false}, nil); err != nil {
			t.Fatal(err)
		}
		var rows []string
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.eval(`Array.from(document.querySelectorAll('#audit tbody tr')).map((tr) => Array.from(tr.children).slice(1, 6).map((td) => td.textContent).join(' '))`, &rows)
			if len(rows) > 0 && strings.HasPrefix(rows[0], "admin admin patch live/dual done") {
				break
			}
			if time.Now().After(deadline) {
				p.shot("failed-audit")
				t.Fatalf("the audit view does not list the change first: %q", rows)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// A filter that matches nothing empties the table.
		p.eval(`(() => { document.querySelector('#audit-filter [name=actor]').value = 'nobody'; return true; })()`, nil)
		p.do(map[string]any{"op": "click", "selector": "#audit-filter button[type=submit]"})
		deadline = time.Now().Add(5 * time.Second)
		for {
			p.eval(`Array.from(document.querySelectorAll('#audit tbody tr')).map((tr) => tr.textContent)`, &rows)
			if len(rows) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("filter actor=nobody still shows %q", rows)
			}
			time.Sleep(100 * time.Millisecond)
		}
		p.shot("audit")
	})

	// Roles: the admin sees the plan form, a viewer does not.
	t.Run("viewer sees no plan buttons", func(t *testing.T) {
		p.t = t
		visible := func() bool {
			var v bool
			p.eval(`(() => { const f = document.getElementById('arm'); return !!f && f.offsetParent !== null && getComputedStyle(f).display !== 'none'; })()`, &v)
			return v
		}
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=plans]"})
		if !visible() {
			t.Error("the admin does not see the plan form")
		}
		p.do(map[string]any{"op": "click", "selector": "#logout"})
		var role string
		json.Unmarshal(p.do(map[string]any{"op": "login", "token": consoleViewerToken}), &role)
		if role != "viewer" {
			t.Fatalf("logged in as %q, want viewer", role)
		}
		p.do(map[string]any{"op": "click", "selector": "#tabs button[data-view=plans]"})
		if visible() {
			t.Error("a viewer sees the plan form")
		}
		var buttons int
		p.eval(`document.querySelectorAll('#view-plans button:not([hidden]), #view-alerts button').length`, &buttons)
		var visibleButtons int
		p.eval(`Array.from(document.querySelectorAll('#view-plans button, #view-alerts button')).filter((b) => b.offsetParent !== null).length`, &visibleButtons)
		if visibleButtons != 0 {
			t.Errorf("a viewer sees %d plan or alert buttons", visibleButtons)
		}
		p.shot("viewer-plans")
		// The token stays in sessionStorage only.
		var stored struct{ Session, Local string }
		p.eval(`({Session: sessionStorage.getItem('livefuse.console.token') || '', Local: JSON.stringify(localStorage)})`, &stored)
		if stored.Session != consoleViewerToken || strings.Contains(stored.Local, consoleViewerToken) {
			t.Errorf("token storage: %+v", stored)
		}
	})
	p.t = t
}
