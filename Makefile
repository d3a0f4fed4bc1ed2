# livefuse — make run | make test | make build | make bench | make lint
SHELL := /bin/bash
GO ?= go
BIN := bin
GOTEST_TIMEOUT ?= 15m
E2E_TIMEOUT ?= 25m
E2E_FLAGS ?=
# e2e tests that assert no timing run E2E_PARALLEL at a time after the
# serial ones (which run alone); LIVEFUSE_E2E_SERIAL=1 runs all one by one.
E2E_PARALLEL ?= 3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps edge-deps test-deps minio web-assets drill-player build run run-dual run-config test test-unit test-e2e bench bench-hostile drill lint fuzz clean plans-timing drill-llhls drill-console

all: build

# deps installs what the server needs when it is missing: ffmpeg (slate,
# transcoding). test-deps adds what the tests drive for real: nginx (CDN
# edge), Debian's Chromium and node/npm with the pinned players (browser
# tests), GStreamer and rtmpdump (independent RTMP/RTSP clients,
# e2e/interop_test.go), VLC (low-latency HLS, e2e/llhls_test.go); minio is
# built separately (below).
deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { echo "installing: ffmpeg"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }
	@ffmpeg -hide_banner -version | head -1

edge-deps:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "installing: nginx-light"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light >/dev/null; }

PROMTOOL_VERSION := 2.42.0
PROMTOOL_DEB := 2.42.0+ds-5+deb12u1

GST_PACKAGES := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp

# VLC plays the low-latency HLS in e2e/llhls_test.go (as nobody: VLC
# refuses to run as root).
VLC_PACKAGES := vlc-bin vlc-plugin-base

test-deps: deps edge-deps
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	for p in $(GST_PACKAGES) $(VLC_PACKAGES) rtmpdump iproute2; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# promtool (make prom-check) from Debian's prometheus package, pinned.
	@promtool --version 2>/dev/null | grep -q 'version $(PROMTOOL_VERSION)' || { echo "installing: prometheus $(PROMTOOL_DEB)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus=$(PROMTOOL_DEB) >/dev/null; }
	@# hls.js, mpegts.js and playwright-core at the versions web/package-lock.json pins (web/node_modules is gitignored).
	@[ web/node_modules/.package-lock.json -nt web/package-lock.json ] || (cd web && npm ci --no-audit --no-fund --loglevel=error)

# web-assets copies the pinned player libraries (hls.js, mpegts.js, at the
# versions web/package-lock.json pins) from web/node_modules into web/vendor,
# which go build embeds: the node serves them at /player/vendor/ with no
# internet. The copies are gitignored; without node/npm the build goes on and
# the node answers 503 for them, naming this target.
web-assets:
	@if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then \
	  if command -v npm >/dev/null; then (cd web && npm ci --no-audit --no-fund --loglevel=error); \
	  else echo "web-assets: npm not found (make test-deps installs it): the player libraries are not embedded"; exit 0; fi; \
	fi; \
	install -m 0644 web/node_modules/hls.js/dist/hls.min.js web/vendor/hls.min.js && \
	install -m 0644 web/node_modules/mpegts.js/dist/mpegts.js web/vendor/mpegts.js

# drill-player: the player SDK's drills in Chromium, PLAYER_TRIALS times
# each: the nginx vendor under the page stopped (connections closed), then
# hung (SIGSTOP: open, silent); unit a (then b) killed behind the edge under
# HTTP-FLV (resume); a plan change under HLS Content Steering (hls.js moving
# pathway; 302 dispatch moving new players). Gap median and worst,
# screenshots in e2e/artefacts (gitignored). About 6 minutes for 10 trials
# plus the e2e build.
PLAYER_TRIALS ?= 10
drill-player: test-deps web-assets
	set -o pipefail; PLAYER_TRIALS=$(PLAYER_TRIALS) LIVEFUSE_ARTEFACTS=$(CURDIR)/e2e/artefacts \
	  $(GO) test -count=1 -run 'TestPlayerSDK$$/vendor_loss|TestPlayerSDKHungVendor|TestPlayerSDKUnitLost|TestSteering$$' -v ./e2e/ | grep -E 'trial|over|screenshot|^(---|ok|FAIL)'

# drill-llhls: low-latency HLS glass-to-glass latency in hls.js (Chromium),
# directly and through the nginx edge, measured for LLHLS_SECONDS each
# (make test measures 12 s), with the players and the two-unit checks of
# e2e/llhls_test.go. About 3 minutes with the e2e build.
LLHLS_SECONDS ?= 60
drill-llhls: test-deps
	set -o pipefail; LLHLS_SECONDS=$(LLHLS_SECONDS) $(GO) test -count=1 -v -timeout 10m -run 'TestLLHLS$$' ./e2e/ | grep -E 'llhls_test|^(---|ok|FAIL)'

# drill-console: the war room console at 200 streams × 2 feeds (a light
# synthetic RTMP publisher, Chromium on the console): event-to-card latency
# p50/p95 and the server's CPU with and without the console open;
# screenshots in e2e/artefacts. About 2 minutes plus the e2e build.
drill-console: test-deps web-assets
	set -o pipefail; LIVEFUSE_CONSOLE_LOAD=1 LIVEFUSE_ARTEFACTS=$(CURDIR)/e2e/artefacts \
	  $(GO) test -count=1 -timeout 10m -run 'TestConsoleLoad' -v ./e2e/ | grep -E 'console_load|screenshot|^(---|ok|FAIL)'

build: web-assets
	$(GO) build -o $(BIN)/livefuse ./cmd/livefuse
	$(GO) build -o $(BIN)/livectl ./cmd/livectl

# run starts livefuse with the embedded defaults (data in ./livefuse-data).
run: deps build
	$(BIN)/livefuse serve $(if $(CONFIG),--config $(CONFIG),)

# run-dual starts units a and b (and an nginx edge) on one machine: deploy/run-dual.sh.
run-dual: deps edge-deps build
	deploy/run-dual.sh

# lint: gofmt, then golangci-lint at a pinned version (.golangci.yml: a
# small set that finds bugs: go vet, staticcheck, error wrapping and
# comparisons, unclosed bodies, ineffective assignments, unused code,
# duplicated blocks). The linter is built once into the Go tools directory,
# one directory per version, so a version change installs the new one.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(shell $(GO) env GOPATH)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
$(GOLANGCI_LINT):
	@echo "installing golangci-lint $(GOLANGCI_LINT_VERSION)"
	GOBIN=$(dir $@) GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: $(GOLANGCI_LINT)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI_LINT) run ./...

