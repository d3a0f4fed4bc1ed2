// Package api holds the request and response types of the livefuse control
// API (/api/v1/...) and a small HTTP client for it. Besides the standard
// library it imports only netguard (the IP lists) and av (the name rule),
// so tools such as livectl can talk to the control plane without linking
// the etcd-backed server in package lms.
package api

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/netguard"
)

// DefaultApp is the app a stream belongs to when none is given.
const DefaultApp = "live"

// Limits on stream fields.
const (
	MaxNameLen   = av.MaxNameLen
	MaxTokenLen  = 256
	MaxSourceLen = 2048
)

// ErrInvalid marks a validation error; the server answers it with 400.
var ErrInvalid = errors.New("invalid stream")

// Stream is one entry of the stream registry, as stored and as served.
//
// PublishToken and PlayKey are secrets: the API shows them (it is behind the
// bearer token), but nothing may log them.
type Stream struct {
	App  string `json:"app"`
	Name string `json:"name"`
	// PublishToken is what encoders pass as ?token= to publish.
	PublishToken string `json:"publish_token"`
	// PlayKey signs play URLs (authkey type A); empty means open play.
	PlayKey string `json:"play_key"`
	// Enabled streams accept publishers and players.
	Enabled bool `json:"enabled"`
	// Source is an rtmp:// or rtsp:// URL the node pulls from; empty means
	// the stream is pushed by encoders.
	Source string `json:"source"`
	// Record turns recording on.
	Record bool `json:"record"`
	// Profile names a transcode profile; empty means no transcoding.
	Profile string `json:"profile"`
	// FeedPolicy is the main/backup switch policy every unit applies:
	// "auto" (or empty), "main" or "backup".
	FeedPolicy string `json:"feed_policy,omitempty"`
	// Encryption turns header-preserving encryption of the play outputs
	// on (HTTP-FLV scheme, SAMPLE-AES HLS); a change applies live at the
	// next keyframe.
	Encryption bool `json:"encryption"`
	// ServeUnit names the one unit that serves the stream's players; the
	// other units refuse them (503, RTMP play refused) so that edges fail
	// over, while publishers stay connected to every unit. Empty: every
	// unit serves (the default). The move_unit plan sets it.
	ServeUnit string `json:"serve_unit,omitempty"`
	// IPLists limit who may publish and play the stream by address.
	IPLists
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Path returns "app/name".
func (s Stream) Path() string { return s.App + "/" + s.Name }

// Validate checks every field and returns an error wrapping ErrInvalid that
// names the first bad field. Token values are never echoed in the message.
func (s Stream) Validate() error {
	if err := ValidateName(s.App); err != nil {
		return fmt.Errorf("%w: app: %w", ErrInvalid, err)
	}
	if err := ValidateName(s.Name); err != nil {
		return fmt.Errorf("%w: name: %w", ErrInvalid, err)
	}
	if err := ValidateToken(s.PublishToken); err != nil {
		return fmt.Errorf("%w: publish_token: %w", ErrInvalid, err)
	}
	if s.PlayKey != "" {
		if err := ValidateToken(s.PlayKey); err != nil {
			return fmt.Errorf("%w: play_key: %w", ErrInvalid, err)
		}
	}
	if err := ValidateSource(s.Source); err != nil {
		return fmt.Errorf("%w: source: %w", ErrInvalid, err)
	}
	if err := ValidateFeedPolicy(s.FeedPolicy); err != nil {
		return fmt.Errorf("%w: feed_policy: %w", ErrInvalid, err)
	}
	if s.Profile != "" {
		if err := ValidateName(s.Profile); err != nil {
			return fmt.Errorf("%w: profile: %w", ErrInvalid, err)
		}
	}
	if s.ServeUnit != "" {
		if err := ValidateName(s.ServeUnit); err != nil {
			return fmt.Errorf("%w: serve_unit: %w", ErrInvalid, err)
		}
	}
	if err := s.IPLists.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// IPLists are a stream's address lists: entries are CIDR prefixes
// ("10.0.0.0/8") or single addresses, at most netguard.MaxListEntries per
// list. An empty allow list allows every address; deny wins over allow.
// They add to the lists of the listener the client came through; the
// address checked is the peer's (a CDN edge's for players behind a CDN).
type IPLists struct {
	PublishAllow []string `json:"publish_allow,omitempty" yaml:"publish_allow"`
	PublishDeny  []string `json:"publish_deny,omitempty" yaml:"publish_deny"`
	PlayAllow    []string `json:"play_allow,omitempty" yaml:"play_allow"`
	PlayDeny     []string `json:"play_deny,omitempty" yaml:"play_deny"`
}

// Access returns the lists as a netguard access config.
func (l IPLists) Access() netguard.AccessConfig {
	return netguard.AccessConfig{PublishAllow: l.PublishAllow, PublishDeny: l.PublishDeny,
		PlayAllow: l.PlayAllow, PlayDeny: l.PlayDeny}
}

// Empty reports whether no list has an entry.
func (l IPLists) Empty() bool {
	return len(l.PublishAllow)+len(l.PublishDeny)+len(l.PlayAllow)+len(l.PlayDeny) == 0
}

// Validate parses every list and names the first bad one.
func (l IPLists) Validate() error {
	for _, f := range []struct {
		name string
		list []string
	}{{"publish_allow", l.PublishAllow}, {"publish_deny", l.PublishDeny}, {"play_allow", l.PlayAllow}, {"play_deny", l.PlayDeny}} {
		if _, err := netguard.ParseIPList(f.list); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return nil
}

// Feed policies (see Stream.FeedPolicy).
const (
	FeedAuto   = "auto"
	FeedMain   = "main"
	FeedBackup = "backup"
)

// ValidateFeedPolicy checks a feed policy ("" means auto).
func ValidateFeedPolicy(p string) error {
	switch p {
	case "", FeedAuto, FeedMain, FeedBackup:
		return nil
	}
	return errors.New(`want "auto", "main" or "backup"`)
}

// SwitchRequest is the body of POST /api/v1/streams/{app}/{name}/switch.
type SwitchRequest struct {
	Feed string `json:"feed"`
}

// FeedStatus is one feed of a stream as one unit sees it.
type FeedStatus struct {
	Feed   string `json:"feed"`
	State  string `json:"state"` // live, stalled, connecting, offline
	Active bool   `json:"active"`
	// Protocol and Remote describe the feed's publisher (a relay for a
	// feed that reached this unit through another one).
	Protocol            string  `json:"protocol,omitempty"`
	Remote              string  `json:"remote,omitempty"`
	Width               int     `json:"width,omitempty"`
	Height              int     `json:"height,omitempty"`
	FPS                 float64 `json:"fps"`
	BitrateKbps         float64 `json:"bitrate_kbps"`
	RTTMillis           float64 `json:"rtt_ms,omitempty"`
	LastPacketAgeMillis int64   `json:"last_packet_age_ms"`
	// Ingest health over WindowMillis (origin.health_window, default 5 s),
	// measured at the unit on what arrives: FPS and BitrateKbps above,
	// the mean keyframe interval (stream time), whether the video has
	// B-frames, whether audio arrives and its bitrate.
	KeyframeIntervalMillis float64 `json:"keyframe_interval_ms"`
	BFrames                bool    `json:"bframes"`
	Audio                  bool    `json:"audio"`
	AudioBitrateKbps       float64 `json:"audio_bitrate_kbps"`
	WindowMillis           int64   `json:"window_ms"`
}

// UnitStatus is a stream's switcher at one origin unit.
type UnitStatus struct {
	Unit string `json:"unit"`
	// Active is the feed shown: "main", "backup", "slate" or "none".
	Active     string       `json:"active"`
	Policy     string       `json:"policy"`
	Feeds      []FeedStatus `json:"feeds"`
	LastSwitch time.Time    `json:"last_switch,omitzero"`
	LastReason string       `json:"last_reason,omitempty"`
	Switches   int64        `json:"switches"`
	// Readers are the stream's players at the unit (every protocol).
	Readers int `json:"readers"`
	// ReportedAt is when the unit last reported (units report every few
	// seconds through the store).
	ReportedAt time.Time `json:"reported_at"`
}

// ValidateName checks an app, stream or profile name: 1–128 bytes of
// [A-Za-z0-9._-], not starting with '.' (av.CheckName, the one name rule).
func ValidateName(s string) error { return av.CheckName(s) }

// ValidateToken checks a token or key: 1–256 bytes of printable ASCII
// without spaces. The message never contains the token.
func ValidateToken(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxTokenLen:
		return fmt.Errorf("longer than %d bytes", MaxTokenLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("byte %d: only printable ASCII without spaces is allowed", i)
		}
	}
	return nil
}

// ValidateSource checks a pull source: empty, or an rtmp:// or rtsp:// URL
// with a host.
func ValidateSource(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxSourceLen {
		return fmt.Errorf("longer than %d bytes", MaxSourceLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("byte %d: only printable ASCII without spaces is allowed", i)
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "rtmp" && u.Scheme != "rtsp" {
		return errors.New("scheme must be rtmp:// or rtsp://")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("host is missing")
	}
	return nil
}

// SplitPath splits "app/name" (or a bare "name", which gets DefaultApp).
func SplitPath(p string) (app, name string) {
	if app, name, ok := strings.Cut(p, "/"); ok {
		return app, name
	}
	return DefaultApp, p
}

// CreateStreamRequest is the body of POST /api/v1/streams. App defaults to
// DefaultApp, Enabled to true, and an empty PublishToken is generated by the
// server (the response shows it).
type CreateStreamRequest struct {
	App          string `json:"app,omitempty"`
	Name         string `json:"name"`
	PublishToken string `json:"publish_token,omitempty"`
	PlayKey      string `json:"play_key,omitempty"`
	Enabled      *bool  `json:"enabled,omitempty"`
	Source       string `json:"source,omitempty"`
	Record       bool   `json:"record,omitempty"`
	Profile      string `json:"profile,omitempty"`
	IPLists
}

// StreamPatch is the body of PATCH /api/v1/streams/{app}/{name}: only the
// fields present (non-nil) change. App and name cannot be changed. An empty
// publish_token makes the server generate a new one (token rotation); an
// empty play_key turns play signing off.
type StreamPatch struct {
	PublishToken *string `json:"publish_token,omitempty"`
	PlayKey      *string `json:"play_key,omitempty"`
	Enabled      *bool   `json:"enabled,omitempty"`
	Source       *string `json:"source,omitempty"`
	Record       *bool   `json:"record,omitempty"`
	Profile      *string `json:"profile,omitempty"`
	FeedPolicy   *string `json:"feed_policy,omitempty"`
	Encryption   *bool   `json:"encryption,omitempty"`
	// ServeUnit "" makes every unit serve the stream's players again.
	ServeUnit *string `json:"serve_unit,omitempty"`
	// The IP lists are replaced whole; [] empties one.
	PublishAllow *[]string `json:"publish_allow,omitempty"`
	PublishDeny  *[]string `json:"publish_deny,omitempty"`
	PlayAllow    *[]string `json:"play_allow,omitempty"`
	PlayDeny     *[]string `json:"play_deny,omitempty"`
}

// Apply returns s with the present fields of p set, and the names of the
// fields that were present (for audit logs; never the values).
func (p StreamPatch) Apply(s Stream) (Stream, []string) {
	var fields []string
	if p.PublishToken != nil {
		s.PublishToken = *p.PublishToken
		fields = append(fields, "publish_token")
	}
	if p.PlayKey != nil {
		s.PlayKey = *p.PlayKey
		fields = append(fields, "play_key")
	}
	if p.Enabled != nil {
		s.Enabled = *p.Enabled
		fields = append(fields, "enabled")
	}
	if p.Source != nil {
		s.Source = *p.Source
		fields = append(fields, "source")
	}
	if p.Record != nil {
		s.Record = *p.Record
		fields = append(fields, "record")
	}
	if p.Profile != nil {
		s.Profile = *p.Profile
		fields = append(fields, "profile")
	}
	if p.Encryption != nil {
		s.Encryption = *p.Encryption
		fields = append(fields, "encryption")
	}
	if p.FeedPolicy != nil {
		s.FeedPolicy = *p.FeedPolicy
		fields = append(fields, "feed_policy")
	}
	if p.ServeUnit != nil {
		s.ServeUnit = *p.ServeUnit
		fields = append(fields, "serve_unit")
	}
	for _, l := range []struct {
		name string
		from *[]string
		to   *[]string
	}{
		{"publish_allow", p.PublishAllow, &s.PublishAllow},
		{"publish_deny", p.PublishDeny, &s.PublishDeny},
		{"play_allow", p.PlayAllow, &s.PlayAllow},
		{"play_deny", p.PlayDeny, &s.PlayDeny},
	} {
		if l.from != nil {
			*l.to = append([]string(nil), *l.from...)
			if len(*l.to) == 0 {
				*l.to = nil
			}
			fields = append(fields, l.name)
		}
	}
	return s, fields
}

// LiveStatus is what a node reports about a stream that is on air.
type LiveStatus struct {
	// PublisherProtocol is "rtmp", "rtsp" or "pull".
	PublisherProtocol string `json:"publisher_protocol"`
	// PublisherRemote is the encoder's address (or the pull source host).
	PublisherRemote string  `json:"publisher_remote"`
	VideoCodec      string  `json:"video_codec,omitempty"`
	Width           int     `json:"width,omitempty"`
	Height          int     `json:"height,omitempty"`
	FPS             float64 `json:"fps,omitempty"`
	AudioCodec      string  `json:"audio_codec,omitempty"`
	SampleRate      int     `json:"sample_rate,omitempty"`
	Channels        int     `json:"channels,omitempty"`
	// BitrateKbps is the incoming bitrate over the last 5 s.
	BitrateKbps float64 `json:"bitrate_kbps"`
	// Readers counts the players of every protocol and variant on this
	// unit: HTTP-FLV and RTMP connections, and HLS clients (distinct
	// address and User-Agent active within a few target durations).
	Readers int `json:"readers"`
	// ReadersByProtocol splits Readers by "flv", "rtmp" and "hls".
	ReadersByProtocol map[string]int `json:"readers_by_protocol,omitempty"`
	// InternalReaders counts the readers that are not players: HLS
	// packagers, encrypting readers, recorder, transcode workers, relays.
	InternalReaders int       `json:"internal_readers"`
	DroppedReaders  int64     `json:"dropped_readers"`
	StartedAt       time.Time `json:"started_at"`
	UptimeSeconds   float64   `json:"uptime_seconds"`
	// Switch is this unit's main/backup switcher for the stream (the
	// other units' are in StreamInfo.Units, when the store has them).
	Switch *UnitStatus `json:"switch,omitempty"`
	// Transcode is the stream's ladder (nil when it has no profile).
	Transcode *TranscodeStatus `json:"transcode,omitempty"`
	// Recording is the stream's recording (nil when recording is off).
	Recording *RecordingStatus `json:"recording,omitempty"`
	// Renditions are the stream's renditions on air at this unit (its
	// ladder and its watermarked source, NAME_source). They follow the
	// stream: they end when it ends or loses its profile.
	Renditions []RenditionStatus `json:"renditions,omitempty"`
}

// RenditionStatus is one rendition of a live stream, on air at the unit.
type RenditionStatus struct {
	// Name is the rendition's name in the profile ("source" for the
	// watermarked source).
	Name string `json:"name"`
	// Stream is the rendition's stream, "app/NAME_<rendition>"; it plays
	// like any stream (and is listed in the stream's ABR playlist).
	Stream      string    `json:"stream"`
	Width       int       `json:"width,omitempty"`
	Height      int       `json:"height,omitempty"`
	FPS         float64   `json:"fps,omitempty"`
	BitrateKbps float64   `json:"bitrate_kbps"`
	Readers     int       `json:"readers"`
	StartedAt   time.Time `json:"started_at"`
}

// RecordingStatus is what the node's recorder says about a stream.
type RecordingStatus struct {
	// State is "waiting", "recording" or "stopped".
	State   string `json:"state"`
	Session string `json:"session,omitempty"`
	// Segments were cut this session; Pending of them are not yet
	// confirmed by the store.
	Segments int `json:"segments"`
	Pending  int `json:"pending"`
	// Error is why recording stopped, or the store's last error.
	Error string `json:"error,omitempty"`
	Sink  string `json:"sink"`
}

// TranscodeStatus is what the node's transcode pool says about a stream.
type TranscodeStatus struct {
	Profile string `json:"profile"`
	// State is "running", "queued" or "rejected"; Reason says why a stream
	// is served without its ladder.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Renditions are the rendition streams ("app/NAME_<rendition>").
	Renditions []string `json:"renditions,omitempty"`
	Restarts   int      `json:"restarts"`
	LastExit   string   `json:"last_exit,omitempty"`
	FPS        float64  `json:"fps"`
	Speed      float64  `json:"speed"`
	CPU        float64  `json:"cpu"` // share of one core
	RSSBytes   int64    `json:"rss_bytes"`
}

// StreamInfo is a registry entry joined with its live status (nil when the
// stream is not on air). GET /api/v1/streams/{app}/{name} returns it.
type StreamInfo struct {
	Stream
	Live *LiveStatus `json:"live"`
	// Units is the stream's switcher at every unit that reported it live.
	Units []UnitStatus `json:"units,omitempty"`
}

// StreamList is the body of GET /api/v1/streams, sorted by app then name.
type StreamList struct {
	Streams []StreamInfo `json:"streams"`
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}
