package lms

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/livefuse/livefuse/lms/api"
)

// Mount adds the alert routes to the control API:
//
//	GET  /api/v1/alerts[?state=firing|resolved]   viewer
//	POST /api/v1/alerts/{id}/ack                  operator
//	GET  /api/v1/alerts/silences                  viewer
//	POST /api/v1/alerts/silences                  operator
//	GET  /api/v1/alerts/rules                     viewer
//	PUT  /api/v1/alerts/rules                     admin
//
// Changes are audited by the API's audit middleware.
func (a *Alerts) Mount(s *Server) {
	s.Handle("GET /api/v1/alerts", http.HandlerFunc(a.handleList))
	s.Handle("POST /api/v1/alerts/{id}/ack", http.HandlerFunc(a.handleAck))
	s.Handle("GET /api/v1/alerts/silences", http.HandlerFunc(a.handleSilences))
	s.Handle("POST /api/v1/alerts/silences", http.HandlerFunc(a.handleSilence))
	s.Handle("GET /api/v1/alerts/rules", http.HandlerFunc(a.handleRules))
	s.Handle("PUT /api/v1/alerts/rules", http.HandlerFunc(a.handlePutRules))
	s.Handle("/api/v1/alerts", methodNotAllowed("GET"))
	s.Handle("/api/v1/alerts/rules", methodNotAllowed("GET, PUT"))
	s.Handle("/api/v1/alerts/silences", methodNotAllowed("GET, POST"))
	s.Handle("/api/v1/alerts/{id}/ack", methodNotAllowed("POST"))
}

// callerName is who made r (set by the API's authentication).
func callerName(r *http.Request) string {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p.name
}

func (a *Alerts) handleList(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "", api.AlertFiring, api.AlertResolved:
	default:
		writeError(w, http.StatusBadRequest, "state: want firing or resolved")
		return
	}
	out := api.AlertList{Alerts: []api.Alert{}}
	for _, al := range a.List() {
		if state == "" || al.State == state {
			out.Alerts = append(out.Alerts, al)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Alerts) handleAck(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if len(id) > 64 {
		writeError(w, http.StatusBadRequest, "id too long")
		return
	}
	noteAudit(r, "alert ack", "alert/"+id)
	al, err := a.Ack(id, callerName(r))
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, "alert not found")
		return
	}
	noteAudit(r, "alert ack", "alert/"+id, "rule", al.Rule, "summary", al.Summary)
	writeJSON(w, http.StatusOK, al)
}

func (a *Alerts) handleSilences(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]api.Silence{"silences": a.Silences()})
}

func (a *Alerts) handleSilence(w http.ResponseWriter, r *http.Request) {
	var req api.Silence
	if !decodeJSON(w, r, &req) {
		return
	}
	noteAudit(r, "alert silence", "alerts/"+req.Rule, "rule", req.Rule, "duration_s", strconv.FormatFloat(req.DurationS, 'f', -1, 64),
		"stream", req.Labels.Stream, "vendor", req.Labels.Vendor, "region", req.Labels.Region, "isp", req.Labels.ISP)
	s, err := a.Silence(api.Silence{Rule: req.Rule, Labels: req.Labels, DurationS: req.DurationS}, callerName(r))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, s)
}

func (a *Alerts) handleRules(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.AlertRules{Rules: a.Rules()})
}

func (a *Alerts) handlePutRules(w http.ResponseWriter, r *http.Request) {
	var req api.AlertRules
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Rules == nil {
		req.Rules = []api.AlertRule{}
	}
	noteAudit(r, "alert rules", "alerts/rules", "rules", strconv.Itoa(len(req.Rules)))
	if err := a.putRules(r.Context(), req.Rules); err != nil {
		if errors.Is(err, ErrInvalid) {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeError(w, http.StatusServiceUnavailable, "store unreachable: the rules were not changed")
		return
	}
	writeJSON(w, http.StatusOK, api.AlertRules{Rules: a.Rules()})
}
