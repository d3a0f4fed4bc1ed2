package lms

import (
	"context"
	"fmt"

	"github.com/livefuse/livefuse/lms/api"
)

// The rules set through the API live in the store (collection
// "alert-rules", one item), so that every node evaluates the same rules
// and they survive a restart; the config's rules apply until the first
// PUT, as the config's CDN vendors seed theirs.
const (
	alertRulesKind = "alert-rules"
	alertRulesItem = "rules"
)

// UseStore keeps the rules set through the API in st and follows the
// other nodes' changes. Call it before Run; Run closes the watch.
func (a *Alerts) UseStore(ctx context.Context, st *Store) error {
	c, err := NewCollection(st, alertRulesKind, CollectionOptions[api.AlertRules]{Log: a.log})
	if err != nil {
		return err
	}
	apply := func() {
		rs, ok := c.Get(alertRulesItem)
		if !ok {
			return
		}
		if err := a.SetRules(rs.Rules); err != nil {
			a.log.Warn("alerts: stored rules refused; keeping the rules in force", "err", err)
		}
	}
	c.OnChange(apply)
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("alert rules: %w", err)
	}
	apply()
	a.mu.Lock()
	a.store = c
	a.mu.Unlock()
	return nil
}

// putRules stores rs (when a store is used) and applies it here at once.
func (a *Alerts) putRules(ctx context.Context, rs []api.AlertRule) error {
	if err := api.ValidateAlertRules(rs); err != nil {
		return err
	}
	a.mu.Lock()
	c := a.store
	a.mu.Unlock()
	if c != nil {
		if _, err := c.Put(ctx, alertRulesItem, api.AlertRules{Rules: rs}); err != nil {
			return err
		}
	}
	return a.SetRules(rs)
}

func (a *Alerts) closeStore() {
	a.mu.Lock()
	c := a.store
	a.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
