package origin

import (
	"bytes"
	"log/slog"
	"sync"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Feed policies of the switcher.
const (
	// PolicyAuto prefers main, moves to backup when main is lost and back
	// to main once main has been healthy for Config.ReturnAfter.
	PolicyAuto = "auto"
	// PolicyMain and PolicyBackup force one feed: the other is never shown
	// (the slate plays while the forced feed is unhealthy).
	PolicyMain   = "main"
	PolicyBackup = "backup"
)

// ValidPolicy reports whether p is a policy name ("" means auto).
func ValidPolicy(p string) bool {
	switch p {
	case "", PolicyAuto, PolicyMain, PolicyBackup:
		return true
	}
	return false
}

const (
	mainIdx   = 0
	backupIdx = 1
	noFeed    = -1

	// switchTick paces the slate; healthTick is how often the switcher
	// checks feed health otherwise (a stall is seen within feed_timeout
	// plus this).
	switchTick = 20 * time.Millisecond
	healthTick = 50 * time.Millisecond
	// defaultFrame is the frame interval assumed before one is measured.
	defaultFrame = 40 * time.Millisecond
	// maxJump is the largest timestamp step within a feed that is taken as
	// continuous; a larger step (an encoder restarting its clock on the
	// same connection) is rebased like a switch.
	maxJump = 5 * time.Second
	// resumeWindow bounds how far back a reconnected feed's first packets
	// may be and still be taken as a replay of packets already seen (a
	// relay that reconnects and resends its cached GOP).
	resumeWindow = 30 * time.Second
)

func feedIndex(name string) int {
	if name == FeedBackup {
		return backupIdx
	}
	return mainIdx
}

func feedName(i int) string {
	switch i {
	case mainIdx:
		return FeedMain
	case backupIdx:
		return FeedBackup
	}
	return ""
}

// feedState is what the switcher keeps of one feed: its own sequence
// headers and GOP (so it can be switched to at once), its health and its
// timeline.
type feedState struct {
	f              *Feed // nil while the feed has no publisher
	meta, avc, aac *av.Packet
	gop            []*av.Packet // since the feed's last keyframe
	gopBytes       int
	hasVideo       bool

	connected    time.Time
	last         time.Time // arrival of the last media packet
	healthySince time.Time // zero while unhealthy

	lastDTS  [2]time.Duration // per kind (0 video, 1 audio) of this session
	seen     [2]bool
	resume   [2]time.Duration // drop packets up to these (replay after reconnect)
	resumeOn [2]bool
	session  string        // upstream session of the last publisher (relays)
	frame    time.Duration // measured video frame interval
	info     mediaInfo
	health   feedHealth // ingest health over Config.HealthWindow (health.go)
	packets  int64
}

// kindIdx maps media kinds to the per-kind arrays.
func kindIdx(k av.Kind) int {
	if k == av.KindAudio {
		return 1
	}
	return 0
}

func (fs *feedState) frameDur() time.Duration {
	if fs.frame > 0 {
		return fs.frame
	}
	return defaultFrame
}

// healthy: a publisher is connected and media arrived within timeout.
func (fs *feedState) healthy(now time.Time, timeout time.Duration) bool {
	return fs.f != nil && !fs.last.IsZero() && now.Sub(fs.last) < timeout
}

// ready: healthy and holding a point a decoder can start from.
func (fs *feedState) ready(now time.Time, timeout time.Duration) bool {
	return fs.healthy(now, timeout) && len(fs.gop) > 0
}

// switchPoint reports whether p is a point a decoder can start from.
func (fs *feedState) switchPoint(p *av.Packet) bool {
	if p.Header || p.Kind == av.KindData {
		return false
	}
	if p.Kind == av.KindVideo {
		return p.Key
	}
	return !fs.hasVideo
}

func (fs *feedState) resetGOP() {
	clear(fs.gop)
	fs.gop = fs.gop[:0]
	fs.gopBytes = 0
}

// switcher turns a stream's two feeds into its one output Stream.
//
// How a switch stays small: every feed keeps its own sequence headers and
// the packets since its last keyframe, whether it is shown or not. When the
// shown feed is lost (publisher gone, or no media for FeedTimeout), the
// other feed's cached GOP is written at once, from its keyframe, with its
// timestamps rebased so that the keyframe follows the last output frame by
// one frame interval: the player gets a decodable picture immediately and
// the output clock neither goes back nor jumps. The price is that the few
// frames of the backup's GOP before "now" are shown late, so the delay
// behind the encoder grows by at most one GOP at a failover; players that
// chase the live edge (mpegts.js, hls.js) absorb it. Planned switches
// (return to main, operator's choice) wait for the target's next live
// keyframe instead, which costs nothing in delay.
//
// The first feed of a stream keeps its own timestamps (offset 0), so two
// units fed the same encoder produce the same output timeline.
//
// Main is preferred at the start: a backup that is ready before main waits
// up to Config.StartWindow (default 1 s) for it, so when both encoders (or
// an encoder and a relay a few hundred milliseconds apart) start together
// viewers get main from the first frame and see no switch at ReturnAfter.
// The price is paid only by a backup that starts alone: its first frame
// is that much later (shown from its cached GOP, so nothing is lost). A
// lone main, and a feed coming back from the slate, start at once.
//
// With no healthy feed the slate plays with continuous timestamps; when a
// feed returns, live resumes at its keyframe. Sequence headers are written
// whenever the shown source's differ from the last written, so players
// see new codec parameters at the switch.
type switcher struct {
	cfg    Config
	log    *slog.Logger
	out    *Stream
	slates *slateCache
	m      *metrics
	now    func() time.Time

	mu      sync.Mutex
	feeds   [2]feedState
	active  int // index of the shown feed, or noFeed
	pending int // feed to switch to at its next keyframe, or noFeed
	preFeed int // feed whose headers were written before anything was shown
	policy  string
	offset  time.Duration // output DTS = source DTS + offset

	started   bool
	waitSince time.Time // when a backup first waited for main (StartWindow)
	mainLeft  bool      // main's publisher left before anything was shown
	lastVideo time.Duration
	lastAudio time.Duration
	lastAny   time.Duration
	maxPTS    time.Duration
	outVideo  bool
	outAudio  bool
	lastWall  time.Time // when the last media packet was written
	outMeta   []byte
	outAVC    []byte
	outAAC    []byte
	outW      int
	outH      int
	outCfg    *av.AVCConfig // parsed outAVC
	inband    bool          // the next keyframe carries SPS/PPS in-band

	slate      *slatePlay
	slateSince time.Time // zero unless no feed is shown
	lastSwitch time.Time
	lastReason string
	switches   int64
	closed     bool
}

func newSwitcher(cfg Config, log *slog.Logger, out *Stream, slates *slateCache, m *metrics, policy string) *switcher {
	if policy == "" {
		policy = PolicyAuto
	}
	return &switcher{cfg: cfg, log: log, out: out, slates: slates, m: m, now: time.Now,
		active: noFeed, pending: noFeed, preFeed: noFeed, policy: policy}
}

// attach gives feed idx its new publisher.
func (s *switcher) attach(idx int, f *Feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := &s.feeds[idx]
	fs.f = f
	fs.connected = s.now()
	fs.healthySince, fs.last = time.Time{}, time.Time{}
	fs.health.reset(s.cfg.HealthWindow)
	fs.resetGOP()
	// A relay that reconnects within the same upstream session resends
	// its cached GOP: packets up to the last one seen are dropped, so
	// nothing is duplicated or reordered. Anything else (an encoder that
	// restarted) is a new timeline.
	cont := f.src.Session != "" && f.src.Session == fs.session
	fs.session = f.src.Session
	for k := range fs.seen {
		fs.resumeOn[k], fs.resume[k] = cont && fs.seen[k], fs.lastDTS[k]
		fs.seen[k] = false
	}
}

// detach removes feed idx's publisher f. A clean leave (the encoder said
// it stopped) of the last feed ends the stream; otherwise the switcher
// moves to the other feed or the slate. It reports whether the stream
// should end now.
func (s *switcher) detach(idx int, f *Feed, clean bool) (end bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := &s.feeds[idx]
	if fs.f != f {
		return false
	}
	fs.f = nil
	fs.healthySince = time.Time{}
	fs.resetGOP()
	if idx == mainIdx && !s.started {
		s.mainLeft = true // a waiting backup need not wait for it (evaluate shows it)
	}
	other := &s.feeds[1-idx]
	if other.f == nil && (clean || !s.slateEnabled()) {
		return true
	}
	if s.pending == idx {
		s.pending = noFeed
	}
	reason := "feed " + feedName(idx) + " publisher gone"
	if clean {
		reason = "feed " + feedName(idx) + " unpublished"
	}
	switch {
	case s.active == idx:
		s.failover(s.now(), reason)
	case s.active == noFeed && s.slateSince.IsZero() && other.f == nil:
		// Gone before anything was shown (a backup waiting for main, a
		// feed that never sent a keyframe): the slate, so that slate_max
		// ends a stream left with no publisher.
		s.startSlate(noFeed, s.now(), reason)
	}
	return false
}

func (s *switcher) slateEnabled() bool { return s.cfg.Slate != SlateOff }

// packet takes one packet of feed idx. It never blocks on readers.
func (s *switcher) packet(idx int, f *Feed, p *av.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := &s.feeds[idx]
	if fs.f != f || s.closed {
		return
	}
	now := s.now()
	if !s.track(fs, p, now) {
		return
	}
	switch {
	case idx == s.pending && fs.switchPoint(p):
		s.switchTo(idx, []*av.Packet{p}, now, s.pendingReason(idx))
	case idx == s.active:
		s.emit(p, now)
	case s.active == noFeed && !s.started && (p.Header || p.Kind == av.KindData) && s.allowed(idx) &&
		(s.preFeed == noFeed || s.preFeed == idx):
		// Nothing shown yet: the first feed's metadata and sequence
		// headers go out at once, so players that join before its first
		// keyframe know the codecs.
		s.preFeed = idx
		s.emit(p, now)
	case s.active == noFeed && s.allowed(idx) && fs.switchPoint(p):
		if s.waitForMain(idx, now) {
			return // cached in fs.gop: shown from there if main does not come
		}
		reason := "feed " + feedName(idx) + " live"
		if !s.slateSince.IsZero() {
			reason = "feed " + feedName(idx) + " back"
		}
		s.switchTo(idx, []*av.Packet{p}, now, reason)
	}
}

// track updates feed state with p; false means p is dropped.
func (s *switcher) track(fs *feedState, p *av.Packet, now time.Time) bool {
	switch {
	case p.Kind == av.KindData:
		if isOnMetaData(p.Data) {
			fs.meta = p
		}
		return true
	case p.Header:
		if p.Kind == av.KindVideo {
			fs.avc = p
			fs.hasVideo = true
			fs.info.setVideo(p)
			if s.slates != nil && fs.info.width > 0 {
				s.slates.prepare(fs.info.width, fs.info.height)
			}
		} else {
			fs.aac = p
			fs.info.setAudio(p)
		}
		return true
	}
	k := kindIdx(p.Kind)
	if fs.resumeOn[k] {
		if p.DTS <= fs.resume[k] && fs.resume[k]-p.DTS < resumeWindow {
			return false
		}
		fs.resumeOn[k] = false
	}
	if p.Kind == av.KindVideo {
		fs.hasVideo = true
		if fs.seen[0] {
			if d := p.DTS - fs.lastDTS[0]; d > 0 && d < 200*time.Millisecond {
				fs.frame = d
			}
		}
	}
	fs.lastDTS[k], fs.seen[k] = p.DTS, true
	fs.last = now
	if fs.healthySince.IsZero() {
		fs.healthySince = now
	}
	fs.packets++
	fs.health.add(time.Duration(now.UnixNano()), p)
	switch {
	case fs.switchPoint(p):
		fs.resetGOP()
		fs.gop = append(fs.gop, p)
		fs.gopBytes = len(p.Data)
	case len(fs.gop) > 0:
		if len(fs.gop)+1 > s.cfg.GOPCachePackets || fs.gopBytes+len(p.Data) > s.cfg.GOPCacheBytes {
			fs.resetGOP()
		} else {
			fs.gop = append(fs.gop, p)
			fs.gopBytes += len(p.Data)
		}
	}
	return true
}

// waitForMain reports whether feed idx, ready to be shown first, must wait
// for main: at the start of a stream (nothing shown yet, no slate), under
// the auto policy, the backup waits up to StartWindow from its first
// switch point, so that a main arriving just behind it is what viewers
// get, with no switch at return_after. evaluate shows the backup from its
// cached GOP when the window ends without main.
func (s *switcher) waitForMain(idx int, now time.Time) bool {
	if idx != backupIdx || s.policy != PolicyAuto || s.started || s.mainLeft || !s.slateSince.IsZero() || s.cfg.StartWindow <= 0 {
		return false
	}
	if s.waitSince.IsZero() {
		s.waitSince = now
	}
	return now.Sub(s.waitSince) < s.cfg.StartWindow
}

// allowed reports whether the policy lets feed idx be shown.
func (s *switcher) allowed(idx int) bool {
	switch s.policy {
	case PolicyMain:
		return idx == mainIdx
	case PolicyBackup:
		return idx == backupIdx
	}
	return true
}

func (s *switcher) pendingReason(idx int) string {
	switch s.policy {
	case PolicyMain, PolicyBackup:
		return "operator forced " + s.policy
	}
	return "feed " + feedName(idx) + " healthy for " + s.cfg.ReturnAfter.String()
}

// failover leaves the shown feed: to the other feed's cached GOP when the
// policy allows it and it is ready, else to the slate.
func (s *switcher) failover(now time.Time, reason string) {
	from := s.active
	s.active = noFeed
	if from != noFeed {
		if c := 1 - from; s.allowed(c) && s.feeds[c].ready(now, s.cfg.FeedTimeout) {
			s.switchFrom(from, c, s.feeds[c].gop, now, reason)
			return
		}
	}
	s.startSlate(from, now, reason)
}

// switchTo shows feed idx from pkts[0], a switch point.
func (s *switcher) switchTo(idx int, pkts []*av.Packet, now time.Time, reason string) {
	s.switchFrom(s.active, idx, pkts, now, reason)
}

// switchFrom is switchTo with the feed shown before (noFeed for none).
func (s *switcher) switchFrom(from, idx int, pkts []*av.Packet, now time.Time, reason string) {
	fs := &s.feeds[idx]
	if len(pkts) == 0 {
		return
	}
	first := pkts[0]
	s.offset = s.nextOffset(first, fs.frameDur())
	s.active, s.pending = idx, noFeed
	s.slate = nil
	s.slateSince = time.Time{}
	for _, h := range [...]*av.Packet{fs.meta, fs.avc, fs.aac} {
		if h != nil {
			s.emit(h, now)
		}
	}
	for _, p := range pkts {
		s.emit(p, now)
	}
	s.noteSwitch(now, feedName(from), feedName(idx), reason)
}

// nextOffset returns the offset that puts first right after the last
// output frame (or keeps the source's timestamps for the first output).
func (s *switcher) nextOffset(first *av.Packet, frame time.Duration) time.Duration {
	if !s.started {
		return 0
	}
	next := s.lastAny + frame/2
	if s.outVideo {
		// After the last frame shown, in presentation order too: with
		// B-frames the last decoded frame is not the last presented one,
		// and the new GOP must not present anything before it.
		next = max(s.lastVideo, s.maxPTS) + frame
	}
	return next - first.DTS
}

func (s *switcher) noteSwitch(now time.Time, from, to, reason string) {
	s.lastSwitch, s.lastReason = now, reason
	s.switches++
	if from == "" {
		from = "none"
	}
	if to == "" {
		to = "slate"
	}
	if s.m != nil {
		s.m.switches.WithLabelValues(to).Inc()
	}
	s.log.Info("switch", "from", from, "to", to, "reason", reason)
}

// emit writes p, rebased by the current offset, to the output. Headers
// are written only when they differ from the last written; media
// timestamps never go back.
func (s *switcher) emit(p *av.Packet, now time.Time) {
	switch {
	case p.Kind == av.KindData:
		if isOnMetaData(p.Data) {
			if bytes.Equal(p.Data, s.outMeta) {
				return
			}
			s.outMeta = p.Data
		}
		s.out.Write(s.rebase(p, s.lastAny))
		return
	case p.Header && p.Kind == av.KindVideo:
		if bytes.Equal(p.Data, s.outAVC) {
			return
		}
		s.outAVC = p.Data
		s.outCfg = nil
		if c, err := av.ParseAVCConfig(p.Data); err == nil {
			s.outW, s.outH = c.Resolution()
			s.outCfg = c
		}
		// New parameters mid-stream: the next keyframe also carries them
		// in-band, for parsers that do not follow FLV sequence headers
		// (ffmpeg's h264 parser, stream copy into TS).
		s.inband = s.started
		s.out.Write(s.rebase(p, s.lastAny))
		return
	case p.Header:
		if bytes.Equal(p.Data, s.outAAC) {
			return
		}
		s.outAAC = p.Data
		s.out.Write(s.rebase(p, s.lastAny))
		return
	}
	dts := p.DTS + s.offset
	if s.started {
		// A timestamp jump inside one source (an encoder restarting its
		// clock) is rebased like a switch: never back, never ahead of
		// the real gap.
		real := now.Sub(s.lastWall)
		if dts < s.lastAny-maxJump || dts > s.lastAny+real+maxJump {
			s.offset = s.nextOffset(p, defaultFrame)
			dts = p.DTS + s.offset
		}
	}
	if p.Kind == av.KindVideo {
		if s.outVideo && dts <= s.lastVideo {
			return
		}
		s.lastVideo, s.outVideo = dts, true
		if pts := dts + p.CTS; pts > s.maxPTS {
			s.maxPTS = pts
		}
	} else {
		if s.outAudio && dts <= s.lastAudio {
			return
		}
		s.lastAudio, s.outAudio = dts, true
	}
	if !s.started || dts > s.lastAny {
		s.lastAny = dts
	}
	s.started = true
	s.lastWall = now
	if s.inband && p.Kind == av.KindVideo && p.Key {
		s.inband = false
		if q := s.withParams(p, dts); q != nil {
			s.out.Write(q)
			return
		}
	}
	s.out.Write(s.rebase(p, dts))
}

// withParams returns a copy of keyframe p at dts with the output's SPS and
// PPS in front of its NAL units, or nil when p has them already or the
// parameters are unknown.
func (s *switcher) withParams(p *av.Packet, dts time.Duration) *av.Packet {
	if s.outCfg == nil || p.Codec != av.CodecH264 || len(p.Data) < 5 || av.NALUType(p.Data[4:]) == av.NALUTypeSPS {
		return nil
	}
	c := *p
	c.DTS = dts
	c.Data = av.AppendAVCC(nil, s.outCfg.SPS)
	c.Data = av.AppendAVCC(c.Data, s.outCfg.PPS)
	c.Data = append(c.Data, p.Data...)
	return &c
}

// rebase returns p at dts, copying it only when the time changes.
func (s *switcher) rebase(p *av.Packet, dts time.Duration) *av.Packet {
	if p.Header || p.Kind == av.KindData {
		if p.DTS == dts {
			return p
		}
	} else if s.offset == 0 && p.DTS == dts {
		return p
	}
	c := *p
	c.DTS = dts
	return &c
}

// setPolicy changes the policy; the switch it implies happens at the
// target's next keyframe (or at once from the slate).
func (s *switcher) setPolicy(policy string) {
	if policy == "" {
		policy = PolicyAuto
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if policy == s.policy {
		return
	}
	s.log.Info("switch policy", "from", s.policy, "to", policy)
	s.policy = policy
	s.pending = noFeed
	s.evaluate(s.now())
}

// tick checks feed health and paces the slate. It reports whether the
// stream should end (slate_max reached).
func (s *switcher) tick() (end bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ""
	}
	now := s.now()
	s.evaluate(now)
	if s.active == noFeed && !s.slateSince.IsZero() {
		if s.slate != nil {
			s.slate.emitDue(s, now)
		} else if s.slateEnabled() {
			s.startSlatePlay(now)
		}
		if s.cfg.SlateMax > 0 && now.Sub(s.slateSince) > s.cfg.SlateMax && s.feeds[0].f == nil && s.feeds[1].f == nil {
			return true, "no feed for slate_max " + s.cfg.SlateMax.String()
		}
	}
	return false, ""
}

// evaluate applies health and policy: failover, planned switches.
func (s *switcher) evaluate(now time.Time) {
	for i := range s.feeds {
		if !s.feeds[i].healthy(now, s.cfg.FeedTimeout) {
			s.feeds[i].healthySince = time.Time{}
		}
	}
	if s.active != noFeed {
		fs := &s.feeds[s.active]
		if !s.allowed(s.active) {
			// Forced away: switch at the target's next keyframe when it
			// is healthy; the slate if it is not.
			t := 1 - s.active
			if !s.feeds[t].healthy(now, s.cfg.FeedTimeout) {
				s.failover(now, "operator forced "+s.policy)
				return
			}
			s.pending = t
		} else if !fs.healthy(now, s.cfg.FeedTimeout) {
			// A stalled feed is left for the other one at once; with no
			// other one it stays on air (it may be a hiccup) until
			// SlateAfter, then the slate plays. Without a slate it stays.
			c := 1 - s.active
			stall := now.Sub(fs.last)
			if (s.allowed(c) && s.feeds[c].ready(now, s.cfg.FeedTimeout)) || (s.slateEnabled() && stall >= s.cfg.SlateAfter) {
				s.failover(now, "feed "+feedName(s.active)+" stalled: no media for "+stall.Round(time.Millisecond).String())
				return
			}
		}
	}
	if s.active == noFeed {
		// From the slate (or nothing): any allowed ready feed, main first.
		for _, i := range [...]int{mainIdx, backupIdx} {
			if s.allowed(i) && s.feeds[i].ready(now, s.cfg.FeedTimeout) && !s.slateSince.IsZero() {
				s.switchTo(i, s.feeds[i].gop, now, "feed "+feedName(i)+" back")
				return
			}
		}
		// At the start: a backup that waited for main, once the window ends.
		if !s.waitSince.IsZero() && s.slateSince.IsZero() && !s.waitForMain(backupIdx, now) &&
			s.allowed(backupIdx) && s.feeds[backupIdx].ready(now, s.cfg.FeedTimeout) {
			s.switchTo(backupIdx, s.feeds[backupIdx].gop, now,
				"feed backup live: no main within start_window "+s.cfg.StartWindow.String())
		}
		return
	}
	if s.policy == PolicyAuto && s.active == backupIdx {
		m := &s.feeds[mainIdx]
		if m.healthy(now, s.cfg.FeedTimeout) && now.Sub(m.healthySince) >= s.cfg.ReturnAfter {
			s.pending = mainIdx
		} else if s.pending == mainIdx {
			s.pending = noFeed
		}
	}
	if s.pending != noFeed && !s.feeds[s.pending].healthy(now, s.cfg.FeedTimeout) {
		s.pending = noFeed
	}
}

// startSlate marks the output as having no feed and starts the slate.
func (s *switcher) startSlate(from int, now time.Time, reason string) {
	s.active = noFeed
	if s.slateSince.IsZero() {
		s.slateSince = now
		s.noteSwitch(now, feedName(from), "", reason)
	}
	if s.slateEnabled() {
		s.startSlatePlay(now)
	}
}

// startSlatePlay begins the slate clip when one is ready for the last
// output resolution (it is made in the background when a resolution is
// first seen; until then the output just waits).
func (s *switcher) startSlatePlay(now time.Time) {
	if s.slate != nil || s.slates == nil {
		return
	}
	w, h := s.outW, s.outH
	if w == 0 {
		w, h = 1280, 720
	}
	clip := s.slates.get(w, h)
	if clip == nil {
		return
	}
	s.slate = &slatePlay{clip: clip, wall0: now}
	s.offset = s.nextOffset(clip.pkts[0], defaultFrame)
	s.slate.base = s.offset
	for _, h := range clip.headers {
		s.emit(h, now)
	}
	s.slate.emitDue(s, now)
}

// slating reports whether no feed is shown (the slate plays or waits).
func (s *switcher) slating() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active == noFeed && !s.slateSince.IsZero()
}

