package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

const cdnUsageText = `usage: livectl [--api URL] [--token T] cdn COMMAND [flags]

commands (answers are printed as JSON):
  cdn vendors                    the vendors (keys are never shown: key_set)
  cdn vendor NAME                one vendor
  cdn plan                       pools, and candidates and ratios per region × ISP
  cdn quality VENDOR [--region R] [--isp I]
                                 quality now and per minute of one vendor × bucket
  cdn blacklist list             active blacklist entries
  cdn blacklist add VENDOR [--region R] [--isp I] [--ttl 10m] [--reason TEXT]
         (empty region or ISP: every one; --ttl 0: until removed)
  cdn blacklist rm VENDOR [--region R] [--isp I]
`

// cdn runs `livectl cdn ...` and returns the exit code.
func cdn(c *api.Client, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, cdnUsageText)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return exitCode(cdnCommand(ctx, c, args, stdout), cdnUsageText, stderr)
}

func cdnCommand(ctx context.Context, c *api.Client, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: cdn needs a command", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "vendors", "plan":
		if _, err := positional(flags("cdn "+cmd), args, 0); err != nil {
			return err
		}
		return getJSON(ctx, c, "/api/v1/cdn/"+cmd, out)

	case "vendor":
		pos, err := positional(flags("cdn vendor"), args, 1)
		if err != nil {
			return err
		}
		return getJSON(ctx, c, "/api/v1/cdn/vendors/"+url.PathEscape(pos[0]), out)

	case "quality":
		fs := flags("cdn quality")
		region := fs.String("region", "", "region of the bucket")
		isp := fs.String("isp", "", "ISP of the bucket")
		pos, err := positional(fs, args, 1)
		if err != nil {
			return err
		}
		q := url.Values{"vendor": {pos[0]}, "region": {*region}, "isp": {*isp}}
		return getJSON(ctx, c, "/api/v1/cdn/quality?"+q.Encode(), out)

	case "blacklist":
		return blacklist(ctx, c, args, out)
	}
	return fmt.Errorf("%w: unknown cdn command %q", errUsage, cmd)
}

func blacklist(ctx context.Context, c *api.Client, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: cdn blacklist needs list, add or rm", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "list":
		if _, err := positional(flags("cdn blacklist list"), args, 0); err != nil {
			return err
		}
		return getJSON(ctx, c, "/api/v1/cdn/blacklist", out)

	case "add":
		fs := flags("cdn blacklist add")
		region := fs.String("region", "", "region (empty: every region)")
		isp := fs.String("isp", "", "ISP (empty: every ISP)")
		ttl := fs.String("ttl", "", "how long the entry lasts, e.g. 10m (empty or 0: until removed)")
		reason := fs.String("reason", "", "why (shown in the list)")
		pos, err := positional(fs, args, 1)
		if err != nil {
			return err
		}
		if *ttl != "" {
			if d, err := time.ParseDuration(*ttl); err != nil || d < 0 {
				return fmt.Errorf("%w: --ttl %q: want a duration such as 10m", errUsage, *ttl)
			}
		}
		body := map[string]string{"vendor": pos[0], "region": *region, "isp": *isp, "ttl": *ttl, "reason": *reason}
		var raw json.RawMessage
		if err := c.Call(ctx, http.MethodPost, "/api/v1/cdn/blacklist", body, &raw); err != nil {
			return err
		}
		return writeRaw(out, raw)

	case "rm":
		fs := flags("cdn blacklist rm")
		region := fs.String("region", "", "region of the entry")
		isp := fs.String("isp", "", "ISP of the entry")
		pos, err := positional(fs, args, 1)
		if err != nil {
			return err
		}
		q := url.Values{"vendor": {pos[0]}, "region": {*region}, "isp": {*isp}}
		if err := c.Call(ctx, http.MethodDelete, "/api/v1/cdn/blacklist?"+q.Encode(), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(out, "removed %s from the blacklist (region %q, isp %q)\n", pos[0], *region, *isp)
		return nil
	}
	return fmt.Errorf("%w: unknown cdn blacklist command %q", errUsage, cmd)
}

func flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// positional parses args and checks there are exactly n positional ones.
func positional(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != n {
		what := "no arguments"
		if n == 1 {
			what = "exactly one argument"
		}
		return nil, fmt.Errorf("%w: %s takes %s", errUsage, fs.Name(), what)
	}
	return pos, nil
}

// getJSON prints the answer to GET path, indented.
func getJSON(ctx context.Context, c *api.Client, path string, out io.Writer) error {
	var raw json.RawMessage
	if err := c.Call(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return err
	}
	return writeRaw(out, raw)
}

func writeRaw(out io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := out.Write(b.Bytes())
	return err
}
