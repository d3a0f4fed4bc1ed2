package cdnmix

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"time"
)

var svgPalette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"}

// WriteSVG draws the run: per vendor, its bandwidth (solid) against its
// total commit (dashed) and ceiling (dotted), the audience demand in grey,
// and event times as vertical marks.
func (r *Result) WriteSVG(w io.Writer) error {
	const (
		width, height        = 960, 540
		left, right, top, bo = 80, 180, 40, 50
		plotW, plotH         = width - left - right, height - top - bo
	)
	bw := bufio.NewWriter(w)
	if len(r.Times) == 0 {
		fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d"></svg>`+"\n", width, height)
		return bw.Flush()
	}
	commit := make([]float64, len(r.Vendors))
	ceiling := make([]float64, len(r.Vendors))
	for _, p := range r.Pools {
		for vi, v := range r.Vendors {
			if v == p.Vendor {
				commit[vi] += p.Limits.CommitMbps
				ceiling[vi] += p.Limits.CeilingMbps
			}
		}
	}
	maxY := 0.0
	for vi := range r.Vendors {
		maxY = max(maxY, ceiling[vi])
	}
	for _, d := range r.DemandMbps {
		maxY = max(maxY, d)
	}
	maxY = niceCeil(maxY * 1.05)
	tEnd := r.Times[len(r.Times)-1].Seconds()
	if tEnd <= 0 {
		tEnd = 1
	}
	x := func(sec float64) float64 { return left + sec/tEnd*plotW }
	y := func(mbps float64) float64 { return top + plotH - mbps/maxY*plotH }
	unit, div := "Mbps", 1.0
	switch {
	case maxY >= 1e6:
		unit, div = "Tbps", 1e6
	case maxY >= 1e3:
		unit, div = "Gbps", 1e3
	}

	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	title := r.Scenario.Name
	if title == "" {
		title = "cdnmix simulation"
	}
	fmt.Fprintf(bw, `<text x="%d" y="24" font-size="16">%s</text>`+"\n", left, html.EscapeString(title))
	// Axes and grid.
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, left+plotW, y(v), y(v))
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%.3g %s</text>`+"\n", left-6, y(v)+4, v/div, unit)
		sec := tEnd * float64(i) / 5
		fmt.Fprintf(bw, `<text x="%.1f" y="%d" text-anchor="middle">%.0fs</text>`+"\n", x(sec), top+plotH+18, sec)
	}
	fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", left, top, plotW, plotH)
	// Events.
	for _, e := range r.Scenario.Events {
		sec := e.At.Seconds()
		if sec > tEnd {
			continue
		}
		fmt.Fprintf(bw, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999" stroke-dasharray="2,3"/>`+"\n", x(sec), x(sec), top, top+plotH)
		label := fmt.Sprintf("%s degrades in %s", e.Vendor, Bucket{e.Region, e.ISP})
		fmt.Fprintf(bw, `<text x="%.1f" y="%d" fill="#666">%s</text>`+"\n", x(sec)+4, top+14, html.EscapeString(label))
	}
	// Demand.
	fmt.Fprint(bw, `<polyline fill="none" stroke="#aaa" stroke-width="1.5" points="`)
	for t, d := range r.DemandMbps {
		fmt.Fprintf(bw, "%.1f,%.1f ", x(r.Times[t].Seconds()), y(d))
	}
	fmt.Fprintln(bw, `"/>`)
	// Vendors.
	for vi, name := range r.Vendors {
		color := svgPalette[vi%len(svgPalette)]
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="8,4"/>`+"\n", left, left+plotW, y(commit[vi]), y(commit[vi]), color)
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="1,3"/>`+"\n", left, left+plotW, y(ceiling[vi]), y(ceiling[vi]), color)
		fmt.Fprintf(bw, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, color)
		for t := range r.Times {
			fmt.Fprintf(bw, "%.1f,%.1f ", x(r.Times[t].Seconds()), y(r.VendorMbps(t, vi)))
		}
		fmt.Fprintln(bw, `"/>`)
		ly := top + 10 + vi*36
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", left+plotW+12, left+plotW+36, ly, ly, color)
		fmt.Fprintf(bw, `<text x="%d" y="%d">%s</text>`+"\n", left+plotW+42, ly+4, html.EscapeString(name))
		fmt.Fprintf(bw, `<text x="%d" y="%d" fill="#666" font-size="10">commit %.3g, ceiling %.3g %s</text>`+"\n",
			left+plotW+42, ly+18, commit[vi]/div, ceiling[vi]/div, unit)
	}
	ly := top + 10 + len(r.Vendors)*36
	fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#aaa" stroke-width="1.5"/>`+"\n", left+plotW+12, left+plotW+36, ly, ly)
	fmt.Fprintf(bw, `<text x="%d" y="%d">demand</text>`+"\n", left+plotW+42, ly+4)
	fmt.Fprintf(bw, `<text x="%d" y="%d" fill="#666" font-size="10">dashed: commit, dotted: ceiling</text>`+"\n", left+plotW+12, ly+24)
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// Chart is a plain bandwidth chart: lines over time against horizontal
// limits, drawn like a simulation's (the fleet harness uses it).
type Chart struct {
	Title string
	Times []time.Duration
	// Lines are drawn solid (dashed with Dashed), each in the colour of
	// its Group (a vendor's index).
	Lines []ChartLine
	// Limits are dotted horizontal lines (ceilings), by Group.
	Limits []ChartLimit
}

