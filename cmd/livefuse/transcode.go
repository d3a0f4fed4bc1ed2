package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/transcode"
)

// transcoder wires the transcode pool into the node: it starts a stream's
// ladder when a publisher joins (and the stream names a profile), follows
// profile changes of the registry, and applies the profiles of the lms
// collection "profiles" (seeded from the config file; the control API
// routes are transcode.API's).
type transcoder struct {
	pool   *transcode.Pool // nil when ffmpeg is missing: streams run without ladders
	reason string          // why pool is nil
	reg    *lms.Registry
	hub    *origin.Hub
	coll   *lms.Collection[transcode.Profile]
	log    *slog.Logger
	once   sync.Once
	mu     sync.Mutex // serialises applying the profiles
	// profs holds the profiles by name, for the stream policies (ABR
	// variants, watermarked sources), which must not take t.mu or read etcd.
	profs atomic.Pointer[map[string]transcode.Profile]
	// onProfiles is called after each profile change (nil: none).
	onProfiles atomic.Pointer[func()]

	hookMu      sync.Mutex
	onRendition []func(app, name string)
}

func newTranscoder(ctx context.Context, cfg transcode.Config, hub *origin.Hub, reg *lms.Registry, store *lms.Store,
	log *slog.Logger, promReg prometheus.Registerer) (*transcoder, error) {
	t := &transcoder{reg: reg, hub: hub, log: log}
	seed := cfg.Profiles
	cfg.Profiles = nil
	pool, err := transcode.NewPool(cfg, hubSource{hub}, hubPublisher{hub, t.renditionChanged}, log, promReg)
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		// Without ffmpeg the node still serves every stream, without ladders.
		log.Warn("transcoding off", "err", err)
		t.reason = "transcoding off on this node: " + err.Error()
	case err != nil:
		return nil, err
	}
	t.pool = pool
	// Stored profiles that do not validate on this node (say a watermark
	// file missing here) are left out, and logged by the collection.
	t.coll, err = lms.NewCollection(store, "profiles", lms.CollectionOptions[transcode.Profile]{Log: log,
		Decode: decodeProfile})
	if err != nil {
		return nil, err
	}
	t.coll.OnChange(t.apply)
	if err := t.coll.Start(ctx); err != nil {
		t.Close()
		return nil, fmt.Errorf("load profiles: %w", err)
	}
	// Config file profiles go to the store when they are not there yet
	// (like streams: the control API wins afterwards).
	m := make(map[string]transcode.Profile, len(seed))
	for _, p := range seed {
		m[p.Name] = p
	}
	if _, err := t.coll.Seed(ctx, m); err != nil {
		t.Close()
		return nil, err
	}
	t.apply()
	return t, nil
}

// decodeProfile parses a stored profile, which must be valid on this node
// and stored under its own name.
func decodeProfile(name string, b []byte) (transcode.Profile, error) {
	p, err := transcode.ParseProfileJSON(b)
	if err == nil && p.Name != name {
		err = fmt.Errorf("profile %q stored under the name %q", p.Name, name)
	}
	return p, err
}

// apply gives the pool and the play hooks the stored profiles.
func (t *transcoder) apply() {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := transcode.SortedProfiles(t.coll)
	if t.pool != nil {
		if err := t.pool.SetProfiles(ps); err != nil {
			t.log.Error("stored transcode profiles refused, keeping the current ones", "err", err)
			return
		}
	}
	t.noteProfiles(ps)
}

// Close stops the watch and every worker (rendition streams end).
func (t *transcoder) Close() {
	t.once.Do(func() {
		t.coll.Close()
		if t.pool != nil {
			t.pool.Close()
		}
	})
}

// noteProfiles records the profiles for the stream policies, and has the
// policies pushed again (a profile's renditions or watermark changed).
func (t *transcoder) noteProfiles(ps []transcode.Profile) {
	m := make(map[string]transcode.Profile, len(ps))
	for _, p := range ps {
		m[p.Name] = p
	}
	t.profs.Store(&m)
	if fn := t.onProfiles.Load(); fn != nil {
		(*fn)()
	}
}

