package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/transcode"
)

// transcoder wires the transcode pool into the node: it starts a stream's
// ladder when a publisher joins (and the stream names a profile), follows
// profile changes of the registry, keeps the profiles in lms's etcd
// (profiles/<name>, seeded from the config file) and serves them on the
// control API.
type transcoder struct {
	pool   *transcode.Pool // nil when ffmpeg is missing: streams run without ladders
	reason string          // why pool is nil
	reg    *lms.Registry
	hub    *origin.Hub
	kv     *clientv3.Client
	dir    string // etcd key prefix of the profiles
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	mu     sync.Mutex // serialises profile changes
	// profs holds the profiles by name, for the play hooks (ABR variants,
	// watermarked sources), which must not take t.mu or read etcd.
	profs atomic.Pointer[map[string]transcode.Profile]
}

func newTranscoder(ctx context.Context, cfg transcode.Config, hub *origin.Hub, reg *lms.Registry, store *lms.Store,
	log *slog.Logger, promReg prometheus.Registerer) (*transcoder, error) {
	t := &transcoder{reg: reg, hub: hub, kv: store.Client(), dir: store.Prefix() + "profiles/", log: log}
	seed := cfg.Profiles
	cfg.Profiles = nil
	pool, err := transcode.NewPool(cfg, hubSource{hub}, hubPublisher{hub}, log, promReg)
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		// Without ffmpeg the node still serves every stream, without ladders.
		log.Warn("transcoding off", "err", err)
		t.reason = "transcoding off on this node: " + err.Error()
	case err != nil:
		return nil, err
	}
	t.pool = pool
	// Config file profiles go to etcd when they are not there yet (like
	// streams: the control API wins afterwards).
	if _, err := transcode.ValidateProfiles(seed); err != nil {
		return nil, fmt.Errorf("transcode.profiles: %w", err)
	}
	for _, p := range seed {
		b, _ := json.Marshal(p)
		key := t.dir + p.Name
		if _, err := t.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
			return nil, fmt.Errorf("seed profile %s: %w", p.Name, err)
		}
	}
	rev, err := t.reload(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.watch(wctx, rev)
	}()
	return t, nil
}

// Close stops the watch and every worker (rendition streams end).
func (t *transcoder) Close() {
	t.once.Do(func() {
		t.cancel()
		t.wg.Wait()
		if t.pool != nil {
			t.pool.Close()
		}
	})
}

