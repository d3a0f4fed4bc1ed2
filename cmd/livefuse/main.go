// Command livefuse is the livefuse server. `livefuse serve` runs every role
// (ingest, origin, control plane) in one process with embedded defaults;
// this package only wires the packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"gopkg.in/yaml.v3"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: livefuse <command> [flags]

commands:
  serve [--config FILE] [--unit NAME]
                          run the server (every role in one process)
  witness [--config FILE] run only an embedded etcd member (lms.etcd.initial_cluster):
                          the third member that lets two units keep quorum
  config                  print the default configuration as YAML
  cdnmix simulate --scenario FILE
                          replay a CDN scenario through the allocator (CSV + SVG)
  version                 print the version
`)
}

var version = "dev" // set with -ldflags "-X main.version=…"

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve", "witness":
		fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
		fs.SetOutput(stderr)
		cfgPath := fs.String("config", "", "YAML config file (default: built-in defaults)")
		unit := fs.String("unit", "", "this process's origin unit (default: the config's unit, or a)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		cfg, err := loadConfig(*cfgPath)
		if err == nil && *unit != "" {
			cfg.Unit = *unit
			err = cfg.validateUnits()
		}
		if err != nil {
			fmt.Fprintln(stderr, "livefuse:", err)
			return 1
		}
		log := newLogger(stderr, cfg.LogLevel)
		ctx, life, stop := drainSignals()
		defer stop()
		if path := os.Getenv("LIVEFUSE_CPUPROFILE"); path != "" {
			stopProfile, err := startCPUProfile(path)
			if err != nil {
				fmt.Fprintln(stderr, "livefuse:", err)
				return 1
			}
			defer stopProfile()
		}
		if path := os.Getenv("LIVEFUSE_HEAPPROFILE"); path != "" {
			defer heapProfileOnSignal(path, log)()
		}
		if args[0] == "witness" {
			err = witness(ctx, cfg, log, stdout)
		} else {
			err = serve(ctx, life, cfg, log, stdout)
		}
		switch {
		case errors.Is(err, context.Canceled):
			log.Info("livefuse stopped during start-up by a signal", "err", err)
		case err != nil:
			log.Error("livefuse stopped", "err", err)
			return 1
		}
		return 0
	case "config":
		b, err := yaml.Marshal(defaultConfig())
		if err != nil {
			fmt.Fprintln(stderr, "livefuse:", err)
			return 1
		}
		stdout.Write(b)
		return 0
	case "cdnmix":
		return runCDNMix(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "livefuse", version)
		return 0
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "livefuse: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// heapProfileOnSignal writes a heap profile to path each time the process
// gets SIGUSR1, until the returned function is called
// (LIVEFUSE_HEAPPROFILE=path livefuse serve: opt-in, for measuring what a
// load keeps in memory; read it with go tool pprof).
func heapProfileOnSignal(path string, log *slog.Logger) func() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-sig:
			}
			runtime.GC()
			f, err := os.Create(path)
			if err == nil {
				err = pprof.WriteHeapProfile(f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			log.Info("heap profile written", "path", path, "err", err, "heap_inuse", ms.HeapInuse,
				"stack_inuse", ms.StackInuse, "sys", ms.Sys, "goroutines", runtime.NumGoroutine())
		}
	}()
	return func() { signal.Stop(sig); close(done) }
}

// startCPUProfile writes a CPU profile to path until the returned function
// is called (LIVEFUSE_CPUPROFILE=path livefuse serve: opt-in, for
// measuring; read it with go tool pprof).
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
