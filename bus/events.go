package bus

import (
	"encoding/json"
	"fmt"
	"time"
)

// Topic names.
const (
	TopicQoSBeacons   = "qos.beacons"
	TopicCDNLogs      = "cdn.logs"
	TopicStreamEvents = "stream.events"
	TopicAudit        = "audit"
)

// Topics lists every topic.
func Topics() []string {
	return []string{TopicQoSBeacons, TopicCDNLogs, TopicStreamEvents, TopicAudit}
}

// Event is a typed event that knows its topic and partition key.
type Event interface {
	Topic() string
	Key() string
}

// Beacon events (Beacon.Event).
const (
	BeaconStart      = "start"
	BeaconFirstFrame = "first_frame"
	BeaconStall      = "stall"
	BeaconHeartbeat  = "heartbeat"
	BeaconError      = "error"
	BeaconBitrate    = "bitrate" // a bitrate switch (BitrateKbps)
)

// Beacon is one player QoS report, posted to POST /qos and carried on
// qos.beacons. Region and ISP are filled by the receiving node from the
// client address when the player does not send them.
type Beacon struct {
	Session string    `json:"session"`
	Stream  string    `json:"stream"`
	Vendor  string    `json:"vendor"`
	Event   string    `json:"event"`
	Time    time.Time `json:"time"`
	// BufferEmptyMs is how long the buffer was empty, for stall and
	// heartbeat events (a stall is 2000 ms or more).
	BufferEmptyMs int64 `json:"buffer_empty_ms,omitempty"`
	// FirstFrameMs is the time from start to the first frame, for
	// first_frame events.
	FirstFrameMs int64  `json:"first_frame_ms,omitempty"`
	Error        string `json:"error,omitempty"`
	Region       string `json:"region,omitempty"`
	ISP          string `json:"isp,omitempty"`
	Client       string `json:"client,omitempty"` // client IP

	// BitrateKbps is the bitrate played from now on, for bitrate events
	// (and the CMCD br of heartbeats made from CMCD data).
	BitrateKbps int64 `json:"bitrate_kbps,omitempty"`
}

// Topic implements Event.
func (Beacon) Topic() string { return TopicQoSBeacons }

// Key keeps a session's beacons in order on one partition.
func (b Beacon) Key() string { return b.Session }

// CDNLog is one vendor log line: Bytes sent to a client during the
// DurationMs before Time (0: at Time).
type CDNLog struct {
	Vendor     string    `json:"vendor"`
	Time       time.Time `json:"time"`
	Bytes      int64     `json:"bytes"`
	DurationMs int64     `json:"duration_ms,omitempty"`
	Status     int       `json:"status"`
	Region     string    `json:"region,omitempty"`
	ISP        string    `json:"isp,omitempty"`
	ClientIP   string    `json:"client_ip,omitempty"`
	Stream     string    `json:"stream,omitempty"`
}

// Topic implements Event.
func (CDNLog) Topic() string { return TopicCDNLogs }

// Key spreads log lines by vendor, region, ISP and client, so that one
// busy vendor's lines spread over the partitions (stage-one aggregation
// sums bytes, which add up whatever partition a line lands on).
func (l CDNLog) Key() string { return l.Vendor + "|" + l.Region + "|" + l.ISP + "|" + l.ClientIP }

// Stream event types (StreamEvent.Type).
const (
	StreamPublish    = "publish"
	StreamUnpublish  = "unpublish"
	StreamFeedSwitch = "feed_switch"
)

// StreamEvent is a stream lifecycle event.
type StreamEvent struct {
	Type   string    `json:"type"`
	Stream string    `json:"stream"` // app/name
	Feed   string    `json:"feed,omitempty"`
	Unit   string    `json:"unit,omitempty"`
	Node   string    `json:"node,omitempty"`
	Time   time.Time `json:"time"`
	Detail string    `json:"detail,omitempty"`
}

// Topic implements Event.
func (StreamEvent) Topic() string { return TopicStreamEvents }

// Key keeps a stream's events in order.
func (e StreamEvent) Key() string { return e.Stream }

// AuditEvent records an operator action.
type AuditEvent struct {
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Target string          `json:"target,omitempty"`
	Time   time.Time       `json:"time"`
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Topic implements Event.
func (AuditEvent) Topic() string { return TopicAudit }

// Key orders an actor's actions.
func (e AuditEvent) Key() string { return e.Actor }

// Emit encodes e as JSON and publishes it on its topic.
func Emit(p Publisher, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("bus: encode %s event: %w", e.Topic(), err)
	}
	return p.Publish(e.Topic(), []byte(e.Key()), b)
}

// Decode unmarshals a message value into v.
func Decode(m Message, v any) error {
	if err := json.Unmarshal(m.Value, v); err != nil {
		return fmt.Errorf("bus: decode %s message: %w", m.Topic, err)
	}
	return nil
}
