package lms

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// The alert sources lms has itself: the units with a live node in the
// registry and the store's own probe. The node wiring adds the sources it
// reads from media and CDN parts.

// RegisteredUnits is the UnitSource of the node registry in Store: the
// units of the config (Expected, this one first) against the units with
// a live node.
type RegisteredUnits struct {
	Store    *Store
	Expected []string
}

// Units implements UnitSource; the store is given 2 s to answer.
func (u RegisteredUnits) Units(ctx context.Context) (expected, alive []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nodes, err := ListNodes(ctx, u.Store)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range nodes {
		if n.Unit != "" {
			alive = append(alive, n.Unit)
		}
	}
	return slices.Clone(u.Expected), alive, nil
}

// StoreProbe is the etcd probe: the registry's store answers.
func StoreProbe(reg *Registry) AlertProbe {
	return AlertProbe{Kind: api.AlertEtcd, Check: func(ctx context.Context) error {
		if err := reg.Ready(ctx); err != nil {
			return errors.New("the store did not answer")
		}
		return nil
	}}
}
