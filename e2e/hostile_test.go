package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The hostile-client suite: attacks on a running node, each its own
// subtest, while a canary stream plays. After each attack the process is
// alive, the canary's largest gap between video frames stayed under 1 s,
// the RSS grew by less than the attack's bound, and the log names the
// refusal (a line with a reason key, saying "refused" or naming a
// "timeout", that names the attacker's address).
//
// RSS bounds (growth of VmRSS from just before the attack to its peak
// during the attack and a short settle after it):
//   - AMF bombs, server side: 48 MiB. A refused bomb costs nothing; an
//     accepted one costs gigabytes or the process.
//   - AMF bombs in replies to the pull and relay clients: 64 MiB (the
//     clients may read the ~8 MB depth bomb whole before checking it).
//   - incomplete messages, before authorization: 48 MiB for 1 and for 20
//     connections (without pre-authorization bounds one connection pins
//     248 MiB).
//   - incomplete messages from an authorized publisher, and from an
//     upstream to the pull client once it plays: 224 MiB, three times the
//     suite's buffer_budget (64 MiB) and 32 MiB. The budget counts bytes
//     received; buffers grown chunk by chunk hold up to twice that, and
//     the garbage of their growth waits for the collector (GOGC=100 lets
//     the heap reach twice what is live).
//   - 300 trickling connections of one kind: 96 MiB (what 300 open
//     connections cost, with room; bench-hostile measures the real figure).

const (
	mib = 1 << 20

	rssBoundBomb        = 48 * mib
	rssBoundClientBomb  = 64 * mib
	rssBoundHold        = 48 * mib
	rssBoundHoldAuthzed = 3*hostileBudget + 32*mib
	rssBoundTrickle     = 96 * mib

	hostileBudget = 64 * mib

	// The suite's node closes connections that reach no publish or play
	// within hostileSetupTimeout, idle HTTP keep-alive connections after
	// hostileHTTPIdle and request bodies not read within hostileHTTPBody.
	// Per-address caps (hostileCapPerIP) are above what one loopback source
	// address opens in the trickle cases.
	hostileSetupTimeout = 3 * time.Second
	// A publisher must send min_publish_rate (default 512 bytes/s) over
	// each hostileRateWindow.
	hostileRateWindow = 4 * time.Second
	hostileHTTPIdle   = 3 * time.Second
	hostileHTTPBody   = 3 * time.Second
	hostileCapPerIP   = 100

	trickleConns = 300
	// trickleHosts: the trickle cases dial from 127.0.0.2..9, capHost is
	// the one address that opens more than hostileCapPerIP connections.
	trickleHosts = 8
	capHost      = 10
)

var (
	hostileRTMPFields = fmt.Sprintf("setup_timeout: %s, max_conns_per_ip: %d, buffer_budget: %d, min_publish_rate_window: %s",
		hostileSetupTimeout, hostileCapPerIP, hostileBudget, hostileRateWindow)
	hostileHTTPFields = fmt.Sprintf("idle_timeout: %s, read_timeout: %s, max_conns_per_ip: %d",
		hostileHTTPIdle, hostileHTTPBody, hostileCapPerIP)
)

// hostileSuite is one node under attack with its canary.
type hostileSuite struct {
	s      *server
	canary *canary
	top    *testing.T
	// cleanup runs before a restart of a node that died (an attack that
	// killed it must not kill the next case's node too).
	beforeRestart func()
}

// ensureUp restarts the node (and the canary) when an earlier case killed
// it, so that every case is judged on its own.
func (h *hostileSuite) ensureUp(t *testing.T) {
	if h.s.alive() {
		return
	}
	t.Logf("the node died in an earlier case; restarting it")
	if h.beforeRestart != nil {
		h.beforeRestart()
	}
	top := h.s.t
	h.s.t = t // start fails this case, not the suite
	h.s.start()
	h.s.t = top
	h.canary = startCanary(h.top, h.s)
}

