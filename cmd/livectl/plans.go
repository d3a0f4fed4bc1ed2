package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

const plansUsage = `usage: livectl plans list [--json]
       livectl plans arm KIND [--stream APP/NAME] [--feed main|backup|auto] [--unit U]
                         [--vendor V] [--region R] [--isp I] [--node ID] [--drill] [--yes] [--json]
              (prints the preview and the one-time token; nothing changes until confirmed;
               --yes confirms at once after printing the preview)
       livectl plans confirm ID TOKEN [--json]
              (executes the run and waits for its verification)
       livectl plans cancel ID
       livectl plans status ID [--json]

kinds: stop_encryption --stream | blacklist_vendor --vendor [--region] [--isp] |
       force_feed --stream --feed | move_unit --stream --unit | drain_node --node
--drill runs a stream plan on a drill stream only (named with plans.drill_prefix, default drill-).
`

// plans runs livectl plans ...
func plans(ctx context.Context, c *api.Client, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: plans needs a command", errUsage)
	}
	cmd, args := args[0], args[1:]
	fs, _ := newFlags("plans " + cmd)
	asJSON := fs.Bool("json", false, "print JSON")
	switch cmd {
	case "list":
		if pos, err := parse(fs, args); err != nil || len(pos) != 0 {
			return fmt.Errorf("%w: plans list takes no arguments", errUsage)
		}
		l, err := c.Plans(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(out, l)
		}
		return writeRuns(out, l)

	case "arm":
		var req api.PlanRequest
		for name, dst := range map[string]*string{"stream": &req.Stream, "feed": &req.Feed, "unit": &req.Unit,
			"vendor": &req.Vendor, "region": &req.Region, "isp": &req.ISP, "node": &req.Node} {
			fs.StringVar(dst, name, "", name)
		}
		fs.BoolVar(&req.Drill, "drill", false, "run on a drill stream only")
		yes := fs.Bool("yes", false, "confirm at once after printing the preview")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: plans arm needs one KIND", errUsage)
		}
		req.Kind = pos[0]
		run, err := c.ArmPlan(ctx, req)
		if err != nil {
			return err
		}
		if *asJSON && !*yes {
			return writeJSON(out, run)
		}
		writePreview(out, run)
		if !*yes {
			fmt.Fprintf(out, "confirm within %s:\n  livectl plans confirm %s %s\n",
				time.Until(run.ExpiresAt).Round(time.Second), run.ID, run.Token)
			return nil
		}
		fmt.Fprintln(out, "confirming (--yes) ...")
		return confirmPlan(ctx, c, run.ID, run.Token, *asJSON, out)

	case "confirm":
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return fmt.Errorf("%w: plans confirm needs ID and TOKEN", errUsage)
		}
		return confirmPlan(ctx, c, pos[0], pos[1], *asJSON, out)

	case "cancel", "status":
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: plans %s needs one ID", errUsage, cmd)
		}
		var run api.PlanRun
		if cmd == "cancel" {
			run, err = c.CancelPlan(ctx, pos[0])
		} else {
			run, err = c.Plan(ctx, pos[0])
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(out, run)
		}
		writeRun(out, run)
		return nil
	}
	return fmt.Errorf("%w: unknown plans command %q", errUsage, cmd)
}

// confirmPlan confirms and prints the outcome; a run that failed is an
// error (exit code 1).
func confirmPlan(ctx context.Context, c *api.Client, id, token string, asJSON bool, out io.Writer) error {
	run, err := c.ConfirmPlan(ctx, id, token)
	if err != nil {
		return err
	}
	if asJSON {
		if err := writeJSON(out, run); err != nil {
			return err
		}
	} else {
		writeRun(out, run)
	}
	if run.State != api.PlanVerified {
		return fmt.Errorf("plan run %s %s: %s", run.ID, run.State, run.Error)
	}
	return nil
}

func writePreview(out io.Writer, r api.PlanRun) {
	drill := ""
	if r.Drill {
		drill = " (drill)"
	}
	fmt.Fprintf(out, "plan run %s: %s%s armed by %s\n", r.ID, r.Kind, drill, r.ArmedBy)
	fmt.Fprintf(out, "preview: %s\n", r.Preview.Summary)
	fmt.Fprintf(out, "  streams: %s\n  players: %d\n  vendors: %s\n  regions: %s\n",
		list(r.Preview.Streams), r.Preview.Players, list(r.Preview.Vendors), list(r.Preview.Regions))
	if len(r.Preview.Units) > 0 {
		fmt.Fprintf(out, "  units: %s\n", list(r.Preview.Units))
	}
}

func list(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	return strings.Join(l, ", ")
}

func writeRun(out io.Writer, r api.PlanRun) {
	fmt.Fprintf(out, "plan run %s: %s %s\n", r.ID, r.Kind, r.State)
	if r.VerifyMillis != nil {
		fmt.Fprintf(out, "verified %d ms after confirmation by %s\n", *r.VerifyMillis, r.ConfirmedBy)
	}
	if r.Error != "" {
		fmt.Fprintf(out, "error: %s\n", r.Error)
	}
	for _, s := range r.Steps {
		mark := "ok"
		if !s.OK {
			mark = "!!"
		}
		fmt.Fprintf(out, "  %s %s %s\n", s.At.Local().Format("15:04:05.000"), mark, s.What)
	}
}

func writeRuns(out io.Writer, l api.PlanList) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tPARAMETERS")
	for _, k := range l.Kinds {
		var ps []string
		for _, p := range k.Params {
			if p.Required {
				ps = append(ps, "--"+p.Name)
			} else {
				ps = append(ps, "[--"+p.Name+"]")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", k.Kind, strings.Join(ps, " "))
	}
	fmt.Fprintln(tw, "\nID\tKIND\tSTATE\tDRILL\tARMED_BY\tARMED_AT\tCONFIRMED_BY\tVERIFY_MS\tPREVIEW")
	for _, r := range l.Runs {
		ms := "-"
		if r.VerifyMillis != nil {
			ms = fmt.Sprint(*r.VerifyMillis)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.State, r.Drill, r.ArmedBy,
			r.ArmedAt.Local().Format("15:04:05"), cmpOr(r.ConfirmedBy, "-"), ms, r.Preview.Summary)
	}
	return tw.Flush()
}
