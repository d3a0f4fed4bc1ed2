package origin

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// synthFeed makes the packets of one encoder: 25 fps video with a keyframe
// every gop frames, and an audio frame every 20 ms. Each payload names its
// feed and its index, so the test can tell where an output packet came from.
type synthFeed struct {
	id    byte
	base  time.Duration // encoder clock at frame 0
	gop   int
	video int // frames made
	audio int
	avc   []byte
}

func newSynthFeed(id byte, base time.Duration) *synthFeed {
	return &synthFeed{id: id, base: base, gop: 50, avc: []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0, 1, 0, 0, id}}
}

func (f *synthFeed) headers() []*av.Packet {
	return []*av.Packet{
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Data: f.avc},
		{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
	}
}

func (f *synthFeed) payload(kind byte, n int) []byte {
	b := []byte{f.id, kind, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(n))
	return b
}

// next returns the packets of the next 40 ms: one video frame and the audio
// frames due by then.
func (f *synthFeed) next() []*av.Packet {
	v := &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: f.video%f.gop == 0,
		DTS: f.base + time.Duration(f.video)*40*time.Millisecond, Data: f.payload('v', f.video)}
	f.video++
	out := []*av.Packet{v}
	for time.Duration(f.audio)*20*time.Millisecond < time.Duration(f.video)*40*time.Millisecond {
		out = append(out, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC,
			DTS: f.base + time.Duration(f.audio)*20*time.Millisecond, Data: f.payload('a', f.audio)})
		f.audio++
	}
	return out
}

// swHarness drives a switcher with a manual clock.
type swHarness struct {
	t     *testing.T
	sw    *switcher
	out   *Stream
	r     *Reader
	clock time.Time
	feeds [2]*Feed
	got   []*av.Packet
}

func newSwHarness(t *testing.T, cfg Config, slates *slateCache) *swHarness {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	out := NewStream(cfg, nil)
	h := &swHarness{t: t, out: out, r: out.Subscribe(), clock: time.Unix(1000, 0)}
	h.sw = newSwitcher(cfg, out.log, out, slates, nil, PolicyAuto)
	h.sw.now = func() time.Time { return h.clock }
	t.Cleanup(h.r.Close)
	return h
}

func (h *swHarness) connect(idx int, sf *synthFeed) { h.connectSession(idx, sf, "") }

// connectSession connects feed idx as a relay of upstream session (""
// for an encoder).
func (h *swHarness) connectSession(idx int, sf *synthFeed, session string) {
	f := &Feed{name: feedName(idx), idx: idx, src: av.Source{Protocol: "test", Session: session}, done: make(chan struct{})}
	h.feeds[idx] = f
	h.sw.attach(idx, f)
	for _, p := range sf.headers() {
		h.sw.packet(idx, f, p)
	}
}

// step advances the clock by 40 ms, feeds one step of each given feed
// (nil: that feed is silent) and ticks.
func (h *swHarness) step(main, backup *synthFeed) {
	h.clock = h.clock.Add(40 * time.Millisecond)
	for i, sf := range [...]*synthFeed{main, backup} {
		if sf == nil || h.feeds[i] == nil {
			continue
		}
		for _, p := range sf.next() {
			h.sw.packet(i, h.feeds[i], p)
		}
	}
	h.sw.tick()
	h.got = h.r.poll(h.got)
}

// media returns the media packets received so far (no headers).
func (h *swHarness) media() []*av.Packet {
	var m []*av.Packet
	for _, p := range h.got {
		if !p.Header && p.Kind != av.KindData {
			m = append(m, p)
		}
	}
	return m
}

// checkMonotonic fails when video or audio timestamps go back or repeat.
func checkMonotonic(t *testing.T, pkts []*av.Packet) {
	t.Helper()
	var last [2]time.Duration
	var seen [2]bool
	for i, p := range pkts {
		if p.Header || p.Kind == av.KindData {
			continue
		}
		k := kindIdx(p.Kind)
		if seen[k] && p.DTS <= last[k] {
			t.Fatalf("packet %d (%s): DTS %v after %v", i, p.Kind, p.DTS, last[k])
		}
		last[k], seen[k] = p.DTS, true
	}
}

func source(p *av.Packet) byte { return p.Data[0] }

