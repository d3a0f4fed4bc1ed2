package recording

import (
	"context"
	"strings"
	"time"
)

// retentionEvery is how often old sessions are looked for.
const retentionEvery = time.Hour

func (r *Recorder) retentionLoop(ctx context.Context) {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := r.Expire(ctx, time.Now()); err != nil {
			r.log.Warn("recording retention", "err", err)
		} else if n > 0 {
			r.log.Info("recording retention: sessions deleted", "sessions", n, "retention_days", r.cfg.RetentionDays)
		}
		t.Reset(retentionEvery)
	}
}

// Expire deletes from the sink every session that started more than
// retention_days before now and returns how many went. The manifest goes
// last, so an interrupted sweep is finished by the next.
func (r *Recorder) Expire(ctx context.Context, now time.Time) (int, error) {
	if r.cfg.RetentionDays <= 0 {
		return 0, nil
	}
	cutoff := now.Add(-time.Duration(r.cfg.RetentionDays) * 24 * time.Hour)
	objs, err := r.sink.List(ctx, "")
	if err != nil {
		return 0, err
	}
	bySession := map[string][]string{}
	seen := map[string]bool{}
	var order []string
	for _, o := range objs {
		parts := strings.Split(o.Key, "/")
		if len(parts) != 4 {
			continue
		}
		start, err := parseSessionID(parts[2])
		if err != nil || !start.Before(cutoff) {
			continue
		}
		dir := strings.Join(parts[:3], "/")
		if !seen[dir] {
			seen[dir] = true
			order = append(order, dir)
		}
		if parts[3] == manifestName {
			continue // deleted last
		}
		bySession[dir] = append(bySession[dir], o.Key)
	}
	n := 0
	for _, dir := range order {
		r.mu.Lock()
		live := false
		for _, s := range r.sessions {
			if s.key("") == dir+"/" {
				live = true
			}
		}
		r.mu.Unlock()
		if live {
			continue // still being recorded or uploaded
		}
		for _, k := range append(bySession[dir], dir+"/"+manifestName) {
			if err := r.sink.Delete(ctx, k); err != nil {
				return n, err
			}
		}
		n++
	}
	return n, nil
}
