// Command mixertool drives an entrance wave through running cdnmix
// dispatcher nodes and charts what the vendors served, or serves a bare
// net/http baseline for dispatch throughput.
//
//	mixertool wave -nodes MEDIA=API,... -token T -logs v1=PATH,... -ceilings v1=MBPS,...
//	          [-viewers 150] [-ramp 10s] [-hold 30s] [-weights 8,1,1] [-xff IP,...]
//	          [-window 5] [-csv wave.csv] [-svg wave.svg]
//	mixertool bare -addr 127.0.0.1:PORT
//
// wave: viewers arrive over -ramp and stay -hold; each asks its node's
// /dispatch, pulls a segment a second from its vendor and posts QoS
// heartbeats. At the end it reads the vendors' access logs (nginx, in
// cdnmix.AccessLogFormat) and writes a CSV and an SVG chart of each
// vendor's bandwidth, by its own logs and as each node saw it, against
// the ceilings; it exits 1 when a vendor passed its ceiling. The fleet
// drill (make drill-mixer) starts a whole fleet and uses the same code.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/livefuse/livefuse/e2e/mixerwave"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mixertool wave|bare [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "bare":
		os.Exit(bare(os.Args[2:]))
	case "wave":
		os.Exit(wave(os.Args[2:]))
	}
	fmt.Fprintln(os.Stderr, "usage: mixertool wave|bare [flags]")
	os.Exit(2)
}

// bare serves a fixed 302 on every path: the baseline of a dispatch.
func bare(args []string) int {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if fs.Parse(args) != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mixertool bare:", err)
		return 1
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "http://a.example.com/live/demo.flv")
			w.WriteHeader(http.StatusFound)
		})}
	fmt.Println("ready", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "mixertool bare:", err)
		return 1
	}
	return 0
}

func pairs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want NAME=VALUE", p)
		}
		out[k] = v
	}
	return out, nil
}

func wave(args []string) int {
	fs := flag.NewFlagSet("wave", flag.ContinueOnError)
	nodesF := fs.String("nodes", "", "dispatcher nodes: MEDIA_URL=API_URL,... (required)")
	token := fs.String("token", os.Getenv("LIVEFUSE_API_TOKEN"), "control API token")
	logsF := fs.String("logs", "", "vendor access logs: VENDOR=PATH,... (required)")
	ceilF := fs.String("ceilings", "", "vendor ceilings: VENDOR=MBPS,... (required)")
	viewers := fs.Int("viewers", 150, "viewers in the wave")
	ramp := fs.Duration("ramp", 10*time.Second, "arrival time of the wave")
	hold := fs.Duration("hold", 30*time.Second, "how long the viewers stay after the ramp")
	weightsF := fs.String("weights", "", "share of the dispatch requests per node, e.g. 8,1,1 (default even)")
	xffF := fs.String("xff", "", "client addresses the viewers pose as (X-Forwarded-For), comma-separated")
	stallEvery := fs.Int("stall-every", 0, "every n-th viewer reports stalls")
	window := fs.Int("window", 10, "bandwidth window in seconds (cdnmix.bandwidth_window)")
	csvPath := fs.String("csv", "wave.csv", "CSV output")
	svgPath := fs.String("svg", "wave.svg", "SVG output")
	if fs.Parse(args) != nil {
		return 2
	}
	np, err := pairs(*nodesF)
	logs, err2 := pairs(*logsF)
	cp, err3 := pairs(*ceilF)
	if err != nil || err2 != nil || err3 != nil || len(np) == 0 || len(logs) == 0 || len(cp) == 0 {
		fmt.Fprintln(os.Stderr, "mixertool wave: -nodes, -logs and -ceilings are required (NAME=VALUE,...)")
		return 2
	}
	var nodes []mixerwave.Node
	for _, p := range strings.Split(*nodesF, ",") {
		media, api, _ := strings.Cut(p, "=")
		nodes = append(nodes, mixerwave.Node{Media: media, API: api, Token: *token})
	}
	ceilings := map[string]float64{}
	for v, s := range cp {
		if ceilings[v], err = strconv.ParseFloat(s, 64); err != nil {
			fmt.Fprintln(os.Stderr, "mixertool wave: ceiling", v, err)
			return 2
		}
	}
	var weights []float64
	for _, s := range strings.Split(*weightsF, ",") {
		if w, err := strconv.ParseFloat(s, 64); err == nil {
			weights = append(weights, w)
		}
	}
	var xff []string
	if *xffF != "" {
		xff = strings.Split(*xffF, ",")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := mixerwave.NewClient()
	var sampler mixerwave.Sampler
	sctx, stopSampler := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { sampler.Run(sctx, nodes, 500*time.Millisecond, client); close(done) }()
	start := time.Now()
	w := mixerwave.Start(ctx, mixerwave.Config{Nodes: nodes, Weights: weights, Viewers: *viewers, Ramp: *ramp,
		XFF: xff, StallEvery: *stallEvery, Client: client})
	for end := start.Add(*ramp + *hold); time.Now().Before(end); {
		time.Sleep(5 * time.Second)
		st := w.Stats()
		fmt.Printf("%4.0fs: %d viewers pulling, requests %v admitted %v refused %v, %d errors\n",
			time.Since(start).Seconds(), st.Active, st.Requests, st.Admitted, st.Refused, st.Errors)
	}
	w.Stop()
	stopSampler()
	<-done
	time.Sleep(time.Second)
	truth, lines, err := mixerwave.ReadAccessLogs(logs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mixertool wave:", err)
		return 1
	}
	csvF, err := os.Create(*csvPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mixertool wave:", err)
		return 1
	}
	defer csvF.Close()
	svgF, err := os.Create(*svgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mixertool wave:", err)
		return 1
	}
	defer svgF.Close()
	if err := mixerwave.Report(csvF, svgF, fmt.Sprintf("cdnmix wave: %d viewers, %d nodes", *viewers, len(nodes)),
		start, *window, truth, ceilings, sampler.Views(), len(nodes)); err != nil {
		fmt.Fprintln(os.Stderr, "mixertool wave:", err)
		return 1
	}
	rc := 0
	fmt.Printf("%d log lines; wrote %s and %s\n", lines, *csvPath, *svgPath)
	for v, c := range ceilings {
		peak, _ := truth[v].Peak(*window)
		fmt.Printf("%s: peak %.2f Mbps over %d s, ceiling %.2f\n", v, peak, *window, c)
		if peak > c {
			rc = 1
		}
	}
	return rc
}
