package mixerwave

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livefuse/livefuse/cdnmix"
)

// Bytes is what one vendor served, by unix second of its log lines.
type Bytes map[int64]float64

// ReadAccessLogs reads the vendors' access logs (vendor → path, lines in
// cdnmix.AccessLogFormat) into bytes per second per vendor, and counts the
// lines.
func ReadAccessLogs(logs map[string]string) (map[string]Bytes, int, error) {
	out := map[string]Bytes{}
	lines := 0
	for vendor, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, err
		}
		b := Bytes{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l, err := cdnmix.ParseAccessLog(vendor, sc.Bytes())
			if err != nil {
				f.Close()
				return nil, 0, fmt.Errorf("%s: %w", path, err)
			}
			b[l.Time.Unix()] += float64(l.Bytes)
			lines++
		}
		f.Close()
		out[vendor] = b
	}
	return out, lines, nil
}

// Mbps is the mean over the window seconds before end (unix second,
// excluded), as the aggregator's bandwidth window.
func (b Bytes) Mbps(end int64, window int) float64 {
	sum := 0.0
	for s := end - int64(window); s < end; s++ {
		sum += b[s]
	}
	return sum * 8 / float64(window) / 1e6
}

// Peak is the highest window mean and the second it ends at.
func (b Bytes) Peak(window int) (float64, int64) {
	if len(b) == 0 {
		return 0, 0
	}
	secs := slices.Sorted(maps.Keys(b))
	best, at := 0.0, int64(0)
	for end := secs[0] + 1; end <= secs[len(secs)-1]+1; end++ {
		if m := b.Mbps(end, window); m > best {
			best, at = m, end
		}
	}
	return best, at
}

// View is one node's plan at one moment: Mbps per vendor (overall pools)
// and its admission share.
type View struct {
	At    time.Time
	Node  int
	Mbps  map[string]float64
	Share float64
}

// Sampler polls each node's /cdn/plan and admission share every period.
type Sampler struct {
	mu    sync.Mutex
	views []View
}

// Run samples until ctx ends.
func (s *Sampler) Run(ctx context.Context, nodes []Node, every time.Duration, client *http.Client) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for i, n := range nodes {
			v, err := Plan(ctx, client, n)
			if err != nil {
				continue
			}
			v.Node = i
			s.mu.Lock()
			s.views = append(s.views, v)
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Views returns the samples so far.
func (s *Sampler) Views() []View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.views)
}

// Plan reads one node's view: the overall pools of /cdn/plan and the
// cdnmix_admission_share metric.
func Plan(ctx context.Context, client *http.Client, n Node) (View, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", n.API+"/api/v1/cdn/plan", nil)
	req.Header.Set("Authorization", "Bearer "+n.Token)
	resp, err := client.Do(req)
	if err != nil {
		return View{}, err
	}
	defer resp.Body.Close()
	var p struct {
		At    time.Time `json:"at"`
		Pools []struct {
			Vendor string  `json:"vendor"`
			Region string  `json:"region"`
			Mbps   float64 `json:"mbps"`
		} `json:"pools"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&p); err != nil {
		return View{}, err
	}
	v := View{At: time.Now(), Mbps: map[string]float64{}}
	for _, pool := range p.Pools {
		if pool.Region == "" {
			v.Mbps[pool.Vendor] += pool.Mbps
		}
	}
	v.Share, _ = Share(ctx, client, n)
	return v, nil
}

// Share reads a node's cdnmix_admission_share.
func Share(ctx context.Context, client *http.Client, n Node) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", n.API+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+n.Token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "cdnmix_admission_share "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no cdnmix_admission_share")
}

// Report writes the run as CSV (one row per second: per vendor the truth
// from its logs and each node's view, and each node's share) and as an SVG
// chart of the fleet-wide truth against the ceilings, with the nodes'
// views dashed.
func Report(csvOut, svgOut io.Writer, title string, start time.Time, window int, truth map[string]Bytes,
	ceilings map[string]float64, views []View, nodes int) error {
	vendors := slices.Sorted(maps.Keys(ceilings))
	end := start
	for _, v := range views {
		if v.At.After(end) {
			end = v.At
		}
	}
	// The latest view of each node at or before each second.
	secs := int(end.Sub(start)/time.Second) + 1
	at := make([][]*View, secs)
	for i := range at {
		at[i] = make([]*View, nodes)
	}
	for i := range views {
		v := &views[i]
		s := int(v.At.Sub(start) / time.Second)
		if s >= 0 && s < secs && v.Node < nodes {
			at[s][v.Node] = v
		}
	}
	for s := 1; s < secs; s++ {
		for n := range nodes {
			if at[s][n] == nil {
				at[s][n] = at[s-1][n]
			}
		}
	}
	w := csv.NewWriter(csvOut)
	head := []string{"t_s"}
	for _, v := range vendors {
		head = append(head, v+"_ceiling_mbps", v+"_true_mbps")
		for n := range nodes {
			head = append(head, fmt.Sprintf("%s_node%d_mbps", v, n))
		}
	}
	for n := range nodes {
		head = append(head, fmt.Sprintf("node%d_share", n))
	}
	w.Write(head)
	chart := cdnmix.Chart{Title: title}
	lines := map[string]*cdnmix.ChartLine{}
	for gi, v := range vendors {
		chart.Limits = append(chart.Limits, cdnmix.ChartLimit{Name: v + " ceiling", Group: gi, Mbps: ceilings[v]})
		lines[v] = &cdnmix.ChartLine{Name: v + " (vendor logs)", Group: gi}
		for n := range nodes {
			lines[fmt.Sprint(v, n)] = &cdnmix.ChartLine{Name: fmt.Sprintf("%s seen by node %d", v, n), Group: gi, Dashed: true}
		}
	}
	for s := range secs {
		t := start.Add(time.Duration(s) * time.Second)
		chart.Times = append(chart.Times, time.Duration(s)*time.Second)
		row := []string{strconv.Itoa(s)}
		for _, v := range vendors {
			tm := truth[v].Mbps(t.Unix(), window)
			row = append(row, fmt.Sprintf("%.3f", ceilings[v]), fmt.Sprintf("%.3f", tm))
			lines[v].Mbps = append(lines[v].Mbps, tm)
			for n := range nodes {
				m := 0.0
				if vw := at[s][n]; vw != nil {
					m = vw.Mbps[v]
				}
				row = append(row, fmt.Sprintf("%.3f", m))
				l := lines[fmt.Sprint(v, n)]
				l.Mbps = append(l.Mbps, m)
			}
		}
		for n := range nodes {
			sh := 0.0
			if vw := at[s][n]; vw != nil {
				sh = vw.Share
			}
			row = append(row, fmt.Sprintf("%.3f", sh))
		}
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	for _, v := range vendors {
		chart.Lines = append(chart.Lines, *lines[v])
		for n := range nodes {
			chart.Lines = append(chart.Lines, *lines[fmt.Sprint(v, n)])
		}
	}
	return chart.WriteSVG(svgOut)
}
