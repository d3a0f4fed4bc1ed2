package chartcheck

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"sigs.k8s.io/yaml"
)

// TestDockerfile parses deploy/Dockerfile with BuildKit's own parser and
// linter (the checks `docker build --check` runs) and checks what the
// image promises: a Go build stage on the module's Go version, a Debian
// bookworm-slim runtime with ffmpeg, a non-root user, the two binaries,
// files copied from the build context that exist, the ports the built-in
// config binds exposed, and a health check on the API. No container
// engine runs here, so the image itself is not built.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ast, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for _, w := range ast.Warnings {
		t.Errorf("parser warning: %s", w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		lints = append(lints, rule+": "+msg)
	}})
	stages, metaArgs, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		t.Fatalf("instructions: %v", err)
	}
	for _, l := range lints {
		t.Errorf("lint: %s", l)
	}

	args := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				args[kv.Key] = *kv.Value
			}
		}
	}
	expand := func(s string) string {
		return regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(s, func(m string) string { return args[m[2:len(m)-1]] })
	}

	// The build stage's Go is the one go.mod names (or newer).
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	names := map[string]instructions.Stage{}
	for _, s := range stages {
		names[s.Name] = s
	}
	build, ok := names["build"]
	if !ok {
		t.Fatal("no stage named build")
	}
	if base := expand(build.BaseName); !strings.HasPrefix(base, "golang:"+string(goLine[1])) {
		t.Errorf("build stage FROM %s: want golang:%s.x (go.mod)", base, goLine[1])
	}

	final := stages[len(stages)-1]
	if base := expand(final.BaseName); base != "debian:bookworm-slim" {
		t.Errorf("runtime stage FROM %s, want debian:bookworm-slim", base)
	}
	var (
		user        string
		exposed     []string
		health      []string
		entrypoint  []string
		cmd         []string
		copiedFiles []string
		runs        string
	)
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.HealthCheckCommand:
			health = c.Health.Test
		case *instructions.EntrypointCommand:
			entrypoint = c.CmdLine
		case *instructions.CmdCommand:
			cmd = c.CmdLine
		case *instructions.RunCommand:
			runs += strings.Join(c.CmdLine, " ") + "\n"
		case *instructions.CopyCommand:
			for _, p := range c.SourcePaths {
				if c.From == "" {
					copiedFiles = append(copiedFiles, p)
				} else if _, ok := names[c.From]; !ok {
					t.Errorf("COPY --from=%s: no such stage", c.From)
				}
			}
		}
	}
	// Every COPY from the build context, in every stage, names a file of
	// the repository.
	for _, s := range stages {
		for _, c := range s.Commands {
			if c, ok := c.(*instructions.CopyCommand); ok && c.From == "" {
				for _, p := range c.SourcePaths {
					if p == "." {
						continue
					}
					if _, err := os.Stat(filepath.Join(root, p)); err != nil {
						t.Errorf("stage %s: COPY %s: not in the repository", s.Name, p)
					}
				}
			}
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:") {
		t.Errorf("runtime USER %q: want a non-root user", user)
	}
	if !strings.Contains(runs, "ffmpeg") {
		t.Error("runtime stage does not install ffmpeg")
	}
	if len(entrypoint) == 0 || entrypoint[0] != "/usr/local/bin/livefuse" {
		t.Errorf("ENTRYPOINT %v, want /usr/local/bin/livefuse", entrypoint)
	}
	if len(cmd) < 3 || cmd[0] != "serve" || cmd[1] != "--config" {
		t.Fatalf("CMD %v, want serve --config FILE", cmd)
	}
	if !slices.Contains(copiedFiles, "deploy/docker/livefuse.yaml") || !slices.Contains(copiedFiles, "deploy/docker/render-config.sh") {
		t.Errorf("the runtime stage does not copy the built-in config and render-config: %v", copiedFiles)
	}
	buildRuns := ""
	for _, c := range build.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			buildRuns += strings.Join(r.CmdLine, " ")
		}
	}
	for _, pkg := range []string{"./cmd/livefuse", "./cmd/livectl"} {
		if !strings.Contains(buildRuns, pkg) {
			t.Errorf("build stage does not build %s", pkg)
		}
	}

	// The built-in config: every key known to livefuse, and its listeners
	// on the exposed ports; the health check asks the API's port.
	b, err := os.ReadFile(filepath.Join(root, "deploy", "docker", "livefuse.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	checkConfigKeys(t, "deploy/docker/livefuse.yaml", cfg)
	for key, proto := range map[string]string{"rtmp.addr": "tcp", "rtsp.addr": "tcp", "rtsp.udp_rtp_addr": "udp", "rtsp.udp_rtcp_addr": "udp", "http.addr": "tcp", "lms.api_addr": "tcp"} {
		addr, _ := lookup(cfg, key).(string)
		_, port, ok := strings.Cut(addr, ":")
		if !ok || !strings.HasPrefix(addr, ":") {
			t.Errorf("built-in config %s %q: want :PORT on every interface of the container", key, addr)
			continue
		}
		if !slices.Contains(exposed, port+"/"+proto) {
			t.Errorf("built-in config %s %s: port %s/%s not in EXPOSE %v", key, addr, port, proto, exposed)
		}
	}
	_, apiPort, _ := strings.Cut(lookup(cfg, "lms.api_addr").(string), ":")
	hc := strings.Join(health, " ")
	if len(health) < 2 || health[0] != "CMD" || !strings.Contains(hc, "127.0.0.1:"+apiPort+"/healthz") && !strings.Contains(hc, "127.0.0.1:"+apiPort+"/readyz") {
		t.Errorf("HEALTHCHECK %v: want a CMD probing /healthz or /readyz on the API port %s", health, apiPort)
	}
	if !strings.Contains(runs, "curl") && strings.Contains(hc, "curl") {
		t.Error("HEALTHCHECK uses curl, which the runtime stage does not install")
	}
}
