package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/recording"
)

// recorder wires recording into the node: the registry's `record` flags
// switch it per stream, the origin hub is its source, the control API
// lists recordings (GET /api/v1/recordings) and the media listener serves
// its signed playback URLs (/recordings/...).
type recorder struct {
	rec *recording.Recorder
	reg *lms.Registry
	tc  *transcoder
	hub *origin.Hub
	bus atomic.Pointer[bus.Publisher] // set once the bus is open
	log *slog.Logger

	renditions bool
	off        bool       // this unit does not record (recording.units)
	mu         sync.Mutex // serialises sync
}

// newRecorder builds the recorder (nothing is contacted yet). Playback URLs
// point at the media listener unless recording.public_url is set.
func newRecorder(cfg Config, hub *origin.Hub, reg *lms.Registry, tc *transcoder, log *slog.Logger,
	promReg prometheus.Registerer) (*recorder, error) {
	rc := cfg.Recording
	rc.DataDir = cfg.DataDir
	off := len(rc.Units) > 0 && !slices.Contains(rc.Units, cfg.Unit)
	if len(cfg.Units) > 1 && len(rc.Units) != 1 {
		rc.Unit = cfg.Unit // several units record; their copies keep apart
	}
	if rc.PublicURL == "" {
		host := cfg.HTTP.PublicHost
		if host == "" {
			host = "127.0.0.1"
		}
		if _, port, err := net.SplitHostPort(cfg.HTTP.Addr); err == nil {
			if p, _ := strconv.Atoi(port); p > 0 {
				rc.PublicURL = "http://" + net.JoinHostPort(host, port)
			}
		}
	}
	r := &recorder{reg: reg, tc: tc, hub: hub, log: log, off: off, renditions: rc.Renditions}
	rec, err := recording.New(rc, recording.Deps{Source: recordSource{hub}, Log: log, Events: r.event})
	if err != nil {
		return nil, err
	}
	r.rec = rec
	if r.renditions && tc != nil {
		// Renditions are recorded from when their stream is published to
		// when it ends (with its source): the transcoder says when.
		tc.OnRendition(func(string, string) { r.sync() })
	}
	if err := promReg.Register(rec.Collector()); err != nil {
		log.Warn("recording metrics not registered", "err", err)
	}
	return r, nil
}

// publishTo sends recording lifecycle events to p from now on.
func (r *recorder) publishTo(p bus.Publisher) {
	if p != nil {
		r.bus.Store(&p)
	}
}

// event puts session and store events on the stream events topic (the
// per-segment ones stay local). Publish never blocks.
func (r *recorder) event(e recording.Event) {
	switch e.Type {
	case recording.EventSegmentSpooled, recording.EventSegmentUploaded:
		return
	}
	p := r.bus.Load()
	if p == nil {
		return
	}
	detail := e.Session
	if e.Error != "" {
		detail += ": " + e.Error
	}
	stream := ""
	if e.App != "" {
		stream = e.App + "/" + e.Name
	}
	if err := bus.Emit(*p, bus.StreamEvent{Type: e.Type, Stream: stream, Time: e.Time, Detail: detail}); err != nil {
		r.log.Warn("recording event not published", "type", e.Type, "err", err)
	}
}

// start checks the store (a bad store is logged and shown in the status;
// the node serves on), replays the spool and follows the registry.
func (r *recorder) start(ctx context.Context) {
	if r.off {
		r.log.Info("recording: this unit does not record (not in recording.units); it lists and serves recordings")
	}
	r.rec.Start(ctx)
	r.sync()
}

// sync records exactly the enabled streams with record on and, with
// recording.renditions, their renditions that are on air (they stay on air
// while their ladder restarts, so a session continues, and end with their
// source).
func (r *recorder) sync() {
	var keys []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.reg.List() {
		if r.off {
			break
		}
		if !s.Enabled || !s.Record {
			continue
		}
		keys = append(keys, s.App+"/"+s.Name)
		if !r.renditions || r.tc == nil {
			continue
		}
		for _, rs := range r.tc.renditions(s.App, s.Name) {
			keys = append(keys, rs.Stream)
		}
	}
	r.rec.Sync(keys)
}

func (r *recorder) mount(srv *lms.Server) {
	srv.Handle("GET /api/v1/recordings", r.rec.APIHandler())
}

// media serves recordings next to the origin's outputs.
func (r *recorder) media(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(recording.MediaPrefix, r.rec.MediaHandler())
	mux.Handle("/", next)
	return mux
}

// status is the recording part of a live stream's status.
func (r *recorder) status(app, name string) *api.RecordingStatus {
	st := r.rec.Status(app, name)
	if !st.Enabled {
		return nil
	}
	return &api.RecordingStatus{State: st.State, Session: st.Session, Segments: st.Segments,
		Pending: st.Pending, Error: st.Error, Sink: st.Sink}
}

func (r *recorder) close() { r.rec.Close() }

// recordSource adapts the origin Hub to recording.Source.
type recordSource struct{ hub *origin.Hub }

func (s recordSource) Subscribe(app, name string) (recording.PacketReader, error) {
	rd, err := s.hub.Subscribe(app, name)
	if err != nil {
		return nil, err
	}
	return rd, nil
}
