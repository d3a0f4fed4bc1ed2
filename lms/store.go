package lms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Store is the connection to etcd: an embedded single-member server started
// by OpenStore, or an external cluster.
type Store struct {
	cli    *clientv3.Client
	etcd   *embed.Etcd // nil with an external cluster
	prefix string
	log    *slog.Logger
}

// OpenStore connects to the etcd cluster in cfg.Etcd.Endpoints or, with no
// endpoints, starts an embedded etcd under cfg.DataDir/etcd listening on
// 127.0.0.1 with ports picked by the system (so several nodes or tests on one
// machine never clash). It returns once the store answers a read.
func OpenStore(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{prefix: cfg.KeyPrefix, log: log}
	endpoints := cfg.Etcd.Endpoints
	if len(endpoints) == 0 {
		if cfg.DataDir == "" {
			return nil, errors.New("lms store: data_dir is required for the embedded etcd")
		}
		if err := cfg.Etcd.Validate(); err != nil {
			return nil, fmt.Errorf("lms store: %w", err)
		}
		e, err := startEmbedded(ctx, filepath.Join(cfg.DataDir, "etcd"), cfg.Etcd, log)
		if err != nil {
			return nil, err
		}
		s.etcd = e
		endpoints = []string{e.Clients[0].Addr().String()}
		log.Info("lms: embedded etcd started", "endpoint", endpoints[0], "dir", e.Config().Dir,
			"member", e.Config().Name, "cluster", cfg.Etcd.Clustered())
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.Etcd.DialTimeout,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
	})
	if err != nil {
		s.closeEmbedded()
		return nil, fmt.Errorf("lms store: connect %v: %w", endpoints, err)
	}
	s.cli = cli
	pctx, cancel := context.WithTimeout(ctx, cfg.Etcd.DialTimeout)
	defer cancel()
	if err := s.Ready(pctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("lms store: %v: %w", endpoints, err)
	}
	return s, nil
}

// startEmbedded checks the files in dir, then starts the embedded etcd
// and waits up to timeout for it to be ready. Every error names dir and
// says what to do; ctx ends the wait at once (SIGTERM during start-up).
func startEmbedded(ctx context.Context, dir string, ec EtcdConfig, log *slog.Logger) (*embed.Etcd, error) {
	timeout := ec.StartTimeout
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// The check may wait for the db's lock (another process): it runs
	// apart so that the timeout and ctx bound it too.
	checked := make(chan error, 1)
	go func() { checked <- checkEmbeddedDir(dir, timeout) }()
	select {
	case err := <-checked:
		if err != nil {
			return nil, fmt.Errorf("lms store: %w; %s", err, repairHint(dir, err))
		}
	case <-deadline.C:
		return nil, startTimeoutError(dir, timeout, ec.Clustered())
	case <-ctx.Done():
		return nil, fmt.Errorf("lms store: embedded etcd in %s: %w", dir, ctx.Err())
	}
	cfg, err := memberConfig(dir, ec)
	if err != nil {
		return nil, fmt.Errorf("lms store: %w", err)
	}
	// StartEtcd itself opens the files and may block (a held lock): it
	// runs apart so that the timeout and ctx bound the whole start.
	res := make(chan started, 1)
	go func() {
		e, err := embed.StartEtcd(cfg)
		res <- started{e, err}
	}()
	var e *embed.Etcd
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("lms store: start embedded etcd in %s: %w; %s", dir, r.err, repairHint(dir, r.err))
		}
		e = r.e
	case <-deadline.C:
		go closeStarted(res, log)
		return nil, startTimeoutError(dir, timeout, ec.Clustered())
	case <-ctx.Done():
		go closeStarted(res, log)
		return nil, fmt.Errorf("lms store: embedded etcd in %s: %w", dir, ctx.Err())
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		abandon(e, log)
		return nil, fmt.Errorf("lms store: embedded etcd in %s: %w; %s", dir, err, repairHint(dir, err))
	case <-deadline.C:
		abandon(e, log)
		return nil, startTimeoutError(dir, timeout, ec.Clustered())
	case <-ctx.Done():
		abandon(e, log)
		return nil, fmt.Errorf("lms store: embedded etcd in %s: %w", dir, ctx.Err())
	}
}

