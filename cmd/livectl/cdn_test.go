package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// cdnRequest is what the fake control API saw.
type cdnRequest struct {
	method, uri, auth string
	body              map[string]any // nil without a body
}

// fakeCDNAPI records each request and answers with the status and body
// set for it.
type fakeCDNAPI struct {
	mu     sync.Mutex
	got    []cdnRequest
	status int
	answer string
}

func (f *fakeCDNAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	req := cdnRequest{method: r.Method, uri: r.URL.RequestURI(), auth: r.Header.Get("Authorization")}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &req.body); err != nil {
			req.body = map[string]any{"<not JSON>": string(b)}
		}
	}
	f.mu.Lock()
	f.got = append(f.got, req)
	status, answer := f.status, f.answer
	f.mu.Unlock()
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, answer)
}

func TestCDN(t *testing.T) {
	fake := &fakeCDNAPI{}
	ts := httptest.NewServer(fake)
	defer ts.Close()
	env := map[string]string{"LIVEFUSE_API": ts.URL, "LIVEFUSE_TOKEN": token}
	getenv := func(k string) string { return env[k] }

	for _, tc := range []struct {
		name   string
		args   []string
		status int    // the fake API's answer
		answer string // the fake API's body
		// The request expected; method "" means none is sent.
		method, uri string
		body        map[string]any
		code        int
		out, errOut []string // substrings of stdout and stderr
	}{
		{name: "vendors", args: []string{"cdn", "vendors"}, status: 200,
			answer: `{"version":7,"vendors":[{"name":"a","key_set":true}]}`,
			method: "GET", uri: "/api/v1/cdn/vendors",
			out: []string{"{\n  \"version\": 7,\n  \"vendors\": [\n    {\n      \"name\": \"a\",\n      \"key_set\": true"}},
		{name: "vendor", args: []string{"cdn", "vendor", "cdn b"}, status: 200, answer: `{"name":"cdn b"}`,
			method: "GET", uri: "/api/v1/cdn/vendors/cdn%20b", out: []string{`"name": "cdn b"`}},
		{name: "vendor missing", args: []string{"cdn", "vendor", "x"}, status: 404, answer: `{"error":"vendor \"x\" not found"}`,
			method: "GET", uri: "/api/v1/cdn/vendors/x", code: 1, errOut: []string{`livectl: vendor "x" not found`}},
		{name: "plan", args: []string{"cdn", "plan"}, status: 200, answer: `{"vendor_version":3,"pools":[],"buckets":[]}`,
			method: "GET", uri: "/api/v1/cdn/plan", out: []string{`"vendor_version": 3`, `"pools": []`}},
		{name: "quality", args: []string{"cdn", "quality", "a", "--region", "GD", "--isp", "telecom"}, status: 200,
			answer: `{"vendor":"a","minutes":[]}`,
			method: "GET", uri: "/api/v1/cdn/quality?isp=telecom&region=GD&vendor=a", out: []string{`"vendor": "a"`}},
		{name: "quality any bucket", args: []string{"cdn", "quality", "a"}, status: 200, answer: `{}`,
			method: "GET", uri: "/api/v1/cdn/quality?isp=&region=&vendor=a", out: []string{"{}"}},
		{name: "blacklist list", args: []string{"cdn", "blacklist", "list"}, status: 200, answer: `{"entries":[]}`,
			method: "GET", uri: "/api/v1/cdn/blacklist", out: []string{`"entries": []`}},
		{name: "blacklist add", args: []string{"cdn", "blacklist", "add", "a", "--region", "GD", "--isp", "telecom", "--ttl", "10m", "--reason", "stalls in GD"},
			status: 201, answer: `{"vendor":"a","region":"GD","isp":"telecom","reason":"stalls in GD"}`,
			method: "POST", uri: "/api/v1/cdn/blacklist",
			body: map[string]any{"vendor": "a", "region": "GD", "isp": "telecom", "ttl": "10m", "reason": "stalls in GD"},
			out:  []string{`"reason": "stalls in GD"`}},
		{name: "blacklist add flags first", args: []string{"cdn", "blacklist", "add", "--isp", "mobile", "b"},
			status: 201, answer: `{"vendor":"b"}`, method: "POST", uri: "/api/v1/cdn/blacklist",
			body: map[string]any{"vendor": "b", "region": "", "isp": "mobile", "ttl": "", "reason": ""}, out: []string{`"vendor": "b"`}},
		{name: "blacklist add unknown vendor", args: []string{"cdn", "blacklist", "add", "z"}, status: 400,
			answer: `{"error":"vendor \"z\" unknown"}`, method: "POST", uri: "/api/v1/cdn/blacklist",
			body: map[string]any{"vendor": "z", "region": "", "isp": "", "ttl": "", "reason": ""},
			code: 1, errOut: []string{`livectl: vendor "z" unknown`}},
		{name: "blacklist rm", args: []string{"cdn", "blacklist", "rm", "a", "--region", "GD"}, status: 204,
			method: "DELETE", uri: "/api/v1/cdn/blacklist?isp=&region=GD&vendor=a", out: []string{`removed a from the blacklist (region "GD", isp "")`}},
		{name: "blacklist rm missing", args: []string{"cdn", "blacklist", "rm", "a"}, status: 404,
			answer: `{"error":"no such blacklist entry"}`, method: "DELETE", uri: "/api/v1/cdn/blacklist?isp=&region=&vendor=a",
			code: 1, errOut: []string{"livectl: no such blacklist entry"}},
		{name: "not JSON", args: []string{"cdn", "plan"}, status: 200, answer: `<html>`,
			method: "GET", uri: "/api/v1/cdn/plan", code: 1, errOut: []string{"decode answer"}},

		// Usage errors: exit 2, nothing sent.
		{name: "no command", args: []string{"cdn"}, code: 2, errOut: []string{"cdn needs a command", "usage: livectl"}},
		{name: "unknown command", args: []string{"cdn", "frob"}, code: 2, errOut: []string{`unknown cdn command "frob"`}},
		{name: "vendors with an argument", args: []string{"cdn", "vendors", "a"}, code: 2, errOut: []string{"cdn vendors takes no arguments"}},
		{name: "vendor without a name", args: []string{"cdn", "vendor"}, code: 2, errOut: []string{"cdn vendor takes exactly one argument"}},
		{name: "vendor with two names", args: []string{"cdn", "vendor", "a", "b"}, code: 2, errOut: []string{"exactly one argument"}},
		{name: "quality without a vendor", args: []string{"cdn", "quality", "--region", "GD"}, code: 2, errOut: []string{"exactly one argument"}},
		{name: "unknown flag", args: []string{"cdn", "plan", "--frob"}, code: 2, errOut: []string{"flag provided but not defined"}},
		{name: "blacklist alone", args: []string{"cdn", "blacklist"}, code: 2, errOut: []string{"list, add or rm"}},
		{name: "blacklist unknown", args: []string{"cdn", "blacklist", "drop", "a"}, code: 2, errOut: []string{`unknown cdn blacklist command "drop"`}},
		{name: "blacklist add no vendor", args: []string{"cdn", "blacklist", "add", "--ttl", "1m"}, code: 2, errOut: []string{"exactly one argument"}},
		{name: "blacklist add bad ttl", args: []string{"cdn", "blacklist", "add", "a", "--ttl", "soon"}, code: 2, errOut: []string{`--ttl "soon"`}},
		{name: "blacklist add negative ttl", args: []string{"cdn", "blacklist", "add", "a", "--ttl=-1m"}, code: 2, errOut: []string{"--ttl"}},
		{name: "blacklist rm ttl", args: []string{"cdn", "blacklist", "rm", "a", "--ttl", "1m"}, code: 2, errOut: []string{"flag provided but not defined: -ttl"}},
		{name: "help", args: []string{"cdn", "help"}, code: 0, out: []string{"cdn blacklist add VENDOR"}},
		{name: "main usage names cdn", args: []string{"help"}, code: 0, out: []string{"cdn vendors|vendor NAME"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake.mu.Lock()
			fake.got, fake.status, fake.answer = nil, tc.status, tc.answer
			fake.mu.Unlock()
			var stdout, stderr bytes.Buffer
			code := run(tc.args, getenv, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, w := range tc.out {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout misses %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tc.errOut {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr misses %q:\n%s", w, stderr.String())
				}
			}
			if len(tc.errOut) == 0 && stderr.Len() > 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
			fake.mu.Lock()
			got := fake.got
			fake.mu.Unlock()
			if tc.method == "" {
				if len(got) != 0 {
					t.Errorf("sent %+v, want no request", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("sent %d requests (%+v), want 1", len(got), got)
			}
			want := cdnRequest{method: tc.method, uri: tc.uri, auth: "Bearer " + token, body: tc.body}
			if !reflect.DeepEqual(got[0], want) {
				t.Errorf("sent %+v\nwant %+v", got[0], want)
			}
		})
	}
}

// TestCDNToken sends the --token flag over LIVEFUSE_TOKEN.
func TestCDNToken(t *testing.T) {
	fake := &fakeCDNAPI{status: 200, answer: `{}`}
	ts := httptest.NewServer(fake)
	defer ts.Close()
	getenv := func(k string) string {
		return map[string]string{"LIVEFUSE_API": ts.URL, "LIVEFUSE_TOKEN": "from-env"}[k]
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--token", "from-flag", "cdn", "vendors"}, getenv, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if len(fake.got) != 1 || fake.got[0].auth != "Bearer from-flag" {
		t.Errorf("sent %+v", fake.got)
	}
}
