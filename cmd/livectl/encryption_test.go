package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestStreamsEncryption turns encryption on and off through the real
// control API and reads the flag back.
func TestStreamsEncryption(t *testing.T) {
	url := newAPI(t)
	env := map[string]string{"LIVEFUSE_API": url, "LIVEFUSE_TOKEN": token}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		args    []string
		code    int
		out     string
		errText string
	}{
		{[]string{"streams", "create", "plain"}, 0, `"encryption": false`, ""},
		{[]string{"streams", "encryption", "plain", "on"}, 1, "", "encryption needs a play_key"},
		{[]string{"streams", "create", "ev", "--play-key", "pk"}, 0, `"encryption": false`, ""},
		{[]string{"streams", "encryption", "ev", "on"}, 0, "live/ev: encryption on", ""},
		{[]string{"streams", "get", "ev"}, 0, `"encryption": true`, ""},
		{[]string{"streams", "encryption", "live/ev", "off"}, 0, "live/ev: encryption off", ""},
		{[]string{"streams", "get", "ev"}, 0, `"encryption": false`, ""},
		{[]string{"streams", "encryption", "ev", "maybe"}, 2, "", "on or off"},
		{[]string{"streams", "encryption", "nope", "on"}, 1, "", "not found"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, getenv, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.errText) {
			t.Errorf("%v: exit %d\nstdout %s\nstderr %s", tc.args, code, stdout.String(), stderr.String())
		}
	}
}
