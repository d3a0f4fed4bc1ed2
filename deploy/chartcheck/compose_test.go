package chartcheck

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeEnv stands for deploy/compose/.env (init-secrets.sh), with values
// that need quoting in YAML.
var composeEnv = map[string]string{
	"LIVEFUSE_API_TOKEN":     "compose-api-token",
	"LIVEFUSE_RELAY_SECRET":  `relay-"secret"`,
	"LIVEFUSE_PUBLISH_TOKEN": "publish'token",
	"LIVEFUSE_MASTER_KEY":    strings.Repeat("ab", 32),
	"LIVEFUSE_URL_SECRET":    `url\secret`,
	"LIVEFUSE_S3_ACCESS_KEY": "access",
	"LIVEFUSE_S3_SECRET_KEY": "secret-key-0123",
}

func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "deploy", "compose")
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")},
		cli.WithWorkingDirectory(dir), cli.WithEnv(envList), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return opts.LoadProject(ctx)
}

// TestCompose loads deploy/compose/compose.yaml with compose-go (the
// loader `docker compose config` uses; no engine runs here) and checks
// what a laptop user gets: both units, the edge, etcd, MinIO and Kafka;
// every port on 127.0.0.1 only; every mounted file present; the units'
// configs filled from the environment and known to livefuse, pointing at
// the shared etcd; a stop grace period that covers the drain.
func TestCompose(t *testing.T) {
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatalf("compose file: %v", err)
	}
	for _, name := range []string{"unit-a", "unit-b", "edge", "etcd", "minio", "kafka"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	root := repoRoot(t)
	published := map[string]string{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %s published on %q, want 127.0.0.1", name, port.Published, port.HostIP)
			}
			key := port.Published + "/" + port.Protocol
			if other, dup := published[key]; dup {
				t.Errorf("host port %s published by %s and %s", key, other, name)
			}
			published[key] = name
		}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: mounts %s, which does not exist", name, v.Source)
			}
			if !v.ReadOnly {
				t.Errorf("%s: bind mount %s is writable", name, v.Source)
			}
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build %s: %v", name, s.Build.Dockerfile, err)
			}
			if filepath.Clean(s.Build.Context) != root {
				t.Errorf("%s: build context %s, want the repository root", name, s.Build.Context)
			}
		}
	}
	for _, unit := range []string{"a", "b"} {
		s := p.Services["unit-"+unit]
		var tmpl string
		for _, v := range s.Volumes {
			if v.Target == "/etc/livefuse/livefuse.yaml.tmpl" {
				tmpl = v.Source
			}
		}
		if tmpl == "" {
			t.Errorf("unit-%s: no config template mounted", unit)
			continue
		}
		if !slices.Contains(s.Entrypoint, "livefuse-render-config /etc/livefuse/livefuse.yaml.tmpl /run/livefuse/livefuse.yaml && exec livefuse serve --config /run/livefuse/livefuse.yaml") {
			t.Errorf("unit-%s: entrypoint %v does not render the config and exec livefuse", unit, s.Entrypoint)
		}
		b, err := os.ReadFile(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		cfg := renderConfig(t, b, env)
		checkConfigKeys(t, "compose unit "+unit, cfg)
		if cfg["unit"] != unit || lookup(cfg, "lms.api_token") != composeEnv["LIVEFUSE_API_TOKEN"] || cfg["relay_secret"] != composeEnv["LIVEFUSE_RELAY_SECRET"] {
			t.Errorf("unit-%s: rendered config does not carry its unit name and the secrets", unit)
		}
		if eps, _ := lookup(cfg, "lms.etcd.endpoints").([]any); len(eps) != 1 || eps[0] != "etcd:2379" {
			t.Errorf("unit-%s: etcd endpoints %v, want the etcd service", unit, eps)
		}
		drain, _ := time.ParseDuration(cfg["drain_timeout"].(string))
		shutdown, _ := time.ParseDuration(cfg["shutdown_timeout"].(string))
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < drain+shutdown {
			t.Errorf("unit-%s: stop_grace_period %v < drain_timeout %s + shutdown_timeout %s", unit, s.StopGracePeriod, drain, shutdown)
		}
	}
	if got := p.Services["minio"].Environment["MINIO_ROOT_PASSWORD"]; got == nil || *got != composeEnv["LIVEFUSE_S3_SECRET_KEY"] {
		t.Error("minio's root password is not the units' S3 secret key")
	}
}

// TestComposeNeedsSecrets: without the secrets (no .env), the compose file
// refuses to load and says what to run, instead of starting units with
// empty tokens.
func TestComposeNeedsSecrets(t *testing.T) {
	_, err := loadCompose(t, map[string]string{})
	if err == nil || !strings.Contains(err.Error(), "init-secrets.sh") {
		t.Fatalf("compose without secrets: %v; want an error naming init-secrets.sh", err)
	}
}
