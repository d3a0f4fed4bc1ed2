package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// registeredMetrics returns the metric names the code registers, found in
// its Go sources: full names in string literals, and Namespace, Subsystem
// and Name of collector options.
func registeredMetrics(t *testing.T, root string) map[string]bool {
	t.Helper()
	full := regexp.MustCompile(`"((?:livefuse|cdnmix)_[a-z0-9_]+)"`)
	parts := regexp.MustCompile(`Namespace:\s*"([a-z_]+)",\s*Subsystem:\s*"([a-z_]+)",\s*Name:\s*"([a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "node_modules" || d.Name() == "e2e" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range full.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		for _, m := range parts.FindAllSubmatch(b, -1) {
			names[string(m[1])+"_"+string(m[2])+"_"+string(m[3])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

var queried = regexp.MustCompile(`\b((?:livefuse|cdnmix)_[a-zA-Z0-9_]+)\b`)

// checkQueried fails for every metric expr uses that the code does not
// register (histogram suffixes allowed).
func checkQueried(t *testing.T, where, expr string, names map[string]bool) int {
	t.Helper()
	n := 0
	for _, m := range queried.FindAllString(expr, -1) {
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if !names[base] {
				base = strings.TrimSuffix(base, suf)
			}
		}
		if !names[base] {
			t.Errorf("%s: metric %s is not registered by the code", where, m)
		}
		n++
	}
	return n
}

// TestDeployMetricNames checks the Grafana dashboard parses and that every
// metric it and the Prometheus rules query is one the code registers.
func TestDeployMetricNames(t *testing.T) {
	root := filepath.Join("..", "..")
	names := registeredMetrics(t, root)
	for _, must := range []string{"livefuse_origin_feed_fps", "livefuse_origin_switches_total", "cdnmix_stall_rate", "livefuse_alerts_firing"} {
		if !names[must] {
			t.Fatalf("the source scan misses %s (found %d names): the scan is broken", must, len(names))
		}
	}

	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "livefuse.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels")
	}
	used := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			used += checkQueried(t, "dashboard panel "+p.Title, tg.Expr, names)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok {
			checkQueried(t, "dashboard variable "+v.Name, q, names)
		}
	}

	b, err = os.ReadFile(filepath.Join(root, "deploy", "prometheus", "livefuse-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("rules: %v", err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			used += checkQueried(t, "rule "+r.Alert, r.Expr, names)
			alerts = append(alerts, r.Alert)
		}
	}
	sort.Strings(alerts)
	if len(alerts) < 10 || used < 20 {
		t.Fatalf("%d rules, %d metric uses: the files look truncated", len(alerts), used)
	}
}

func TestAlertsConfigRefused(t *testing.T) {
	path, _ := writeConfig(t, "alerts:\n  rules:\n    - {name: x, kind: nope}\n")
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "alerts") || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err %v, want a refusal naming alerts and the kind", err)
	}
	path, _ = writeConfig(t, "alerts:\n  webhooks:\n    - {url: 'http://127.0.0.1:1/hook', secret: short}\n")
	if _, err := loadConfig(path); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("err %v, want a refusal that does not echo the secret", err)
	}
}
