package transcode

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports (sysconf needs cgo).
const clockTicks = 100

// procUsage is what /proc says about one process.
type procUsage struct {
	CPU time.Duration // user + system time, all threads
	RSS int64         // resident set in bytes
}

// readProc reads /proc/PID/stat and /proc/PID/statm.
func readProc(pid int) (procUsage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procUsage{}, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return procUsage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	statm, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return procUsage{}, err
	}
	f := bytes.Fields(statm)
	if len(f) < 2 {
		return procUsage{}, fmt.Errorf("/proc/%d/statm: %q", pid, statm)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return procUsage{}, fmt.Errorf("/proc/%d/statm: %w", pid, err)
	}
	return procUsage{CPU: cpu, RSS: pages * int64(os.Getpagesize())}, nil
}

// parseStatCPU returns utime+stime of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may hold spaces, so fields are
// counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name")
	}
	f := bytes.Fields(b[i+1:])
	// After the name: state(3) ppid(4) … utime(14) stime(15).
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("%d fields", len(f)+2)
	}
	u, err := strconv.ParseUint(string(f[utime]), 10, 64)
	if err != nil {
		return 0, err
	}
	s, err := strconv.ParseUint(string(f[stime]), 10, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}
