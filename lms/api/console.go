package api

import "time"

// The console's views as its push channel (GET /api/v1/events) carries
// them: each server-sent event is named by its topic and holds one of
// these as JSON. The alerts and plans topics carry {"alerts":[Alert]} and
// {"runs":[PlanRun]} (their own files).

// Whoami is the answer of GET /api/v1/whoami: who holds the caller's
// token and its role (viewer, operator, admin).
type Whoami struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// ConsoleThresholds are the figures under which a feed's card turns red.
type ConsoleThresholds struct {
	MinFPS         float64 `json:"min_fps" yaml:"min_fps"`
	MinBitrateKbps float64 `json:"min_bitrate_kbps" yaml:"min_bitrate_kbps"`
}

// ConsoleStreamsHead is the head of the "streams" event, which is keyed
// (lms.ConsoleKeyed): {"full":true,"head":ConsoleStreamsHead,"set":{STREAM:
// ConsoleStream...},"order":[STREAM...]} first, then only the streams that
// changed ("set"), the streams gone ("del") and the order when it changed.
// Every event's id is when the node sampled it, in Unix milliseconds.
type ConsoleStreamsHead struct {
	Unit       string            `json:"unit"` // the unit of the node serving the console
	Thresholds ConsoleThresholds `json:"thresholds"`
}

// ConsoleStream is one stream of the streams view.
type ConsoleStream struct {
	Stream  string `json:"stream"` // "app/name"
	Enabled bool   `json:"enabled"`
	// Policy is the registry's feed policy (auto, main, backup).
	Policy     string `json:"policy"`
	Encryption bool   `json:"encryption"`
	Record     bool   `json:"record"`
	Profile    string `json:"profile,omitempty"`
	// Units are the units that have the stream live, by unit name.
	Units []ConsoleUnit `json:"units"`
}

// ConsoleUnit is a stream's switcher at one unit: its feeds (figures
// rounded so that the view changes only when a card would), the feed
// shown and the last switch. Local is the unit serving the console, whose
// state is read directly (the others' comes from their reports through
// the store); the outputs (viewers, renditions, transcode, recording) are
// known for the local unit only.
type ConsoleUnit struct {
	UnitStatus
	Local      bool               `json:"local"`
	Viewers    map[string]int     `json:"viewers,omitempty"` // players by protocol
	Renditions []ConsoleRendition `json:"renditions,omitempty"`
	Transcode  *ConsoleTranscode  `json:"transcode,omitempty"`
	Recording  *ConsoleRecording  `json:"recording,omitempty"`
}

// ConsoleRendition is one rendition on air.
type ConsoleRendition struct {
	Name        string  `json:"name"`
	Stream      string  `json:"stream"`
	Height      int     `json:"height,omitempty"`
	BitrateKbps float64 `json:"bitrate_kbps"`
	Readers     int     `json:"readers"`
}

// ConsoleTranscode is the ladder's state.
type ConsoleTranscode struct {
	Profile  string `json:"profile"`
	State    string `json:"state"` // running, queued, rejected
	Reason   string `json:"reason,omitempty"`
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
}

// ConsoleRecording is the recorder's state.
type ConsoleRecording struct {
	State    string `json:"state"` // waiting, recording, stopped
	Segments int    `json:"segments"`
	Pending  int    `json:"pending"`
	Error    string `json:"error,omitempty"`
}

// ConsoleCDN is the "cdn" event: each vendor's pools against commit and
// ceiling, the dispatch share per region × ISP, the blacklist.
type ConsoleCDN struct {
	// At is when the allocator made the plan shown.
	At        time.Time          `json:"at"`
	Pools     []ConsolePool      `json:"pools"`
	Shares    []ConsoleShare     `json:"shares"`
	Blacklist []ConsoleBlacklist `json:"blacklist"`
}

// ConsolePool is one vendor's capacity pool: the vendor overall (Region
// "") or one region with limits of its own.
type ConsolePool struct {
	Vendor       string  `json:"vendor"`
	Region       string  `json:"region,omitempty"`
	Mbps         float64 `json:"mbps"`
	ForecastMbps float64 `json:"forecast_mbps"`
	CommitMbps   float64 `json:"commit_mbps"`
	CeilingMbps  float64 `json:"ceiling_mbps"`
	State        string  `json:"state"`
}

// ConsoleShare is the dispatch ratio of each vendor in one region × ISP
// ("" is any).
type ConsoleShare struct {
	Region string             `json:"region"`
	ISP    string             `json:"isp"`
	Ratios map[string]float64 `json:"ratios"` // vendor → 0..1
}

// ConsoleBlacklist is one active blacklist entry; a zero Until lasts
// until removed. Auto marks the stall rule's entries.
type ConsoleBlacklist struct {
	Vendor string    `json:"vendor"`
	Region string    `json:"region,omitempty"`
	ISP    string    `json:"isp,omitempty"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason,omitempty"`
	Auto   bool      `json:"auto"`
}

// ConsoleAudience is the "audience" event: the audience's quality over the
// last minute by province × ISP × vendor, worst first (highest stall
// rate, then most users).
type ConsoleAudience struct {
	Rows []AudienceRow `json:"rows"`
}

// AudienceRow is one province × ISP × vendor.
type AudienceRow struct {
	Region        string  `json:"region"`
	ISP           string  `json:"isp"`
	Vendor        string  `json:"vendor"`
	Users         int     `json:"users"`
	StalledUsers  int     `json:"stalled_users"`
	StallRate     float64 `json:"stall_rate"`      // 0..1, stalled users / users
	ZeroStallRate float64 `json:"zero_stall_rate"` // 0..1, users without a stall / users
}

// ConsoleAudit is the "audit" event: the latest changes this node saw,
// newest first (GET /api/v1/audit has the whole log, with filters).
type ConsoleAudit struct {
	Entries []AuditEntry `json:"entries"`
}
