package lms

import (
	"context"
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
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
	u := RoundUnit(UnitStatus{Feeds: []api.FeedStatus{
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
	var h FeedFigures
	sample := func(f api.FeedStatus) api.FeedStatus {
		h.Begin()
		h.Hold("live/x", &f)
		h.Sweep()
		return f
	}
	first := sample(api.FeedStatus{Feed: "main", State: "live", FPS: 25, BitrateKbps: 2000})
	if first.FPS != 25 || first.BitrateKbps != 2000 {
		t.Fatalf("first sighting %+v", first)
	}
	// Make the figures recent whatever the spread of first sightings.
	f := h.shown["live/x|main"]
	f.at = time.Now()
	h.shown["live/x|main"] = f
	if got := sample(api.FeedStatus{Feed: "main", State: "live", FPS: 24, BitrateKbps: 1990}); got.FPS != 25 || got.BitrateKbps != 2000 {
		t.Errorf("within the second: %+v, want the figures held", got)
	}
	if got := sample(api.FeedStatus{Feed: "main", State: "stalled", FPS: 3, BitrateKbps: 100}); got.FPS != 3 || got.BitrateKbps != 100 {
		t.Errorf("state changed: %+v, want the new figures", got)
	}
	f = h.shown["live/x|main"]
	f.at = time.Now().Add(-2 * figuresRefresh)
	h.shown["live/x|main"] = f
	if got := sample(api.FeedStatus{Feed: "main", State: "stalled", FPS: 1, BitrateKbps: 50}); got.FPS != 1 {
		t.Errorf("after the refresh period: %+v, want the new figures", got)
	}
	h.Begin()
	h.Sweep()
	if len(h.shown) != 0 {
		t.Errorf("a feed not seen in the last sample is kept: %v", h.shown)
	}
}

func TestCardThresholds(t *testing.T) {
	base := api.ConsoleThresholds{MinFPS: 15, MinBitrateKbps: 300}
	for _, tc := range []struct {
		name  string
		rules []api.AlertRule
		want  api.ConsoleThresholds
	}{
		{"no rules", nil, base},
		{"first covering rule of each kind", []api.AlertRule{
			{Kind: api.AlertIngestFPS, Threshold: 20},
			{Kind: api.AlertIngestFPS, Threshold: 5},
			{Kind: api.AlertIngestBitrate, Threshold: 800},
		}, api.ConsoleThresholds{MinFPS: 20, MinBitrateKbps: 800}},
		{"disabled and per-stream rules ignored", []api.AlertRule{
			{Kind: api.AlertIngestFPS, Threshold: 20, Disabled: true},
			{Kind: api.AlertIngestBitrate, Threshold: 800, Stream: "live/x"},
		}, base},
	} {
		if got := CardThresholds(base, tc.rules); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestConsoleConfigValidate(t *testing.T) {
	good := DefaultConsoleConfig()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*ConsoleConfig){
		"negative fps":       func(c *ConsoleConfig) { c.Thresholds.MinFPS = -1 },
		"report period 10ms": func(c *ConsoleConfig) { c.UnitReportPeriod = 10 * time.Millisecond },
		"no clients":         func(c *ConsoleConfig) { c.MaxClients = 0 },
	} {
		c := good
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The audit view keeps the newest consoleAuditKeep entries, newest first,
// and ignores other topics and events it cannot read.
func TestRecentAudit(t *testing.T) {
	var r RecentAudit
	for i := range consoleAuditKeep + 10 {
		detail, _ := json.Marshal(api.AuditEntry{ID: strconv.Itoa(i)})
		v, _ := json.Marshal(bus.AuditEvent{Action: "x", Detail: detail})
		r.Observe(bus.TopicAudit, v)
	}
	r.Observe("other", []byte(`{"detail":{"id":"other"}}`))
	r.Observe(bus.TopicAudit, []byte("{not json"))
	got := r.View().Entries
	if len(got) != consoleAuditKeep || got[0].ID != strconv.Itoa(consoleAuditKeep+9) || got[len(got)-1].ID != "10" {
		t.Fatalf("%d entries, first %q last %q", len(got), got[0].ID, got[len(got)-1].ID)
	}
}

// The audience view shows the worst rows first, rates to four decimals.
func TestAudienceView(t *testing.T) {
	v := AudienceView([]api.AudienceRow{
		{Region: "bj", ISP: "ct", Vendor: "x", Users: 100, StallRate: 0.012345},
		{Region: "sh", ISP: "cu", Vendor: "y", Users: 10, StallRate: 0.5},
		{Region: "gz", ISP: "cm", Vendor: "x", Users: 300, StallRate: 0.012345},
	})
	got := v.Rows
	if len(got) != 3 || got[0].Region != "sh" || got[1].Region != "gz" || got[2].Region != "bj" {
		t.Fatalf("order %+v", got)
	}
	if got[1].StallRate != 0.0123 || got[1].ZeroStallRate != 0.9877 {
		t.Errorf("rates %+v", got[1])
	}
	many := make([]api.AudienceRow, MaxConsoleRows+5)
	if n := len(AudienceView(many).Rows); n != MaxConsoleRows {
		t.Errorf("%d rows, want %d", n, MaxConsoleRows)
	}
}

// UnitReports returns at once what it last read and reads the store on
// Run's goroutine when asked: a unit's report shows after a few asks.
func TestUnitReports(t *testing.T) {
	st := prefixStore(t)
	reg := startRegistry(t, st)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go reg.ReportUnit(ctx, "b", 100*time.Millisecond, func() map[string]UnitStatus {
		return map[string]UnitStatus{"live/x": {Policy: api.FeedAuto, Active: api.FeedMain}}
	})
	u := NewUnitReports(reg, testLogger(t))
	go u.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got := u.Latest(0)["live/x"]; len(got) == 1 && got[0].Unit == "b" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report of unit b: %v", u.Latest(0))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