// firstFrom returns the index of the first media packet of feed id after from.
func firstFrom(pkts []*av.Packet, id byte, from int) int {
	for i := from; i < len(pkts); i++ {
		if source(pkts[i]) == id {
			return i
		}
	}
	return -1
}

// lastVideoBefore returns the last video packet before index i.
func lastVideoBefore(pkts []*av.Packet, i int) *av.Packet {
	for j := i - 1; j >= 0; j-- {
		if pkts[j].Kind == av.KindVideo {
			return pkts[j]
		}
	}
	return nil
}

func TestSwitcherFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(h *swHarness)
		// steps after the loss with main silent until backup shows
		within int
	}{
		{name: "publisher gone", lose: func(h *swHarness) { h.sw.detach(mainIdx, h.feeds[mainIdx], false) }, within: 1},
		{name: "stalled", lose: func(h *swHarness) {}, within: 14}, // 500 ms / 40 ms
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSwHarness(t, Config{FeedTimeout: 500 * time.Millisecond}, nil)
			m, b := newSynthFeed('m', 0), newSynthFeed('b', 7*time.Hour) // unrelated clocks
			h.connect(mainIdx, m)
			h.connect(backupIdx, b)
			for i := 0; i < 80; i++ {
				h.step(m, b)
			}
			if st := h.sw.status(); st.Active != FeedMain {
				t.Fatalf("active %q before the loss, want main", st.Active)
			}
			tc.lose(h)
			steps := 0
			for ; steps < 40; steps++ {
				h.step(nil, b)
				if h.sw.status().Active == FeedBackup {
					break
				}
			}
			if steps+1 > tc.within {
				t.Errorf("backup shown after %d steps, want at most %d", steps+1, tc.within)
			}
			for i := 0; i < 30; i++ {
				h.step(nil, b)
			}
			pk := h.media()
			checkMonotonic(t, pk)
			i := firstFrom(pk, 'b', 0)
			if i < 0 {
				t.Fatal("no backup packet in the output")
			}
			if pk[i].Kind != av.KindVideo || !pk[i].Key {
				first := pk[i]
				for _, p := range pk[i:] {
					if p.Kind == av.KindVideo {
						first = p
						break
					}
				}
				if !first.Key {
					t.Fatalf("first backup video frame is not a keyframe")
				}
			}
			lv := lastVideoBefore(pk, i)
			var bk *av.Packet
			for _, p := range pk[i:] {
				if p.Kind == av.KindVideo {
					bk = p
					break
				}
			}
			if d := bk.DTS - lv.DTS; d != 40*time.Millisecond {
				t.Errorf("timestamp step at the switch %v, want one frame (40ms)", d)
			}
			// New sequence headers come before the backup keyframe.
			var sawHdr bool
			for _, p := range h.got {
				if p.Header && p.Kind == av.KindVideo && p.Data[len(p.Data)-1] == 'b' {
					sawHdr = true
				}
				if !p.Header && p.Kind == av.KindVideo && source(p) == 'b' {
					break
				}
			}
			if !sawHdr {
				t.Error("backup's sequence header not written before its keyframe")
			}
		})
	}
}

func TestSwitcherReturnsToMainAtKeyframe(t *testing.T) {
	h := newSwHarness(t, Config{FeedTimeout: 500 * time.Millisecond, ReturnAfter: 3 * time.Second}, nil)
	m, b := newSynthFeed('m', 0), newSynthFeed('b', 0)
	h.connect(mainIdx, m)
	h.connect(backupIdx, b)
	for i := 0; i < 20; i++ {
		h.step(m, b)
	}
	h.sw.detach(mainIdx, h.feeds[mainIdx], false)
	for i := 0; i < 20; i++ {
		h.step(nil, b)
	}
	if a := h.sw.status().Active; a != FeedBackup {
		t.Fatalf("active %q, want backup", a)
	}
	m2 := newSynthFeed('n', 0) // the encoder restarts: a new clock
	h.connect(mainIdx, m2)
	back := -1
	for i := 0; i < 200 && back < 0; i++ {
		h.step(m2, b)
		if h.sw.status().Active == FeedMain {
			back = i
		}
	}
	// Healthy for 3 s (75 steps), then the next keyframe (every 50 steps).
	if back < 75 || back > 75+50 {
		t.Fatalf("returned to main after %d steps, want within [75, 125]", back)
	}
	for i := 0; i < 10; i++ {
		h.step(m2, b)
	}
	pk := h.media()
	checkMonotonic(t, pk)
	i := firstFrom(pk, 'n', 0)
	if !pk[i].Key {
		t.Fatal("return to main does not start at a keyframe")
	}
	if d := pk[i].DTS - lastVideoBefore(pk, i).DTS; d != 40*time.Millisecond {
		t.Errorf("step at the return %v, want 40ms", d)
	}
	if st := h.sw.status(); st.Switches != 3 || st.LastReason == "" {
		t.Errorf("status %+v: want 3 switches (live, backup, main) with a reason", st)
	}
}

