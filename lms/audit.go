package lms

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/livefuse/livefuse/bus"
	"github.com/livefuse/livefuse/lms/api"
)

// The audit log: every change made through the control API (who, what,
// when, the outcome) is kept in the store for lms.audit_retention and
// published on the bus's audit topic. Reads are not audited. Entries are
// written from a bounded queue by one goroutine, so a slow store never
// holds an API answer; a full queue drops the entry and says so in the
// log (the log line carries the same fields).

const (
	auditQueue    = 1024
	auditScanMax  = 10000 // entries read for one GET /api/v1/audit
	auditListMax  = 1000  // entries answered at most
	auditListDflt = 100
)

// auditNote is what a handler adds to its request's audit entry.
type auditNote struct {
	mu     sync.Mutex
	who    principal
	action string
	target string
	detail map[string]string
}

type auditNoteKey struct{}

// auditLog stores and publishes entries.
type auditLog struct {
	st        *Store // nil: entries only logged (tests without a store)
	retention time.Duration
	log       *slog.Logger
	queue     chan api.AuditEntry
	pub       bus.Publisher // nil: not published
	pubMu     sync.Mutex
}

func newAuditLog(st *Store, retention time.Duration, log *slog.Logger) *auditLog {
	return &auditLog{st: st, retention: retention, log: log, queue: make(chan api.AuditEntry, auditQueue)}
}

// run writes queued entries until done closes.
func (a *auditLog) run(done <-chan struct{}) {
	var lease clientv3.LeaseID
	var leaseAt time.Time
	for {
		var e api.AuditEntry
		select {
		case <-done:
			return
		case e = <-a.queue:
		}
		a.pubMu.Lock()
		pub := a.pub
		a.pubMu.Unlock()
		if pub != nil {
			detail, _ := json.Marshal(e)
			if err := bus.Emit(pub, bus.AuditEvent{Actor: e.Actor, Action: e.Action, Target: e.Target, Time: e.Time, Detail: detail}); err != nil {
				a.log.Warn("audit: not published", "err", err)
			}
		}
		if a.st == nil {
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		// One lease an hour: entries live between retention and retention+1h.
		if lease == 0 || time.Since(leaseAt) > time.Hour {
			g, err := a.st.cli.Grant(ctx, int64((a.retention+time.Hour)/time.Second))
			if err == nil {
				lease, leaseAt = g.ID, time.Now()
			}
		}
		key := fmt.Sprintf("%saudit/%020d-%s", a.st.prefix, e.Time.UnixNano(), e.ID)
		_, err = a.st.cli.Put(ctx, key, string(b), clientv3.WithLease(lease))
		cancel()
		if err != nil {
			lease = 0
			a.log.Warn("audit: entry not stored", "action", e.Action, "actor", e.Actor, "err", err)
		}
	}
}

// add queues e without blocking.
func (a *auditLog) add(e api.AuditEntry) {
	select {
	case a.queue <- e:
	default:
		a.log.Warn("audit: queue full, entry only logged", "action", e.Action, "actor", e.Actor, "target", e.Target)
	}
}

// SetAuditPublisher publishes every audit entry on the bus (topic audit).
func (s *Server) SetAuditPublisher(p bus.Publisher) {
	s.auditLog.pubMu.Lock()
	s.auditLog.pub = p
	s.auditLog.pubMu.Unlock()
}

// audited records every request that may change something (not GET or
// HEAD) once it is answered: who, the action the handler named (else
// method and route), the target, the status.
func (s *Server) audited(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		note := &auditNote{}
		r = r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		if sw.code == http.StatusUnauthorized {
			return // no token, nobody to name: the listener's logs have it
		}
		id, _ := NewToken()
		note.mu.Lock()
		who := note.who
		e := api.AuditEntry{ID: id, Time: time.Now().UTC(), Actor: who.name, Role: who.role, Remote: r.RemoteAddr,
			Method: r.Method, Path: r.URL.Path, Status: sw.code, Action: note.action, Target: note.target, Detail: note.detail}
		note.mu.Unlock()
		if e.Action == "" {
			e.Action = strings.ToLower(r.Method) + " " + r.URL.Path
		}
		e.Outcome = "done"
		switch {
		case sw.code == http.StatusAccepted:
			e.Outcome = "accepted"
		case sw.code >= 400:
			e.Outcome = "refused"
		}
		targetKey := "stream"
		if k, _, ok := strings.Cut(e.Target, "/"); ok && (k == "node" || k == "plan") {
			targetKey = "target"
		}
		attrs := []any{"audit", e.Action, "actor", e.Actor, "role", e.Role, targetKey, e.Target, "status", e.Status, "remote", e.Remote}
		for k, v := range e.Detail {
			attrs = append(attrs, k, v)
		}
		s.log.Info("audit", attrs...)
		s.auditLog.add(e)
	})
}

// noteCaller records who made r, for its audit entry.
func noteCaller(r *http.Request, who principal) {
	if note, _ := r.Context().Value(auditNoteKey{}).(*auditNote); note != nil {
		note.mu.Lock()
		note.who = who
		note.mu.Unlock()
	}
}

// noteAudit names the action and target of r's audit entry, with detail
// (never secret values) as key/value pairs.
func noteAudit(r *http.Request, action, target string, kv ...any) {
	note, _ := r.Context().Value(auditNoteKey{}).(*auditNote)
	if note == nil {
		return
	}
	note.mu.Lock()
	defer note.mu.Unlock()
	note.action, note.target = action, target
	for i := 0; i+1 < len(kv); i += 2 {
		if note.detail == nil {
			note.detail = map[string]string{}
		}
		note.detail[fmt.Sprint(kv[i])] = fmt.Sprint(kv[i+1])
	}
}

// handleAudit answers GET /api/v1/audit, newest first, filtered by actor,
// action, target (prefix) and since/until (RFC 3339), at most limit.
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := auditListDflt
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > auditListMax {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want 1 to %d", auditListMax))
			return
		}
		limit = n
	}
	var since, until time.Time
	for name, dst := range map[string]*time.Time{"since": &since, "until": &until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, http.StatusBadRequest, name+": want an RFC 3339 time")
				return
			}
			*dst = t
		}
	}
	if s.auditLog.st == nil {
		writeJSON(w, http.StatusOK, api.AuditList{Entries: []api.AuditEntry{}})
		return
	}
	prefix := s.auditLog.st.prefix + "audit/"
	from, to := prefix, clientv3.GetPrefixRangeEnd(prefix)
	if !since.IsZero() {
		from = fmt.Sprintf("%s%020d", prefix, since.UnixNano())
	}
	if !until.IsZero() {
		to = fmt.Sprintf("%s%020d", prefix, until.UnixNano()+1)
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeCallTimeout)
	defer cancel()
	resp, err := s.auditLog.st.cli.Get(ctx, from, clientv3.WithRange(to),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(auditScanMax))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store unreachable: the audit log needs it")
		return
	}
	out := api.AuditList{Entries: []api.AuditEntry{}}
	actor, action, target := q.Get("actor"), q.Get("action"), q.Get("target")
	for _, kv := range resp.Kvs {
		var e api.AuditEntry
		if json.Unmarshal(kv.Value, &e) != nil {
			continue
		}
		if (actor != "" && e.Actor != actor) || (action != "" && e.Action != action) ||
			(target != "" && !strings.HasPrefix(e.Target, target)) {
			continue
		}
		out.Entries = append(out.Entries, e)
		if len(out.Entries) == limit {
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
}
