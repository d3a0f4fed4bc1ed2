package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes body (with data_dir set to a fresh directory) and
// returns its path and the data directory.
func writeConfig(t *testing.T, body string) (path, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	path = filepath.Join(dir, "livefuse.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+dataDir+"\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, dataDir
}

// Every section is validated at load, and each refusal names its key path
// once and the line that sets it.
func TestLoadConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string // after the data_dir line (line 1)
		want []string
	}{
		{"origin hls_variant", "origin:\n  hls_variant: webm\n",
			[]string{`:3: origin.hls_variant "webm": want mpegts`}},
		{"origin segment count", "origin:\n  hls_variant: lowlatency\n  hls_segment_count: 4\n",
			[]string{`:4: origin.hls_segment_count 4: low-latency HLS wants at least 7`}},
		{"log level", "log_level: loud\n", []string{`:2: log_level "loud"`}},
		{"stream name", "streams:\n  - {app: live, name: ok}\n  - {app: live, name: \"bad name\"}\n",
			[]string{`:4: streams[1].name: `}},
		{"stream without name", "streams:\n  - {app: live}\n", []string{`:3: streams[0].name is required`}},
		{"profile", "transcode:\n  profiles:\n    - name: p\n      renditions:\n        - {name: a, width: 641, height: 360, video_kbps: 500}\n",
			[]string{`:4: transcode.profiles[0]: `, "width 641 is odd"}},
		{"vendor", "cdnmix:\n  vendors:\n    - {name: a, flv_base: \"ftp://x\"}\n",
			[]string{`:3: cdnmix.vendors: vendor "a"`, "scheme must be http or https"}},
		{"trusted proxies", "cdnmix:\n  trusted_proxies: [not-an-ip]\n", []string{`:3: cdnmix.trusted_proxies: `}},
		{"recording", "recording:\n  segment_duration: 1ms\n", []string{`:3: recording.segment_duration 1ms`}},
		{"auth key", "auth_key:\n  max_ttl: 1s\n", []string{`:3: auth_key.max_ttl 1s`}},
		{"several at once", "log_level: loud\norigin:\n  hls_variant: webm\n",
			[]string{`:2: log_level`, `:4: origin.hls_variant`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := writeConfig(t, tc.body)
			_, err := loadConfig(path)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, path+w) && !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if first := tc.want[0]; !strings.Contains(msg, path+first) {
				t.Errorf("error %q does not start a refusal with %q", msg, path+first)
			}
			for _, section := range []string{"origin", "transcode", "recording", "cdnmix", "config"} {
				if strings.Contains(msg, section+": "+section+":") || strings.Contains(msg, section+"."+section) {
					t.Errorf("error %q repeats %q", msg, section)
				}
			}
		})
	}
}

func TestLoadConfigAccepts(t *testing.T) {
	path, _ := writeConfig(t, `origin:
  hls_variant: fmp4
streams:
  - {app: live, name: demo, publish_token: "tok-123456"}
  - {name: other}
transcode:
  profiles:
    - name: low
      renditions:
        - {name: low, width: 320, height: 180, video_kbps: 300}
cdnmix:
  vendors:
    - {name: a, flv_base: "http://cdn-a.example.com", commit_mbps: 1, ceiling_mbps: 2}
`)
	if _, err := loadConfig(path); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(""); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
}

// A refused config stops `livefuse serve` before it opens the store: the
// data directory (where the embedded etcd would live) is not created.
func TestServeRefusesBeforeStart(t *testing.T) {
	path, dataDir := writeConfig(t, "origin:\n  hls_variant: webm\n")
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"serve", "--config", path}, &stdout, &stderr); rc != 1 {
		t.Fatalf("exit code %d, want 1; stderr %s", rc, stderr.String())
	}
	if !strings.Contains(stderr.String(), path+`:3: origin.hls_variant "webm"`) {
		t.Errorf("stderr %q", stderr.String())
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data_dir exists after a refused config (err %v): something started", err)
	}
}

func TestLocate(t *testing.T) {
	for _, tc := range []struct {
		section, msg       string
		wantPath, wantRest string
	}{
		{"origin", "origin: hls_variant \"x\": want y", "origin.hls_variant", " \"x\": want y"},
		{"", "config: auth_key.max_ttl 1s: want", "auth_key.max_ttl", " 1s: want"},
		{"cdnmix", "stats_interval: must not be negative", "cdnmix.stats_interval", ": must not be negative"},
		{"http", "write_timeout must not be negative", "http.write_timeout", " must not be negative"},
		{"streams[0]", "name is required", "streams[0].name", " is required"},
		{"recording", "recording: data_dir, or spool_dir and local.dir, must be set", "recording", ": data_dir, or spool_dir and local.dir, must be set"},
		{"", "config: something odd", "", "something odd"},
	} {
		path, _, rest := locate(nil, tc.section, tc.msg)
		if path != tc.wantPath || (rest != tc.wantRest && tc.wantRest != "") {
			t.Errorf("locate(%q, %q) = %q, %q; want %q, %q", tc.section, tc.msg, path, rest, tc.wantPath, tc.wantRest)
		}
	}
}