func TestSwitcherForcedPolicy(t *testing.T) {
	h := newSwHarness(t, Config{}, nil)
	m, b := newSynthFeed('m', 0), newSynthFeed('b', 0)
	h.connect(mainIdx, m)
	h.connect(backupIdx, b)
	for i := 0; i < 10; i++ {
		h.step(m, b)
	}
	h.sw.setPolicy(PolicyBackup)
	steps := 0
	for ; steps < 100 && h.sw.status().Active != FeedBackup; steps++ {
		h.step(m, b)
	}
	if steps > 50 {
		t.Fatalf("forced backup took %d steps, want within one GOP (50)", steps)
	}
	// Forced: main is never shown again, even after return_after.
	for i := 0; i < 400; i++ {
		h.step(m, b)
	}
	if a := h.sw.status().Active; a != FeedBackup {
		t.Fatalf("active %q under policy backup", a)
	}
	h.sw.setPolicy(PolicyAuto)
	for i := 0; i < 60; i++ {
		h.step(m, b)
	}
	if a := h.sw.status().Active; a != FeedMain {
		t.Fatalf("active %q after policy auto with main healthy for long, want main", a)
	}
	checkMonotonic(t, h.media())
}

func testSlateClip() *slateClip {
	sf := newSynthFeed('s', 0)
	clip := &slateClip{headers: sf.headers()}
	for i := 0; i < 50; i++ {
		clip.pkts = append(clip.pkts, sf.next()...)
	}
	clip.start = 0
	clip.dur = 2 * time.Second
	return clip
}

func TestSwitcherSlate(t *testing.T) {
	slates := newSlateCache("", nil)
	t.Cleanup(slates.close)
	h := newSwHarness(t, Config{}, slates)
	m := newSynthFeed('m', 0)
	h.connect(mainIdx, m)
	for i := 0; i < 20; i++ {
		h.step(m, nil)
	}
	// The clip for the stream's resolution is ready (here: injected).
	slates.mu.Lock()
	slates.clips[[2]int{1280, 720}] = testSlateClip()
	slates.mu.Unlock()
	if end := h.sw.detach(mainIdx, h.feeds[mainIdx], false); end {
		t.Fatal("an unclean loss of the only feed ends the stream; want the slate")
	}
	for i := 0; i < 100; i++ { // 4 s: two loops of the slate
		h.step(nil, nil)
	}
	if a := h.sw.status().Active; a != "slate" {
		t.Fatalf("active %q, want slate", a)
	}
	m2 := newSynthFeed('n', 3*time.Hour)
	h.connect(mainIdx, m2)
	for i := 0; i < 60; i++ {
		h.step(m2, nil)
	}
	pk := h.media()
	checkMonotonic(t, pk)
	s := firstFrom(pk, 's', 0)
	n := firstFrom(pk, 'n', 0)
	if s < 0 || n < 0 {
		t.Fatalf("slate at %d, live again at %d", s, n)
	}
	slateFrames := 0
	for _, p := range pk[s:n] {
		if p.Kind == av.KindVideo {
			slateFrames++
		}
	}
	if slateFrames < 95 {
		t.Errorf("%d slate frames in 4 s, want about 100 (paced at 25 fps)", slateFrames)
	}
	if d := pk[s].DTS - lastVideoBefore(pk, s).DTS; d <= 0 || d > 80*time.Millisecond {
		t.Errorf("step into the slate %v", d)
	}
	if !pk[n].Key || pk[n].DTS-lastVideoBefore(pk, n).DTS > 80*time.Millisecond {
		t.Errorf("live resumes with key=%v after a step of %v", pk[n].Key, pk[n].DTS-lastVideoBefore(pk, n).DTS)
	}
	if end := h.sw.detach(mainIdx, h.feeds[mainIdx], true); !end {
		t.Error("a clean unpublish of the only feed should end the stream")
	}
}

