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
	"fmt"
	"net"
	"net/url"
	"strings"
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

	// Member settings of the embedded etcd, for a cluster of embedded
	// members: one per unit and a witness (`livefuse witness`), so that
	// any one of the three may die and the other two keep quorum. Leave
	// InitialCluster empty for a single member (the default).
	//
	// Name is this member's name in InitialCluster (default "default";
	// required in a cluster).
	Name string `yaml:"name"`
	// PeerListen is the member's peer address (default 127.0.0.1:0 alone;
	// in a cluster a fixed host:port the other members reach).
	PeerListen string `yaml:"peer_listen"`
	// AdvertiseClient and AdvertisePeer are the URLs other members and
	// tools are told (default: http:// and the listen address).
	AdvertiseClient string `yaml:"advertise_client"`
	AdvertisePeer   string `yaml:"advertise_peer"`
	// InitialCluster lists every member, name=http://host:peerport,
	// comma-separated. It is read on the first start only: afterwards the
	// member's data dir holds the membership.
	InitialCluster string `yaml:"initial_cluster"`
	// ClusterToken tells clusters apart (default "livefuse").
	ClusterToken string `yaml:"cluster_token"`
	// ClusterState is "new" (default, every member starts together) or
	// "existing" (a member added to a running cluster with etcdctl member add).
	ClusterState string `yaml:"cluster_state"`
	// HeartbeatInterval and ElectionTimeout are etcd's raft timings
	// (default 100ms and 1s). A new leader is elected about one election
	// timeout after the leader dies: that is how long writes wait after
	// losing the leading member. Keep the election timeout above ten
	// round trips between members, the heartbeat near one.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	ElectionTimeout   time.Duration `yaml:"election_timeout"`
}

// Clustered reports whether the embedded member is one of a cluster.
func (c EtcdConfig) Clustered() bool { return c.InitialCluster != "" }

// Validate checks the embedded member settings (an external cluster
// through Endpoints needs none of them).
func (c EtcdConfig) Validate() error {
	if len(c.Endpoints) > 0 {
		if c.InitialCluster != "" {
			return errors.New("lms.etcd: endpoints (an external cluster) and initial_cluster (embedded members) exclude each other")
		}
		return nil
	}
	switch c.ClusterState {
	case "", "new", "existing":
	default:
		return fmt.Errorf("lms.etcd.cluster_state %q: want new or existing", c.ClusterState)
	}
	for key, addr := range map[string]string{"listen": c.Listen, "peer_listen": c.PeerListen} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("lms.etcd.%s %q: want host:port: %w", key, addr, err)
		}
	}
	for key, u := range map[string]string{"advertise_client": c.AdvertiseClient, "advertise_peer": c.AdvertisePeer} {
		if u == "" {
			continue
		}
		if _, err := parseHTTPURL(u); err != nil {
			return fmt.Errorf("lms.etcd.%s: %w", key, err)
		}
	}
	if c.HeartbeatInterval < 0 || c.ElectionTimeout < 0 {
		return errors.New("lms.etcd: heartbeat_interval and election_timeout must not be negative")
	}
	if c.HeartbeatInterval > 0 || c.ElectionTimeout > 0 {
		hb, el := c.HeartbeatInterval, c.ElectionTimeout
		if hb == 0 {
			hb = 100 * time.Millisecond
		}
		if el == 0 {
			el = time.Second
		}
		if hb < time.Millisecond || el < 5*hb || el > 50*time.Second {
			return fmt.Errorf("lms.etcd: election_timeout %s must be at least 5 times heartbeat_interval %s (which is at least 1ms) and at most 50s", el, hb)
		}
	}
	if !c.Clustered() {
		return nil
	}
	members, err := parseInitialCluster(c.InitialCluster)
	if err != nil {
		return fmt.Errorf("lms.etcd.initial_cluster: %w", err)
	}
	if c.Name == "" {
		return errors.New("lms.etcd.name: required with initial_cluster (this member's name in it)")
	}
	own, ok := members[c.Name]
	if !ok {
		return fmt.Errorf("lms.etcd.name %q is not a member of lms.etcd.initial_cluster", c.Name)
	}
	if c.PeerListen == "" || strings.HasSuffix(c.PeerListen, ":0") {
		return errors.New("lms.etcd.peer_listen: a fixed host:port is required with initial_cluster (the other members dial it)")
	}
	adv := c.AdvertisePeer
	if adv == "" {
		adv = "http://" + c.PeerListen
	}
	if adv != own {
		return fmt.Errorf("lms.etcd: this member's peer URL %s (advertise_peer, else peer_listen) differs from its entry %s=%s in initial_cluster", adv, c.Name, own)
	}
	return nil
}

// parseInitialCluster reads name=url,name=url; names are unique, URLs
// plain http://host:port.
func parseInitialCluster(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q: want name=http://host:port", part)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("member %q named twice", name)
		}
		if _, err := parseHTTPURL(u); err != nil {
			return nil, fmt.Errorf("member %s: %w", name, err)
		}
		out[name] = u
	}
	if len(out) > 7 {
		return nil, fmt.Errorf("%d members: at most 7", len(out))
	}
	return out, nil
}

// parseHTTPURL accepts http(s)://host:port with nothing else.
func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("%q: want http://host:port", s)
	}
	return u, nil
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
	// Node is this node in the node registry: its id and how it drains.
	Node NodeConfig `yaml:"node"`
	// Tokens are more bearer tokens, each with a name and a role
	// (viewer, operator, admin); api_token is the admin's.
	Tokens []APIToken `yaml:"tokens"`
	// AuditRetention keeps audit entries this long (default 30 days).
	AuditRetention time.Duration `yaml:"audit_retention"`
}

// DefaultConfig returns the defaults: embedded etcd, API on 127.0.0.1:9090.
// DataDir is left empty for the caller to fill (the node's data_dir).
func DefaultConfig() Config {
	return Config{
		Etcd:           EtcdConfig{DialTimeout: 5 * time.Second, StartTimeout: 60 * time.Second},
		Node:           NodeConfig{DrainTimeout: 60 * time.Second, ReportPeriod: 2 * time.Second},
		AuditRetention: 30 * 24 * time.Hour,
		APIAddr:        "127.0.0.1:9090",
		API:            netguard.APIHTTPDefaults(),
		KeyPrefix:      "/livefuse/",
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
	if c.AuditRetention <= 0 {
		c.AuditRetention = d.AuditRetention
	}
	c.API = c.API.WithDefaults(d.API)
	return c
}
