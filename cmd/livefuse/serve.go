package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/netguard"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/web"
)

// serve runs every role until ctx is done or a drain that life starts has
// ended (drain.go), then shuts down gracefully: no new connections,
// publishers and players closed, HLS flushed.
func serve(ctx context.Context, life *lifecycle, cfg Config, log *slog.Logger, stdout io.Writer) error {
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Control plane first: the registry decides who may publish.
	lcfg := cfg.LMS
	if lcfg.DataDir == "" {
		lcfg.DataDir = cfg.DataDir
	}
	store, err := lms.OpenStore(ctx, lcfg, log)
	if err != nil {
		return err // "lms store: ...", naming the data dir
	}
	defer store.Close()
	reg := lms.NewRegistry(store, log)
	reg.SetOpenKeyAccess(cfg.Encryption.OpenKeyAccess)

	// IP lists: the listeners' (validated with the config) and the streams'.
	guard := newStreamGuard(reg)
	httpAccess, err := netguard.ParseAccess("listener http", cfg.HTTP.Access)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	auth := &authorizer{reg: reg, typeA: cfg.AuthKey, checkPlay: playCheck(httpAccess, guard), log: log}
	keys, err := newKeyService(cfg.Encryption, cfg.DataDir, reg, store, auth, log)
	if err != nil {
		return fmt.Errorf("encryption: %w", err)
	}
	reg.SetEncryptionRefusal(encryptionRefusal(cfg.Origin.HLSVariant))
	ocfg := withAuth(cfg.Origin, auth)
	ocfg.Encryption = keys.originConfig()
	if ocfg.HLSDir == "" {
		ocfg.HLSDir = filepath.Join(cfg.DataDir, "hls")
	}
	hub, err := origin.NewHub(ocfg, log, promReg)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	defer hub.Close()
	node, err := newNodeLife(cfg, store, hub, promReg, log)
	if err != nil {
		return err
	}
	tc, err := newTranscoder(ctx, cfg.Transcode, hub, reg, store, log, promReg)
	if err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	defer tc.Close()
	// Stream policies go to origin from the registry and the profiles, at
	// start and on every change of either.
	policies := &policyPusher{hub: hub, reg: reg, tc: tc, unit: cfg.Unit}
	policies.pushAll = func() {
		for _, s := range reg.List() {
			policies.set(s)
		}
	}
	tc.onProfiles.Store(&policies.pushAll)
	rec, err := newRecorder(cfg, hub, reg, tc, log, promReg)
	if err != nil {
		return fmt.Errorf("recording: %w", err)
	}
	defer rec.close()

	// Accepted feeds go to this unit's origin and, relayed, to every other unit.
	relay := newRelay(cfg, transcodeSink{sink{hub}, tc}, log)
	defer relay.Close()
	deps := ingest.Deps{Sink: relay, Auth: drainAuth{node, auth}, Play: drainPlay{node, playSource{hub}}, Budget: cfg.RTMP.NewBudget(), Guard: guard}
	puller := ingest.NewPuller(deps, log)
	defer puller.Close()

	// Registry changes apply at once: pulls follow `source`, a disabled or
	// deleted stream loses its publisher; tokens are read on each publish.
	// Subscribe before Start so that no change is missed.
	reg.Subscribe(func(old, cur *lms.Stream) {
		puller.Set(pullSources(reg.List()))
		tc.streamChanged(old, cur)
		rec.sync()
		policies.changed(old, cur)
		if old != nil && cur != nil && cur.Enabled && !sameLists(old.IPLists, cur.IPLists) {
			dropDeniedPublishers(hub, guard, cur.App, cur.Name, log)
		}
		if old != nil && (cur == nil || !cur.Enabled) {
			if err := hub.Kick(old.App, old.Name); err == nil {
				log.Info("publisher dropped: stream disabled or deleted", "stream", old.App+"/"+old.Name)
			}
		}
	})
	if err := reg.Start(ctx); err != nil {
		return fmt.Errorf("lms registry: %w", err)
	}
	defer reg.Close()
	if err := reg.Seed(ctx, seedStreams(cfg.Streams)); err != nil {
		return fmt.Errorf("seed streams: %w", err)
	}
	warnKeyAccess(cfg.Encryption, reg.List(), log)
	demo, err := ensureDemo(ctx, reg)
	if err != nil {
		return err
	}
	policies.pushAll()
	go reportUnit(ctx, reg, cfg.Unit, hub, cfg.Console.UnitReportPeriod)
	rec.start(ctx)

	rtmpSrv := ingest.NewRTMPServer(cfg.RTMP, deps, log)
	if err := rtmpSrv.Start(); err != nil {
		return fmt.Errorf("rtmp: %w", err)
	}
	defer rtmpSrv.Close()
	var rtmpsAddr net.Addr
	if cfg.RTMPS.TLS.Enabled() {
		certs, err := netguard.NewCertSource(cfg.RTMPS.TLS, log.With("listener", "rtmps"))
		if err != nil {
			return fmt.Errorf("rtmps: %w", err)
		}
		if rtmpsAddr, err = rtmpSrv.StartTLS(cfg.RTMPS.Addr, certs.ServerConfig()); err != nil {
			return fmt.Errorf("rtmps: %w", err)
		}
	}
	rtspSrv := ingest.NewRTSPServer(cfg.RTSP, deps, log)
	if err := rtspSrv.Start(); err != nil {
		return fmt.Errorf("rtsp: %w", err)
	}
	defer rtspSrv.Close()
	puller.Set(pullSources(reg.List()))

	events, runBus, err := openBus(cfg.Bus, cfg.DataDir, log)
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	rec.publishTo(events)
	cm, err := newCDNMix(ctx, cfg.CDNMix, events, runBus, reg, store, log, promReg)
	if err != nil {
		return fmt.Errorf("cdnmix: %w", err)
	}
	defer cm.Close()
	// The media listener: caps, timeouts and header limits from netguard;
	// HTTP-FLV players take their connection over and keep per-write
	// deadlines (origin max_lag).
	mediaLn, err := netguard.NewHTTPListener(cfg.HTTP.Addr, "http", cfg.HTTP.HTTPConfig,
		node.media(cm.wrap(rec.media(mediaRoutes(hub, keys)))), log)
	if err != nil {
		return err
	}
	media := mediaLn.Server
	go func() {
		if err := mediaLn.Serve(); err != nil {
			log.Error("media listener stopped", "err", err)
		}
	}()

	live := liveSource{hub, tc, rec, cfg.Unit, policies}
	api, err := lms.NewServer(lcfg, reg, live, log, promReg)
	if err != nil {
		return fmt.Errorf("control api: %w", err)
	}
	alerts, err := newAlerts(ctx, cfg, hub, reg, store, tc, rec, cm, events, promReg, log)
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	plans := mountPlans(ctx, cfg.Plans, api, reg, store, cm, mediaLn.TLS(), log)
	con := &console{cfg: cfg.Console, unit: cfg.Unit, reg: reg, hub: hub, live: live, cm: cm,
		alerts: alerts, plans: plans, log: log}
	stopConsole := func() {}
	if cfg.Console.Enabled {
		if stopConsole, err = mountConsole(ctx, con, api, promReg); err != nil {
			return fmt.Errorf("console: %w", err)
		}
	}
	tc.mount(api)
	rec.mount(api)
	cm.mount(api)
	node.mount(api, store)
	api.SetAuditStore(store)
	api.SetAuditPublisher(auditTee{events, con})
	alerts.Mount(api)
	go alerts.Run(ctx)
	if err := api.Start(); err != nil {
		return fmt.Errorf("control api: %w", err)
	}
	defer api.Close()
	defer stopConsole() // first: open event streams end before the API waits for its requests
	node.agent.SetAddrs(listenerAddrs(api.URL(), mediaLn.Addr(), rtmpSrv.Addr(), rtspSrv.Addr(), rtmpsAddr))
	go node.run(ctx)

	printBanner(stdout, cfg, demo, api, mediaLn, rtmpSrv.Addr(), rtspSrv.Addr(), rtmpsAddr)
	log.Info("livefuse serving", "rtmp", rtmpSrv.Addr(), "rtmps", rtmpsAddr, "rtsp", rtspSrv.Addr(), "http", mediaLn.Addr(), "https", mediaLn.TLS(), "api", api.URL())

	node.waitSignal(ctx, life, cfg.DrainTimeout, log)
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown)
	defer cancel()
	// Stop taking new connections, then end streams (players get the end of
	// the stream, HLS muxers flush), then close what is left.
	rtmpSrv.Close()
	rtspSrv.Close()
	puller.Close()
	tc.Close() // renditions end before their sources
	hub.Close()
	media.Shutdown(sctx)
	return nil
}

