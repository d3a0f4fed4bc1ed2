package api

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Alert states and severities.
const (
	AlertFiring   = "firing"
	AlertResolved = "resolved"

	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Alert rule kinds. Each says what its threshold and for_s mean.
const (
	// AlertIngestFPS: a live feed's frame rate is under threshold (fps)
	// for for_s seconds.
	AlertIngestFPS = "ingest_fps_below"
	// AlertIngestBitrate: a live feed's bitrate is under threshold (kbit/s)
	// for for_s seconds.
	AlertIngestBitrate = "ingest_bitrate_below"
	// AlertKeyframeInterval: a live feed's mean keyframe interval is over
	// threshold (ms) for for_s seconds.
	AlertKeyframeInterval = "keyframe_interval_above"
	// AlertFeedLost: a feed that was live is lost (stalled, or its
	// publisher gone while the stream is on air) for for_s seconds.
	AlertFeedLost = "feed_lost"
	// AlertSingleFeed: a stream runs on one live feed at a unit (no hot
	// backup) for for_s seconds.
	AlertSingleFeed = "single_feed"
	// AlertSwitch: a stream's switcher switched (to the other feed or the
	// slate); the alert resolves for_s seconds after the last switch.
	AlertSwitch = "switch"
	// AlertStallRate: the one-minute user stall rate of a vendor × region
	// × ISP is over threshold (percent) for for_s seconds, among at least
	// min_users users.
	AlertStallRate = "stall_rate_above"
	// AlertVendorCeiling: a vendor's bandwidth is over threshold percent of
	// its ceiling for for_s seconds.
	AlertVendorCeiling = "vendor_ceiling_above"
	// AlertSpool: the recording spool is over threshold percent of
	// recording.spool_max_bytes for for_s seconds.
	AlertSpool = "spool_above"
	// AlertTranscodeRestarts: a stream's transcode workers restarted more
	// than threshold times within the last for_s seconds.
	AlertTranscodeRestarts = "transcode_restarts"
	// AlertUnitLost: a configured unit has no live node for for_s seconds.
	AlertUnitLost = "unit_lost"
	// AlertEtcd, AlertKafka, AlertS3: the node cannot reach its etcd
	// store, its Kafka brokers, or its S3 recording store for for_s seconds.
	AlertEtcd  = "etcd_unreachable"
	AlertKafka = "kafka_unreachable"
	AlertS3    = "s3_unreachable"
)

// AlertKinds lists every rule kind.
func AlertKinds() []string {
	return []string{AlertIngestFPS, AlertIngestBitrate, AlertKeyframeInterval, AlertFeedLost, AlertSingleFeed, AlertSwitch,
		AlertStallRate, AlertVendorCeiling, AlertSpool, AlertTranscodeRestarts, AlertUnitLost, AlertEtcd, AlertKafka, AlertS3}
}

// Limits of alert rules.
const (
	MaxAlertRules = 200
	MaxAlertFor   = 24 * 3600 // for_s at most a day
)

// AlertRule is one rule: config alerts.rules and GET/PUT
// /api/v1/alerts/rules.
type AlertRule struct {
	// Name identifies the rule (unique; [A-Za-z0-9._-]).
	Name string `yaml:"name" json:"name"`
	Kind string `yaml:"kind" json:"kind"`
	// Threshold is in the unit of the kind (fps, kbit/s, ms, percent,
	// restarts); kinds without one ignore it.
	Threshold float64 `yaml:"threshold" json:"threshold"`
	// ForSeconds is how long the condition must hold before the alert
	// fires (for switch: how long it stays firing after the last switch;
	// for transcode_restarts: the window the restarts are counted in).
	ForSeconds float64 `yaml:"for_s" json:"for_s"`
	// Severity is "warning" (default) or "critical".
	Severity string `yaml:"severity" json:"severity"`
	// Stream limits a stream rule to one stream ("app/name"; empty: all).
	Stream string `yaml:"stream,omitempty" json:"stream,omitempty"`
	// MinUsers is the fewest users a stall_rate_above bucket needs.
	MinUsers int `yaml:"min_users,omitempty" json:"min_users,omitempty"`
	// Disabled rules are kept but not evaluated.
	Disabled bool `yaml:"disabled,omitempty" json:"disabled,omitempty"`
}

// For returns ForSeconds as a duration.
func (r AlertRule) For() time.Duration { return time.Duration(r.ForSeconds * float64(time.Second)) }

// Validate checks one rule.
func (r AlertRule) Validate() error {
	if err := ValidateName(r.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	known := false
	for _, k := range AlertKinds() {
		known = known || k == r.Kind
	}
	if !known {
		return fmt.Errorf("rule %s: kind %q: unknown", r.Name, r.Kind)
	}
	if math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0) || r.Threshold < 0 {
		return fmt.Errorf("rule %s: threshold must be a number >= 0", r.Name)
	}
	if math.IsNaN(r.ForSeconds) || r.ForSeconds < 0 || r.ForSeconds > MaxAlertFor {
		return fmt.Errorf("rule %s: for_s must be 0 to %d", r.Name, MaxAlertFor)
	}
	switch r.Severity {
	case "", SeverityWarning, SeverityCritical:
	default:
		return fmt.Errorf("rule %s: severity %q: want warning or critical", r.Name, r.Severity)
	}
	if r.Stream != "" {
		app, name := SplitPath(r.Stream)
		if ValidateName(app) != nil || ValidateName(name) != nil {
			return fmt.Errorf("rule %s: stream %q: want app/name", r.Name, r.Stream)
		}
	}
	if r.MinUsers < 0 {
		return fmt.Errorf("rule %s: min_users must be >= 0", r.Name)
	}
	return nil
}

// ValidateAlertRules checks a rule set: each rule, unique names, the count.
func ValidateAlertRules(rs []AlertRule) error {
	if len(rs) > MaxAlertRules {
		return fmt.Errorf("%w: %d alert rules, at most %d", ErrInvalid, len(rs), MaxAlertRules)
	}
	seen := map[string]bool{}
	for i, r := range rs {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%w: rules[%d]: %w", ErrInvalid, i, err)
		}
		if seen[r.Name] {
			return fmt.Errorf("%w: rules[%d]: name %q used twice", ErrInvalid, i, r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// AlertRules is the body of GET and PUT /api/v1/alerts/rules.
type AlertRules struct {
	Rules []AlertRule `json:"rules"`
}

// AlertLabels say what an alert is about; only those that apply are set.
type AlertLabels struct {
	Stream string `json:"stream,omitempty"`
	Feed   string `json:"feed,omitempty"`
	Unit   string `json:"unit,omitempty"`
	Vendor string `json:"vendor,omitempty"`
	Region string `json:"region,omitempty"`
	ISP    string `json:"isp,omitempty"`
}

// Matches reports whether every label set in l (a silence's) has the
// same value in o.
func (l AlertLabels) Matches(o AlertLabels) bool {
	m := func(want, got string) bool { return want == "" || want == got }
	return m(l.Stream, o.Stream) && m(l.Feed, o.Feed) && m(l.Unit, o.Unit) && m(l.Vendor, o.Vendor) &&
		m(l.Region, o.Region) && m(l.ISP, o.ISP)
}

// Alert is one firing (or resolved) alert: GET /api/v1/alerts, the bus
// topic alerts, and the webhook body.
type Alert struct {
	ID            string      `json:"id"`
	Rule          string      `json:"rule"`
	Kind          string      `json:"kind"`
	Severity      string      `json:"severity"`
	State         string      `json:"state"`
	Summary       string      `json:"summary"`
	Labels        AlertLabels `json:"labels"`
	Value         float64     `json:"value"`
	Threshold     float64     `json:"threshold"`
	StartedAt     time.Time   `json:"started_at"`
	ResolvedAt    *time.Time  `json:"resolved_at,omitempty"`
	AckedBy       string      `json:"acked_by,omitempty"`
	AckedAt       *time.Time  `json:"acked_at,omitempty"`
	SilencedUntil *time.Time  `json:"silenced_until,omitempty"`
}

// AlertList is the body of GET /api/v1/alerts.
type AlertList struct {
	Alerts []Alert `json:"alerts"`
}

// Silence is the body of POST /api/v1/alerts/silences: alerts of rule
// (empty: any rule) whose labels match are not sent to webhooks until
// the silence ends.
type Silence struct {
	Rule      string      `json:"rule,omitempty"`
	Labels    AlertLabels `json:"labels"`
	DurationS float64     `json:"duration_s"`
	// Set by the server in its answer.
	ID        string    `json:"id,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	Until     time.Time `json:"until,omitzero"`
}

// MaxSilence bounds a silence's duration.
const MaxSilence = 7 * 24 * time.Hour

// Validate checks a silence request.
func (s Silence) Validate() error {
	if s.Rule != "" {
		if err := ValidateName(s.Rule); err != nil {
			return fmt.Errorf("%w: rule: %w", ErrInvalid, err)
		}
	}
	if math.IsNaN(s.DurationS) || s.DurationS <= 0 || time.Duration(s.DurationS*float64(time.Second)) > MaxSilence {
		return fmt.Errorf("%w: duration_s must be above 0 and at most %.0f", ErrInvalid, MaxSilence.Seconds())
	}
	for _, v := range []string{s.Labels.Stream, s.Labels.Feed, s.Labels.Unit, s.Labels.Vendor, s.Labels.Region, s.Labels.ISP} {
		if len(v) > 2*MaxNameLen+1 {
			return fmt.Errorf("%w: label too long", ErrInvalid)
		}
	}
	if s.Rule == "" && s.Labels == (AlertLabels{}) {
		return errors.Join(ErrInvalid, errors.New("a silence needs a rule or a label"))
	}
	return nil
}
