package lms

import (
	"slices"
	"testing"
	"time"

	"github.com/livefuse/livefuse/lms/api"
)

// RegisteredUnits answers the config's units as expected and the units of
// the nodes in the registry as alive; the store probe passes on a live store.
func TestRegisteredUnits(t *testing.T) {
	st := prefixStore(t)
	startAgent(t, st, "n1", time.Minute) // a node of unit a
	waitState(t, st, "n1", api.NodeServing)
	u := RegisteredUnits{Store: st, Expected: []string{"a", "b"}}
	expected, alive, err := u.Units(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(expected, []string{"a", "b"}) || !slices.Equal(alive, []string{"a"}) {
		t.Errorf("expected %v, alive %v", expected, alive)
	}
	p := StoreProbe(startRegistry(t, st))
	if p.Kind != api.AlertEtcd || p.Check(t.Context()) != nil {
		t.Errorf("store probe %s on a live store: %v", p.Kind, p.Check(t.Context()))
	}
}
