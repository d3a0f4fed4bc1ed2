package lms

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLoadSampler(t *testing.T) {
	var s LoadSampler
	t0 := time.Now()
	if e, pps, _, rss := s.Sample(t0, 1000, 10); e != 0 || pps != 0 || rss <= 0 {
		t.Fatalf("first sample: egress %d pps %v rss %d, want 0, 0 and the process's RSS", e, pps, rss)
	}
	// Burn some CPU so the second sample sees it.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	e, pps, cpu, _ := s.Sample(t0.Add(2*time.Second), 1000+250_000, 10+100)
	if e != 1_000_000 || pps != 50 {
		t.Fatalf("egress %d bit/s, %v packets/s; want 1000000 and 50", e, pps)
	}
	if cpu < 0 {
		t.Fatalf("cpu %v%%", cpu)
	}
	// A counter that went back (a restart of its source) gives 0, not a negative rate.
	if e, _, _, _ := s.Sample(t0.Add(4*time.Second), 10, 10); e != 0 {
		t.Fatalf("egress after a counter reset: %d", e)
	}
}

func TestSumCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"p"})
	reg.MustRegister(c)
	c.WithLabelValues("a").Add(2)
	c.WithLabelValues("b").Add(3)
	if got := SumCounters(reg, "x_total", "missing_total"); got[0] != 5 || got[1] != 0 {
		t.Fatalf("SumCounters = %v, want [5 0]", got)
	}
}
