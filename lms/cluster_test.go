package lms

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEtcdConfigValidate(t *testing.T) {
	cluster := "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,w=http://127.0.0.1:2382"
	tests := []struct {
		name string
		cfg  EtcdConfig
		want string // "" valid, else a part of the error
	}{
		{"single member defaults", EtcdConfig{}, ""},
		{"external cluster", EtcdConfig{Endpoints: []string{"127.0.0.1:2379"}}, ""},
		{"member of a cluster", EtcdConfig{Name: "b", PeerListen: "127.0.0.1:2381", InitialCluster: cluster}, ""},
		{"advertised peer", EtcdConfig{Name: "b", PeerListen: "0.0.0.0:2381", AdvertisePeer: "http://127.0.0.1:2381", InitialCluster: cluster}, ""},
		{"endpoints and members", EtcdConfig{Endpoints: []string{"x:1"}, InitialCluster: cluster}, "exclude each other"},
		{"no name", EtcdConfig{PeerListen: "127.0.0.1:2381", InitialCluster: cluster}, "lms.etcd.name: required"},
		{"not a member", EtcdConfig{Name: "c", PeerListen: "127.0.0.1:2381", InitialCluster: cluster}, "not a member"},
		{"peer port picked by the system", EtcdConfig{Name: "b", PeerListen: "127.0.0.1:0", InitialCluster: cluster}, "fixed host:port"},
		{"peer URL differs", EtcdConfig{Name: "b", PeerListen: "127.0.0.1:2399", InitialCluster: cluster}, "differs"},
		{"bad member", EtcdConfig{Name: "a", PeerListen: "127.0.0.1:2380", InitialCluster: "a=http://127.0.0.1:2380,b"}, "want name=http://host:port"},
		{"duplicate member", EtcdConfig{Name: "a", PeerListen: "127.0.0.1:2380", InitialCluster: "a=http://127.0.0.1:2380,a=http://127.0.0.1:2381"}, "named twice"},
		{"member URL path", EtcdConfig{Name: "a", PeerListen: "127.0.0.1:2380", InitialCluster: "a=http://127.0.0.1:2380/x"}, "want http://host:port"},
		{"bad state", EtcdConfig{ClusterState: "joining"}, "cluster_state"},
		{"bad listen", EtcdConfig{Listen: "2379"}, "lms.etcd.listen"},
		{"timings", EtcdConfig{HeartbeatInterval: 50 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond}, ""},
		{"election too short", EtcdConfig{HeartbeatInterval: 100 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond}, "at least 5 times"},
		{"bad advertise", EtcdConfig{AdvertiseClient: "127.0.0.1:2379"}, "advertise_client"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// loopbackPorts returns n TCP ports free on 127.0.0.1 now.
func loopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, n)
	for i := range out {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out[i] = l.Addr().(*net.TCPAddr).Port
	}
	return out
}

// TestEmbeddedClusterSurvivesOneMember starts three embedded members (two
// units and a witness), stops any one of them, and checks that the other
// two still take writes and keep everything written before.
func TestEmbeddedClusterSurvivesOneMember(t *testing.T) {
	for _, lost := range []int{0, 2} { // a unit, the witness
		t.Run(fmt.Sprintf("lose-%d", lost), func(t *testing.T) {
			names := []string{"a", "b", "w"}
			ports := loopbackPorts(t, 6)
			var members []string
			for i, n := range names {
				members = append(members, fmt.Sprintf("%s=http://127.0.0.1:%d", n, ports[2*i+1]))
			}
			cluster := strings.Join(members, ",")
			base := t.TempDir()
			stores := make([]*Store, len(names))
			errs := make(chan error, len(names))
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			for i, n := range names {
				go func() {
					cfg := DefaultConfig()
					cfg.DataDir = filepath.Join(base, n)
					cfg.Etcd.Name = n
					cfg.Etcd.Listen = fmt.Sprintf("127.0.0.1:%d", ports[2*i])
					cfg.Etcd.PeerListen = fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])
					cfg.Etcd.InitialCluster = cluster
					cfg.Etcd.StartTimeout = 45 * time.Second
					st, err := OpenStore(ctx, cfg, testLogger(t))
					stores[i] = st
					errs <- err
				}()
			}
			for range names {
				if err := <-errs; err != nil {
					t.Fatalf("member start: %v", err)
				}
			}
			defer func() {
				for _, st := range stores {
					if st != nil {
						st.Close()
					}
				}
			}()
			// Every member sees the cluster of three.
			ml, err := stores[1].Client().MemberList(ctx)
			if err != nil || len(ml.Members) != 3 {
				t.Fatalf("member list: %v, %d members", err, len(ml.Members))
			}
			if _, err := stores[0].Client().Put(ctx, "/t/before", "1"); err != nil {
				t.Fatal(err)
			}
			stores[lost].Close()
			stores[lost] = nil
			// The others take a write once a leader is (re)elected; bound
			// the wait at a generous 15 s (elections take about 1-2 s).
			var survivor *Store
			for i, st := range stores {
				if i != lost && st != nil {
					survivor = st
					break
				}
			}
			deadline := time.Now().Add(15 * time.Second)
			for {
				wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := survivor.Client().Put(wctx, "/t/after", "2")
				wcancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no write after losing member %s: %v", names[lost], err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			for i, st := range stores {
				if st == nil {
					continue
				}
				for _, k := range []string{"/t/before", "/t/after"} {
					resp, err := st.Client().Get(ctx, k)
					if err != nil || len(resp.Kvs) != 1 {
						t.Fatalf("member %s: get %s: %v (%d kvs)", names[i], k, err, len(resp.Kvs))
					}
				}
				if err := st.Ready(ctx); err != nil {
					t.Fatalf("member %s not ready: %v", names[i], err)
				}
			}
		})
	}
}