func seedStreams(in []StreamConfig) []lms.Stream {
	out := make([]lms.Stream, 0, len(in))
	for _, s := range in {
		app := s.App
		if app == "" {
			app = ingest.DefaultApp
		}
		enabled := true
		if s.Enabled != nil {
			enabled = *s.Enabled
		}
		out = append(out, lms.Stream{App: app, Name: s.Name, PublishToken: s.PublishToken,
			PlayKey: s.PlayKey, Enabled: enabled, Source: s.Source, Profile: s.Profile, Record: s.Record,
			Encryption: s.Encryption, IPLists: s.IPLists})
	}
	return out
}

// ensureDemo creates live/demo with a random token when the registry is
// empty, so that a first `livefuse serve` can be pushed to at once.
func ensureDemo(ctx context.Context, reg *lms.Registry) (*lms.Stream, error) {
	if s, ok := reg.Get(ingest.DefaultApp, "demo"); ok {
		return &s, nil
	}
	if len(reg.List()) > 0 {
		return nil, nil
	}
	b := make([]byte, 12)
	rand.Read(b)
	s := lms.Stream{App: ingest.DefaultApp, Name: "demo", PublishToken: hex.EncodeToString(b), Enabled: true}
	if err := reg.Put(ctx, s); err != nil {
		return nil, fmt.Errorf("create demo stream: %w", err)
	}
	return &s, nil
}