// playPolicy is the part of s's origin policy its profile decides: the
// play alias (NAME_source when the profile watermarks the source: the
// original is then never played, players get 404 rather than the
// unmarked picture while the watermarked rendition is not live) and the
// renditions offered in ABR HLS (the watermarked source plays as the
// source, through the alias).
func (t *transcoder) playPolicy(s lms.Stream) (alias string, variants []origin.Variant) {
	if s.Profile == "" {
		return "", nil
	}
	m := t.profs.Load()
	if m == nil {
		return "", nil
	}
	p, ok := (*m)[s.Profile]
	if !ok {
		return "", nil
	}
	if p.WatermarkSource {
		alias = transcode.RenditionStream(s.Name, transcode.RenditionSource)
	}
	for _, r := range p.Renditions {
		if r.Name != transcode.RenditionSource {
			variants = append(variants, origin.Variant{Name: r.Name, Stream: transcode.RenditionStream(s.Name, r.Name),
				Width: r.Width, Height: r.Height, FrameRate: r.MaxFPS})
		}
	}
	return alias, variants
}

// live is called when a publisher joined app/name.
func (t *transcoder) live(app, name string) {
	s, ok := t.reg.Get(app, name)
	if !ok || s.Profile == "" || t.pool == nil {
		return
	}
	if err := t.pool.Start(app, name, s.Profile); err != nil {
		t.log.Warn("stream runs without ladder", "stream", app+"/"+name, "err", err)
	}
}

// streamChanged follows the registry: a new profile replaces the ladder
// of a live stream, no profile (or a deleted stream) stops it.
func (t *transcoder) streamChanged(old, cur *lms.Stream) {
	if t.pool == nil || old == nil {
		return
	}
	switch {
	case cur == nil || !cur.Enabled || cur.Profile == "":
		t.pool.Stop(old.App, old.Name)
	case cur.Profile != old.Profile:
		if _, live := t.hub.Status(cur.App, cur.Name); live {
			if err := t.pool.Start(cur.App, cur.Name, cur.Profile); err != nil {
				t.log.Warn("stream runs without ladder", "stream", cur.Path(), "err", err)
			}
		}
	}
}

// status is the transcode part of a live stream's status.
func (t *transcoder) status(app, name string) *api.TranscodeStatus {
	s, ok := t.reg.Get(app, name)
	if !ok || s.Profile == "" {
		return nil
	}
	if t.pool == nil {
		return &api.TranscodeStatus{Profile: s.Profile, State: transcode.StateRejected, Reason: t.reason}
	}
	st, ok := t.pool.Status(app, name)
	if !ok {
		reason := "no ladder"
		if !t.hasProfile(s.Profile) {
			reason = fmt.Sprintf("profile %q is not defined", s.Profile)
		}
		return &api.TranscodeStatus{Profile: s.Profile, State: transcode.StateRejected, Reason: reason}
	}
	ts := &api.TranscodeStatus{Profile: st.Profile, State: st.State, Reason: st.Reason, Restarts: st.Restarts,
		LastExit: st.LastExit, FPS: st.FPS, Speed: st.Speed, CPU: st.CPU, RSSBytes: st.RSS}
	for _, r := range st.Renditions {
		ts.Renditions = append(ts.Renditions, r.Stream)
	}
	return ts
}

// renditions lists the renditions of app/name that are on air: those of
// its running ladder whose stream is live at this unit.
func (t *transcoder) renditions(app, name string) []api.RenditionStatus {
	if t.pool == nil {
		return nil
	}
	st, ok := t.pool.Status(app, name)
	if !ok || st.State != transcode.StateRunning {
		return nil
	}
	var out []api.RenditionStatus
	for _, r := range st.Renditions {
		rname := transcode.RenditionStream(name, r.Name)
		hs, live := t.hub.Status(app, rname)
		if !live {
			continue
		}
		out = append(out, api.RenditionStatus{Name: r.Name, Stream: app + "/" + rname, Width: hs.Width, Height: hs.Height,
			FPS: hs.FPS, BitrateKbps: float64(hs.Bitrate) / 1000, Readers: hs.Readers, StartedAt: hs.Started})
	}
	return out
}