// close stops the switcher (the stream ended).
func (s *switcher) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// FeedStatus is one feed's state at one unit.
type FeedStatus struct {
	Feed      string  `json:"feed"`
	State     string  `json:"state"` // "live", "stalled", "connecting", "offline"
	Active    bool    `json:"active"`
	Protocol  string  `json:"protocol,omitempty"`
	Remote    string  `json:"remote,omitempty"`
	Width     int     `json:"width,omitempty"`
	Height    int     `json:"height,omitempty"`
	FPS       float64 `json:"fps"`
	Bitrate   int64   `json:"bitrate"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// LastPacketAgeMillis is how long ago the feed's last media packet arrived.
	LastPacketAgeMillis int64 `json:"last_packet_age_ms"`
	// Ingest health over WindowMillis (health.go): FPS and Bitrate above,
	// and the audio bitrate (bits per second), the mean keyframe interval,
	// whether B-frames and audio arrive.
	AudioBitrate           int64   `json:"audio_bitrate"`
	KeyframeIntervalMillis float64 `json:"keyframe_interval_ms"`
	BFrames                bool    `json:"bframes"`
	Audio                  bool    `json:"audio"`
	WindowMillis           int64   `json:"window_ms"`
}

// SwitchStatus is the switcher's state at one unit.
type SwitchStatus struct {
	Policy     string       `json:"policy"`
	Active     string       `json:"active"` // "main", "backup" or "slate"
	Feeds      []FeedStatus `json:"feeds"`
	LastSwitch time.Time    `json:"last_switch,omitzero"`
	LastReason string       `json:"last_reason,omitempty"`
	Switches   int64        `json:"switches"`
}

func (s *switcher) status() SwitchStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	st := SwitchStatus{Policy: s.policy, Active: feedName(s.active), LastSwitch: s.lastSwitch,
		LastReason: s.lastReason, Switches: s.switches}
	if st.Active == "" {
		st.Active = "slate"
		if s.slateSince.IsZero() {
			st.Active = "none"
		}
	}
	for i := range s.feeds {
		fs := &s.feeds[i]
		f := FeedStatus{Feed: feedName(i), Active: i == s.active, State: "offline"}
		if fs.f != nil {
			f.Protocol, f.Remote = fs.f.src.Protocol, fs.f.src.Remote
			switch {
			case fs.last.IsZero():
				f.State = "connecting"
			case fs.healthy(now, s.cfg.FeedTimeout):
				f.State = "live"
			default:
				f.State = "stalled"
			}
			if fs.f.src.RTT != nil {
				if rtt, ok := fs.f.src.RTT(); ok {
					f.RTTMillis = float64(rtt.Microseconds()) / 1000
				}
			}
			hf := fs.health.figures(time.Duration(now.UnixNano()))
			f.FPS, f.Bitrate, f.AudioBitrate = hf.fps, hf.bitrate, hf.audioBitrate
			f.KeyframeIntervalMillis = float64(hf.keyframeInterval.Microseconds()) / 1000
			f.BFrames, f.Audio = hf.bframes, hf.audio
		}
		f.WindowMillis = s.cfg.HealthWindow.Milliseconds()
		if !fs.last.IsZero() {
			f.LastPacketAgeMillis = now.Sub(fs.last).Milliseconds()
		}
		f.Width, f.Height = fs.info.width, fs.info.height
		st.Feeds = append(st.Feeds, f)
	}
	return st
}
