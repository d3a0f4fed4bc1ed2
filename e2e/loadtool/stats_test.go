package main

import (
	"slices"
	"testing"
)

func TestPercentile(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []int
		p      float64
		want   int
	}{
		{"empty", nil, 50, 0},
		{"single p50", []int{7}, 50, 7},
		{"single p99", []int{7}, 99, 7},
		{"two p50", []int{1, 2}, 50, 1},
		{"two p51", []int{1, 2}, 51, 2},
		{"hundred p50", hundred, 50, 50},
		{"hundred p95", hundred, 95, 95},
		{"hundred p99", hundred, 99, 99},
		{"hundred p100", hundred, 100, 100},
		{"hundred p0 clamps to min", hundred, 0, 1},
		{"hundred p150 clamps to max", hundred, 150, 100},
		{"ten p95", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 95, 10},
		{"ten p90", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestMedianDoesNotSortInPlace(t *testing.T) {
	v := []float64{3, 1, 2}
	if got := median(v); got != 2 {
		t.Errorf("median = %v, want 2", got)
	}
	if !slices.Equal(v, []float64{3, 1, 2}) {
		t.Errorf("median reordered its input: %v", v)
	}
}

func TestParseProcStatTicks(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{"plain", "1234 (livefuse) S 1 1234 1234 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 12 0 100 0 0", 175, false},
		{"spaces and parens in name", "77 (my (odd) name) R 1 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0", 10, false},
		{"no name", "1234 livefuse S 1", 0, true},
		{"short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 3", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStatTicks([]byte(tt.stat))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseProcStatTicks = %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"ok", "Name:\tlivefuse\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nRssAnon:\t1 kB\n", 51200 << 10, false},
		{"missing", "Name:\tx\n", 0, true},
		{"bad unit", "VmRSS:\t12 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tt.status))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseVmRSS = %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseHostCPU(t *testing.T) {
	busy, total, err := parseHostCPU([]byte("cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 1 2 3 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	// user nice system [idle iowait] irq softirq steal; guest fields skipped.
	if busy != 100+5+50+1+2+3 || total != 100+5+50+800+20+1+2+3 {
		t.Errorf("busy %d total %d", busy, total)
	}
	if _, _, err := parseHostCPU([]byte("intr 1 2 3\n")); err == nil {
		t.Error("parseHostCPU accepted a line that is not cpu")
	}
}
