package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A lab is a small network of hosts made of network namespaces, for the
// multi-host drills: every host has a media interface (eth0, on a media
// bridge) and a control interface (eth1, on a control bridge, where etcd
// members talk), so that a host can be cut off whole (both links down)
// or partitioned from the control plane only. The bridges live in a
// "switch" namespace; the test process itself joins both networks
// through a pair of veths with the .1 addresses. Everything is removed
// in cleanup (deleting a namespace deletes the veths in it, and with
// them their peers).

// drillEnv gates the drills: they need root and change the host's
// network namespaces, so they run only through `make drill`.
const drillEnv = "LIVEFUSE_DRILL"

type lab struct {
	t         *testing.T
	id        string // prefix of namespace and link names
	media     string // "10.231.N." media subnet prefix
	ctl       string // "10.232.N." control subnet prefix
	sw        string // the switch namespace
	hosts     map[string]*labHost
	namespace []string
}

type labHost struct {
	name, ns       string
	mediaIP, ctlIP string
}

func newLab(t *testing.T, names ...string) *lab {
	t.Helper()
	if os.Getenv(drillEnv) == "" {
		t.Skipf("multi-host drill: run with `make drill` (%s=1, as root)", drillEnv)
	}
	if os.Geteuid() != 0 {
		t.Skip("multi-host drill: needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("multi-host drill: needs ip (iproute2)")
	}
	var r [2]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, id: "lf" + hex.EncodeToString(r[:]), hosts: map[string]*labHost{}}
	n := 10 + int(r[0])%200
	l.media, l.ctl = fmt.Sprintf("10.231.%d.", n), fmt.Sprintf("10.232.%d.", n)
	t.Cleanup(l.close)
	l.sw = l.addNS("sw")
	for _, br := range []string{"brm", "brc"} {
		l.ip("-n", l.sw, "link", "add", br, "type", "bridge")
		l.ip("-n", l.sw, "link", "set", br, "up")
	}
	// The test process: .1 on both networks.
	l.plug("", l.id+"r0", l.id+"R0", "brm", l.media+"1")
	l.plug("", l.id+"r1", l.id+"R1", "brc", l.ctl+"1")
	for i, name := range names {
		h := &labHost{name: name, ns: l.addNS(name), mediaIP: fmt.Sprintf("%s%d", l.media, 11+i), ctlIP: fmt.Sprintf("%s%d", l.ctl, 11+i)}
		l.plug(h.ns, fmt.Sprintf("%sh%dm", l.id, i), fmt.Sprintf("%sH%dm", l.id, i), "brm", h.mediaIP)
		l.plug(h.ns, fmt.Sprintf("%sh%dc", l.id, i), fmt.Sprintf("%sH%dc", l.id, i), "brc", h.ctlIP)
		l.ip("-n", h.ns, "link", "set", fmt.Sprintf("%sh%dm", l.id, i), "name", "eth0")
		l.ip("-n", h.ns, "link", "set", fmt.Sprintf("%sh%dc", l.id, i), "name", "eth1")
		l.hosts[name] = h
	}
	return l
}

// addNS makes namespace id-name with its loopback up.
func (l *lab) addNS(name string) string {
	ns := l.id + "-" + name
	l.ip("netns", "add", ns)
	l.namespace = append(l.namespace, ns)
	l.ip("-n", ns, "link", "set", "lo", "up")
	return ns
}

// plug makes a veth pair: end (named inner) in namespace ns ("" = the
// test's own) with addr/24, the peer on bridge br of the switch.
func (l *lab) plug(ns, inner, peer, br, addr string) {
	l.ip("link", "add", inner, "type", "veth", "peer", "name", peer)
	l.ip("link", "set", peer, "netns", l.sw)
	l.ip("-n", l.sw, "link", "set", peer, "master", br)
	l.ip("-n", l.sw, "link", "set", peer, "up")
	args := []string{}
	if ns != "" {
		l.ip("link", "set", inner, "netns", ns)
		args = []string{"-n", ns}
	}
	l.ip(append(args, "addr", "add", addr+"/24", "dev", inner)...)
	l.ip(append(args, "link", "set", inner, "up")...)
}

// link sets host's media (eth0) or control (eth1) link up or down, from
// the switch's side too, as a pulled cable would.
func (l *lab) link(host, dev string, up bool) {
	h := l.hosts[host]
	state := "down"
	if up {
		state = "up"
	}
	l.ip("-n", h.ns, "link", "set", dev, state)
}

func (l *lab) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (l *lab) close() {
	for i := len(l.namespace) - 1; i >= 0; i-- {
		// Processes still in a namespace keep it alive; the tests stop
		// theirs first (their cleanups run before this one).
		if out, err := exec.Command("ip", "netns", "del", l.namespace[i]).CombinedOutput(); err != nil {
			l.t.Logf("ip netns del %s: %v: %s", l.namespace[i], err, out)
		}
	}
	// The root-side veths went with their peers; make sure.
	for _, dev := range []string{l.id + "r0", l.id + "r1"} {
		_ = exec.Command("ip", "link", "del", dev).Run()
	}
}

// unitIn prepares a livefuse unit (or the witness, with sub "witness") on
// host h of the lab: fixed ports, which cannot clash inside a namespace.
func (l *lab) unitIn(host string) *server {
	h := l.hosts[host]
	s := &server{t: l.t, dir: l.t.TempDir(), token: apiToken, host: h.mediaIP, netns: h.ns,
		rtmp: 1935, rtsp: 8554, http: 8080, apiPort: 9090}
	return s
}
