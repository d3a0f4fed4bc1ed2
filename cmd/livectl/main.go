// Command livectl is the operator CLI of livefuse: it manages streams
// through the control API (/api/v1), and decrypts encrypted FLV. It links
// the stdlib-only lms/api package, and encryption and av for decrypt.
//
//	livectl [--api URL] [--token T] streams list|get|create|patch|delete|kick ...
//	livectl decrypt [-o FILE] [--auth-key T] [--keys URL] [--key HEX] INPUT
//	livectl [--api URL] [--token T] cdn vendors|vendor|plan|quality|blacklist ...
//	livectl [--api URL] [--token T] plans list|arm|confirm|cancel|status ...
//
// The API URL comes from --api or LIVEFUSE_API (default
// http://127.0.0.1:9090), the bearer token from --token or LIVEFUSE_TOKEN.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

const defaultAPI = "http://127.0.0.1:9090"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usageText = `usage: livectl [--api URL] [--token T] streams COMMAND [flags]

commands (NAME is "name" or "app/name"):
  streams list
  streams get NAME [--app live]
  streams create NAME [--app live] [--token T] [--play-key K] [--source URL]
                      [--disabled] [--record] [--profile P]
  streams patch NAME [--app live] [--enabled=BOOL] [--token T] [--play-key K]
                     [--source URL] [--record=BOOL] [--profile P]
         (only the flags given change; --token= generates a new publish token)
  streams delete NAME [--app live]
  streams kick NAME [--app live]
  streams switch NAME main|backup|auto [--app live] [--wait 10s]
         (force a feed on every unit, or let the units choose; waits until
          every unit shows it, at most --wait, and prints what they show)
  streams encryption NAME on|off [--app live]
  streams record NAME on|off [--app live] [--wait 10s]
         (applies live, at the next keyframe; record waits for a live
          stream's recorder to follow, at most --wait, and prints it)
  decrypt [-o FILE] [--auth-key T] [--keys URL] [--key HEX] FILE|URL|-
         (encrypted FLV to clear FLV, byte for byte; decrypt --help)
  audit [--actor NAME] [--action A] [--target T] [--since T] [--limit N]
         (changes made through the API: who, what, when, outcome)
  nodes list | nodes drain ID|self | nodes undrain ID|self
         (the node registry; a drain sends new players to the other unit)
  cdn vendors|vendor NAME|plan|quality VENDOR|blacklist list|add|rm ...
         (the CDN mixer; livectl cdn for its usage)
  plans list | plans arm KIND [--stream S] [--feed F] [--unit U] [--vendor V]
        [--region R] [--isp I] [--node ID] [--drill] [--yes] |
        plans confirm ID TOKEN | plans cancel ID | plans status ID
         (emergency plans: arm previews, confirm executes and verifies)

environment: LIVEFUSE_API (default ` + defaultAPI + `), LIVEFUSE_TOKEN, LIVEFUSE_CA_FILE
(--ca-file: the CA of an https:// API with a private certificate)
`

// errUsage marks a command-line mistake (exit code 2).
var errUsage = errors.New("usage")

// run is main without the process: it returns the exit code (0 ok, 1 the
// request failed, 2 bad usage).
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("livectl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	apiURL := fs.String("api", "", "control API base URL (env LIVEFUSE_API)")
	token := fs.String("token", "", "API bearer token (env LIVEFUSE_TOKEN)")
	caFile := fs.String("ca-file", "", "PEM file of the CA that signed an https:// API's certificate (env LIVEFUSE_CA_FILE)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText)
			return 0
		}
		fmt.Fprintf(stderr, "livectl: %v\n%s", err, usageText)
		return 2
	}
	if *apiURL == "" {
		*apiURL = cmpOr(getenv("LIVEFUSE_API"), defaultAPI)
	}
	if *token == "" {
		*token = getenv("LIVEFUSE_TOKEN")
	}
	if *caFile == "" {
		*caFile = getenv("LIVEFUSE_CA_FILE")
	}
	rest := fs.Args()
	if len(rest) >= 1 && rest[0] == "decrypt" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return decrypt(ctx, rest[1:], stdout, stderr)
	}
	c, err := newClient(*apiURL, *token, *caFile)
	if err != nil {
		fmt.Fprintf(stderr, "livectl: %v\n", err)
		return 2
	}
	if len(rest) >= 1 && rest[0] == "cdn" {
		return cdn(c, rest[1:], stdout, stderr)
	}
	if len(rest) >= 1 && rest[0] == "audit" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return exitCode(audit(ctx, c, rest[1:], stdout), auditUsage, stderr)
	}
	if len(rest) >= 1 && rest[0] == "plans" {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		return exitCode(plans(ctx, c, rest[1:], stdout), plansUsage, stderr)
	}
	if len(rest) >= 1 && rest[0] == "nodes" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return exitCode(nodes(ctx, c, rest[1:], stdout), nodesUsage, stderr)
	}
	if len(rest) < 2 || rest[0] != "streams" {
		if len(rest) == 1 && rest[0] == "help" {
			fmt.Fprint(stdout, usageText)
			return 0
		}
		fmt.Fprint(stderr, usageText)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return exitCode(streams(ctx, c, rest[1], rest[2:], stdout), usageText, stderr)
}

