package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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
	Plans      lms.PlansConfig   `yaml:"plans"`
	Alerts     lms.AlertsConfig  `yaml:"alerts"`
	Console    ConsoleConfig     `yaml:"console"`
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
		Plans:      lms.DefaultPlansConfig(),
		Encryption: defaultEncryptionConfig(),
		Alerts:     lms.DefaultAlertsConfig(),
		Console:    defaultConsoleConfig(),
		AuthKey:    authkey.DefaultTypeAConfig(),
		Shutdown:   5 * time.Second,

		DrainTimeout: 30 * time.Second,
	}
}

// loadConfig reads path over the defaults ("" = defaults only) and
// validates every section, before anything starts. Unknown keys and type
// errors are refused with the line number, so a typo never silently falls
// back to a default; a bad value is refused naming its key path and, when
// the file sets it, its line.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, configErrors("", nil, cfg.validate())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := decodeConfig(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, configErrors(path, &root, cfg.validate())
}

func decodeConfig(b []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// fieldError is a refused config value: section is the key path of the
// section that refused it ("" for the top level, "streams[2]").
type fieldError struct {
	section string
	err     error
}

// validate fills derived defaults and checks every section as the
// packages will when they start; it returns every refusal.
func (c *Config) validate() []fieldError {
	var errs []fieldError
	add := func(section string, err error) {
		if err != nil {
			errs = append(errs, fieldError{section, err})
		}
	}
	if c.DataDir == "" {
		add("", errors.New("config: data_dir must not be empty"))
	}
	if c.LMS.DataDir == "" {
		c.LMS.DataDir = c.DataDir
	}
	add("", c.Encryption.validate())
	add("", c.Encryption.checkHLSVariant(c.Origin.HLSVariant, c.Streams))
	add("", c.Encryption.checkKeyAccess(c.Streams))
	add("", c.LMS.Etcd.Validate())
	add("", c.LMS.Node.Validate())
	add("", lms.ValidateTokens(c.LMS.Tokens))
	add("", c.Plans.Validate())
	if c.DrainTimeout < 0 {
		add("", fmt.Errorf("config: drain_timeout %s: want 0 (no drain) or more", c.DrainTimeout))
	}
	if c.AuthKey.MaxTTL < time.Minute {
		add("", fmt.Errorf("config: auth_key.max_ttl %s: want at least 1m", c.AuthKey.MaxTTL))
	}
	c.HTTP.HTTPConfig = c.HTTP.HTTPConfig.WithDefaults(netguard.MediaHTTPDefaults())
	add("http", c.HTTP.HTTPConfig.Validate())
	if c.RTMPS.TLS.Enabled() {
		add("rtmps", c.RTMPS.TLS.Validate())
	}
	add("", c.validateAccess())
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("", fmt.Errorf("config: log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	add("origin", c.Origin.Validate())
	add("transcode", c.Transcode.Validate())
	rc := c.Recording
	rc.DataDir = c.DataDir
	add("recording", rc.Validate())
	add("cdnmix", c.CDNMix.Validate())
	add("alerts", c.Alerts.Validate())
	add("", c.Console.validate())
	for i, s := range seedStreams(c.Streams) {
		section := fmt.Sprintf("streams[%d]", i)
		if s.Name == "" {
			add(section, errors.New("name is required"))
			continue
		}
		if s.PublishToken == "" {
			s.PublishToken = "generated-at-seed" // an empty token is generated
		}
		add(section, s.Validate())
	}
	add("", c.validateUnits())
	return errs
}

// configErrors joins errs into one error, each naming its key path once
// and, when root (the parsed file) has the key, its line in file.
func configErrors(file string, root *yaml.Node, errs []fieldError) error {
	if len(errs) == 0 {
		return nil
	}
	where := "config"
	if file != "" {
		where += " " + file
	}
	var out []error
	for _, fe := range errs {
		path, line, msg := locate(root, fe.section, fe.err.Error())
		at := where
		if line > 0 {
			at = fmt.Sprintf("%s:%d", where, line)
		}
		out = append(out, fmt.Errorf("%s: %s%s", at, path, msg))
	}
	return errors.Join(out...)
}

// locate works out the key path of a refusal from its section and its
// message (which may repeat the section, and usually starts with the key
// at fault), and the line of the deepest key of that path in root. It
// returns the path, the line (0: not in the file) and the rest of the
// message.
func locate(root *yaml.Node, section, msg string) (path string, line int, rest string) {
	for trimmed := true; trimmed; {
		trimmed = false
		for _, p := range []string{"config: ", section + ": ", lms.ErrInvalid.Error() + ": "} {
			if p != ": " && strings.HasPrefix(msg, p) {
				msg, trimmed = msg[len(p):], true
			}
		}
	}
	path, rest = section, ": "+msg
	if key := leadingKey(msg); key != "" {
		path, rest = joinKey(section, key), msg[len(key):]
	}
	if path == "" {
		return "", 0, msg
	}
	// The line of the longest prefix of path the file has.
	for p := path; p != "" && root != nil; p = parentKey(p) {
		if n := lookupKey(root, p); n != nil {
			return path, n.Line, rest
		}
	}
	return path, 0, rest
}

// leadingKey returns the key path a message starts with ("hls_variant",
// "auth_key.max_ttl", "profiles[1]"), if any: lower-case words with '_',
// '.' and indexes, followed by a space or a colon.
func leadingKey(msg string) string {
	i := 0
	for i < len(msg) {
		c := msg[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '[' || c == ']' {
			i++
			continue
		}
		break
	}
	if i == 0 || i == len(msg) || (msg[i] != ' ' && msg[i] != ':') || !strings.ContainsAny(msg[:i], "_.[") &&
		!knownWord(msg[:i]) {
		return ""
	}
	return msg[:i]
}

// knownWord reports whether w is a key without '_' that messages start with.
func knownWord(w string) bool {
	switch w {
	case "name", "source", "profile", "vendors", "geo", "unit", "units", "workers", "profiles", "app":
		return true
	}
	return false
}

func joinKey(section, key string) string {
	if section == "" {
		return key
	}
	return section + "." + key
}

// parentKey drops the last element of a key path ("a.b[2]" → "a.b").
func parentKey(p string) string {
	if strings.HasSuffix(p, "]") {
		return p[:strings.LastIndexByte(p, '[')]
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// lookupKey returns the key node of path in a parsed YAML document, or nil.
func lookupKey(root *yaml.Node, path string) *yaml.Node {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var key *yaml.Node
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			v, err := strconv.Atoi(part[i+1 : len(part)-1])
			if err != nil {
				return nil
			}
			name, idx = part[:i], v
		}
		if name != "" {
			if key, n = mappingValue(n, name); n == nil {
				return nil
			}
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return nil
			}
			n = n.Content[idx]
			key = n
		}
	}
	return key
}

// mappingValue returns the key and value nodes of name in mapping n.
func mappingValue(n *yaml.Node, name string) (key, value *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}
