package recording

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/livefuse/livefuse/av"
)

// Sink kinds accepted in Config.Sink.
const (
	SinkLocal = "local"
	SinkS3    = "s3"
)

// Config tunes recording. Every field has a default (DefaultConfig); a zero
// field is replaced by its default in New.
type Config struct {
	// SegmentDuration is the target segment length: a segment ends at the
	// first keyframe after it.
	SegmentDuration time.Duration `yaml:"segment_duration"`
	// SessionGap is how long a publisher may be away and still continue
	// the same recording session (with a discontinuity).
	SessionGap time.Duration `yaml:"session_gap"`
	// Sink is "local" (a directory, the default) or "s3".
	Sink  string      `yaml:"sink"`
	Local LocalConfig `yaml:"local"`
	S3    S3Config    `yaml:"s3"`
	// SpoolDir holds segments until the sink confirmed them (default
	// DataDir/recording-spool).
	SpoolDir string `yaml:"spool_dir"`
	// SpoolMaxBytes bounds the spool; when it is full the oldest live
	// session's recording is stopped (the stream itself goes on).
	SpoolMaxBytes int64 `yaml:"spool_max_bytes"`
	// Uploaders is the number of concurrent uploads.
	Uploaders int `yaml:"uploaders"`
	// RetryMin and RetryMax bound the backoff between upload attempts.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// RetentionDays deletes sessions older than this many days from the
	// sink (0: keep forever).
	RetentionDays int `yaml:"retention_days"`
	// URLExpiry is the lifetime of presigned and node-signed playback URLs.
	URLExpiry time.Duration `yaml:"url_expiry"`
	// PublicURL is the base of node-served playback URLs, such as
	// "http://host:8080"; the wiring fills it from the media listener.
	PublicURL string `yaml:"public_url"`
	// Units, when not empty, names the origin units that record (the
	// others only list and serve recordings); empty means every unit
	// records, each copy under its own session ids.
	Units []string `yaml:"units"`
	// Renditions also records the renditions (app/NAME_<rendition>) of
	// every recorded stream, each as a stream of its own.
	Renditions bool `yaml:"renditions"`
	// URLSecret signs node-served playback URLs; empty means a random key
	// per process (URLs then end with a restart).
	URLSecret string `yaml:"url_secret"`

	// DataDir is the node's data directory (set by the wiring).
	DataDir string `yaml:"-"`
	// Unit, when set, ends every session id ("20261201T100000Z-a"): each
	// origin unit of a deployment records on its own, and their copies
	// must not share object keys. The wiring sets it when there are
	// several units.
	Unit string `yaml:"-"`
}

// LocalConfig is the local directory sink.
type LocalConfig struct {
	// Dir receives recordings (default DataDir/recordings).
	Dir string `yaml:"dir"`
}

