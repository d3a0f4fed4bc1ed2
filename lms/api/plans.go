package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Emergency plans (issue 11): arm → preview → confirm → execute → verify.
// POST /api/v1/plans arms a run and answers it with its preview and a
// one-time confirmation token; POST /api/v1/plans/{id}/confirm with that
// token executes it and answers once its effect is verified (or the
// verification timed out).

// Plan kinds.
const (
	PlanStopEncryption  = "stop_encryption"
	PlanBlacklistVendor = "blacklist_vendor"
	PlanForceFeed       = "force_feed"
	PlanMoveUnit        = "move_unit"
	PlanDrainNode       = "drain_node"
)

// Plan run states.
const (
	PlanArmed     = "armed"
	PlanCancelled = "cancelled"
	PlanExpired   = "expired"
	PlanExecuting = "executing"
	PlanVerified  = "verified"
	PlanFailed    = "failed"
)

// PlanRequest is the body of POST /api/v1/plans: the kind and its
// parameters (only those the kind takes).
type PlanRequest struct {
	Kind string `json:"kind"`
	// Stream is "app/name" (or a bare name in the default app).
	Stream string `json:"stream,omitempty"`
	Vendor string `json:"vendor,omitempty"`
	Region string `json:"region,omitempty"`
	ISP    string `json:"isp,omitempty"`
	Feed   string `json:"feed,omitempty"`
	Unit   string `json:"unit,omitempty"`
	Node   string `json:"node,omitempty"`
	// Drill runs the plan against a drill stream only.
	Drill bool `json:"drill"`
}

// PlanConfirm is the body of POST /api/v1/plans/{id}/confirm.
type PlanConfirm struct {
	Token string `json:"token"`
}

// PlanPreview states what a run will touch.
type PlanPreview struct {
	Summary string   `json:"summary"`
	Streams []string `json:"streams"`
	// Players are the viewers of the streams touched, summed over the
	// units' reports (for a blacklist: the users the mixer observed in
	// that vendor × region × ISP over the last minute).
	Players int      `json:"players"`
	Vendors []string `json:"vendors"`
	Regions []string `json:"regions"`
	// Units are the units whose serving changes (move_unit, drain_node).
	Units []string `json:"units,omitempty"`
}

// PlanStep is one step of a run, for the operator and the audit.
type PlanStep struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
	OK   bool      `json:"ok"`
}

// PlanRun is one run of a plan.
type PlanRun struct {
	ID     string            `json:"id"`
	Kind   string            `json:"kind"`
	Params map[string]string `json:"params"`
	Drill  bool              `json:"drill"`
	State  string            `json:"state"`
	// Token confirms the run; it is only in the answer of the arm call.
	Token       string      `json:"token,omitempty"`
	Preview     PlanPreview `json:"preview"`
	ArmedBy     string      `json:"armed_by"`
	ArmedAt     time.Time   `json:"armed_at"`
	ExpiresAt   time.Time   `json:"expires_at"`
	ConfirmedBy string      `json:"confirmed_by,omitempty"`
	ConfirmedAt *time.Time  `json:"confirmed_at,omitempty"`
	VerifiedAt  *time.Time  `json:"verified_at,omitempty"`
	// VerifyMillis is from confirmation to the verified effect.
	VerifyMillis *int64     `json:"verify_ms,omitempty"`
	Error        string     `json:"error,omitempty"`
	Steps        []PlanStep `json:"steps"`
}

// Done reports whether the run has ended (nothing more will happen).
func (r PlanRun) Done() bool {
	switch r.State {
	case PlanCancelled, PlanExpired, PlanVerified, PlanFailed:
		return true
	}
	return false
}

// PlanParam describes one parameter of a kind.
type PlanParam struct {
	Name        string `json:"name"`
	Required    bool   `json:"required"`
	Description string `json:"description"`
}

// PlanKind describes one kind of plan.
type PlanKind struct {
	Kind        string      `json:"kind"`
	Description string      `json:"description"`
	Params      []PlanParam `json:"params"`
	// Drill says whether the kind runs in drill mode (stream plans).
	Drill bool `json:"drill"`
}

// PlanList is the body of GET /api/v1/plans.
type PlanList struct {
	Kinds []PlanKind `json:"kinds"`
	Runs  []PlanRun  `json:"runs"`
}

// Plans returns the plan kinds and the runs, newest first.
func (c *Client) Plans(ctx context.Context) (PlanList, error) {
	var l PlanList
	err := c.do(ctx, http.MethodGet, "/api/v1/plans", nil, &l)
	return l, err
}

// ArmPlan arms a run: the answer has its preview and its token.
func (c *Client) ArmPlan(ctx context.Context, req PlanRequest) (PlanRun, error) {
	var r PlanRun
	err := c.do(ctx, http.MethodPost, "/api/v1/plans", req, &r)
	return r, err
}

// ConfirmPlan confirms run id with its token; the answer comes once the
// run is verified or failed.
func (c *Client) ConfirmPlan(ctx context.Context, id, token string) (PlanRun, error) {
	var r PlanRun
	err := c.do(ctx, http.MethodPost, planPath(id)+"/confirm", PlanConfirm{Token: token}, &r)
	return r, err
}

// CancelPlan cancels an armed run.
func (c *Client) CancelPlan(ctx context.Context, id string) (PlanRun, error) {
	var r PlanRun
	err := c.do(ctx, http.MethodPost, planPath(id)+"/cancel", nil, &r)
	return r, err
}

// Plan returns run id.
func (c *Client) Plan(ctx context.Context, id string) (PlanRun, error) {
	var r PlanRun
	err := c.do(ctx, http.MethodGet, planPath(id), nil, &r)
	return r, err
}

func planPath(id string) string { return "/api/v1/plans/" + url.PathEscape(id) }