func TestSwitcherSlateMax(t *testing.T) {
	slates := newSlateCache("", nil)
	t.Cleanup(slates.close)
	h := newSwHarness(t, Config{SlateMax: time.Second}, slates)
	m := newSynthFeed('m', 0)
	h.connect(mainIdx, m)
	for i := 0; i < 5; i++ {
		h.step(m, nil)
	}
	h.sw.detach(mainIdx, h.feeds[mainIdx], false)
	var ended bool
	for i := 0; i < 40 && !ended; i++ {
		h.clock = h.clock.Add(40 * time.Millisecond)
		ended, _ = h.sw.tick()
	}
	if !ended {
		t.Fatal("stream not ended after slate_max")
	}
}

// TestSwitcherReconnectNoDuplicates: a feed that drops and returns
// resending what it sent before (a relay replaying its GOP) adds nothing
// twice and nothing out of order.
func TestSwitcherReconnectNoDuplicates(t *testing.T) {
	h := newSwHarness(t, Config{}, nil)
	m := newSynthFeed('m', 0)
	h.connectSession(mainIdx, m, "s1")
	var sent []*av.Packet
	for i := 0; i < 70; i++ {
		h.clock = h.clock.Add(40 * time.Millisecond)
		for _, p := range m.next() {
			sent = append(sent, p)
			h.sw.packet(mainIdx, h.feeds[mainIdx], p)
		}
	}
	h.sw.detach(mainIdx, h.feeds[mainIdx], false)
	// Reconnect, replaying from the last keyframe (frame 50), then live.
	h.connectSession(mainIdx, m, "s1")
	for _, p := range sent {
		if p.DTS >= 50*40*time.Millisecond {
			h.sw.packet(mainIdx, h.feeds[mainIdx], p)
		}
	}
	for i := 0; i < 80; i++ {
		h.step(m, nil)
	}
	pk := h.media()
	checkMonotonic(t, pk)
	seen := map[string]bool{}
	for _, p := range pk {
		k := string(p.Data)
		if seen[k] {
			t.Fatalf("packet %q written twice", p.Data)
		}
		seen[k] = true
	}
}

func TestSwitcherCodecChange(t *testing.T) {
	h := newSwHarness(t, Config{}, nil)
	m, b := newSynthFeed('m', 0), newSynthFeed('b', 0)
	h.connect(mainIdx, m)
	h.connect(backupIdx, b)
	for i := 0; i < 10; i++ {
		h.step(m, b)
	}
	var hdrs int
	for _, p := range h.got {
		if p.Header && p.Kind == av.KindVideo {
			hdrs++
		}
	}
	if hdrs != 1 {
		t.Fatalf("%d video headers before any switch, want 1", hdrs)
	}
	h.sw.detach(mainIdx, h.feeds[mainIdx], false)
	h.step(nil, b)
	hdrs = 0
	for _, p := range h.got {
		if p.Header && p.Kind == av.KindVideo {
			hdrs++
		}
	}
	if hdrs != 2 {
		t.Fatalf("%d video headers after the switch, want 2 (the backup's differ)", hdrs)
	}
}