// load reads every stored profile; profiles that do not validate on this
// node (say a watermark file missing here) are left out and logged.
func (t *transcoder) load(ctx context.Context) ([]transcode.Profile, int64, error) {
	resp, err := t.kv.Get(ctx, t.dir, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("load profiles: %w", err)
	}
	var out []transcode.Profile
	for _, kv := range resp.Kvs {
		p, err := transcode.ParseProfileJSON(kv.Value)
		if err != nil {
			t.log.Error("stored transcode profile ignored", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, p)
	}
	return out, resp.Header.Revision, nil
}

func (t *transcoder) reload(ctx context.Context) (int64, error) {
	ps, rev, err := t.load(ctx)
	if err != nil {
		return 0, err
	}
	if t.pool != nil {
		if err := t.pool.SetProfiles(ps); err != nil {
			return 0, err
		}
	}
	t.noteProfiles(ps)
	return rev, nil
}

// noteProfiles records the profiles for the play hooks.
func (t *transcoder) noteProfiles(ps []transcode.Profile) {
	m := make(map[string]transcode.Profile, len(ps))
	for _, p := range ps {
		m[p.Name] = p
	}
	t.profs.Store(&m)
}

// profileOf returns the profile of registered stream app/name.
func (t *transcoder) profileOf(app, name string) (transcode.Profile, bool) {
	s, ok := t.reg.Get(app, name)
	if !ok || s.Profile == "" {
		return transcode.Profile{}, false
	}
	m := t.profs.Load()
	if m == nil {
		return transcode.Profile{}, false
	}
	p, ok := (*m)[s.Profile]
	return p, ok
}

// variants lists the renditions of app/name for ABR HLS, less the
// watermarked source (which plays as the source through playAlias): those
// of its running ladder, else those of its profile. So a stream with a
// ladder profile keeps a multivariant index.m3u8 while its ladder waits
// for a worker (the origin lists only the renditions that are live), and
// a player's index.m3u8 does not change kind when the ladder starts.
func (t *transcoder) variants(app, name string) []origin.Variant {
	var out []origin.Variant
	add := func(w, h int, rname string, fps float64) {
		if rname != transcode.RenditionSource {
			out = append(out, origin.Variant{Name: rname, Stream: transcode.RenditionStream(name, rname),
				Width: w, Height: h, FrameRate: fps})
		}
	}
	if t.pool != nil {
		if st, ok := t.pool.Status(app, name); ok && st.State == transcode.StateRunning {
			for _, r := range st.Renditions {
				add(r.Width, r.Height, r.Name, r.MaxFPS)
			}
			return out
		}
	}
	if p, ok := t.profileOf(app, name); ok {
		for _, r := range p.Renditions {
			add(r.Width, r.Height, r.Name, r.MaxFPS)
		}
	}
	return out
}

// playAlias names the stream players of app/name get: NAME_source when
// its profile watermarks the source. The original is then never played,
// also while the watermarked rendition is not live (the pool full, ffmpeg
// missing): players get 404 rather than the unmarked picture.
func (t *transcoder) playAlias(app, name string) (string, bool) {
	if p, ok := t.profileOf(app, name); ok && p.WatermarkSource {
		return transcode.RenditionStream(name, transcode.RenditionSource), true
	}
	return "", false
}

// playHooks give the origin (origin.Config.Variants and PlayAlias) and
// RTMP play the transcoder's view of a stream. The hub is made before the
// transcoder, so the hooks find it through a pointer set once it exists;
// until then no stream has renditions or an alias.
type playHooks struct{ tc atomic.Pointer[transcoder] }

func (p *playHooks) config(c origin.Config) origin.Config {
	c.Variants = p.variants
	c.PlayAlias = p.alias
	return c
}

func (p *playHooks) set(t *transcoder) { p.tc.Store(t) }

func (p *playHooks) variants(app, name string) []origin.Variant {
	if t := p.tc.Load(); t != nil {
		return t.variants(app, name)
	}
	return nil
}

func (p *playHooks) alias(app, name string) (string, bool) {
	if t := p.tc.Load(); t != nil {
		return t.playAlias(app, name)
	}
	return "", false
}

// watch applies profile changes made through any node.
func (t *transcoder) watch(ctx context.Context, rev int64) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		wch := t.kv.Watch(wctx, t.dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if resp.Err() != nil {
				break // compacted or closed: load everything again below
			}
			rev = resp.Header.Revision
			t.mu.Lock()
			if _, err := t.reload(ctx); err != nil && ctx.Err() == nil {
				t.log.Error("transcode profiles reload", "err", err)
			}
			t.mu.Unlock()
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
			if r, err := t.reload(ctx); err == nil {
				rev = r
			}
		}
	}
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

func (t *transcoder) hasProfile(name string) bool {
	for _, p := range t.profiles() {
		if p.Name == name {
			return true
		}
	}
	return false
}

func (t *transcoder) profiles() []transcode.Profile {
	if t.pool != nil {
		return t.pool.Profiles()
	}
	ps, _, _ := t.load(context.Background())
	return ps
}

// mount adds the profile and pool routes to the control API.
func (t *transcoder) mount(s *lms.Server) {
	s.Handle("GET /api/v1/profiles", http.HandlerFunc(t.handleList))
	s.Handle("POST /api/v1/profiles", http.HandlerFunc(t.handleCreate))
	s.Handle("GET /api/v1/profiles/{name}", http.HandlerFunc(t.handleGet))
	s.Handle("PUT /api/v1/profiles/{name}", http.HandlerFunc(t.handlePut))
	s.Handle("DELETE /api/v1/profiles/{name}", http.HandlerFunc(t.handleDelete))
	s.Handle("GET /api/v1/transcode", http.HandlerFunc(t.handleWorkers))
}

func (t *transcoder) handleList(w http.ResponseWriter, r *http.Request) {
	ps := t.profiles()
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	if ps == nil {
		ps = []transcode.Profile{}
	}
	apiJSON(w, http.StatusOK, map[string]any{"profiles": ps})
}

