// Command loadtool measures how livefuse serves one live stream to many
// players: it starts the server binary, publishes a 2.5 Mbit/s 720p25
// H.264/AAC stream into it over RTMP, opens N HTTP-FLV and N RTMP players,
// and reports per protocol how many kept up, the time to the first frame,
// the publish-to-player latency, the largest gap between frames, and the
// server's CPU and memory. `make bench` runs it.
//
// Usage:
//
//	go run ./e2e/loadtool -server bin/livefuse -flv 100 -rtmp 100 -duration 30s
//
// Flags:
//
//	-server PATH     livefuse binary (default bin/livefuse)
//	-flv N           HTTP-FLV players (http://…/live/bench.flv)
//	-rtmp N          RTMP players (rtmp://…/live/bench)
//	-duration D      steady measuring window (default 30s)
//	-ramp D          players are started evenly over this time (default 5s)
//	-settle D        wait after the ramp before measuring (default 3s)
//	-coalesce D      origin.flv_coalesce in the server config (default 40ms, the server default)
//	-clip PATH       reuse this FLV clip, or write it there (default: generate in the temp dir)
//	-keep            keep the temp dir (config, server log, data, clip)
//	-json            print only the one-line JSON report on stdout
//	-v               debug logs on stderr
//	-cpuprofile FILE the load tool's own CPU profile (go tool pprof)
//	-serverprofile FILE the server's CPU profile over the whole run
//	                 (LIVEFUSE_CPUPROFILE; go tool pprof bin/livefuse FILE)
//
// How it works. The tool picks free 127.0.0.1 ports, writes a config into a
// temp dir and starts `livefuse serve --config` in its own process group,
// which it kills at the end (also on error or Ctrl-C). ffmpeg encodes a 20 s
// clip (CBR 2.5 Mbit/s, GOP 2 s, 2 B-frames, AAC). The tool's own RTMP
// publisher sends it in a loop, paced by DTS against the wall clock with
// timestamps that keep increasing, and puts into every video frame an SEI
// NAL unit (user_data_unregistered, our UUID, the send time in Unix
// nanoseconds). Players compute latency as arrival time minus that stamp
// (same host, same clock), from their second keyframe on: the first GOP
// comes out of the server's cache in a burst.
//
// Measurements are taken over the steady window only, which starts after
// the ramp and the settle time. A player kept up when it stayed connected
// and got at least 95% of the video frames the publisher sent in the
// window. First frame is measured from the start of the TCP connect.
// Server CPU is utime+stime from /proc/PID/stat per second, as % of one
// core (median of the samples), RSS the largest VmRSS. The tool reports
// its own CPU too, and how busy the whole host was: on a 2-core machine
// the players compete with the server, so compare host busy with 100% per
// core before trusting the server numbers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