func BenchmarkSwitcherPacket(b *testing.B) {
	cfg, _ := Config{}.withDefaults()
	out := NewStream(cfg, nil)
	sw := newSwitcher(cfg, out.log, out, nil, nil, PolicyAuto)
	f := &Feed{name: FeedMain, done: make(chan struct{})}
	sw.attach(mainIdx, f)
	sf := newSynthFeed('m', 0)
	for _, p := range sf.headers() {
		sw.packet(mainIdx, f, p)
	}
	n := min(b.N, 1<<18)
	pkts := make([]*av.Packet, 0, n+8)
	for len(pkts) < n {
		pkts = append(pkts, sf.next()...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sw.packet(mainIdx, f, pkts[i%len(pkts)])
	}
}

// TestSwitcherOnlyFeedHiccup: the only feed pausing for less than
// slate_after stays on air and loses nothing; a longer pause brings the slate.
func TestSwitcherOnlyFeedHiccup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pause     int // steps of 40 ms
		wantSlate bool
	}{
		{name: "600ms", pause: 15},
		{name: "1.4s", pause: 35, wantSlate: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slates := newSlateCache("", nil)
			t.Cleanup(slates.close)
			slates.mu.Lock()
			slates.clips[[2]int{1280, 720}] = testSlateClip()
			slates.mu.Unlock()
			h := newSwHarness(t, Config{}, slates)
			m := newSynthFeed('m', 0)
			h.connect(mainIdx, m)
			for i := 0; i < 30; i++ {
				h.step(m, nil)
			}
			for i := 0; i < tc.pause; i++ {
				h.step(nil, nil)
			}
			for i := 0; i < 60; i++ {
				h.step(m, nil)
			}
			pk := h.media()
			checkMonotonic(t, pk)
			slate := firstFrom(pk, 's', 0) >= 0
			if slate != tc.wantSlate {
				t.Fatalf("slate shown: %v, want %v", slate, tc.wantSlate)
			}
			if !tc.wantSlate {
				var frames int
				for _, p := range pk {
					if p.Kind == av.KindVideo {
						frames++
					}
				}
				if frames != 90 {
					t.Fatalf("%d video frames out, want all 90", frames)
				}
			}
		})
	}
}

// TestSwitcherEncoderRestartIsNewTimeline: an encoder that reconnects with
// its clock back at zero is taken at once, not mistaken for a replay.
func TestSwitcherEncoderRestartIsNewTimeline(t *testing.T) {
	slates := newSlateCache("", nil)
	t.Cleanup(slates.close)
	h := newSwHarness(t, Config{}, slates)
	m := newSynthFeed('m', 0)
	h.connect(mainIdx, m)
	for i := 0; i < 200; i++ { // 8 s
		h.step(m, nil)
	}
	h.sw.detach(mainIdx, h.feeds[mainIdx], false)
	h.step(nil, nil)
	m2 := newSynthFeed('n', 0) // restarted: clock at 0 again
	h.connect(mainIdx, m2)
	h.step(m2, nil)
	pk := h.media()
	checkMonotonic(t, pk)
	if i := firstFrom(pk, 'n', 0); i < 0 || !pk[i].Key {
		t.Fatal("restarted encoder's first keyframe was not taken at once")
	}
}