// ChartLine is one series of Chart, one value per time.
type ChartLine struct {
	Name   string
	Group  int
	Dashed bool
	Mbps   []float64
}

// ChartLimit is a horizontal line of Chart.
type ChartLimit struct {
	Name  string
	Group int
	Mbps  float64
}

// WriteSVG draws the chart.
func (c Chart) WriteSVG(w io.Writer) error {
	const (
		width, height        = 960, 540
		left, right, top, bo = 80, 220, 40, 50
		plotW, plotH         = width - left - right, height - top - bo
	)
	bw := bufio.NewWriter(w)
	if len(c.Times) == 0 {
		fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d"></svg>`+"\n", width, height)
		return bw.Flush()
	}
	maxY := 0.0
	for _, l := range c.Limits {
		maxY = max(maxY, l.Mbps)
	}
	for _, l := range c.Lines {
		for _, v := range l.Mbps {
			maxY = max(maxY, v)
		}
	}
	maxY = niceCeil(maxY * 1.05)
	tEnd := max(c.Times[len(c.Times)-1].Seconds(), 1)
	x := func(sec float64) float64 { return left + sec/tEnd*plotW }
	y := func(mbps float64) float64 { return top + plotH - min(mbps, maxY)/maxY*plotH }
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(bw, `<text x="%d" y="24" font-size="16">%s</text>`+"\n", left, html.EscapeString(c.Title))
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, left+plotW, y(v), y(v))
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%.3g Mbps</text>`+"\n", left-6, y(v)+4, v)
		sec := tEnd * float64(i) / 5
		fmt.Fprintf(bw, `<text x="%.1f" y="%d" text-anchor="middle">%.0fs</text>`+"\n", x(sec), top+plotH+18, sec)
	}
	fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", left, top, plotW, plotH)
	row := 0
	legend := func(color, dash, name string) {
		ly := top + 10 + row*20
		row++
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n", left+plotW+12, left+plotW+36, ly, ly, color, dash)
		fmt.Fprintf(bw, `<text x="%d" y="%d">%s</text>`+"\n", left+plotW+42, ly+4, html.EscapeString(name))
	}
	for _, l := range c.Limits {
		color := svgPalette[l.Group%len(svgPalette)]
		fmt.Fprintf(bw, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="1,3"/>`+"\n", left, left+plotW, y(l.Mbps), y(l.Mbps), color)
		legend(color, "1,3", l.Name)
	}
	for _, l := range c.Lines {
		color := svgPalette[l.Group%len(svgPalette)]
		dash, width := "none", 2.0
		if l.Dashed {
			dash, width = "6,3", 1.0
		}
		fmt.Fprintf(bw, `<polyline fill="none" stroke="%s" stroke-width="%.0f" stroke-dasharray="%s" points="`, color, width, dash)
		for t, v := range l.Mbps {
			if t < len(c.Times) {
				fmt.Fprintf(bw, "%.1f,%.1f ", x(c.Times[t].Seconds()), y(v))
			}
		}
		fmt.Fprintln(bw, `"/>`)
		legend(color, dash, l.Name)
	}
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}
