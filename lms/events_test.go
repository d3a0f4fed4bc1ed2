package lms

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counterSource is a source whose value changes when v does.
type counterSource struct{ v atomic.Int64 }

func (c *counterSource) snapshot() any { return map[string]int64{"n": c.v.Load()} }

// newConsoleAPI is an API with the admin, an operator and a viewer token,
// the console mounted over sources, its event hub running.
func newConsoleAPI(t *testing.T, cfg EventsConfig, sources []ConsoleSource) (*httptest.Server, *Events) {
	t.Helper()
	reg := startRegistry(t, prefixStore(t))
	lcfg := DefaultConfig()
	lcfg.APIToken = testToken
	lcfg.Tokens = []APIToken{{Name: "ops", Token: operatorToken, Role: RoleOperator}, {Name: "watch", Token: viewerToken, Role: RoleViewer}}
	srv, err := NewServer(lcfg, reg, &fakeLive{}, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewEvents(cfg, sources, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path) })
	srv.MountConsole(ev, page)
	go ev.Run()
	t.Cleanup(ev.Close)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, ev
}

// sseEvent is one parsed server-sent event.
type sseEvent struct{ name, data string }

// openEvents opens GET /api/v1/events and returns its events on a channel
// (closed when the stream ends) and the status.
func openEvents(t *testing.T, ts *httptest.Server, token, query string) (<-chan sseEvent, int, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/v1/events"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.Client().Do(req) //nolint:bodyclose // closed on failure, else by the reading goroutine
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	out := make(chan sseEvent, 64)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(out)
		return out, resp.StatusCode, cancel
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			case line == "" && ev.name != "":
				out <- ev
				ev = sseEvent{}
			}
		}
	}()
	t.Cleanup(cancel)
	return out, http.StatusOK, cancel
}

func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return sseEvent{}
}

// A client gets every topic at once, then only the topics that changed.
func TestEventsSendChangedTopics(t *testing.T) {
	var a, b counterSource
	cfg := DefaultEventsConfig()
	cfg.Tick = 20 * time.Millisecond
	ts, _ := newConsoleAPI(t, cfg, []ConsoleSource{{"a", a.snapshot}, {"b", b.snapshot}})
	ch, code, _ := openEvents(t, ts, viewerToken, "")
	if code != http.StatusOK {
		t.Fatalf("viewer: events answered %d", code)
	}
	got := map[string]string{}
	for range 2 {
		ev := next(t, ch)
		got[ev.name] = ev.data
	}
	if got["a"] != `{"n":0}` || got["b"] != `{"n":0}` {
		t.Fatalf("first events %v", got)
	}
	b.v.Store(7)
	ev := next(t, ch)
	if ev.name != "b" || ev.data != `{"n":7}` {
		t.Fatalf("after a change of b: %+v", ev)
	}
	// Unchanged topics are not resent: the next event is a's change.
	a.v.Store(1)
	if ev := next(t, ch); ev.name != "a" || ev.data != `{"n":1}` {
		t.Fatalf("after a change of a: %+v", ev)
	}

	// ?topics= filters; an unknown topic is refused.
	ch2, _, _ := openEvents(t, ts, viewerToken, "?topics=b")
	if ev := next(t, ch2); ev.name != "b" {
		t.Fatalf("filtered stream got %+v", ev)
	}
	if _, code, _ := openEvents(t, ts, viewerToken, "?topics=nope"); code != http.StatusBadRequest {
		t.Fatalf("unknown topic: %d", code)
	}
}

