package lms

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/livefuse/livefuse/lms/api"
)

// UnitStatus is one stream's switcher at one unit; see api.UnitStatus.
type UnitStatus = api.UnitStatus

// unitReport is what a unit writes to the store: its streams' switcher
// states by "app/name".
type unitReport struct {
	Unit    string                `json:"unit"`
	At      time.Time             `json:"at"`
	Streams map[string]UnitStatus `json:"streams"`
}

// ReportUnit writes the switcher state of this unit's live streams to the
// store every period, under a lease, until ctx is done: every unit's
// control API can then show every unit. snapshot returns the streams by
// "app/name". A unit that dies disappears when its lease expires.
func (r *Registry) ReportUnit(ctx context.Context, unit string, period time.Duration, snapshot func() map[string]UnitStatus) {
	if period <= 0 {
		period = 2 * time.Second
	}
	key := r.unitsDir + unit
	ttl := int64(3*period/time.Second) + 1
	var lease clientv3.LeaseID
	// After a change of a stream the unit reports every reportFast for
	// reportFastFor, so that what the change did (a forced feed) shows
	// everywhere within a fraction of a second.
	changed := make(chan struct{}, 1)
	r.c.Subscribe(func(Change[Stream]) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	var fastUntil time.Time
	t := time.NewTimer(period)
	defer t.Stop()
	for {
		rep := unitReport{Unit: unit, At: time.Now().UTC(), Streams: snapshot()}
		if err := r.putReport(ctx, key, ttl, &lease, rep); err != nil && ctx.Err() == nil {
			r.log.Debug("lms: unit report not written", "unit", unit, "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = r.cli.Delete(dctx, key)
			cancel()
			return
		case <-changed:
			fastUntil = time.Now().Add(reportFastFor)
		case <-t.C:
		}
		next := period
		if time.Now().Before(fastUntil) {
			next = min(period, reportFast)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// The unit reports' faster pace after a stream changed.
const (
	reportFast    = 150 * time.Millisecond
	reportFastFor = 5 * time.Second
)

func (r *Registry) putReport(ctx context.Context, key string, ttl int64, lease *clientv3.LeaseID, rep unitReport) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if *lease == 0 {
		g, err := r.cli.Grant(cctx, ttl)
		if err != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		*lease = g.ID
	}
	if _, err := r.cli.Put(cctx, key, string(b), clientv3.WithLease(*lease)); err != nil {
		*lease = 0 // expired or the store restarted: grant a new one next time
		return fmt.Errorf("put %s: %w", key, err)
	}
	if _, err := r.cli.KeepAliveOnce(cctx, *lease); err != nil {
		*lease = 0
		return fmt.Errorf("keep lease: %w", err)
	}
	return nil
}

// Units returns the latest report of every live unit: stream "app/name" →
// the units that have it live, sorted by unit name.
func (r *Registry) Units(ctx context.Context) (map[string][]UnitStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := r.cli.Get(cctx, r.unitsDir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read unit reports: %w", err)
	}
	out := map[string][]UnitStatus{}
	for _, kv := range resp.Kvs {
		var rep unitReport
		if err := json.Unmarshal(kv.Value, &rep); err != nil {
			r.log.Warn("lms: bad unit report", "key", string(kv.Key), "err", err)
			continue
		}
		if rep.Unit == "" {
			rep.Unit = strings.TrimPrefix(string(kv.Key), r.unitsDir)
		}
		for path, st := range rep.Streams {
			st.Unit, st.ReportedAt = rep.Unit, rep.At
			out[path] = append(out[path], st)
		}
	}
	for _, l := range out {
		sortUnits(l)
	}
	return out, nil
}

func sortUnits(l []UnitStatus) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j].Unit < l[j-1].Unit; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}
