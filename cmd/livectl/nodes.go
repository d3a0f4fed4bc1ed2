package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

const nodesUsage = `usage: livectl nodes list [--json]
       livectl nodes drain ID|self      (no new players or publishers; players stay until they
                                         leave or lms.node.drain_timeout passes)
       livectl nodes undrain ID|self    (cancel a drain: serve again)
`

// nodes runs livectl nodes ...: drain and undrain wait for the node to
// show the change and print its record.
func nodes(ctx context.Context, c *api.Client, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: nodes needs a command", errUsage)
	}
	switch args[0] {
	case "list":
		fs, _ := newFlags("nodes list")
		asJSON := fs.Bool("json", false, "print JSON")
		if _, err := parse(fs, args[1:]); err != nil {
			return err
		}
		l, err := c.Nodes(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(out, api.NodeList{Nodes: l})
		}
		return writeNodes(out, l)
	case "drain", "undrain":
		if len(args) != 2 {
			return fmt.Errorf("%w: nodes %s needs one node id (or self)", errUsage, args[0])
		}
		n, err := c.DrainNode(ctx, args[1], args[0] == "drain")
		if err != nil {
			return err
		}
		return writeNodes(out, []api.Node{n})
	}
	return fmt.Errorf("%w: unknown nodes command %q", errUsage, args[0])
}

func writeNodes(w io.Writer, l []api.Node) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tUNIT\tSTATE\tPLAYERS\tSTREAMS\tEGRESS_MBPS\tCPU%\tRSS_MB\tDRAIN_LEFT\tREPORTED")
	for _, n := range l {
		left := "-"
		if !n.DrainDeadline.IsZero() && n.State == api.NodeDraining {
			left = time.Until(n.DrainDeadline).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1f\t%.0f\t%d\t%s\t%s\n", n.ID, n.Role, cmpOr(n.Unit, "-"), n.State,
			n.Load.Players, n.Load.Streams, float64(n.Load.EgressBps)/1e6, n.Load.CPUPercent, n.Load.RSSBytes>>20,
			left, n.ReportedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}