// attack runs one attack and checks its outcome. run performs it and
// returns the needles that a refusal line must name (each inner slice is
// one line to find); it may call t.Error for outcomes of its own.
func (h *hostileSuite) attack(t *testing.T, rssBound int64, run func(t *testing.T) [][]string) {
	t.Helper()
	h.ensureUp(t)
	s := h.s
	off := s.logLen()
	base := s.rss()
	w := watchRSS(s)
	defer w.peak()
	from := time.Now()
	needles := run(t)
	time.Sleep(700 * time.Millisecond) // the canary plays on after the attack
	peak := w.peak()
	if !s.alive() {
		w := s.logSince(off)
		if len(w) > 4000 {
			w = w[:2000] + "\n…\n" + w[len(w)-2000:]
		}
		t.Fatalf("the node died during the attack; its log since the attack:\n%s", w)
	}
	gap := h.canary.p.maxGap(from)
	t.Logf("RSS %d MiB before, peak %+d MiB; canary's largest gap %v", base/mib, (peak-base)/mib, gap.Round(time.Millisecond))
	if gap >= time.Second {
		t.Errorf("canary's largest gap between video frames was %v, want under 1 s", gap.Round(time.Millisecond))
	}
	if peak-base >= rssBound {
		t.Errorf("RSS grew by %d MiB (from %d MiB), bound %d MiB", (peak-base)/mib, base/mib, rssBound/mib)
	}
	missing := 0
	for i, line := range s.findRefusals(off, 3*time.Second, needles) {
		switch {
		case line == "" && missing < 5:
			t.Errorf("no refusal logged naming %q (a line with a reason key and \"refused\" or \"timeout\")", needles[i])
			missing++
		case line == "":
			missing++
		case i == 0:
			t.Logf("refusal: %s", line)
		}
	}
	if missing > 5 {
		t.Errorf("%d of %d connections in all were not named by a refusal", missing, len(needles))
	}
}

