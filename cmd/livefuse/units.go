package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/origin"
)

// validateUnits checks the units section: this unit's name, unique names
// and relay addresses, and a relay secret when there is anyone to relay to.
func (c *Config) validateUnits() error {
	if c.Unit == "" {
		c.Unit = "a"
	}
	if err := lmsName(c.Unit); err != nil {
		return fmt.Errorf("config: unit %q: %w", c.Unit, err)
	}
	seen := map[string]bool{}
	others := 0
	for i, u := range c.Units {
		if err := lmsName(u.Name); err != nil {
			return fmt.Errorf("config: units[%d]: name: %w", i, err)
		}
		if seen[u.Name] {
			return fmt.Errorf("config: units[%d]: unit %q listed twice", i, u.Name)
		}
		seen[u.Name] = true
		if u.Name != c.Unit {
			if u.Relay == "" {
				return fmt.Errorf("config: units[%d] (%s): relay address is required", i, u.Name)
			}
			others++
		}
	}
	if others > 0 && c.RelaySecret == "" {
		return fmt.Errorf("config: relay_secret is required to relay feeds to %d other unit(s)", others)
	}
	c.RTMP.RelaySecret = c.RelaySecret
	return nil
}

func lmsName(s string) error { return api.ValidateName(s) }

// newRelay wraps the node's sink so that accepted feeds also go to the
// other units.
func newRelay(cfg Config, inner ingest.Sink, log *slog.Logger) *ingest.Relay {
	return ingest.NewRelay(inner, ingest.RelayConfig{Self: cfg.Unit, Units: cfg.Units, Secret: cfg.RelaySecret},
		log.With("unit", cfg.Unit))
}

// reportUnit writes this unit's switcher states to the store every period
// (console.unit_report_period) until ctx ends.
func reportUnit(ctx context.Context, reg *lms.Registry, unit string, hub *origin.Hub, period time.Duration) {
	reg.ReportUnit(ctx, unit, period, func() map[string]lms.UnitStatus {
		out := map[string]lms.UnitStatus{}
		for _, st := range hub.List() {
			u := toUnitStatus(st.Switch)
			u.Readers = st.Readers
			out[st.App+"/"+st.Name] = u
		}
		return out
	})
}

func toUnitStatus(sw origin.SwitchStatus) lms.UnitStatus {
	u := lms.UnitStatus{Active: sw.Active, Policy: sw.Policy, LastSwitch: sw.LastSwitch,
		LastReason: sw.LastReason, Switches: sw.Switches}
	for _, f := range sw.Feeds {
		u.Feeds = append(u.Feeds, lmsFeedStatus(f))
	}
	return u
}

func lmsFeedStatus(f origin.FeedStatus) api.FeedStatus {
	return api.FeedStatus{Feed: f.Feed, State: f.State, Active: f.Active, Protocol: f.Protocol, Remote: f.Remote,
		Width: f.Width, Height: f.Height, FPS: f.FPS, BitrateKbps: float64(f.Bitrate) / 1000,
		RTTMillis: f.RTTMillis, LastPacketAgeMillis: f.LastPacketAgeMillis,
		KeyframeIntervalMillis: f.KeyframeIntervalMillis, BFrames: f.BFrames, Audio: f.Audio,
		AudioBitrateKbps: float64(f.AudioBitrate) / 1000, WindowMillis: f.WindowMillis}
}
