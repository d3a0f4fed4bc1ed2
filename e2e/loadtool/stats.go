package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values at
// or below it. It returns the zero value for an empty slice.
func percentile[T cmp.Ordered](sorted []T, p float64) T {
	var zero T
	n := len(sorted)
	if n == 0 {
		return zero
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// median sorts a copy of v and returns its 50th percentile.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return percentile(s, 50)
}

// parseProcStatTicks returns utime+stime (clock ticks) from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and ')', so
// the fields are counted from its last ')'.
func parseProcStatTicks(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat: no command name")
	}
	// After ')': state is field 3; utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat stime: %w", err)
	}
	return ut + st, nil
}

// parseVmRSS returns VmRSS in bytes from the contents of /proc/PID/status.
func parseVmRSS(b []byte) (int64, error) {
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status: VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("proc status: no VmRSS")
}

// parseHostCPU returns busy and total jiffies summed over all CPUs from the
// first line of /proc/stat.
func parseHostCPU(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("proc stat: first line %q", line)
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("proc stat cpu field %d: %w", i+1, err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
		if i == 7 { // guest and guest_nice are already in user and nice
			break
		}
	}
	return busy, total, nil
}

// clockTicks returns the kernel's USER_HZ (CLK_TCK), which /proc/PID/stat
// counts in; 100 on every common Linux build.
func clockTicks(ctx context.Context) float64 {
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// procSample is one reading of a process and of the host.
type procSample struct {
	at        time.Time
	ticks     uint64 // utime+stime of the process
	rss       int64  // bytes
	hostBusy  uint64
	hostTotal uint64
	selfTicks uint64 // the load tool itself
}

func readProcSample(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("server stat: %w", err)
	}
	if s.ticks, err = parseProcStatTicks(b); err != nil {
		return s, err
	}
	if b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err != nil {
		return s, fmt.Errorf("server status: %w", err)
	}
	if s.rss, err = parseVmRSS(b); err != nil {
		return s, err
	}
	if b, err = os.ReadFile("/proc/self/stat"); err != nil {
		return s, fmt.Errorf("own stat: %w", err)
	}
	if s.selfTicks, err = parseProcStatTicks(b); err != nil {
		return s, err
	}
	if b, err = os.ReadFile("/proc/stat"); err != nil {
		return s, fmt.Errorf("host stat: %w", err)
	}
	s.hostBusy, s.hostTotal, err = parseHostCPU(b)
	return s, err
}

// usage is what the sampler measured over the steady window: CPU as a
// percentage of one core per one-second interval, RSS per reading.
type usage struct {
	serverCPU []float64
	toolCPU   []float64
	hostCPU   []float64 // busy share of all cores, 0-100
	rssMax    int64
	err       error
}

// sampleUsage reads the process pid every interval from start until end
// (or ctx ends) and returns the per-interval CPU use.
func sampleUsage(ctx context.Context, pid int, start, end time.Time, interval time.Duration, hz float64) usage {
	var u usage
	if !sleepUntil(ctx, start) {
		return u
	}
	prev, err := readProcSample(pid)
	if err != nil {
		u.err = err
		return u
	}
	u.rssMax = prev.rss
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return u
		case <-t.C:
		}
		cur, err := readProcSample(pid)
		if err != nil {
			u.err = err
			return u
		}
		secs := cur.at.Sub(prev.at).Seconds()
		if secs > 0 {
			u.serverCPU = append(u.serverCPU, float64(cur.ticks-prev.ticks)/hz/secs*100)
			u.toolCPU = append(u.toolCPU, float64(cur.selfTicks-prev.selfTicks)/hz/secs*100)
			if dt := cur.hostTotal - prev.hostTotal; dt > 0 {
				u.hostCPU = append(u.hostCPU, float64(cur.hostBusy-prev.hostBusy)/float64(dt)*100)
			}
		}
		u.rssMax = max(u.rssMax, cur.rss)
		prev = cur
		if !cur.at.Add(interval / 2).Before(end) {
			return u
		}
	}
}

// sleepUntil waits for t or ctx, reporting whether t was reached.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}
