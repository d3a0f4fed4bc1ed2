package lms

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LoadSampler turns a node's counters (bytes sent, packets received)
// and its process's CPU time into rates between two samples, for the
// node's load record. The zero value is ready.
type LoadSampler struct {
	mu                    sync.Mutex
	at                    time.Time
	bytesOut, packetsIn   float64
	cpuTicks              int64
	haveCounters, haveCPU bool
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// Sample returns the rates since the previous call (zero on the first)
// and the resident set size.
func (s *LoadSampler) Sample(now time.Time, bytesOut, packetsIn float64) (egressBps int64, pps, cpuPct float64, rss int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ticks, rss, procOK := procSelf()
	if dt := now.Sub(s.at).Seconds(); s.haveCounters && dt > 0 {
		egressBps = int64(max(0, bytesOut-s.bytesOut) * 8 / dt)
		pps = max(0, packetsIn-s.packetsIn) / dt
		if procOK && s.haveCPU {
			cpuPct = float64(ticks-s.cpuTicks) / clockTicks / dt * 100
		}
	}
	s.at, s.bytesOut, s.packetsIn, s.haveCounters = now, bytesOut, packetsIn, true
	if procOK {
		s.cpuTicks, s.haveCPU = ticks, true
	}
	return egressBps, pps, cpuPct, rss
}

// procSelf reads the process's CPU time (user+system, clock ticks) and
// resident set size from /proc; ok is false where there is no /proc.
func procSelf() (ticks, rss int64, ok bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, false
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24 (pages).
	if len(f) < 22 {
		return 0, 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	pages, err3 := strconv.ParseInt(f[21], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	return ut + st, pages * int64(os.Getpagesize()), true
}

// SumCounters returns, for each name, the sum over its labels of a
// counter family in g (0 when absent).
func SumCounters(g prometheus.Gatherer, names ...string) []float64 {
	out := make([]float64, len(names))
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for i, name := range names {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				out[i] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}
