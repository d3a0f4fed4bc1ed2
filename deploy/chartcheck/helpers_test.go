package chartcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// repoRoot is the livefuse repository (this package is deploy/chartcheck).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// helmBin finds the pinned helm: $HELM, else helm in GOPATH/bin (where
// make chart-check installs it), else on PATH.
func helmBin(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Fatal("helm not found: make chart-check installs it (go install helm.sh/helm/v4/cmd/helm@v4.3.2)")
	return ""
}

func run(t testing.TB, dir string, env []string, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// splitDocs splits a multi-document YAML stream, dropping empty documents.
func splitDocs(t testing.TB, b []byte) [][]byte {
	t.Helper()
	dec := yamlv3.NewDecoder(bytes.NewReader(b))
	var docs [][]byte
	for {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("rendered YAML: %v", err)
		}
		if len(n.Content) == 0 {
			continue
		}
		out, err := yamlv3.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, out)
	}
}

// strictDecode converts YAML to JSON and decodes it into v, refusing
// unknown fields (a typo in a manifest fails here, not in the cluster).
func strictDecode(doc []byte, v any) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// keyPaths lists the map key paths of a YAML document ("lms.etcd.endpoints");
// list elements are not entered.
func keyPaths(prefix string, v any, out map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, val := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		out[p] = true
		keyPaths(p, val, out)
	}
}

var (
	livefuseOnce sync.Once
	livefuseBin  string
	livefuseErr  error
)

// livefuse builds the server binary once per test run (into a shared
// temporary directory, removed by TestMain).
func livefuse(t testing.TB) string {
	t.Helper()
	livefuseOnce.Do(func() {
		out := filepath.Join(buildDir, "livefuse")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/livefuse")
		cmd.Dir = repoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			livefuseErr = fmt.Errorf("go build ./cmd/livefuse: %v\n%s", err, b)
			return
		}
		livefuseBin = out
	})
	if livefuseErr != nil {
		t.Fatal(livefuseErr)
	}
	return livefuseBin
}

var buildDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "chartcheck-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

var (
	configKeysOnce sync.Once
	configKeys     map[string]bool
)

// knownConfigKeys are the key paths `livefuse config` prints (every key
// the server accepts, lists not entered).
func knownConfigKeys(t testing.TB) map[string]bool {
	t.Helper()
	bin := livefuse(t)
	configKeysOnce.Do(func() {
		out := run(t, "", nil, bin, "config")
		var v map[string]any
		if err := yaml.Unmarshal(out, &v); err != nil {
			t.Fatalf("livefuse config: %v", err)
		}
		configKeys = map[string]bool{}
		keyPaths("", v, configKeys)
	})
	return configKeys
}

// checkConfigKeys fails for every key of a livefuse config that the
// server would refuse as unknown.
func checkConfigKeys(t testing.TB, what string, cfg map[string]any) {
	t.Helper()
	known := knownConfigKeys(t)
	got := map[string]bool{}
	keyPaths("", cfg, got)
	var unknown []string
	for k := range got {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("%s: keys livefuse does not know: %v", what, unknown)
	}
}

var placeholderRE = regexp.MustCompile(`\$\{LIVEFUSE_[A-Z0-9_]+\}`)

// renderConfig runs deploy/docker/render-config.sh (the image's
// livefuse-render-config) on template with env, and decodes the result.
func renderConfig(t testing.TB, template []byte, env map[string]string) map[string]any {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "livefuse.yaml.tmpl")
	out := filepath.Join(dir, "livefuse.yaml")
	if err := os.WriteFile(in, template, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", filepath.Join(repoRoot(t), "deploy", "docker", "render-config.sh"), in, out)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render-config: %v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("rendered config mode %v, want 0600 (it holds secrets)", st.Mode().Perm())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if placeholderRE.Match(b) {
		t.Errorf("rendered config still holds placeholders:\n%s", b)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("rendered config: %v\n%s", err, b)
	}
	return v
}

// lookup walks a decoded YAML map by dotted path.
func lookup(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// freePort picks a free loopback TCP port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeUDPPair picks an even loopback UDP port whose next port is free too
// (RTSP's RTP and RTCP ports).
func freeUDPPair(t testing.TB) int {
	t.Helper()
	for range 50 {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		a.Close()
		p &^= 1
		ok := true
		for _, q := range []int{p, p + 1} {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: q})
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free pair of UDP ports")
	return 0
}

// metricNames starts the real server on loopback ports and returns the
// metric names it exports on /metrics.
func metricNames(t testing.TB) []string {
	t.Helper()
	bin := livefuse(t)
	dir := t.TempDir()
	api := freePort(t)
	rtp := freeUDPPair(t)
	cfg := fmt.Sprintf(`data_dir: %[1]s
rtmp: {addr: "127.0.0.1:%[2]d"}
rtsp: {addr: "127.0.0.1:%[3]d", udp_rtp_addr: "127.0.0.1:%[7]d", udp_rtcp_addr: "127.0.0.1:%[8]d"}
http: {addr: "127.0.0.1:%[4]d"}
lms: {api_addr: "127.0.0.1:%[5]d", etcd: {listen: "127.0.0.1:%[6]d"}}
`, dir, freePort(t), freePort(t), freePort(t), api, freePort(t), rtp, rtp+1)
	path := filepath.Join(dir, "livefuse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", path)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", api))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				var names []string
				for _, line := range strings.Split(string(b), "\n") {
					if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
						names = append(names, strings.Fields(name)[0])
					}
				}
				return names
			}
		}
		select {
		case <-exited:
			t.Fatalf("livefuse exited before serving /metrics; log:\n%s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("livefuse /metrics did not answer within 60 s; log:\n%s", logs.String())
	return nil
}

func hasAll(have []string, want ...string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// helmCmd runs helm in the chart directory and returns its combined
// output and error (for runs expected to fail).
func helmCmd(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin(t), args...)
	cmd.Dir = chartDir(t)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
