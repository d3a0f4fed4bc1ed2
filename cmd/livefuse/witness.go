package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/netguard"
)

// witness runs only an embedded etcd member (lms.etcd: name, listen,
// peer_listen, initial_cluster): the third member that lets two units keep
// quorum when either dies. It answers /healthz, /readyz (the member has a
// quorum) and /metrics on lms.api_addr, and nothing else.
func witness(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	lcfg := cfg.LMS
	if lcfg.DataDir == "" {
		lcfg.DataDir = cfg.DataDir
	}
	if !lcfg.Etcd.Clustered() {
		return fmt.Errorf("witness: lms.etcd.initial_cluster is empty: a witness is one member of a cluster of embedded members")
	}
	store, err := lms.OpenStore(ctx, lcfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := store.Ready(rctx); err != nil {
			http.Error(w, "store not ready: no quorum", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
	ln, err := netguard.NewHTTPListener(lcfg.APIAddr, "witness", lcfg.API, mux, log)
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	go func() {
		if err := ln.Serve(); err != nil {
			log.Error("witness listener stopped", "err", err)
		}
	}()
	fmt.Fprintf(stdout, "livefuse %s witness is up: etcd member %s; health on http://%s\n", version, lcfg.Etcd.Name, ln.Addr())
	log.Info("livefuse witness serving", "member", lcfg.Etcd.Name, "api", ln.Addr())
	<-ctx.Done()
	log.Info("witness shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown)
	defer cancel()
	return ln.Server.Shutdown(sctx)
}
