package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

const auditUsage = `usage: livectl audit [--actor NAME] [--action A] [--target T] [--since RFC3339] [--until RFC3339] [--limit N] [--json]
       (changes made through the control API, newest first)
`

func audit(ctx context.Context, c *api.Client, args []string, out io.Writer) error {
	fs, _ := newFlags("audit")
	actor := fs.String("actor", "", "only this token holder")
	action := fs.String("action", "", "only this action (switch, create, drain...)")
	target := fs.String("target", "", "only targets starting with this (live/demo, node/...)")
	since := fs.String("since", "", "from this time (RFC 3339)")
	until := fs.String("until", "", "up to this time (RFC 3339)")
	limit := fs.Int("limit", 50, "at most this many entries (1-1000)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"actor": *actor, "action": *action, "target": *target, "since": *since, "until": *until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", strconv.Itoa(*limit))
	l, err := c.Audit(ctx, q)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(out, api.AuditList{Entries: l})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tROLE\tACTION\tTARGET\tOUTCOME\tSTATUS\tDETAIL")
	for _, e := range l {
		detail := "-"
		if len(e.Detail) > 0 {
			detail = fmt.Sprint(e.Detail)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Time.Local().Format(time.DateTime), e.Actor, e.Role,
			e.Action, cmpOr(e.Target, "-"), e.Outcome, e.Status, detail)
	}
	return tw.Flush()
}