type options struct {
	server   string
	flv      int
	rtmp     int
	duration time.Duration
	ramp     time.Duration
	settle   time.Duration
	coalesce time.Duration
	clip     string
	keep     bool
	json     bool
	verbose  bool
	cpuProf  string
	srvProf  string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.server, "server", "bin/livefuse", "livefuse binary")
	fs.IntVar(&o.flv, "flv", 10, "HTTP-FLV players")
	fs.IntVar(&o.rtmp, "rtmp", 10, "RTMP players")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "steady measuring window")
	fs.DurationVar(&o.ramp, "ramp", 5*time.Second, "start players evenly over this time")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait after the ramp before measuring")
	fs.DurationVar(&o.coalesce, "coalesce", 40*time.Millisecond, "origin.flv_coalesce for the server (0: off)")
	fs.StringVar(&o.clip, "clip", "", "FLV clip to reuse, or to create when missing (default: temp dir)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir")
	fs.BoolVar(&o.json, "json", false, "print only the JSON report")
	fs.BoolVar(&o.verbose, "v", false, "debug logging")
	fs.StringVar(&o.cpuProf, "cpuprofile", "", "write the load tool's own CPU profile here")
	fs.StringVar(&o.srvProf, "serverprofile", "", "write the server's CPU profile here")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.flv < 0 || o.rtmp < 0 || o.flv+o.rtmp == 0 || o.duration <= 0 || o.ramp < 0 || o.settle < 0 {
		fmt.Fprintln(stderr, "loadtool: need -flv or -rtmp > 0, -duration > 0, -ramp and -settle >= 0")
		return 2
	}
	level := slog.LevelInfo
	if o.json {
		level = slog.LevelWarn
	}
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.cpuProf != "" {
		f, err := os.Create(o.cpuProf)
		if err != nil {
			log.Error("cpu profile", "err", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("cpu profile", "err", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench(ctx, o, log)
	if rep != nil {
		if werr := rep.write(stdout, o.json); werr != nil {
			log.Error("write report", "err", werr)
		}
	}
	if err != nil {
		log.Error("load test failed", "err", err)
		return 1
	}
	for _, s := range []*protoSummary{rep.FLV, rep.RTMP} {
		if s != nil && s.Connected == 0 {
			log.Error("no player got a frame", "proto", s.Proto, "first_error", s.FirstError)
			return 1
		}
	}
	return 0
}

// bench runs the whole test. It returns a report when players ran, even
// with an error.
func bench(ctx context.Context, o options, log *slog.Logger) (*report, error) {
	if _, err := os.Stat(o.server); err != nil {
		return nil, fmt.Errorf("server binary: %w (build it with go build -o bin/livefuse ./cmd/livefuse)", err)
	}
	server, err := filepath.Abs(o.server)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "livefuse-load-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if o.keep {
		log.Info("keeping temp dir", "dir", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	clipPath := o.clip
	if clipPath == "" {
		clipPath = filepath.Join(tmp, "clip.flv")
	}
	if _, err := os.Stat(clipPath); err != nil {
		log.Info("encoding clip with ffmpeg", "path", clipPath)
		if err := generateClip(ctx, clipPath); err != nil {
			return nil, err
		}
	}
	cl, err := loadClip(clipPath)
	if err != nil {
		return nil, err
	}

	ports, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	addrs := serverAddrs{RTMP: ports[0], RTSP: ports[1], HTTP: ports[2], API: ports[3]}
	cfgPath := filepath.Join(tmp, "livefuse.yaml")
	if err := os.WriteFile(cfgPath, configYAML(filepath.Join(tmp, "data"), addrs, o.coalesce), 0o644); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var env []string
	if o.srvProf != "" {
		prof, err := filepath.Abs(o.srvProf)
		if err != nil {
			return nil, err
		}
		env = append(env, "LIVEFUSE_CPUPROFILE="+prof)
	}
	srv, err := startServer(server, cfgPath, filepath.Join(tmp, "server.log"), env...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := srv.stop(10 * time.Second); err != nil {
			log.Warn("server stop", "err", err)
		}
	}()
	if err := srv.waitReady(ctx, 60*time.Second, addrs.RTMP, addrs.HTTP); err != nil {
		return nil, err
	}
	log.Info("server ready", "pid", srv.pid(), "rtmp", addrs.RTMP, "http", addrs.HTTP)

	// Everything below stops when the server exits.
	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	go func() {
		select {
		case <-srv.exited:
			cancelRun(fmt.Errorf("server exited (%w); log:\n%s", srv.waitErr, srv.logTail(20)))
		case <-runCtx.Done():
		}
	}()

	// Publish; players start once the stream has a GOP in the server.
	const warmup = 2500 * time.Millisecond
	total := o.flv + o.rtmp
	t0 := time.Now().Add(warmup) // first player; window times are fixed up front
	win := window{start: t0.Add(o.ramp + o.settle)}
	win.end = win.start.Add(o.duration)
	pub := &publisher{addr: addrs.RTMP, app: benchApp, stream: benchName + "?token=" + benchToken, clip: cl, win: win, log: log}
	pubCtx, stopPub := context.WithCancel(runCtx)
	defer stopPub()
	pubReady := make(chan struct{})
	pubExited := make(chan struct{})
	var pubErr error // valid once pubExited is closed
	go func() {
		defer close(pubExited)
		pubErr = pub.run(pubCtx, pubReady)
		if pubErr != nil {
			cancelRun(fmt.Errorf("publisher: %w", pubErr))
		}
	}()
	defer func() { stopPub(); <-pubExited }()
	select {
	case <-pubReady:
	case <-pubExited:
		return nil, fmt.Errorf("publisher: %w", errOr(pubErr, context.Cause(runCtx)))
	}
	if wait := time.Until(t0); wait < warmup-time.Second {
		log.Warn("publish accepted late; players start with less warm-up", "late", warmup-wait)
	}

	hz := clockTicks(ctx)
	usageCh := make(chan usage, 1)
	go func() { usageCh <- sampleUsage(runCtx, srv.pid(), win.start, win.end, time.Second, hz) }()

	log.Info("starting players", "http-flv", o.flv, "rtmp", o.rtmp, "ramp", o.ramp,
		"window_start", win.start.Format("15:04:05.000"), "window", o.duration)
	players := make([]*player, 0, total)
	for i := 0; i < max(o.flv, o.rtmp); i++ {
		if i < o.flv {
			players = append(players, newPlayer(protoFLV, win))
		}
		if i < o.rtmp {
			players = append(players, newPlayer(protoRTMP, win))
		}
	}
	playCtx, stopPlayers := context.WithDeadline(runCtx, win.end)
	defer stopPlayers()
	var wg sync.WaitGroup
	launched := 0
	for i, p := range players {
		at := t0
		if total > 1 {
			at = t0.Add(o.ramp * time.Duration(i) / time.Duration(total-1))
		}
		if !sleepUntil(playCtx, at) {
			break
		}
		launched++
		wg.Go(func() {
			var err error
			switch p.proto {
			case protoFLV:
				err = runFLV(playCtx, p, addrs.HTTP, "/"+benchApp+"/"+benchName+".flv")
			case protoRTMP:
				err = runRTMP(playCtx, p, addrs.RTMP, benchApp, benchName)
			}
			if playCtx.Err() != nil && time.Now().After(win.end.Add(-50*time.Millisecond)) {
				err = nil // the end of the run, not a failure
			}
			p.finish(err, time.Now())
		})
	}
	<-playCtx.Done()
	if !waitTimeout(&wg, 10*time.Second) {
		log.Warn("some players did not stop within 10 s; they are left out of the report")
	}
	stopPub()
	<-pubExited
	u := <-usageCh
	runErr := context.Cause(runCtx)
	if errors.Is(runErr, context.Canceled) && ctx.Err() == nil {
		runErr = nil
	}
	if u.err != nil && runErr == nil {
		runErr = fmt.Errorf("sampling server: %w", u.err)
	}
	log.Info("players done", "started", launched)
	return summarize(o, players[:launched], pub, u), runErr
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	if alt != nil {
		return alt
	}
	return errors.New("stopped")
}

// waitTimeout waits for wg, but not longer than d (a stuck player must not
// hang the report).
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// protoSummary is the result for one protocol.
type protoSummary struct {
	Proto         string  `json:"proto"`
	Players       int     `json:"players"`
	Connected     int     `json:"connected"` // got at least one video frame
	KeptUp        int     `json:"kept_up"`
	Disconnected  int     `json:"disconnected"`
	FirstKeyframe int     `json:"first_frame_keyframe"` // players whose first frame was a keyframe
	FirstFrameP50 float64 `json:"first_frame_ms_p50"`
	FirstFrameP95 float64 `json:"first_frame_ms_p95"`
	LatencyP50    float64 `json:"latency_ms_p50"`
	LatencyP95    float64 `json:"latency_ms_p95"`
	LatencyP99    float64 `json:"latency_ms_p99"`
	MaxGap        float64 `json:"max_gap_ms"`
	FramesP50     int     `json:"frames_p50"` // video frames per player in the window
	Mbps          float64 `json:"mbit_s_per_player"`
	Unstamped     int     `json:"unstamped_frames"` // frames that lost the SEI stamp
	Stuck         int     `json:"stuck,omitempty"`  // players that did not stop in time
	ServerCPU     float64 `json:"server_cpu_pct"`
	ServerRSS     float64 `json:"server_rss_mb"`
	FirstError    string  `json:"first_error,omitempty"`
}

// report is the whole result; JSON field names are stable for scripts.
type report struct {
	FLV             *protoSummary `json:"flv,omitempty"`
	RTMP            *protoSummary `json:"rtmp,omitempty"`
	DurationS       float64       `json:"duration_s"`
	Coalesce        string        `json:"flv_coalesce"`
	Samples         int           `json:"samples"`
	ServerCPU       float64       `json:"server_cpu_pct"`
	ServerCPUMax    float64       `json:"server_cpu_pct_max"`
	ServerRSS       float64       `json:"server_rss_mb"`
	ToolCPU         float64       `json:"tool_cpu_pct"`
	HostCPU         float64       `json:"host_busy_pct"` // of all cores
	PubFrames       int           `json:"publisher_frames"`
	PubMaxLate      float64       `json:"publisher_max_late_ms"`
	PubUnstampable  int           `json:"publisher_unstampable,omitempty"`
	ExpectedPerUser int           `json:"expected_frames"`
}

func ms(d time.Duration) float64 { return round1(float64(d) / 1e6) }

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func summarize(o options, players []*player, pub *publisher, u usage) *report {
	secs := o.duration.Seconds()
	r := &report{
		DurationS:       secs,
		Coalesce:        o.coalesce.String(),
		Samples:         len(u.serverCPU),
		ServerRSS:       round1(float64(u.rssMax) / (1 << 20)),
		PubFrames:       pub.framesInWindow,
		PubMaxLate:      ms(pub.maxLate),
		PubUnstampable:  pub.unstamped,
		ExpectedPerUser: pub.framesInWindow,
	}
	if len(u.serverCPU) > 0 {
		r.ServerCPU = round1(median(u.serverCPU))
		r.ServerCPUMax = round1(slices.Max(u.serverCPU))
		r.ToolCPU = round1(median(u.toolCPU))
	}
	if len(u.hostCPU) > 0 {
		r.HostCPU = round1(median(u.hostCPU))
	}
	for _, proto := range []string{protoFLV, protoRTMP} {
		var ps []*player
		for _, p := range players {
			if p.proto == proto {
				ps = append(ps, p)
			}
		}
		if len(ps) == 0 {
			continue
		}
		s := &protoSummary{Proto: proto, Players: len(ps), ServerCPU: r.ServerCPU, ServerRSS: r.ServerRSS}
		var first []time.Duration
		var lat []int32
		var frames []int
		var bytes int64
		for _, p := range ps {
			if !p.finished.Load() {
				s.Stuck++ // its goroutine still runs: do not read its fields
				continue
			}
			if p.gotFirst {
				s.Connected++
				first = append(first, p.firstFrame)
				if p.firstKey {
					s.FirstKeyframe++
				}
			}
			if p.keptUp(pub.framesInWindow) {
				s.KeptUp++
			}
			if p.disconnected() {
				s.Disconnected++
			}
			if p.err != nil && s.FirstError == "" {
				s.FirstError = p.err.Error()
			}
			s.MaxGap = max(s.MaxGap, ms(p.maxGap))
			s.Unstamped += p.unstamped
			lat = append(lat, p.lat...)
			frames = append(frames, p.frames)
			bytes += p.bytes
		}
		slices.Sort(first)
		slices.Sort(lat)
		slices.Sort(frames)
		s.FirstFrameP50, s.FirstFrameP95 = ms(percentile(first, 50)), ms(percentile(first, 95))
		s.LatencyP50 = round1(float64(percentile(lat, 50)) / 1000)
		s.LatencyP95 = round1(float64(percentile(lat, 95)) / 1000)
		s.LatencyP99 = round1(float64(percentile(lat, 99)) / 1000)
		s.FramesP50 = percentile(frames, 50)
		s.Mbps = round1(float64(bytes) * 8 / 1e6 / secs / float64(len(ps)))
		if proto == protoFLV {
			r.FLV = s
		} else {
			r.RTMP = s
		}
	}
	return r
}

// write prints the table and the JSON line, or only the JSON line.
func (r *report) write(w io.Writer, jsonOnly bool) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if jsonOnly {
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "proto\tplayers\tkept up\tdropped\tfirst frame p50/p95 ms\tfirst=key\tlatency p50/p95/p99 ms\tmax gap ms\tframes p50\tMbit/s each\tserver CPU %\tserver RSS MB")
	for _, s := range []*protoSummary{r.FLV, r.RTMP} {
		if s == nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f / %.1f\t%d\t%.1f / %.1f / %.1f\t%.1f\t%d/%d\t%.2f\t%.1f\t%.1f\n",
			s.Proto, s.Players, s.KeptUp, s.Disconnected, s.FirstFrameP50, s.FirstFrameP95, s.FirstKeyframe,
			s.LatencyP50, s.LatencyP95, s.LatencyP99, s.MaxGap, s.FramesP50, r.ExpectedPerUser, s.Mbps, s.ServerCPU, s.ServerRSS)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "server: CPU %.1f%% of one core (median of %d samples, max %.1f%%), RSS %.1f MB max; flv_coalesce %s\n",
		r.ServerCPU, r.Samples, r.ServerCPUMax, r.ServerRSS, r.Coalesce)
	fmt.Fprintf(w, "load tool: CPU %.1f%% of one core; host busy %.1f%% of all cores\n", r.ToolCPU, r.HostCPU)
	fmt.Fprintf(w, "publisher: %d video frames in the %.0f s window, at most %.1f ms late\n", r.PubFrames, r.DurationS, r.PubMaxLate)
	for _, s := range []*protoSummary{r.FLV, r.RTMP} {
		if s != nil && s.FirstError != "" {
			fmt.Fprintf(w, "%s first error: %s\n", s.Proto, strings.TrimSpace(s.FirstError))
		}
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