# test runs everything: lint, every package's unit tests (and fuzz seeds,
# and the test tools' own tests) under the race detector (about 4 minutes
# on 2 cores), the end-to-end tests with real ffmpeg, then a brief fuzzing
# of every target.
# minio is the real S3 store the recording tests start (built once, about
# 2 minutes, into the Go bin directory).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
minio:
	@bin="$$($(GO) env GOPATH)/bin/minio"; [ -x "$$bin" ] || { echo "installing minio $(MINIO_VERSION)"; \
	  GOFLAGS= $(GO) install github.com/minio/minio@$(MINIO_VERSION); }

# The unit tests mostly wait (a third of their wall time is CPU), so the
# brief fuzz of every target runs beside them, its output shown after; the
# end-to-end tests, some of which measure gaps, run afterwards alone.
UNIT_P ?= 4
test: test-deps web-assets minio lint
	@fuzzlog=$$(mktemp); \
	( $(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_BRIEF) >$$fuzzlog 2>&1; echo $$? >$$fuzzlog.rc ) & \
	echo "$(GO) test -count=1 -race -p $(UNIT_P) -timeout $(GOTEST_TIMEOUT) (every package but e2e)"; \
	$(GO) test -count=1 -race -p $(UNIT_P) -timeout $(GOTEST_TIMEOUT) $$($(GO) list ./... | grep -v '/e2e$$'); urc=$$?; \
	wait; frc=$$(cat $$fuzzlog.rc 2>/dev/null || echo 1); \
	echo "== brief fuzz of every target (ran beside the unit tests): exit $$frc"; cat $$fuzzlog; \
	rm -f $$fuzzlog $$fuzzlog.rc; [ $$urc -eq 0 ] && [ $$frc -eq 0 ]
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) -parallel $(E2E_PARALLEL) $(E2E_FLAGS) ./e2e
	$(MAKE) --no-print-directory chart-check
	$(MAKE) --no-print-directory prom-check

# plans-timing: the emergency plans' confirm-to-verified figures (e2e
# TestPlans with three runs of every plan; medians on the FIGURE lines).
# About 45 s plus the e2e build.
plans-timing:
	set -o pipefail; LIVEFUSE_PLAN_RUNS=3 $(GO) test -count=1 -v -timeout 10m -run 'TestPlans$$' ./e2e/ | grep -E 'FIGURE|verified|^(---|ok|FAIL)'

# drill: the multi-host drills (e2e/drill_test.go): units a and b, the etcd
# witness and the nginx edge on four hosts made of network namespaces (root
# and iproute2 needed; every namespace and link is removed afterwards).
# Host a lost, host a partitioned from etcd, unit a drained; and the failover
# drills with 5 trials each (make test runs 2). About 5 minutes with the build.
drill: test-deps
	LIVEFUSE_DRILL=1 LIVEFUSE_DRILL_TRIALS=5 $(GO) test -count=1 -v -timeout 20m -run 'TestDrill|TestFailoverDrills' ./e2e/

# prom-check checks the Prometheus alert rules (promtool check rules) and
# runs their unit tests (promtool test rules); the Grafana dashboard's
# queries are checked against the registered metric names by a Go test
# (cmd/livefuse TestDeployMetricNames, in the unit tests). A second.
.PHONY: prom-check
prom-check:
	promtool check rules deploy/prometheus/livefuse-rules.yml
	promtool test rules deploy/prometheus/livefuse-rules_test.yml