func pullSources(streams []lms.Stream) map[string]string {
	m := map[string]string{}
	for _, s := range streams {
		if s.Enabled && s.Source != "" {
			m[s.App+"/"+s.Name] = s.Source
		}
	}
	return m
}

func printBanner(w io.Writer, cfg Config, demo *lms.Stream, api *lms.Server, media *netguard.HTTPListener, rtmpAddr, rtspAddr, rtmpsAddr net.Addr) {
	host := cfg.HTTP.PublicHost
	if host == "" {
		host = "127.0.0.1"
	}
	port := func(a net.Addr) int {
		if t, ok := a.(*net.TCPAddr); ok {
			return t.Port
		}
		return 0
	}
	scheme := "http"
	if media.TLS() {
		scheme = "https"
	}
	fmt.Fprintf(w, "livefuse %s is up.\n", version)
	if demo != nil {
		fmt.Fprintf(w, `
Publish the demo stream:
  OBS:    Server rtmp://%[1]s:%[2]d/live   Stream Key %[3]s?token=%[4]s
  ffmpeg: ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -preset veryfast -g 50 -c:a aac -f flv 'rtmp://%[1]s:%[2]d/live/%[3]s?token=%[4]s'
  RTSP:   rtsp://%[1]s:%[5]d/live/%[3]s?token=%[4]s
`, host, port(rtmpAddr), demo.Name, demo.PublishToken, port(rtspAddr))
		if rtmpsAddr != nil {
			fmt.Fprintf(w, "  RTMPS:  rtmps://%s:%d/live/%s?token=%s\n", host, port(rtmpsAddr), demo.Name, demo.PublishToken)
		}
		fmt.Fprintf(w, `Play it:
  HTTP-FLV: %[5]s://%[1]s:%[4]d/live/%[3]s.flv
  HLS:      %[5]s://%[1]s:%[4]d/live/%[3]s/index.m3u8
  RTMP:     rtmp://%[1]s:%[2]d/live/%[3]s
`, host, port(rtmpAddr), demo.Name, port(media.Addr()), scheme)
	}
	if tok := api.GeneratedToken(); tok != "" {
		fmt.Fprintf(w, "Control API: %s/api/v1 (bearer token, generated now and stored in the data dir; shown once: %s)\n", api.URL(), tok)
	} else {
		fmt.Fprintf(w, "Control API: %s/api/v1 (bearer token from lms.api_token or the data dir's api-token file)\n", api.URL())
	}
}