// memberConfig is the embedded etcd's configuration: a single member on
// loopback with system-picked ports, or one member of a cluster of
// embedded members (EtcdConfig.InitialCluster).
func memberConfig(dir string, ec EtcdConfig) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if ec.Name != "" {
		cfg.Name = ec.Name
	}
	listen := ec.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	peer := ec.PeerListen
	if peer == "" {
		peer = "127.0.0.1:0"
	}
	// Port 0 on loopback: the system picks free ports. A single member
	// never dials its own peer URL, so an advertised :0 is harmless.
	lc := url.URL{Scheme: "http", Host: listen}
	lp := url.URL{Scheme: "http", Host: peer}
	ac, ap := lc, lp
	if ec.AdvertiseClient != "" {
		u, err := parseHTTPURL(ec.AdvertiseClient)
		if err != nil {
			return nil, fmt.Errorf("lms.etcd.advertise_client: %w", err)
		}
		ac = *u
	}
	if ec.AdvertisePeer != "" {
		u, err := parseHTTPURL(ec.AdvertisePeer)
		if err != nil {
			return nil, fmt.Errorf("lms.etcd.advertise_peer: %w", err)
		}
		ap = *u
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{lc}, []url.URL{ac}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{lp}, []url.URL{ap}
	cfg.InitialCluster = cfg.Name + "=" + ap.String()
	if ec.Clustered() {
		cfg.InitialCluster = ec.InitialCluster
		cfg.InitialClusterToken = "livefuse"
		if ec.ClusterToken != "" {
			cfg.InitialClusterToken = ec.ClusterToken
		}
		if ec.ClusterState == "existing" {
			cfg.ClusterState = embed.ClusterStateFlagExisting
		}
	}
	if ec.HeartbeatInterval > 0 {
		cfg.TickMs = uint(ec.HeartbeatInterval.Milliseconds())
	}
	if ec.ElectionTimeout > 0 {
		cfg.ElectionMs = uint(ec.ElectionTimeout.Milliseconds())
	}
	// The registry is small and rewritten rarely: keep one hour of history.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	return cfg, nil
}

// embedStopWait bounds how long a failed start waits for etcd to stop: an
// etcd that never became ready may never stop either.
const embedStopWait = 3 * time.Second

// abandon stops an embedded etcd that failed to start, waiting at most
// embedStopWait.
func abandon(e *embed.Etcd, log *slog.Logger) {
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(embedStopWait):
		log.Warn("lms: embedded etcd did not stop; leaving it to the process exit", "dir", e.Config().Dir)
	}
}

// started is what embed.StartEtcd returned.
type started struct {
	e   *embed.Etcd
	err error
}

// closeStarted stops the etcd a StartEtcd still under way when start-up
// was given up returns, once it returns.
func closeStarted(res <-chan started, log *slog.Logger) {
	if r := <-res; r.err == nil {
		abandon(r.e, log)
	}
}

func startTimeoutError(dir string, timeout time.Duration, clustered bool) error {
	if clustered {
		return fmt.Errorf("lms store: embedded etcd member in %s not ready after %s (lms.etcd.start_timeout): "+
			"a member is ready once a quorum of lms.etcd.initial_cluster is up and reachable on its peer URLs; "+
			"start the other members (units and witness) or check the network between them", dir, timeout)
	}
	return fmt.Errorf("lms store: embedded etcd in %s not ready after %s (lms.etcd.start_timeout): "+
		"its files may be damaged or held by another process; check that no other livefuse uses this data_dir, "+
		"then restore %s from a backup or move it aside (streams declared in the config file are seeded again, "+
		"streams, keys and settings made through the API are lost)", dir, timeout, dir)
}

// repairHint says what an operator can do about a store error in dir.
func repairHint(dir string, err error) string {
	if errors.Is(err, ErrInUse) {
		return "stop the other livefuse that uses this data_dir, or give this one its own data_dir"
	}
	return fmt.Sprintf("the data_dir's etcd store %s cannot be opened: restore it from a backup, or move it aside "+
		"to start with an empty registry (streams declared in the config file are seeded again; streams, "+
		"content keys and settings made through the API are lost)", dir)
}

// Client returns the etcd client (shared; do not close it).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix every lms key starts with.
func (s *Store) Prefix() string { return s.prefix }

// Ready reports whether etcd answers a linearizable read (a quorum is up).
func (s *Store) Ready(ctx context.Context) error {
	_, err := s.cli.Get(ctx, s.prefix+"ready", clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("etcd not ready: %w", err)
	}
	return nil
}

// Close closes the client and stops the embedded server, if any.
func (s *Store) Close() error {
	var err error
	if s.cli != nil {
		err = s.cli.Close()
	}
	s.closeEmbedded()
	return err
}

func (s *Store) closeEmbedded() {
	if s.etcd == nil {
		return
	}
	done := make(chan struct{})
	go func() { s.etcd.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.log.Warn("lms: embedded etcd did not stop within 10 s")
	}
	s.etcd = nil
}