// TestSwitcherPrefersMainAtStart: when main and backup arrive close
// together, the stream starts on main whatever came first; a lone backup
// is shown once start_window has passed, from its keyframe.
func TestSwitcherPrefersMainAtStart(t *testing.T) {
	const never = -1
	for _, tc := range []struct {
		name        string
		window      time.Duration // 0: the default (1 s)
		policy      string
		mainAt      int // step at which main connects (never: not at all)
		backupAt    int
		mainBlip    bool // main's publisher connects at step 1, silent, and leaves at step 3
		wantFirst   byte // feed whose media is shown first
		wantStartBy int  // steps after the first arrival within which media is out
		wantSwitch  int  // switches in the first 100 steps (0: don't check)
	}{
		{name: "backup 120 ms ahead", mainAt: 3, backupAt: 0, wantFirst: 'm', wantStartBy: 4, wantSwitch: 1},
		{name: "backup 200 ms ahead", mainAt: 5, backupAt: 0, wantFirst: 'm', wantStartBy: 6, wantSwitch: 1},
		{name: "main 120 ms ahead", mainAt: 0, backupAt: 3, wantFirst: 'm', wantStartBy: 1, wantSwitch: 1},
		{name: "same time", mainAt: 0, backupAt: 0, wantFirst: 'm', wantStartBy: 1, wantSwitch: 1},
		{name: "lone main", mainAt: 0, backupAt: never, wantFirst: 'm', wantStartBy: 1, wantSwitch: 1},
		// 1 s = 25 steps, then the next tick shows the cached GOP.
		{name: "lone backup", mainAt: never, backupAt: 0, wantFirst: 'b', wantStartBy: 27, wantSwitch: 1},
		{name: "main after the window", mainAt: 40, backupAt: 0, wantFirst: 'b', wantStartBy: 27, wantSwitch: 1},
		// Main's publisher connects, sends no media and leaves: no wait for it.
		{name: "main leaves in the window", mainAt: never, mainBlip: true, backupAt: 0, wantFirst: 'b', wantStartBy: 5, wantSwitch: 1},
		{name: "window off", window: -1, mainAt: 3, backupAt: 0, wantFirst: 'b', wantStartBy: 1},
		{name: "policy backup", policy: PolicyBackup, mainAt: 3, backupAt: 0, wantFirst: 'b', wantStartBy: 1, wantSwitch: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSwHarness(t, Config{StartWindow: tc.window, ReturnAfter: time.Minute}, nil)
			if tc.policy != "" {
				h.sw.setPolicy(tc.policy)
			}
			m, b := newSynthFeed('m', 0), newSynthFeed('b', 5*time.Hour)
			first := min(uint(tc.mainAt), uint(tc.backupAt)) // never (-1) is the largest uint
			startedAt := -1
			for i := 0; i < 100; i++ {
				if i == tc.mainAt {
					h.connect(mainIdx, m)
				}
				if i == tc.backupAt {
					h.connect(backupIdx, b)
				}
				if tc.mainBlip && i == 1 {
					h.connect(mainIdx, newSynthFeed('x', 0))
				}
				if tc.mainBlip && i == 3 {
					h.sw.detach(mainIdx, h.feeds[mainIdx], false)
					h.feeds[mainIdx] = nil
				}
				var ms, bs *synthFeed
				if tc.mainAt != never && i >= tc.mainAt {
					ms = m
				}
				if tc.backupAt != never && i >= tc.backupAt {
					bs = b
				}
				h.step(ms, bs)
				if startedAt < 0 && len(h.media()) > 0 {
					startedAt = i
				}
			}
			pk := h.media()
			if len(pk) == 0 {
				t.Fatal("nothing shown")
			}
			if got := source(pk[0]); got != tc.wantFirst {
				t.Errorf("first shown feed %q, want %q", got, tc.wantFirst)
			}
			if pk[0].Kind != av.KindVideo || !pk[0].Key {
				t.Errorf("first packet shown is not a keyframe: %+v", pk[0])
			}
			if by := startedAt - int(first) + 1; by > tc.wantStartBy {
				t.Errorf("media out %d steps after the first feed arrived, want within %d", by, tc.wantStartBy)
			}
			if st := h.sw.status(); tc.wantSwitch > 0 && st.Switches != int64(tc.wantSwitch) {
				t.Errorf("%d switches (last: %s), want %d", st.Switches, st.LastReason, tc.wantSwitch)
			}
			checkMonotonic(t, pk)
		})
	}
}

// TestSwitcherGoneBeforeShown: a backup that waited for main and lost its
// publisher leaves the stream on the slate (so slate_max can end it), and
// is shown at once when it comes back.
func TestSwitcherGoneBeforeShown(t *testing.T) {
	h := newSwHarness(t, Config{SlateMax: time.Second}, nil)
	b := newSynthFeed('b', 0)
	h.connect(backupIdx, b)
	for i := 0; i < 5; i++ {
		h.step(nil, b)
	}
	if st := h.sw.status(); st.Active != "none" {
		t.Fatalf("active %q while the backup waits for main", st.Active)
	}
	h.sw.detach(backupIdx, h.feeds[backupIdx], false)
	h.feeds[backupIdx] = nil
	if st := h.sw.status(); st.Active != "slate" {
		t.Fatalf("active %q after the waiting backup left, want slate", st.Active)
	}
	h.connect(backupIdx, b)
	for i := 0; i < 3; i++ {
		h.step(nil, b)
	}
	// The feed resumes on its next keyframe (every 50 frames).
	for i := 0; i < 50 && h.sw.status().Active != FeedBackup; i++ {
		h.step(nil, b)
	}
	if st := h.sw.status(); st.Active != FeedBackup {
		t.Fatalf("active %q after the backup came back, want backup", st.Active)
	}
	h.sw.detach(backupIdx, h.feeds[backupIdx], false)
	h.feeds[backupIdx] = nil
	h.clock = h.clock.Add(2 * time.Second)
	if end, _ := h.sw.tick(); !end {
		t.Error("stream with no publisher not ended after slate_max")
	}
}