// authorizer checks publish tokens and play keys against the registry;
// checkPlay (nil: none) checks a player's address against the IP lists.
type authorizer struct {
	reg       *lms.Registry
	typeA     authkey.TypeAConfig
	checkPlay func(app, name string, remote netip.Addr) error
	log       *slog.Logger
}

// refuseAddress answers 403 (and reports true) when the IP lists refuse
// r's peer address for app/name; for the paths the origin's play router
// does not see (keys).
func (a *authorizer) refuseAddress(w http.ResponseWriter, r *http.Request, app, name string) bool {
	if a == nil || a.checkPlay == nil {
		return false
	}
	if err := a.checkPlay(app, name, origin.RemoteIP(r)); err != nil {
		a.log.Info("play refused", "stream", app+"/"+name, "remote", r.RemoteAddr, "path", r.URL.Path, "reason", err.Error())
		http.Error(w, "forbidden: address not allowed to play", http.StatusForbidden)
		return true
	}
	return false
}

// keyStream returns the stream of a key path /keys/{app}/{name}/{id}.
func keyStream(p string) (app, name string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/keys/")
	if !ok {
		return "", "", false
	}
	app, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	name, _, ok = strings.Cut(rest, "/")
	return app, name, ok && app != "" && name != ""
}

func (a *authorizer) AuthorizePublish(app, name, token string) error {
	s, ok := a.reg.Get(app, name)
	if !ok {
		return fmt.Errorf("%w: %s/%s is not registered", ingest.ErrNotFound, app, name)
	}
	if !s.Enabled {
		return fmt.Errorf("%w: %s/%s is disabled", ingest.ErrUnauthorized, app, name)
	}
	if token == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.PublishToken)) != 1 {
		return fmt.Errorf("%w: wrong publish token for %s/%s", ingest.ErrUnauthorized, app, name)
	}
	return nil
}

func (a *authorizer) AuthorizePlay(app, name, uri string, q url.Values) error {
	s, ok := a.reg.Get(app, name)
	if !ok {
		s, ok = renditionParent(a.reg, app, name) // renditions play under their stream's key
	}
	if !ok || s.PlayKey == "" {
		return nil // open, or not registered (then not live either: 404 follows)
	}
	if err := a.typeA.Verify(uri, q.Get("auth_key"), s.PlayKey, time.Now()); err != nil {
		return fmt.Errorf("%w: %w", ingest.ErrUnauthorized, err)
	}
	return nil
}

func withAuth(c origin.Config, a *authorizer) origin.Config {
	c.Authorize = a.AuthorizePlay
	c.CheckAddress = a.checkPlay
	return c
}

// sink adapts the origin Hub to ingest.Sink.
type sink struct{ hub *origin.Hub }

