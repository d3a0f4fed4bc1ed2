package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestLivectlWaits: record off on a live stream waits for its recorder
// and prints what it shows; plans usage mistakes exit 2, and plans
// commands against an API without plans say so.
func TestLivectlWaits(t *testing.T) {
	url := newAPI(t)
	env := map[string]string{"LIVEFUSE_API": url, "LIVEFUSE_TOKEN": token}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name    string
		args    []string
		want    int
		wantOut string
		wantErr string
	}{
		{"create cam", []string{"streams", "create", "cam"}, 0, `"name": "cam"`, ""},
		{"record off on air", []string{"streams", "record", "cam", "off"}, 0, "recorder: off", ""},
		{"plans without command", []string{"plans"}, 2, "", "plans needs a command"},
		{"plans arm without kind", []string{"plans", "arm"}, 2, "", "plans arm needs one KIND"},
		{"plans confirm without token", []string{"plans", "confirm", "id"}, 2, "", "plans confirm needs ID and TOKEN"},
		{"plans unknown", []string{"plans", "frob"}, 2, "", `unknown plans command "frob"`},
		{"plans on an API without them", []string{"plans", "list"}, 1, "", "no such API route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			got := run(tc.args, getenv, &out, &errb)
			if got != tc.want || !strings.Contains(out.String(), tc.wantOut) || !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", got, out.String(), errb.String(), tc.want, tc.wantOut, tc.wantErr)
			}
		})
	}
}
