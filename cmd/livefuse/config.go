package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/netguard"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/recording"
	"github.com/livefuse/livefuse/transcode"
)

// HTTPConfig is the public media listener (HTTP-FLV, HLS, later dispatch).
type HTTPConfig struct {
	Addr string `yaml:"addr"`
	// PublicHost is the host name printed in the start-up banner.
	PublicHost string `yaml:"public_host"`
	// HTTPConfig bounds the listener: read_header_timeout, read_timeout
	// (request bodies), idle_timeout, max_header_bytes, max_conns,
	// max_conns_per_ip, and tls (HTTPS when a certificate is set).
	netguard.HTTPConfig `yaml:",inline"`
	// Access holds the listener's play lists (play_allow, play_deny).
	Access netguard.AccessConfig `yaml:"access"`
}

// StreamConfig declares a stream in the config file. Streams declared here are
// put in the registry when they are not there yet; the registry (changed by
// the control API) wins afterwards, so API changes survive a restart.
type StreamConfig struct {
	App          string `yaml:"app"`
	Name         string `yaml:"name"`
	PublishToken string `yaml:"publish_token"`
	PlayKey      string `yaml:"play_key"`
	Enabled      *bool  `yaml:"enabled"`
	Source       string `yaml:"source"`
	Profile      string `yaml:"profile"`
	Record       bool   `yaml:"record"`
	Encryption   bool   `yaml:"encryption"`
	// The stream's IP lists (publish_allow, publish_deny, play_allow,
	// play_deny), as in the control API.
	lms.IPLists `yaml:",inline"`
}

// Config is the whole livefuse.yaml.
type Config struct {
	DataDir    string            `yaml:"data_dir"`
	LogLevel   string            `yaml:"log_level"`
	RTMP       ingest.RTMPConfig `yaml:"rtmp"`
	RTSP       ingest.RTSPConfig `yaml:"rtsp"`
	RTMPS      RTMPSConfig       `yaml:"rtmps"`
	HTTP       HTTPConfig        `yaml:"http"`
	Origin     origin.Config     `yaml:"origin"`
	Transcode  transcode.Config  `yaml:"transcode"`
	Recording  recording.Config  `yaml:"recording"`
	Bus        BusConfig         `yaml:"bus"`
	CDNMix     cdnmix.Config     `yaml:"cdnmix"`
	LMS        lms.Config        `yaml:"lms"`
	Encryption EncryptionConfig  `yaml:"encryption"`
	Streams    []StreamConfig    `yaml:"streams"`
	Shutdown   time.Duration     `yaml:"shutdown_timeout"`

	// DrainTimeout bounds a drain (the first SIGTERM or Ctrl-C): how long
	// players may stay before the node stops anyway (0: stop at once).
	DrainTimeout time.Duration `yaml:"drain_timeout"`

	// Unit is this process's origin unit (default "a"; --unit overrides).
	Unit string `yaml:"unit"`
	// Units lists every unit of the deployment with its relay address;
	// accepted feeds are relayed to every other unit.
	Units []ingest.Unit `yaml:"units"`
	// RelaySecret authenticates relays between units (a secret: never logged).
	RelaySecret string `yaml:"relay_secret"`

	// AuthKey configures the checking of type-A play URLs (?auth_key=).
	AuthKey authkey.TypeAConfig `yaml:"auth_key"`
}

func defaultConfig() Config {
	return Config{
		DataDir:    "./livefuse-data",
		LogLevel:   "info",
		RTMP:       ingest.DefaultRTMPConfig(),
		RTSP:       ingest.DefaultRTSPConfig(),
		HTTP:       HTTPConfig{Addr: ":8080", HTTPConfig: netguard.MediaHTTPDefaults()},
		RTMPS:      RTMPSConfig{Addr: ":1936"},
		Origin:     origin.DefaultConfig(),
		Transcode:  transcode.DefaultConfig(),
		Recording:  recording.DefaultConfig(),
		CDNMix:     cdnmix.DefaultConfig(),
		LMS:        lms.DefaultConfig(),
		Encryption: defaultEncryptionConfig(),
		AuthKey:    authkey.DefaultTypeAConfig(),
		Shutdown:   5 * time.Second,

		DrainTimeout: 30 * time.Second,
	}
}

// loadConfig reads path over the defaults ("" = defaults only). Unknown keys
// and type errors are refused with the line number, so a typo never silently
// falls back to a default.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, cfg.validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := decodeConfig(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, cfg.validate()
}

func decodeConfig(b []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("config: data_dir must not be empty")
	}
	if c.LMS.DataDir == "" {
		c.LMS.DataDir = c.DataDir
	}
	if err := c.Encryption.validate(); err != nil {
		return err
	}
	if err := c.Encryption.checkKeyAccess(c.Streams); err != nil {
		return err
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("config: drain_timeout %s: want 0 (no drain) or more", c.DrainTimeout)
	}
	if c.AuthKey.MaxTTL < time.Minute {
		return fmt.Errorf("config: auth_key.max_ttl %s: want at least 1m", c.AuthKey.MaxTTL)
	}
	c.HTTP.HTTPConfig = c.HTTP.HTTPConfig.WithDefaults(netguard.MediaHTTPDefaults())
	if err := c.validateAccess(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	for i, s := range c.Streams {
		if s.Name == "" {
			return fmt.Errorf("config: streams[%d]: name is required", i)
		}
	}
	return c.validateUnits()
}