func (s sink) Publish(app, name, feed string, src av.Source) (ingest.FeedWriter, error) {
	f, err := s.hub.Publish(app, name, feed, src)
	if errors.Is(err, origin.ErrBusy) {
		return nil, fmt.Errorf("%w: %w", ingest.ErrBusy, err)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// playSource adapts the origin Hub to ingest.PlaySource: origin decides
// what an RTMP player reads (alias, encrypted output).
type playSource struct{ hub *origin.Hub }

func (p playSource) Subscribe(app, name string) (ingest.PacketReader, error) {
	r, err := p.hub.Play(app, name)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// mediaRoutes is the route table of the media listener: content keys,
// the reference player, and everything else to origin, the play router.
// (A switch on the prefix rather than a ServeMux, which would redirect
// unclean paths instead of letting origin refuse them.)
func mediaRoutes(hub *origin.Hub, keys *keyService) http.Handler {
	player := http.StripPrefix("/player", web.Handler(os.Getenv(webModulesEnv)))
	play := hub.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/keys/"):
			keys.ServeHTTP(w, r)
		case p == "/player" || strings.HasPrefix(p, "/player/"):
			player.ServeHTTP(w, r)
		default:
			play.ServeHTTP(w, r)
		}
	})
}

// policyPusher gives origin the policy of every registered stream: feed
// policy and encryption from the registry, play alias and renditions from
// the stream's transcode profile.
type policyPusher struct {
	hub *origin.Hub
	reg *lms.Registry
	tc  *transcoder
	// unit is this unit: a stream whose serve_unit names another one is
	// refused to players here.
	unit string

	pushAll func() // every stream's policy; a func value for tc.onProfiles
}

func (p *policyPusher) policy(s lms.Stream) origin.StreamPolicy {
	alias, variants := p.tc.playPolicy(s)
	return origin.StreamPolicy{Feed: s.FeedPolicy, Encrypted: s.Encryption, PlayAlias: alias, Variants: variants,
		Refuse: lms.Refusal(s, p.unit)}
}

func (p *policyPusher) set(s lms.Stream) {
	if err := p.hub.SetStreamPolicy(s.App, s.Name, p.policy(s)); err != nil {
		p.hub.DeleteStreamPolicy(s.App, s.Name)
	}
}

// changed follows one registry change.
func (p *policyPusher) changed(old, cur *lms.Stream) {
	switch {
	case cur != nil:
		p.set(*cur)
	case old != nil:
		p.hub.DeleteStreamPolicy(old.App, old.Name)
	}
}

// liveSource adapts the origin Hub to lms.LiveSource.
type liveSource struct {
	hub      *origin.Hub
	tc       *transcoder
	rec      *recorder
	unit     string
	policies *policyPusher
}

func (l liveSource) LiveStatus(app, name string) (lms.LiveStatus, bool) {
	st, ok := l.hub.Status(app, name)
	if !ok {
		return lms.LiveStatus{}, false
	}
	ls := toLiveStatus(st)
	sw := toUnitStatus(st.Switch)
	sw.Unit, sw.ReportedAt = l.unit, time.Now().UTC()
	ls.Switch = &sw
	ls.Transcode = l.tc.status(app, name)
	ls.Recording = l.rec.status(app, name)
	ls.Renditions = l.tc.renditions(app, name)
	return ls, true
}

func toLiveStatus(st origin.Status) lms.LiveStatus {
	ls := lms.LiveStatus{
		PublisherProtocol: st.Protocol,
		PublisherRemote:   st.Remote,
		VideoCodec:        st.VideoCodec,
		Width:             st.Width,
		Height:            st.Height,
		FPS:               st.FPS,
		AudioCodec:        st.AudioCodec,
		SampleRate:        st.SampleRate,
		Channels:          st.Channels,
		BitrateKbps:       float64(st.Bitrate) / 1000,
		Readers:           st.Readers,
		ReadersByProtocol: st.ReadersByProtocol,
		InternalReaders:   st.InternalReaders,
		DroppedReaders:    st.DroppedReaders,
		StartedAt:         st.Started,
	}
	if !st.Started.IsZero() {
		ls.UptimeSeconds = time.Since(st.Started).Seconds()
	}
	return ls
}

func (l liveSource) Kick(app, name string) error {
	err := l.hub.Kick(app, name)
	if errors.Is(err, origin.ErrNotFound) {
		return fmt.Errorf("%w: %w", lms.ErrNotLive, err)
	}
	return err
}