# chart-check checks deploy/ offline (no container engine, no cluster):
# helm lint and helm template of deploy/helm/livefuse with the pinned helm
# (installed once into the Go bin directory, about 3 minutes), every
# rendered manifest decoded strictly into the Kubernetes API types, the
# compose file and the Dockerfile parsed by their own tools. deploy/chartcheck
# is a module of its own, so the server's module does not pull Kubernetes.
HELM_VERSION := v4.3.2
.PHONY: chart-check
chart-check:
	@bin="$$($(GO) env GOPATH)/bin/helm"; $(GO) version -m "$$bin" 2>/dev/null | grep -qE '^\s+mod\s+helm.sh/helm/v4\s+$(HELM_VERSION)\s' || { \
	  echo "installing helm $(HELM_VERSION)"; GOFLAGS= $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION); }
	cd deploy/chartcheck && $(GO) test -count=1 -timeout 10m ./...

# bench: Stream fan-out micro-benchmarks, then the player load test
# (N HTTP-FLV and N RTMP players of one 2.5 Mbit/s stream).
# SBS=DIR (a writable copy of ../shared/bench, set up with its setup.sh):
# then also the side-by-side rounds against the anchors (sbs.sh r1 r2 r3,
# about 35 min) and their tables (sbs_report.py). Our targets (e2e/sbs:
# livefuse with the RTMP per-address cap lifted, and the flv_coalesce
# 100ms and 200ms points of the CPU-versus-delay curve) are installed into
# DIR/targets first.
BENCH_N ?= 100 500 1000
SBS ?=
SBS_TARGETS ?= livefuse srs srs_realtime mediamtx nginx livefuse_nocoalesce livefuse_c100 livefuse_c200
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./origin/ ./av/
	@for n in $(BENCH_N); do \
	  echo "== $$n HTTP-FLV players"; $(GO) run ./e2e/loadtool -server $(BIN)/livefuse -flv $$n -rtmp 0 -duration 30s; \
	  echo "== $$n RTMP players";    $(GO) run ./e2e/loadtool -server $(BIN)/livefuse -flv 0 -rtmp $$n -duration 30s; \
	done
	@if [ -n "$(SBS)" ]; then \
	  out=$$(cd "$(SBS)" && pwd)/results/sbs-$$(date -u +%Y%m%d); \
	  cp e2e/sbs/*.sh "$(SBS)/targets/" && \
	  (cd "$(SBS)" && LF_BIN=$(CURDIR)/$(BIN)/livefuse SBS_OUT=$$out TARGETS="$(SBS_TARGETS)" ./sbs.sh r1 r2 r3 && python3 sbs_report.py $$out) && \
	  python3 e2e/sbs/curve.py $$out; \
	fi

# bench-hostile: what hostile connections cost the node (memory per idle
# RTMP, idle HTTP and pre-authorization-held RTMP connection; CPU and a
# canary's largest gap with N held connections open), medians of RUNS.
HOSTILE_N ?= 1000
HOSTILE_RUNS ?= 3
bench-hostile: deps build
	$(GO) run ./e2e/hostiletool -server $(BIN)/livefuse -n $(HOSTILE_N) -runs $(HOSTILE_RUNS)

# drill-mixer runs the cdnmix fleet drill (e2e TestMixerFleet: 3 dispatch
# nodes, 2 stage-one workers, kfake, nginx vendors) with a wave of
# MIXER_FLEET_VIEWERS [300], writing mixer_fleet.csv and .svg to
# MIXER_FLEET_OUT [/tmp/livefuse-drill-mixer], then TestMixerFleetMeasure
# (dispatches/s against a bare net/http handler, stall beacons to every
# plan moving, with 1, 2 and 3 nodes). About 5 min with the e2e build.
drill-mixer: deps
	MIXER_FLEET_MEASURE=1 MIXER_FLEET_VIEWERS=$${MIXER_FLEET_VIEWERS:-300} MIXER_FLEET_OUT=$${MIXER_FLEET_OUT:-/tmp/livefuse-drill-mixer} \
	  $(GO) test -count=1 -v -timeout 15m -run 'TestMixerFleet' ./e2e/

# fuzz runs every fuzz target for FUZZTIME each. make test runs their seeds
# with the unit tests and then fuzzes each target for FUZZTIME_BRIEF, so new
# inputs reach every network parser on every CI run (the load tool's own
# parsers, a test client's, are left to make fuzz).
FUZZTIME ?= 20s
# A target whose seed corpus takes longer to replay than FUZZTIME on a busy
# machine ends with "context deadline exceeded" before fuzzing anything; it
# is run again with 10s (a real failure names its failing input and is not).
FUZZTIME_BRIEF ?= 1s
FUZZ_PKGS ?= $$($(GO) list ./... | grep -v /e2e)
fuzz:
	@for pkg in $(FUZZ_PKGS); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); rc=$$?; echo "$$out" | tail -3; \
	    if [ $$rc -ne 0 ]; then \
	      if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input'; then \
	        echo "   seed replay outlasted $(FUZZTIME): again with 10s"; \
	        $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 10s $$pkg || exit 1; \
	      else echo "$$out"; exit 1; fi; \
	    fi; \
	  done; \
	done

clean:
	rm -rf $(BIN)
