// Package lms is the Live Manage Service, the control plane of livefuse: the
// run-time collections, kept in etcd and mirrored in memory on every node so
// that a change applies everywhere without a restart, and the control API
// operators and livectl use.
//
// A [Collection] is one typed collection, one etcd key per item, followed
// by the one watch implementation of lms (an etcd leader required, a
// reload when the history it needs was compacted, bounded exponential
// backoff with jitter) and written with compare-and-swap on the item's
// revision (Update and UpdateAll retry a bounded number of times). The
// collections are the streams (the [Registry], which adds the stream rules
// to the writes), the transcode profiles ("profiles"), the CDN vendors
// ("cdn-vendors") and the manual CDN blacklist ("cdn-blacklist"); the
// packages that use them declare the small interface they consume
// (transcode.ProfileStore, cdnmix.VendorStore, cdnmix.BlacklistStore),
// which Collection satisfies.
//
// lms never imports the media packages. What it needs from a node (live
// status, kicking a publisher) comes through the LiveSource interface, and
// nodes follow registry changes through Registry.Subscribe.
//
// A typical node:
//
//	st, err := lms.OpenStore(ctx, cfg, log)     // embedded etcd or a cluster
//	reg := lms.NewRegistry(st, log)
//	reg.Subscribe(apply)                       // before Start: no change is missed
//	err = reg.Start(ctx)
//	err = reg.Seed(ctx, streamsFromConfigFile)
//	srv, err := lms.NewServer(cfg, reg, live, log, promReg)
//	err = srv.Start()
//	defer srv.Close(); defer reg.Close(); defer st.Close()
package lms

import (
	"errors"
	"time"

	"github.com/livefuse/livefuse/lms/api"
	"github.com/livefuse/livefuse/netguard"
)

// Stream is one registry entry; see api.Stream.
type Stream = api.Stream

// IPLists are a stream's address lists; see api.IPLists.
type IPLists = api.IPLists

// LiveStatus is a node's report on a stream on air; see api.LiveStatus.
type LiveStatus = api.LiveStatus

// Errors of the registry and of LiveSource.
var (
	// ErrNotFound: no such stream (or item of a collection).
	ErrNotFound = errors.New("not found")
	// ErrExists: Create found the stream (or item) already there.
	ErrExists = errors.New("already exists")
	// ErrConflict: concurrent writes to one record still collided after
	// the bounded retries (answered with 409; the client may retry).
	ErrConflict = errors.New("conflicting concurrent writes to the same record")
	// ErrInvalid wraps every validation error (answered with 400).
	ErrInvalid = api.ErrInvalid
	// ErrNotLive is what LiveSource.Kick returns for a stream that has no publisher.
	ErrNotLive = errors.New("stream is not live")
)

// EtcdConfig selects the store. With no Endpoints, lms runs an embedded etcd
// server with its data under Config.DataDir/etcd.
type EtcdConfig struct {
	Endpoints []string `yaml:"endpoints"`
	// Listen is the embedded server's client address (default
	// 127.0.0.1:0, a port the system picks). Set it so that other units
	// can use this unit's embedded etcd as their endpoint.
	Listen      string        `yaml:"listen"`
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// StartTimeout bounds the start of the embedded etcd (default 60 s):
	// past it serve exits with an error naming the data dir. A healthy
	// store starts in about a second; the default leaves room for a slow
	// disk replaying a long WAL.
	StartTimeout time.Duration `yaml:"start_timeout"`
}

// Config configures the control plane.
type Config struct {
	// DataDir holds the embedded etcd data and the generated API token.
	DataDir string     `yaml:"data_dir"`
	Etcd    EtcdConfig `yaml:"etcd"`
	// APIAddr is the control API listener.
	APIAddr string `yaml:"api_addr"`
	// API bounds the control API listener (timeouts, header size,
	// connection caps) and makes it HTTPS when api.tls has a certificate.
	API netguard.HTTPConfig `yaml:"api"`
	// APIToken is the bearer token of the control API. Empty: read
	// DataDir/api-token, or generate it there on first start.
	APIToken string `yaml:"api_token"`
	// KeyPrefix is prepended to every etcd key, so clusters can share an etcd.
	KeyPrefix string `yaml:"key_prefix"`
}

// DefaultConfig returns the defaults: embedded etcd, API on 127.0.0.1:9090.
// DataDir is left empty for the caller to fill (the node's data_dir).
func DefaultConfig() Config {
	return Config{
		Etcd:      EtcdConfig{DialTimeout: 5 * time.Second, StartTimeout: 60 * time.Second},
		APIAddr:   "127.0.0.1:9090",
		API:       netguard.APIHTTPDefaults(),
		KeyPrefix: "/livefuse/",
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Etcd.DialTimeout <= 0 {
		c.Etcd.DialTimeout = d.Etcd.DialTimeout
	}
	if c.Etcd.StartTimeout <= 0 {
		c.Etcd.StartTimeout = d.Etcd.StartTimeout
	}
	if c.APIAddr == "" {
		c.APIAddr = d.APIAddr
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = d.KeyPrefix
	}
	c.API = c.API.WithDefaults(d.API)
	return c
}