// exitCode reports err on stderr and returns the exit code: 0 ok, 2 bad
// usage (with usage), 1 the request failed (the server's message).
func exitCode(err error, usage string, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "livectl: %v\n%s", err, usage)
		return 2
	default:
		var ae *api.Error
		if errors.As(err, &ae) {
			fmt.Fprintf(stderr, "livectl: %s\n", ae.Message)
		} else {
			fmt.Fprintf(stderr, "livectl: %v\n", err)
		}
		return 1
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// parse parses flags and positional arguments in any order (the flag
// package alone stops at the first positional one).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errUsage, fs.Name(), err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// target reads the one NAME argument; "app/name" overrides --app.
func target(fs *flag.FlagSet, app *string, args []string) (string, string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return "", "", err
	}
	if len(pos) != 1 {
		return "", "", fmt.Errorf("%w: streams %s needs exactly one NAME", errUsage, fs.Name())
	}
	a, name, ok := strings.Cut(pos[0], "/")
	if !ok {
		return *app, pos[0], nil
	}
	return a, name, nil
}

func newFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, fs.String("app", api.DefaultApp, "app of the stream")
}

func streams(ctx context.Context, c *api.Client, cmd string, args []string, out io.Writer) error {
	switch cmd {
	case "list":
		fs := flag.NewFlagSet("list", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 {
			return fmt.Errorf("%w: streams list takes no arguments", errUsage)
		}
		l, err := c.ListStreams(ctx)
		if err != nil {
			return err
		}
		return writeTable(out, l)

	case "get":
		fs, app := newFlags("get")
		a, name, err := target(fs, app, args)
		if err != nil {
			return err
		}
		s, err := c.GetStream(ctx, a, name)
		if err != nil {
			return err
		}
		return writeJSON(out, s)

	case "create":
		fs, app := newFlags("create")
		tok := fs.String("token", "", "publish token (default: generated by the server)")
		playKey := fs.String("play-key", "", "play URL signing key (default: open play)")
		source := fs.String("source", "", "rtmp:// or rtsp:// URL to pull from")
		disabled := fs.Bool("disabled", false, "create the stream disabled")
		record := fs.Bool("record", false, "record the stream")
		profile := fs.String("profile", "", "transcode profile")
		lists := listFlags(fs)
		a, name, err := target(fs, app, args)
		if err != nil {
			return err
		}
		enabled := !*disabled
		s, err := c.CreateStream(ctx, api.CreateStreamRequest{
			App: a, Name: name, PublishToken: *tok, PlayKey: *playKey, Enabled: &enabled,
			Source: *source, Record: *record, Profile: *profile,
			IPLists: api.IPLists{PublishAllow: splitList(*lists[0]), PublishDeny: splitList(*lists[1]),
				PlayAllow: splitList(*lists[2]), PlayDeny: splitList(*lists[3])},
		})
		if err != nil {
			return err
		}
		return writeJSON(out, s)

	case "patch":
		fs, app := newFlags("patch")
		fs.Bool("enabled", false, "enable or disable the stream")
		fs.String("token", "", "new publish token (empty: generate one)")
		fs.String("play-key", "", "new play key (empty: open play)")
		fs.String("source", "", "new pull source (empty: pushed stream)")
		fs.Bool("record", false, "record the stream")
		fs.String("profile", "", "transcode profile (empty: none)")
		listFlags(fs)
		a, name, err := target(fs, app, args)
		if err != nil {
			return err
		}
		var p api.StreamPatch
		var perr error
		fs.Visit(func(f *flag.Flag) {
			v := f.Value.String()
			switch f.Name {
			case "enabled", "record":
				b, err := strconv.ParseBool(v)
				if err != nil {
					perr = err
				}
				if f.Name == "enabled" {
					p.Enabled = &b
				} else {
					p.Record = &b
				}
			case "token":
				p.PublishToken = &v
			case "play-key":
				p.PlayKey = &v
			case "source":
				p.Source = &v
			case "profile":
				p.Profile = &v
			case "publish-allow", "publish-deny", "play-allow", "play-deny":
				l := splitList(v)
				if l == nil {
					l = []string{} // present and empty: clear the list
				}
				switch f.Name {
				case "publish-allow":
					p.PublishAllow = &l
				case "publish-deny":
					p.PublishDeny = &l
				case "play-allow":
					p.PlayAllow = &l
				default:
					p.PlayDeny = &l
				}
			}
		})
		if perr != nil {
			return fmt.Errorf("%w: %w", errUsage, perr)
		}
		if _, fields := p.Apply(api.Stream{}); len(fields) == 0 {
			return fmt.Errorf("%w: streams patch needs at least one field flag", errUsage)
		}
		s, err := c.PatchStream(ctx, a, name, p)
		if err != nil {
			return err
		}
		return writeJSON(out, s)

	case "switch":
		fs, app := newFlags(cmd)
		wait := fs.Duration("wait", 10*time.Second, "how long to wait for every unit to show the feed")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 || api.ValidateFeedPolicy(pos[1]) != nil || pos[1] == "" {
			return fmt.Errorf("%w: streams switch needs NAME and one of main, backup, auto", errUsage)
		}
		a, name, ok := strings.Cut(pos[0], "/")
		if !ok {
			a, name = *app, pos[0]
		}
		s, err := c.SwitchStream(ctx, a, name, pos[1])
		if err != nil {
			return err
		}
		s, shown, err := waitSwitch(ctx, c, s, pos[1], *wait)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s/%s: feed policy %s\n", a, name, s.FeedPolicy)
		for _, u := range s.Units {
			fmt.Fprintf(out, "  unit %s: showing %s (policy %s)\n", u.Unit, u.Active, u.Policy)
		}
		if !shown {
			fmt.Fprintf(out, "  not every unit showed %s within %s\n", pos[1], *wait)
		}
		return nil

	case "encryption", "record":
		fs, app := newFlags(cmd)
		wait := fs.Duration("wait", 10*time.Second, "record: how long to wait for a live stream's recorder to follow")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 || (pos[1] != "on" && pos[1] != "off") {
			return fmt.Errorf("%w: streams %s needs NAME and on or off", errUsage, cmd)
		}
		a, name, ok := strings.Cut(pos[0], "/")
		if !ok {
			a, name = *app, pos[0]
		}
		on := pos[1] == "on"
		p, when := api.StreamPatch{Encryption: &on}, "from the next keyframe"
		if cmd == "record" {
			p, when = api.StreamPatch{Record: &on}, "from the next keyframe; a recording ends with its VOD playlist"
		}
		s, err := c.PatchStream(ctx, a, name, p)
		if err != nil {
			return err
		}
		state := map[bool]string{true: "on", false: "off"}[s.Encryption]
		if cmd == "record" {
			state = map[bool]string{true: "on", false: "off"}[s.Record]
		}
		fmt.Fprintf(out, "%s/%s: %s %s (%s)\n", a, name, cmd, state, when)
		if cmd == "record" {
			return waitRecording(ctx, c, a, name, on, *wait, out)
		}
		return nil

	case "delete", "kick":
		fs, app := newFlags(cmd)
		a, name, err := target(fs, app, args)
		if err != nil {
			return err
		}
		if cmd == "delete" {
			err = c.DeleteStream(ctx, a, name)
		} else {
			err = c.KickStream(ctx, a, name)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s %s/%s\n", map[string]string{"delete": "deleted", "kick": "kicked"}[cmd], a, name)
		return nil
	}
	return fmt.Errorf("%w: unknown streams command %q", errUsage, cmd)
}

// switchShown reports whether every unit reporting s applies feed (and
// shows it, unless auto); a stream no unit has live shows nothing to wait
// for.
func switchShown(s api.StreamInfo, feed string) bool {
	for _, u := range s.Units {
		if u.Policy != feed || (feed != api.FeedAuto && u.Active != feed) {
			return false
		}
	}
	return true
}

// waitSwitch polls the stream until its units show feed, at most d, and
// returns the last state read.
func waitSwitch(ctx context.Context, c *api.Client, s api.StreamInfo, feed string, d time.Duration) (api.StreamInfo, bool, error) {
	deadline := time.Now().Add(d)
	for !switchShown(s, feed) {
		if time.Now().After(deadline) {
			return s, false, nil
		}
		select {
		case <-ctx.Done():
			return s, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		next, err := c.GetStream(ctx, s.App, s.Name)
		if err != nil {
			return s, false, err
		}
		s = next
	}
	return s, true, nil
}

// waitRecording waits, for a live stream, until its recorder shows on
// (recording) or off (stopped, or no recorder), at most d, and prints
// what it shows.
func waitRecording(ctx context.Context, c *api.Client, app, name string, on bool, d time.Duration, out io.Writer) error {
	deadline := time.Now().Add(d)
	for {
		s, err := c.GetStream(ctx, app, name)
		if err != nil {
			return err
		}
		if s.Live == nil {
			return nil // not on air: nothing records until it is
		}
		rec := s.Live.Recording
		state := "off"
		if rec != nil {
			state = rec.State
		}
		if (on && state == "recording") || (!on && (rec == nil || state == "stopped")) {
			fmt.Fprintf(out, "  recorder: %s\n", state)
			return nil
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(out, "  recorder: %s (not yet %s after %s)\n", state, map[bool]string{true: "recording", false: "stopped"}[on], d)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// redact hides a password in a source URL ("-" for none).
func redact(src string) string {
	if src == "" {
		return "-"
	}
	if u, err := url.Parse(src); err == nil {
		return u.Redacted()
	}
	return src
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// formatReaders gives the players and their split by protocol, then
// the internal readers: "4 (flv 2, rtmp 1, hls 1; +3 internal)".
func formatReaders(lv *api.LiveStatus) string {
	var parts []string
	for _, p := range []string{"flv", "rtmp", "hls"} {
		if n := lv.ReadersByProtocol[p]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p, n))
		}
	}
	s := strconv.Itoa(lv.Readers)
	in := ""
	if lv.InternalReaders > 0 {
		in = fmt.Sprintf("+%d internal", lv.InternalReaders)
	}
	switch {
	case len(parts) > 0 && in != "":
		s += " (" + strings.Join(parts, ", ") + "; " + in + ")"
	case len(parts) > 0:
		s += " (" + strings.Join(parts, ", ") + ")"
	case in != "":
		s += " (" + in + ")"
	}
	return s
}

// writeTable prints the stream list; secrets stay out of it (use get).
func writeTable(w io.Writer, l []api.StreamInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tNAME\tENABLED\tLIVE\tPUBLISHER\tVIDEO\tAUDIO\tKBPS\tREADERS\tSOURCE")
	for _, s := range l {
		live, pub, video, audio, kbps, readers := "no", "-", "-", "-", "-", "-"
		if lv := s.Live; lv != nil {
			live = "yes " + (time.Duration(lv.UptimeSeconds) * time.Second).String()
			pub = cmpOr(strings.TrimSpace(lv.PublisherProtocol+" "+lv.PublisherRemote), "-")
			if lv.VideoCodec != "" {
				video = fmt.Sprintf("%s %dx%d@%.3g", lv.VideoCodec, lv.Width, lv.Height, lv.FPS)
			}
			if lv.AudioCodec != "" {
				audio = fmt.Sprintf("%s %d/%d", lv.AudioCodec, lv.SampleRate, lv.Channels)
			}
			kbps = strconv.FormatFloat(lv.BitrateKbps, 'f', 0, 64)
			readers = formatReaders(lv)
		}
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			s.App, s.Name, s.Enabled, live, pub, video, audio, kbps, readers, redact(s.Source))
	}
	return tw.Flush()
}

// listFlags declares the IP list flags of create and patch, in the order
// publish-allow, publish-deny, play-allow, play-deny.
func listFlags(fs *flag.FlagSet) [4]*string {
	return [4]*string{
		fs.String("publish-allow", "", "comma-separated CIDRs or addresses that alone may publish (empty: all)"),
		fs.String("publish-deny", "", "comma-separated CIDRs or addresses that may not publish"),
		fs.String("play-allow", "", "comma-separated CIDRs or addresses that alone may play (empty: all)"),
		fs.String("play-deny", "", "comma-separated CIDRs or addresses that may not play"),
	}
}

// splitList splits a comma-separated list; "" is no entry.
func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// newClient returns the API client; with caFile, an https:// API is
// trusted when its certificate chains to that CA (a private CA the system
// does not know).
func newClient(apiURL, token, caFile string) (*api.Client, error) {
	c := api.NewClient(apiURL, token)
	if caFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate in it", caFile)
	}
	c.HTTPClient.Transport = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}
	return c, nil
}