// OnRendition registers fn to be called, in a goroutine of its own, each
// time a rendition stream app/name is published or ended. Register before
// publishing starts.
func (t *transcoder) OnRendition(fn func(app, name string)) {
	t.hookMu.Lock()
	t.onRendition = append(t.onRendition, fn)
	t.hookMu.Unlock()
}

// renditionChanged runs the OnRendition hooks; it never blocks the
// worker that published or ended the rendition.
func (t *transcoder) renditionChanged(app, name string) {
	t.hookMu.Lock()
	fns := t.onRendition
	t.hookMu.Unlock()
	for _, fn := range fns {
		go fn(app, name)
	}
}

func (t *transcoder) hasProfile(name string) bool {
	_, ok := t.coll.Get(name)
	return ok
}

// mount adds the profile and pool routes to the control API.
func (t *transcoder) mount(s *lms.Server) {
	a := &transcode.API{Profiles: t.coll, Pool: t.pool, Reason: t.reason, Applied: t.apply,
		InUse: func(profile string) []string {
			var users []string
			for _, s := range t.reg.List() {
				if s.Profile == profile {
					users = append(users, s.Path())
				}
			}
			return users
		}}
	a.Mount(s)
}

// renditionParent returns the registered stream NAME of a rendition stream
// NAME_<rendition> (which is not registered itself), when NAME has a
// profile.
func renditionParent(reg *lms.Registry, app, name string) (lms.Stream, bool) {
	// Stream and rendition names may both hold '_': the parent is the
	// registered stream with a profile that name starts with.
	var s lms.Stream
	_, _, ok := av.SplitRendition(name, func(n string) bool {
		st, found := reg.Get(app, n)
		if found && st.Profile != "" {
			s = st
			return true
		}
		return false
	})
	return s, ok
}

// transcodeSink starts a stream's ladder when its publisher joins.
type transcodeSink struct {
	ingest.Sink
	tc *transcoder
}

func (s transcodeSink) Publish(app, name, feed string, src av.Source) (ingest.FeedWriter, error) {
	fw, err := s.Sink.Publish(app, name, feed, src)
	if err == nil {
		s.tc.live(app, name)
	}
	return fw, err
}

// hubSource adapts the origin Hub to transcode.Source.
type hubSource struct{ hub *origin.Hub }

func (h hubSource) Subscribe(app, name string) (transcode.PacketReader, error) {
	r, err := h.hub.Subscribe(app, name)
	if err != nil {
		return nil, err
	}
	return hubReader{r}, nil
}

// hubReader tells the transcoder when its source stream ended (rather
// than dropped the reader): the renditions then end too.
type hubReader struct{ *origin.Reader }

func (r hubReader) ReadPackets(ctx context.Context, dst []*av.Packet) ([]*av.Packet, error) {
	dst, err := r.Reader.ReadPackets(ctx, dst)
	if err != nil && errors.Is(err, origin.ErrEnded) {
		err = fmt.Errorf("%w: %w", transcode.ErrSourceEnded, err)
	}
	return dst, err
}

// hubPublisher adapts the origin Hub to transcode.Publisher: a rendition
// is the main feed of app/NAME_<rendition>. changed is told each time a
// rendition stream is published or ended.
type hubPublisher struct {
	hub     *origin.Hub
	changed func(app, name string)
}

func (h hubPublisher) Publish(app, name string, src av.Source) (transcode.FeedWriter, error) {
	f, err := h.hub.Publish(app, name, origin.FeedMain, src)
	if err != nil {
		return nil, err
	}
	h.changed(app, name)
	return renditionFeed{Feed: f, app: app, name: name, changed: h.changed}, nil
}

// renditionFeed is a rendition's feed; its Close reports the end.
type renditionFeed struct {
	*origin.Feed
	app, name string
	changed   func(app, name string)
}

func (f renditionFeed) Close() {
	f.Feed.Close()
	f.changed(f.app, f.name)
}
