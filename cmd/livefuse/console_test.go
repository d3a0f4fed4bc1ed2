package main

import (
	"math"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/lms/api"
)

func TestRoundSig(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{2027, 2030}, {2024.9, 2020}, {15.3, 15.3}, {0, 0}, {999.6, 1000}, {0.01234, 0.0123}, {-2027, -2030},
	} {
		if got := roundSig(tc.in, 3); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("roundSig(%v, 3) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRoundUnit(t *testing.T) {
	u := roundUnit(lms.UnitStatus{Feeds: []api.FeedStatus{
		{Feed: "main", FPS: 24.62, BitrateKbps: 2027.4, RTTMillis: 3.6, LastPacketAgeMillis: 840},
		{Feed: "backup", FPS: 4.96, BitrateKbps: 15.3, LastPacketAgeMillis: 2600},
	}})
	m, b := u.Feeds[0], u.Feeds[1]
	if m.FPS != 25 || m.BitrateKbps != 2030 || m.RTTMillis != 4 || m.LastPacketAgeMillis != 0 {
		t.Errorf("main %+v", m)
	}
	if b.FPS != 5 || b.BitrateKbps != 15 || b.LastPacketAgeMillis != 2000 {
		t.Errorf("backup %+v", b)
	}
}

// A feed's figures hold for a second while its state stays; a change of
// state shows new figures at once; a feed not seen in a sample is forgotten.
func TestHoldFigures(t *testing.T) {
	c := &console{}
	sample := func(f api.FeedStatus) api.FeedStatus {
		c.sampleN++
		c.holdFigures("live/x", &f)
		return f
	}
	first := sample(api.FeedStatus{Feed: "main", State: "live", FPS: 25, BitrateKbps: 2000})
	if first.FPS != 25 || first.BitrateKbps != 2000 {
		t.Fatalf("first sighting %+v", first)
	}
	// Make the figures recent whatever the spread of first sightings.
	f := c.figures["live/x|main"]
	f.at = time.Now()
	c.figures["live/x|main"] = f
	if got := sample(api.FeedStatus{Feed: "main", State: "live", FPS: 24, BitrateKbps: 1990}); got.FPS != 25 || got.BitrateKbps != 2000 {
		t.Errorf("within the second: %+v, want the figures held", got)
	}
	if got := sample(api.FeedStatus{Feed: "main", State: "stalled", FPS: 3, BitrateKbps: 100}); got.FPS != 3 || got.BitrateKbps != 100 {
		t.Errorf("state changed: %+v, want the new figures", got)
	}
	f = c.figures["live/x|main"]
	f.at = time.Now().Add(-2 * figuresRefresh)
	c.figures["live/x|main"] = f
	if got := sample(api.FeedStatus{Feed: "main", State: "stalled", FPS: 1, BitrateKbps: 50}); got.FPS != 1 {
		t.Errorf("after the refresh period: %+v, want the new figures", got)
	}
}

func TestConsoleConfigValidate(t *testing.T) {
	good := defaultConsoleConfig()
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*ConsoleConfig){
		"negative fps":       func(c *ConsoleConfig) { c.Thresholds.MinFPS = -1 },
		"report period 10ms": func(c *ConsoleConfig) { c.UnitReportPeriod = 10 * time.Millisecond },
		"no clients":         func(c *ConsoleConfig) { c.MaxClients = 0 },
	} {
		c := good
		mut(&c)
		if c.validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
