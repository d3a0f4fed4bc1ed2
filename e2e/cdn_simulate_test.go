package e2e

import (
	"encoding/csv"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCDNSimulateCommand runs `livefuse cdnmix simulate` on the
// entrance-wave scenario: it writes a CSV with one row per vendor × bucket
// and pool per step and a well-formed SVG, and no pool row is above its
// ceiling.
func TestCDNSimulateCommand(t *testing.T) {
	parallel(t)
	dir := t.TempDir()
	scenario, err := filepath.Abs("../cdnmix/testdata/entrance-wave.yaml")
	if err != nil {
		t.Fatal(err)
	}
	csvPath, svgPath := filepath.Join(dir, "wave.csv"), filepath.Join(dir, "wave.svg")
	out, err := exec.Command(env.bin, "cdnmix", "simulate", "--scenario", scenario, "--csv", csvPath, "--svg", svgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "steps over ceiling") || !strings.Contains(string(out), "wrote "+csvPath) {
		t.Fatalf("summary: %s", out)
	}
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 1000 || strings.Join(rows[0], ",") != "time_s,vendor,bucket,mbps,commit_mbps,ceiling_mbps" {
		t.Fatalf("%d rows, header %v", len(rows), rows[0])
	}
	pools := 0
	for _, r := range rows[1:] {
		if !strings.HasPrefix(r[2], "pool:") {
			continue
		}
		pools++
		mbps, err1 := strconv.ParseFloat(r[3], 64)
		ceil, err2 := strconv.ParseFloat(r[5], 64)
		if err1 != nil || err2 != nil || mbps > ceil {
			t.Fatalf("pool row %v", r)
		}
	}
	if pools == 0 {
		t.Fatal("no pool rows")
	}
	svg, err := os.Open(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer svg.Close()
	dec := xml.NewDecoder(svg)
	for {
		if _, err := dec.Token(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("svg: %v", err)
		}
	}
	// Bad input: a missing scenario is an error with exit status 1, no
	// flag is usage with 2.
	if err := exec.Command(env.bin, "cdnmix", "simulate", "--scenario", filepath.Join(dir, "nope.yaml")).Run(); cdnExitCode(err) != 1 {
		t.Fatalf("missing scenario: %v", err)
	}
	if err := exec.Command(env.bin, "cdnmix", "simulate").Run(); cdnExitCode(err) != 2 {
		t.Fatalf("no flags: %v", err)
	}
}

func cdnExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}
