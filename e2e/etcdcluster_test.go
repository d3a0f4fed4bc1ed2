package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The control plane survives any one machine: units a and b each run an
// embedded etcd member, a witness process runs the third, and after unit
// a is killed (SIGKILL, no goodbye) the API of unit b still answers a
// switch; unit a, restarted, catches up with what was written meanwhile.

// clusterMember is one process of the three: its server and etcd ports.
type clusterMember struct {
	*server
	name             string
	client, peerPort int
}

func newClusterMembers(t *testing.T, names ...string) (members []*clusterMember, initial string) {
	var parts []string
	for _, n := range names {
		m := &clusterMember{server: newUnit(t), name: n, client: freePort(t), peerPort: freePort(t)}
		members = append(members, m)
		parts = append(parts, fmt.Sprintf("%s=http://127.0.0.1:%d", n, m.peerPort))
	}
	return members, strings.Join(parts, ",")
}

func (m *clusterMember) etcdYAML(initial string) string {
	return fmt.Sprintf(`lms:
  api_addr: "127.0.0.1:%d"
  api_token: %q
  etcd:
    name: %s
    listen: "127.0.0.1:%d"
    peer_listen: "127.0.0.1:%d"
    initial_cluster: %q
    start_timeout: 60s
`, m.apiPort, apiToken, m.name, m.client, m.peerPort, initial)
}

func TestEtcdClusterSurvivesUnitLoss(t *testing.T) {
	ms, initial := newClusterMembers(t, "a", "b", "w")
	a, b, w := ms[0], ms[1], ms[2]
	a.configure("unit: a\n" + a.etcdYAML(initial))
	b.configure("unit: b\n" + b.etcdYAML(initial))
	w.configure(w.etcdYAML(initial))
	w.sub = "witness"
	// A member is ready only with a quorum: start the three together.
	errs := make(chan error, len(ms))
	for _, m := range ms {
		m.launch()
		t.Cleanup(m.stop)
	}
	for _, m := range ms {
		go func() { errs <- m.waitReady(60 * time.Second) }()
	}
	for range ms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	if code, err := a.api("POST", "/streams", map[string]any{"app": "live", "name": "before", "publish_token": "t1"}, nil); err != nil || code != http.StatusCreated {
		t.Fatalf("create on a: %d %v", code, err)
	}
	waitStream(t, b.server, "before", 5*time.Second)

	// The worst case: unit a leads the cluster when it goes away, so the
	// others must first notice and elect a new leader.
	makeLeader(t, a, ms)

	// Unit a goes away at once.
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.exited
	killed := time.Now()

	// Unit b answers a switch (a registry write needing quorum) as soon as
	// b and the witness have elected a leader.
	var took time.Duration
	for {
		code, err := b.api("POST", "/streams/live/before/switch", map[string]any{"feed": "backup"}, nil)
		if err == nil && code == http.StatusOK {
			took = time.Since(killed)
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("unit b: no switch within 20 s of losing unit a: %d %v\n%s", code, err, b.tail(50))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("unit b took its first write %v after unit a was killed", took.Round(time.Millisecond))
	if code, err := b.api("POST", "/streams", map[string]any{"app": "live", "name": "during", "publish_token": "t2"}, nil); err != nil || code != http.StatusCreated {
		t.Fatalf("create on b with a down: %d %v", code, err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", b.apiPort))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("unit b readyz with a down: %v %v", resp, err)
	}
	resp.Body.Close()

	// Unit a comes back on its data dir and catches up.
	a.launch()
	if err := a.waitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitStream(t, a.server, "during", 10*time.Second)
	var st struct {
		FeedPolicy string `json:"feed_policy"`
	}
	if code, err := a.api("GET", "/streams/live/before", nil, &st); err != nil || code != http.StatusOK {
		t.Fatalf("get on a: %d %v", code, err)
	}
	if st.FeedPolicy != "backup" {
		t.Fatalf("unit a after restart: feed_policy %q, want the switch made while it was down (backup)", st.FeedPolicy)
	}
}

// waitStream waits until s's registry lists live/name.
func waitStream(t *testing.T, s *server, name string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, err := s.api("GET", "/streams/live/"+name, nil, nil)
		if err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream live/%s not seen within %s: %d %v", name, within, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// makeLeader moves the etcd leadership to member m.
func makeLeader(t *testing.T, m *clusterMember, all []*clusterMember) {
	t.Helper()
	var eps []string
	for _, x := range all {
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", x.client))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, ep := range eps {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		st, err := cli.Status(ctx, ep)
		if err != nil {
			cli.Close()
			t.Fatalf("etcd status %s: %v", ep, err)
		}
		if st.Header.MemberId != st.Leader {
			cli.Close()
			continue
		}
		// ep is the leader: hand over to m.
		ml, err := cli.MemberList(ctx)
		if err != nil {
			cli.Close()
			t.Fatal(err)
		}
		var target uint64
		for _, mem := range ml.Members {
			if mem.Name == m.name {
				target = mem.ID
			}
		}
		if target != 0 && target != st.Leader {
			if _, err := cli.MoveLeader(ctx, target); err != nil {
				cli.Close()
				t.Fatalf("move leader to %s: %v", m.name, err)
			}
		}
		cli.Close()
		break
	}
	// Check from m itself.
	ep := fmt.Sprintf("127.0.0.1:%d", m.client)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := cli.Status(ctx, ep)
	if err != nil || st.Header.MemberId != st.Leader {
		t.Fatalf("member %s is not the leader after the move: %v", m.name, err)
	}
}