func (t *transcoder) handleGet(w http.ResponseWriter, r *http.Request) {
	for _, p := range t.profiles() {
		if p.Name == r.PathValue("name") {
			apiJSON(w, http.StatusOK, p)
			return
		}
	}
	apiError(w, http.StatusNotFound, fmt.Sprintf("profile %q not found", r.PathValue("name")))
}

func (t *transcoder) handleCreate(w http.ResponseWriter, r *http.Request) {
	t.change(w, r, "", true)
}

func (t *transcoder) handlePut(w http.ResponseWriter, r *http.Request) {
	t.change(w, r, r.PathValue("name"), false)
}

// change validates a new or replaced profile together with the others (so
// the set that would result is valid), then stores it, then applies it:
// a refused change leaves everything as it was.
func (t *transcoder) change(w http.ResponseWriter, r *http.Request, name string, create bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		apiError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	p, err := transcode.ParseProfileJSON(body)
	if err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if name != "" && p.Name != name {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("profile name %q does not match the URL (%q)", p.Name, name))
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	set := t.profiles()
	replaced := false
	for i := range set {
		if set[i].Name == p.Name {
			if create {
				apiError(w, http.StatusConflict, fmt.Sprintf("profile %q exists: PUT /api/v1/profiles/%s replaces it", p.Name, p.Name))
				return
			}
			set[i], replaced = p, true
		}
	}
	if !replaced {
		set = append(set, p)
	}
	if _, err := transcode.ValidateProfiles(set); err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	b, _ := json.Marshal(p)
	if _, err := t.kv.Put(r.Context(), t.dir+p.Name, string(b)); err != nil {
		apiError(w, http.StatusServiceUnavailable, "store profile: "+err.Error())
		return
	}
	if t.pool != nil {
		if err := t.pool.SetProfiles(set); err != nil { // validated above: cannot fail
			t.log.Error("apply profiles", "err", err)
		}
	}
	t.noteProfiles(set)
	t.log.Info("transcode profile stored", "profile", p.Name, "replaced", replaced)
	status := http.StatusCreated
	if replaced {
		status = http.StatusOK
	}
	apiJSON(w, status, p)
}

func (t *transcoder) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	t.mu.Lock()
	defer t.mu.Unlock()
	var users []string
	for _, s := range t.reg.List() {
		if s.Profile == name {
			users = append(users, s.Path())
		}
	}
	if len(users) > 0 {
		apiError(w, http.StatusConflict, fmt.Sprintf("profile %q is used by %s", name, strings.Join(users, ", ")))
		return
	}
	resp, err := t.kv.Delete(r.Context(), t.dir+name)
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "delete profile: "+err.Error())
		return
	}
	if resp.Deleted == 0 {
		apiError(w, http.StatusNotFound, fmt.Sprintf("profile %q not found", name))
		return
	}
	if _, err := t.reload(r.Context()); err != nil {
		t.log.Error("apply profiles", "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (t *transcoder) handleWorkers(w http.ResponseWriter, r *http.Request) {
	if t.pool == nil {
		apiJSON(w, http.StatusOK, map[string]any{"enabled": false, "reason": t.reason, "streams": []any{}})
		return
	}
	cfg := t.pool.Config()
	apiJSON(w, http.StatusOK, map[string]any{"enabled": true, "workers": cfg.Workers, "queue": cfg.Queue,
		"streams": t.pool.List()})
}

func apiJSON(w http.ResponseWriter, status int, v any) { lms.WriteJSON(w, status, v) }

func apiError(w http.ResponseWriter, status int, msg string) { lms.WriteError(w, status, msg) }

// renditionParent returns the registered stream NAME of a rendition stream
// NAME_<rendition> (which is not registered itself), when NAME has a
// profile.
func renditionParent(reg *lms.Registry, app, name string) (lms.Stream, bool) {
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return lms.Stream{}, false
	}
	s, ok := reg.Get(app, name[:i])
	if !ok || s.Profile == "" {
		return lms.Stream{}, false
	}
	return s, true
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
	return r, nil
}

// hubPublisher adapts the origin Hub to transcode.Publisher: a rendition
// is the main feed of app/NAME_<rendition>.
type hubPublisher struct{ hub *origin.Hub }

func (h hubPublisher) Publish(app, name string, src av.Source) (transcode.FeedWriter, error) {
	f, err := h.hub.Publish(app, name, origin.FeedMain, src)
	if err != nil {
		return nil, err
	}
	return f, nil
}
