package api

import (
	"context"
	"net/url"
	"time"
)

// Node states: a node registers as starting, serves, and on a drain
// (API, livectl, or SIGTERM) stops taking new players and publishers
// until its last player leaves or the drain timeout passes (drained). A
// cancelled drain takes it back to serving.
const (
	NodeStarting = "starting"
	NodeServing  = "serving"
	NodeDraining = "draining"
	NodeDrained  = "drained"
)

// Node is one livefuse process as it reports itself in the node registry
// (under a lease: a node that dies disappears within a few seconds).
type Node struct {
	ID    string `json:"id"`
	Role  string `json:"role"` // "unit" (every role of a unit) or "witness"
	Unit  string `json:"unit,omitempty"`
	State string `json:"state"`
	// DrainReason says who asked for the drain ("api", "signal").
	DrainReason string `json:"drain_reason,omitempty"`
	// DrainDeadline is when a draining node stops waiting for its players.
	DrainDeadline time.Time `json:"drain_deadline,omitzero"`
	// Addrs are the node's listeners by name (rtmp, http, api...).
	Addrs     map[string]string `json:"addrs,omitempty"`
	Load      NodeLoad          `json:"load"`
	StartedAt time.Time         `json:"started_at"`
	// ReportedAt is the node's clock when it last wrote this record.
	ReportedAt time.Time `json:"reported_at"`
}

// NodeLoad is the load signal to scale on: what the node sends and how
// many it serves, not only its CPU.
type NodeLoad struct {
	// EgressBps is media sent to players, in bits per second over the
	// last report period.
	EgressBps int64 `json:"egress_bps"`
	Players   int   `json:"players"`
	Streams   int   `json:"streams"`
	// PacketsPerSecond is media packets received by the origin.
	PacketsPerSecond float64 `json:"packets_per_second"`
	// CPUPercent is the process's CPU over the last period, in percent of
	// one core.
	CPUPercent float64 `json:"cpu_percent"`
	RSSBytes   int64   `json:"rss_bytes"`
}

// NodeList is the answer of GET /api/v1/nodes.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

func nodePath(id string) string { return "/api/v1/nodes/" + url.PathEscape(id) }

// Nodes lists the registered nodes.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out NodeList
	if err := c.do(ctx, "GET", "/api/v1/nodes", nil, &out); err != nil {
		return nil, err
	}
	return out.Nodes, nil
}

// DrainNode asks node id to drain (on true) or to serve again (on false),
// and returns its record once it shows the change, or as it stands when
// the answer could not wait longer.
func (c *Client) DrainNode(ctx context.Context, id string, drain bool) (Node, error) {
	verb := "/undrain"
	if drain {
		verb = "/drain"
	}
	var out Node
	err := c.do(ctx, "POST", nodePath(id)+verb, nil, &out)
	return out, err
}

// AuditEntry is one change made through the control API.
type AuditEntry struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Actor is the token holder's name (lms.tokens; "admin" for api_token).
	Actor  string `json:"actor"`
	Role   string `json:"role"`
	Remote string `json:"remote"`
	Method string `json:"method"`
	Path   string `json:"path"`
	// Action names what was done ("switch", "drain", "create"...), Target
	// what it was done to ("live/demo", "node/x").
	Action string            `json:"action"`
	Target string            `json:"target,omitempty"`
	Detail map[string]string `json:"detail,omitempty"`
	// Status is the HTTP status answered; Outcome "done", "accepted"
	// (applied locally, or under way) or "refused".
	Status  int    `json:"status"`
	Outcome string `json:"outcome"`
}

// AuditList is the answer of GET /api/v1/audit (newest first).
type AuditList struct {
	Entries []AuditEntry `json:"entries"`
}

// Audit lists audit entries; query may hold actor, action, target,
// since, until (RFC 3339) and limit.
func (c *Client) Audit(ctx context.Context, query url.Values) ([]AuditEntry, error) {
	var out AuditList
	p := "/api/v1/audit"
	if len(query) > 0 {
		p += "?" + query.Encode()
	}
	if err := c.do(ctx, "GET", p, nil, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}