// A client that does not read is dropped at the tick that finds its queue
// full; another client keeps getting every change.
func TestEventsDropSlowClient(t *testing.T) {
	var a counterSource
	cfg := DefaultEventsConfig()
	ev, err := NewEvents(cfg, []ConsoleSource{{"a", a.snapshot}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	slow, fast := ev.subscribe(nil), ev.subscribe(nil)
	for i := range eventQueue + 2 {
		a.v.Store(int64(i))
		ev.tick()
		select {
		case <-fast.ch:
		default:
			t.Fatalf("tick %d: the reading client got nothing", i)
		}
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("the client that never read is still subscribed")
	}
	select {
	case <-fast.gone:
		t.Fatal("the reading client was dropped")
	default:
	}
	ev.unsubscribe(slow) // no double close
	ev.unsubscribe(fast)
}

// Open streams are capped: one more answers 503; closing one frees it.
func TestEventsCap(t *testing.T) {
	var a counterSource
	cfg := DefaultEventsConfig()
	cfg.MaxClients = 1
	ts, _ := newConsoleAPI(t, cfg, []ConsoleSource{{"a", a.snapshot}})
	ch, _, cancel := openEvents(t, ts, testToken, "")
	next(t, ch)
	if _, code, _ := openEvents(t, ts, testToken, ""); code != http.StatusServiceUnavailable {
		t.Fatalf("second stream: %d, want 503", code)
	}
	cancel()
	for range ch {
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch2, code, _ := openEvents(t, ts, testToken, "")
		if code == http.StatusOK {
			next(t, ch2)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream not freed: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// whoami names the token's holder and role; the event stream needs a
// token; the page needs none.
func TestConsoleWhoamiAndPage(t *testing.T) {
	var a counterSource
	ts, _ := newConsoleAPI(t, DefaultEventsConfig(), []ConsoleSource{{"a", a.snapshot}})
	for _, tc := range []struct{ token, name, role string }{
		{testToken, "admin", RoleAdmin}, {operatorToken, "ops", RoleOperator}, {viewerToken, "watch", RoleViewer},
	} {
		code, b := call(t, ts, "GET", "/api/v1/whoami", tc.token, "")
		var w Whoami
		if code != 200 || json.Unmarshal(b, &w) != nil || w.Name != tc.name || w.Role != tc.role {
			t.Errorf("whoami with %s's token: %d %s", tc.name, code, b)
		}
	}
	if code, _ := call(t, ts, "GET", "/api/v1/events", "", ""); code != http.StatusUnauthorized {
		t.Errorf("events without a token: %d", code)
	}
	for _, p := range []string{"/", "/console/", "/console/console.js"} {
		if code, b := call(t, ts, "GET", p, "", ""); code != 200 || string(b) != "page "+p {
			t.Errorf("GET %s: %d %q", p, code, b)
		}
	}
	if code, _ := call(t, ts, "GET", "/healthz", "", ""); code != 200 {
		t.Errorf("healthz behind the console: %d", code)
	}
}

func TestEventsConfigValidate(t *testing.T) {
	good := DefaultEventsConfig()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*EventsConfig){
		"no clients":   func(c *EventsConfig) { c.MaxClients = 0 },
		"tick 0":       func(c *EventsConfig) { c.Tick = 0 },
		"heartbeat 0":  func(c *EventsConfig) { c.Heartbeat = 0 },
		"write 100ms":  func(c *EventsConfig) { c.WriteTimeout = 100 * time.Millisecond },
		"clients 1e6":  func(c *EventsConfig) { c.MaxClients = 1e6 },
		"tick an hour": func(c *EventsConfig) { c.Tick = time.Hour },
	} {
		c := good
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewEvents(good, []ConsoleSource{{"a", nil}}, nil, nil); err == nil {
		t.Error("a source without a snapshot accepted")
	}
	s := func() any { return 1 }
	if _, err := NewEvents(good, []ConsoleSource{{"a", s}, {"a", s}}, nil, nil); err == nil {
		t.Error("a topic registered twice accepted")
	}
}

// A keyed view goes out whole to a new client, then as the items that
// changed, the keys gone and the new order.
func TestEventsKeyedDelta(t *testing.T) {
	var mu sync.Mutex
	items := []ConsoleItem{{"a", 1}, {"b", 2}, {"c", 3}}
	head := "h1"
	src := func() any {
		mu.Lock()
		defer mu.Unlock()
		return ConsoleKeyed{Head: head, Items: slices.Clone(items)}
	}
	ev, err := NewEvents(DefaultEventsConfig(), []ConsoleSource{{"k", src}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := ev.subscribe(nil)
	data := func() string {
		t.Helper()
		select {
		case b := <-sub.ch:
			_, d, _ := strings.Cut(string(b), "\ndata: ")
			return strings.TrimSpace(d)
		default:
			return ""
		}
	}
	ev.tick()
	if got, want := data(), `{"full":true,"head":"h1","set":{"a":1,"b":2,"c":3},"order":["a","b","c"]}`; got != want {
		t.Fatalf("first: %s, want %s", got, want)
	}
	ev.tick()
	if got := data(); got != "" {
		t.Fatalf("nothing changed, sent %s", got)
	}
	mu.Lock()
	items = []ConsoleItem{{"c", 3}, {"a", 5}}
	mu.Unlock()
	ev.tick()
	if got, want := data(), `{"head":"h1","set":{"a":5},"del":["b"],"order":["c","a"]}`; got != want {
		t.Fatalf("delta: %s, want %s", got, want)
	}
	mu.Lock()
	head = "h2"
	mu.Unlock()
	late := ev.subscribe(nil)
	ev.tick()
	if got, want := data(), `{"head":"h2"}`; got != want {
		t.Fatalf("head change: %s, want %s", got, want)
	}
	select {
	case b := <-late.ch:
		if !strings.Contains(string(b), `{"full":true,"head":"h2","set":{"a":5,"c":3},"order":["c","a"]}`) {
			t.Fatalf("late client: %s", b)
		}
	default:
		t.Fatal("the late client got nothing")
	}
}