func TestHostile(t *testing.T) {
	s := startHostileServer(t, hostileRTMPFields, hostileHTTPFields, canaryStreamYAML+
		`  - {app: live, name: holder, publish_token: "holder-token"}
`)
	h := &hostileSuite{s: s, top: t}
	h.canary = startCanary(t, s)
	rtmpAddr := fmt.Sprintf("127.0.0.1:%d", s.rtmp)
	tcURL := "rtmp://" + rtmpAddr + "/live"

	// AMF length and depth bombs in connect, publish and play (the big
	// depth bomb passes max_message_size but not the pre-authorization
	// message size; the small one only the nesting limit stops).
	for _, stage := range []string{"connect", "publish", "play"} {
		for _, kind := range bombKinds {
			t.Run("amf/"+stage+"/"+kind, func(t *testing.T) {
				h.attack(t, rssBoundBomb, func(t *testing.T) [][]string {
					c, err := dialRTMP(rtmpAddr, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					var sendErr error
					switch {
					case stage == "connect" && kind == "length":
						// The 52 bytes of the issue, verbatim.
						_, sendErr = c.nc.Write([]byte("\x03\x00\x00\x00\x00\x00\x28\x14\x00\x00\x00\x00\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03app\x02\x00\x04live\x00\x01x\x0a\x7f\xff\xff\xff"))
					case stage == "connect":
						if sendErr = c.setChunkSize(64 << 10); sendErr == nil {
							sendErr = c.send(3, rtmpTypeCommandAMF0, 0, connectBody(tcURL, amfProp{"x", bomb(kind)}))
						}
					default:
						sid, err := c.connectAndCreate(tcURL)
						if err != nil {
							t.Fatalf("before the bomb: %v", err)
						}
						if sendErr = c.setChunkSize(64 << 10); sendErr == nil {
							sendErr = c.send(8, rtmpTypeCommandAMF0, sid, concat(amfString(stage), amfNumber(0), amfNull, bomb(kind)))
						}
					}
					if sendErr != nil {
						t.Logf("sending the bomb: %v (the server closed the connection early)", sendErr)
					}
					if !waitClosed(c.nc, 5*time.Second) {
						t.Errorf("the connection is still open 5 s after the bomb")
					}
					return [][]string{{c.local()}}
				})
			})
		}
	}

	// The same bombs in a hostile upstream's replies to the pull client.
	for i, m := range []struct{ stage, answer string }{{"connect", "_error"}, {"stream", "onStatus"}} {
		for j, kind := range bombKinds {
			t.Run(fmt.Sprintf("pull/%s/%s", m.answer, kind), func(t *testing.T) {
				h.attack(t, rssBoundClientBomb, func(t *testing.T) [][]string {
					up := startHostileRTMP(t)
					up.arm(hostileMode{stage: m.stage, answer: m.answer, bomb: bomb(kind)})
					name := fmt.Sprintf("pulled%d", i*len(bombKinds)+j)
					code, err := s.api("POST", "/streams", map[string]any{"app": "live", "name": name,
						"source": "rtmp://" + up.addr() + "/live/src", "enabled": true}, nil)
					if err != nil || code/100 != 2 {
						t.Fatalf("create pull stream: %d %v", code, err)
					}
					defer func() {
						if code, err := s.api("DELETE", "/streams/live/"+name, nil, nil); s.alive() && (err != nil || code/100 != 2) {
							t.Errorf("delete pull stream: %d %v", code, err)
						}
					}()
					// Two bombs: the node survived the first and tried again.
					deadline := time.Now().Add(10 * time.Second)
					for up.bombs.Load() < 2 && time.Now().Before(deadline) && s.alive() {
						time.Sleep(50 * time.Millisecond)
					}
					if n := up.bombs.Load(); n < 2 && s.alive() {
						t.Errorf("the pull client met %d bombs in 10 s, want 2 (it reconnects)", n)
					}
					return [][]string{{up.addr()}}
				})
			})
		}
	}

	// Incomplete messages on many chunk streams: 31 chunk streams, each
	// with an 8 MiB message minus its last byte, from 1 and from 20
	// connections that never authenticate (an authorized publisher comes
	// last).
	for _, n := range []int{1, 20} {
		t.Run(fmt.Sprintf("hold/%d", n), func(t *testing.T) {
			h.attack(t, rssBoundHold, func(t *testing.T) [][]string {
				return holdAttack(t, s, rtmpAddr, n, false, bigMessage, rssBoundHold)
			})
		})
	}
	// The same with messages under the pre-authorization message size: the
	// chunk stream count stops them.
	t.Run("hold/20-small", func(t *testing.T) {
		h.attack(t, rssBoundHold, func(t *testing.T) [][]string {
			return holdAttack(t, s, rtmpAddr, 20, false, smallMessage, rssBoundHold)
		})
	})

	// Trickling connections, 300 of each kind from 8 loopback addresses
	// (under the per-address cap, so that the timeouts are what closes
	// them).
	t.Run("trickle/rtmp", func(t *testing.T) {
		h.attack(t, rssBoundTrickle, func(t *testing.T) [][]string {
			return trickle(t, trickleConns, hostileSetupTimeout, func(host int) (net.Conn, error) {
				c, err := dialRTMP(rtmpAddr, host)
				if err != nil {
					return nil, err
				}
				return c.nc, nil
			}, appendChunks(nil, 3, rtmpTypeCommandAMF0, 0, connectBody(tcURL), 128), 2*time.Second, trickleConns)
		})
	})
	// An authorized publisher that then trickles: the minimum publish rate
	// closes it.
	t.Run("trickle/publisher", func(t *testing.T) {
		h.attack(t, rssBoundTrickle, func(t *testing.T) [][]string {
			c, err := dialRTMP(rtmpAddr, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sid, err := c.connectAndCreate(tcURL)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.send(8, rtmpTypeCommandAMF0, sid, concat(amfString("publish"), amfNumber(0), amfNull,
				amfString("holder?token=holder-token"), amfString("live"))); err != nil {
				t.Fatal(err)
			}
			if _, p, err := c.await(10*time.Second, 0, "onStatus"); err != nil || !strings.Contains(string(p), "NetStream.Publish.Start") {
				t.Fatalf("publish: %q %v", p, err)
			}
			video := appendChunks(nil, 6, 9, sid, append([]byte{0x27, 1}, make([]byte, 4096)...), 128)
			start := time.Now()
			var closed atomic.Bool
			done := make(chan struct{})
			go func() { closed.Store(waitClosed(c.nc, 2*hostileRateWindow+5*time.Second)); close(done) }()
			tk := time.NewTicker(2 * time.Second)
			defer tk.Stop()
		loop:
			for _, b := range video {
				select {
				case <-done:
					break loop
				case <-tk.C:
					_, _ = c.nc.Write([]byte{b})
				}
			}
			<-done
			if !closed.Load() {
				t.Errorf("a publisher sending a byte every 2 s is still connected after %v", time.Since(start).Round(time.Second))
			} else {
				t.Logf("the trickling publisher was closed after %v", time.Since(start).Round(100*time.Millisecond))
			}
			return [][]string{{c.local()}}
		})
	})

	httpAddr := fmt.Sprintf("127.0.0.1:%d", s.http)
	t.Run("trickle/http-idle", func(t *testing.T) {
		h.attack(t, rssBoundTrickle, func(t *testing.T) [][]string {
			return trickle(t, trickleConns, hostileHTTPIdle, func(host int) (net.Conn, error) {
				nc, err := loopbackDialer(host).Dial("tcp", httpAddr)
				if err != nil {
					return nil, err
				}
				// One request, answered in full, then nothing: keep-alive.
				fmt.Fprintf(nc, "GET /live/nothing-here.flv HTTP/1.1\r\nHost: %s\r\n\r\n", httpAddr)
				_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				_ = nc.SetReadDeadline(time.Time{})
				if err != nil {
					nc.Close()
					return nil, fmt.Errorf("first request: %w", err)
				}
				return nc, nil
			}, nil, 0, 1)
		})
	})
	t.Run("trickle/qos-body", func(t *testing.T) {
		h.attack(t, rssBoundTrickle, func(t *testing.T) [][]string {
			body := []byte(`{"session":"s","vendor":"v","stall_ms":0,"padding":"................................"}`)
			return trickle(t, trickleConns, hostileHTTPBody, func(host int) (net.Conn, error) {
				nc, err := loopbackDialer(host).Dial("tcp", httpAddr)
				if err != nil {
					return nil, err
				}
				_, err = fmt.Fprintf(nc, "POST /qos HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", httpAddr, len(body))
				if err != nil {
					nc.Close()
					return nil, err
				}
				return nc, nil
			}, body, time.Second, 1)
		})
	})

	// The per-address caps refuse what is over them.
	for _, l := range []struct{ name, addr string }{{"rtmp", rtmpAddr}, {"http", httpAddr}} {
		t.Run("caps/"+l.name, func(t *testing.T) {
			h.attack(t, rssBoundTrickle, func(t *testing.T) [][]string {
				return capsAttack(t, l.addr, hostileCapPerIP+40)
			})
		})
	}

	// Last, the cases the buffer budget bounds: they leave the heap larger
	// (RSS seldom shrinks), which would hide what the cases above cost;
	// the second is measured from what the first left.
	// A hostile upstream that lets the pull client play, then holds it
	// with incomplete messages on 31 chunk streams: the buffer budget
	// bounds what it holds.
	t.Run("pull/hold", func(t *testing.T) {
		h.attack(t, rssBoundHoldAuthzed, func(t *testing.T) [][]string {
			up := startHostileRTMP(t)
			up.arm(hostileMode{stage: "hold"})
			code, err := s.api("POST", "/streams", map[string]any{"app": "live", "name": "pulledhold",
				"source": "rtmp://" + up.addr() + "/live/src", "enabled": true}, nil)
			if err != nil || code/100 != 2 {
				t.Fatalf("create pull stream: %d %v", code, err)
			}
			defer func() {
				if code, err := s.api("DELETE", "/streams/live/pulledhold", nil, nil); s.alive() && (err != nil || code/100 != 2) {
					t.Errorf("delete pull stream: %d %v", code, err)
				}
			}()
			deadline := time.Now().Add(10 * time.Second)
			for up.bombs.Load() < 1 && time.Now().Before(deadline) && s.alive() {
				time.Sleep(50 * time.Millisecond)
			}
			if up.bombs.Load() < 1 && s.alive() {
				t.Fatalf("the pull client did not play in 10 s")
			}
			time.Sleep(2 * time.Second) // 248 MB on loopback
			return [][]string{{up.addr()}}
		})
	})

	// An authorized publisher holding incomplete messages on 31 chunk
	// streams.
	t.Run("hold/authorized", func(t *testing.T) {
		h.attack(t, rssBoundHoldAuthzed, func(t *testing.T) [][]string {
			return holdAttack(t, s, rtmpAddr, 1, true, bigMessage, rssBoundHoldAuthzed)
		})
	})
}

// TestHostileRelay: a unit whose other unit's relay address is a hostile
// RTMP server answering the relay client's connect and publish with bombs.
// The canary's feed is what gets relayed.
func TestHostileRelay(t *testing.T) {
	parallel(t)
	up := startHostileRTMP(t)
	s := &server{t: t, dir: t.TempDir(), token: apiToken}
	s.rtmp, s.rtsp, s.http, s.apiPort = freePort(t), freePort(t), freePort(t), freePort(t)
	s.writeHostileConfig(hostileRTMPFields, "", fmt.Sprintf(`unit: a
units:
  - {name: a, relay: "127.0.0.1:%d"}
  - {name: b, relay: %q}
relay_secret: "e2e-relay-secret"
`, s.rtmp, up.addr())+canaryStreamYAML)
	s.start()
	t.Cleanup(s.stop)
	h := &hostileSuite{s: s, top: t, beforeRestart: func() { up.arm(hostileMode{}) }}
	h.canary = startCanary(t, s)

	// The benign upstream first: the relay link is up (else the cases below
	// prove nothing).
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.logs(), "relay link up") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(s.logs(), "relay link up") {
		t.Fatalf("the relay link to the benign upstream did not come up")
	}
	for _, m := range []struct{ stage, answer string }{{"connect", "_error"}, {"stream", "onStatus"}} {
		for _, kind := range bombKinds {
			t.Run(fmt.Sprintf("relay/%s/%s", m.answer, kind), func(t *testing.T) {
				h.attack(t, rssBoundClientBomb, func(t *testing.T) [][]string {
					up.arm(hostileMode{stage: m.stage, answer: m.answer, bomb: bomb(kind)})
					defer up.arm(hostileMode{})
					deadline := time.Now().Add(10 * time.Second)
					for up.bombs.Load() < 1 && time.Now().Before(deadline) && s.alive() {
						time.Sleep(50 * time.Millisecond)
					}
					if up.bombs.Load() < 1 && s.alive() {
						t.Fatalf("the relay client met no bomb in 10 s")
					}
					time.Sleep(time.Second) // the answer is read and judged
					return [][]string{{up.addr()}}
				})
			})
		}
	}
}

// heldMessage is the shape of a message held incomplete: chunks full
// chunks of chunk bytes and a last chunk of 1 byte, which is never sent (a
// chunk cannot be cut short: the next header's first byte would complete
// it).
type heldMessage struct{ chunk, chunks int }

var (
	bigMessage   = heldMessage{64 << 10, 127} // 7.9 MiB, under max_message_size
	smallMessage = heldMessage{128, 63}       // 8065 bytes, under preauth_max_message_size
)

// holdAttack opens n connections that each start a message of shape m on
// each of 31 chunk streams and send all of it but its last byte. With
// authorize, the connection publishes to the holder stream first. It stops
// sending when the server's RSS passes bound (the attack has then shown
// what it can; sending more would only take the machine down).
func holdAttack(t *testing.T, s *server, addr string, n int, authorize bool, m heldMessage, bound int64) [][]string {
	const streams = 31
	chunk, msgLen := m.chunk, m.chunk*m.chunks+1
	base := s.rss()
	var over atomic.Bool
	payload := make([]byte, msgLen)
	payload[0], payload[1] = 0x27, 1 // AVC inter frame, NAL units
	var needles [][]string
	var mu sync.Mutex
	var wg sync.WaitGroup
	var conns []*rawRTMP
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialRTMP(addr, 0)
			if err != nil {
				t.Errorf("conn %d: %v", i, err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			needles = append(needles, []string{c.local()})
			mu.Unlock()
			if authorize {
				sid, err := c.connectAndCreate("rtmp://" + addr + "/live")
				if err != nil {
					t.Errorf("conn %d: %v", i, err)
					return
				}
				if err := c.send(8, rtmpTypeCommandAMF0, sid, concat(amfString("publish"), amfNumber(0), amfNull,
					amfString("holder?token=holder-token"), amfString("live"))); err != nil {
					t.Errorf("conn %d: publish: %v", i, err)
					return
				}
				if name, p, err := c.await(10*time.Second, 0, "onStatus"); err != nil || !strings.Contains(string(p), "NetStream.Publish.Start") {
					t.Errorf("conn %d: publish: %s %q %v", i, name, p, err)
					return
				}
			}
			if chunk != c.chunk {
				if err := c.setChunkSize(chunk); err != nil {
					return
				}
			}
			for k := range streams {
				if over.Load() || !s.alive() {
					return
				}
				b := appendChunks(nil, 10+k, 9, 1, payload, c.chunk) // video messages
				_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				// Cut the last chunk: its 1-byte header and its 1 byte.
				if _, err := c.nc.Write(b[:len(b)-2]); err != nil {
					return // refused: the server closed the connection
				}
				if s.rss()-base >= bound {
					over.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if over.Load() {
		t.Errorf("the server's RSS passed the bound while connections held incomplete messages: attack stopped")
	}
	// Let the server act on what it got, then count what it closed.
	var closed atomic.Int64
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if waitClosed(c.nc, 2*time.Second) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of %d connections closed by the server", closed.Load(), len(conns))
	for _, c := range conns {
		c.Close()
	}
	return needles
}

// trickle opens n connections with dial (spread over 127.0.0.2..9), then
// sends them data, one byte every every (none when data is empty), and
// checks that the server closes every one within timeout and 5 s of slack.
// The first logged connections must each be named by a refusal line (all
// of them for RTMP, whose refusals are logged one by one; one for HTTP).
func trickle(t *testing.T, n int, timeout time.Duration, dial func(host int) (net.Conn, error), data []byte, every time.Duration, logged int) [][]string {
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
		fails atomic.Int64
		sem   = make(chan struct{}, 32)
	)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			nc, err := dial(2 + i%trickleHosts)
			if err != nil {
				if fails.Add(1) == 1 {
					t.Errorf("connection %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("%d connections open in %v (%d failed)", len(conns), time.Since(start).Round(time.Millisecond), fails.Load())
	opened := time.Now()
	limit := timeout + 5*time.Second
	var closed atomic.Int64
	var late atomic.Int64
	for _, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan bool, 1)
			go func() { done <- waitClosed(nc, limit) }()
			tick := time.NewTicker(max(every, time.Second))
			defer tick.Stop()
			for i := 0; ; {
				select {
				case ok := <-done:
					if ok {
						closed.Add(1)
					} else {
						late.Add(1)
					}
					return
				case <-tick.C:
					if i < len(data) {
						_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
						_, _ = nc.Write(data[i : i+1])
						i++
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of %d closed by the server within %v (all within %v)", closed.Load(), len(conns), limit, time.Since(opened).Round(time.Millisecond))
	if int(closed.Load()) != len(conns) || len(conns) < n {
		t.Errorf("%d of %d trickling connections were closed by the server within %v (%d still open, %d never opened)",
			closed.Load(), n, limit, late.Load(), n-len(conns))
	}
	var needles [][]string
	for i, nc := range conns {
		if i < logged {
			needles = append(needles, []string{nc.LocalAddr().String()})
		}
		nc.Close()
	}
	return needles
}

// capsAttack opens n connections from 127.0.0.capHost, n over the
// per-address cap, and checks that the server closes those over the cap
// at once.
func capsAttack(t *testing.T, addr string, n int) [][]string {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	d := loopbackDialer(capHost)
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
	}
	var closed atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if waitClosed(c, 1500*time.Millisecond) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	want := n - hostileCapPerIP
	t.Logf("%d of %d connections from one address closed at once (cap %d)", closed.Load(), n, hostileCapPerIP)
	if int(closed.Load()) < want {
		t.Errorf("%d of %d connections from one address were closed at once, want at least %d (cap %d per address)",
			closed.Load(), n, want, hostileCapPerIP)
	}
	return [][]string{{fmt.Sprintf("127.0.0.%d", capHost)}}
}
