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
		e, err := startEmbedded(ctx, filepath.Join(cfg.DataDir, "etcd"), cfg.Etcd.Listen)
		if err != nil {
			return nil, err
		}
		s.etcd = e
		endpoints = []string{e.Clients[0].Addr().String()}
		log.Info("lms: embedded etcd started", "endpoint", endpoints[0], "dir", e.Config().Dir)
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

func startEmbedded(ctx context.Context, dir, listen string) (*embed.Etcd, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Port 0 on loopback: the system picks free ports. The single member
	// never dials its own peer URL, so the advertised :0 is harmless.
	u := url.URL{Scheme: "http", Host: listen}
	p := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{p}, []url.URL{p}
	cfg.InitialCluster = cfg.Name + "=" + p.String()
	// The registry is small and rewritten rarely: keep one hour of history.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("lms store: start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("lms store: embedded etcd in %s: %w", dir, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("lms store: embedded etcd in %s: %w", dir, ctx.Err())
	}
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