// S3Config is the S3 (or MinIO) sink. Credentials left empty are read from
// the usual AWS environment variables (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; also the MINIO_ ones).
type S3Config struct {
	// Endpoint is host[:port], without scheme.
	Endpoint     string `yaml:"endpoint"`
	Bucket       string `yaml:"bucket"`
	Region       string `yaml:"region"`
	AccessKey    string `yaml:"access_key"`
	SecretKey    string `yaml:"secret_key"`
	SessionToken string `yaml:"session_token"`
	// TLS turns https on.
	TLS bool `yaml:"tls"`
	// CAFile is a PEM file of extra CA certificates to trust (a private
	// CA in front of MinIO); the system roots are trusted too.
	CAFile string `yaml:"ca_file"`
	// Prefix is put before APP/NAME/SESSION in object keys.
	Prefix string `yaml:"prefix"`
	// PartSize is the multipart part size; larger objects go up in parts.
	PartSize int64 `yaml:"part_size"`
	// CacheControl of segments (immutable) and of live playlists.
	SegmentCacheControl  string `yaml:"segment_cache_control"`
	PlaylistCacheControl string `yaml:"playlist_cache_control"`
	// Timeout bounds one upload attempt.
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		SegmentDuration: 6 * time.Second,
		SessionGap:      30 * time.Second,
		Sink:            SinkLocal,
		SpoolMaxBytes:   2 << 30,
		Uploaders:       8,
		RetryMin:        500 * time.Millisecond,
		RetryMax:        10 * time.Second,
		URLExpiry:       6 * time.Hour,
		S3: S3Config{
			PartSize:             16 << 20,
			SegmentCacheControl:  "public, max-age=31536000, immutable",
			PlaylistCacheControl: "no-cache",
			Timeout:              2 * time.Minute,
		},
	}
}

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.SegmentDuration, d.SegmentDuration)
	setDur(&c.SessionGap, d.SessionGap)
	setDur(&c.RetryMin, d.RetryMin)
	setDur(&c.RetryMax, d.RetryMax)
	setDur(&c.URLExpiry, d.URLExpiry)
	setDur(&c.S3.Timeout, d.S3.Timeout)
	if c.Sink == "" {
		c.Sink = d.Sink
	}
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = d.SpoolMaxBytes
	}
	if c.Uploaders == 0 {
		c.Uploaders = d.Uploaders
	}
	if c.S3.PartSize == 0 {
		c.S3.PartSize = d.S3.PartSize
	}
	if c.S3.SegmentCacheControl == "" {
		c.S3.SegmentCacheControl = d.S3.SegmentCacheControl
	}
	if c.S3.PlaylistCacheControl == "" {
		c.S3.PlaylistCacheControl = d.S3.PlaylistCacheControl
	}
	if c.DataDir == "" && (c.SpoolDir == "" || (c.Sink == SinkLocal && c.Local.Dir == "")) {
		return c, errors.New("recording: data_dir, or spool_dir and local.dir, must be set")
	}
	if c.SpoolDir == "" {
		c.SpoolDir = filepath.Join(c.DataDir, "recording-spool")
	}
	if c.Local.Dir == "" {
		c.Local.Dir = filepath.Join(c.DataDir, "recordings")
	}
	if c.Unit != "" && !av.ValidName(c.Unit) {
		return c, fmt.Errorf("recording: unit %q: want letters, digits, '.', '_' and '-'", c.Unit)
	}
	switch {
	case c.SegmentDuration < 100*time.Millisecond:
		return c, fmt.Errorf("recording: segment_duration %v is too short", c.SegmentDuration)
	case c.SessionGap < 0:
		return c, fmt.Errorf("recording: session_gap %v is negative", c.SessionGap)
	case c.SpoolMaxBytes < 0:
		return c, fmt.Errorf("recording: spool_max_bytes %d is negative", c.SpoolMaxBytes)
	case c.Uploaders < 1 || c.Uploaders > 256:
		return c, fmt.Errorf("recording: uploaders %d: want 1–256", c.Uploaders)
	case c.RetryMax < c.RetryMin:
		return c, fmt.Errorf("recording: retry_max %v is below retry_min %v", c.RetryMax, c.RetryMin)
	case c.RetentionDays < 0:
		return c, fmt.Errorf("recording: retention_days %d is negative", c.RetentionDays)
	}
	switch c.Sink {
	case SinkLocal:
	case SinkS3:
		if c.S3.Endpoint == "" {
			return c, errors.New("recording: s3.endpoint is required with sink s3")
		}
		if c.S3.Bucket == "" {
			return c, errors.New("recording: s3.bucket is required with sink s3")
		}
		if c.S3.PartSize < 5<<20 {
			return c, fmt.Errorf("recording: s3.part_size %d is below the S3 minimum of 5 MiB", c.S3.PartSize)
		}
	default:
		return c, fmt.Errorf("recording: sink %q: want local or s3", c.Sink)
	}
	return c, nil
}

// Validate checks c as New does, so that a bad config is refused before
// anything starts.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}
