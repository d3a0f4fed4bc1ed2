package main

import (
	"strings"
	"testing"
	"time"
)

// The console section's keys, in lms.ConsoleConfig and its inline
// EventsConfig, read from livefuse.yaml; a refusal names the section.
func TestConsoleConfigYAML(t *testing.T) {
	cfg := defaultConfig()
	y := "console:\n  enabled: false\n  tick: 100ms\n  unit_report_period: 1s\n  thresholds:\n    min_fps: 20\n"
	if err := decodeConfig([]byte(y), &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Console
	if c.Enabled || c.Tick != 100*time.Millisecond || c.UnitReportPeriod != time.Second || c.Thresholds.MinFPS != 20 ||
		c.MaxClients != defaultConsoleConfig().MaxClients {
		t.Errorf("decoded %+v", c)
	}
	c.UnitReportPeriod = 10 * time.Millisecond
	if err := c.validate(); err == nil || !strings.HasPrefix(err.Error(), "config: console: unit_report_period") {
		t.Errorf("validate: %v", err)
	}
}
