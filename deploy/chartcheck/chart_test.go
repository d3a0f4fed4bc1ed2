package chartcheck

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// rendered is one helm template run, decoded.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
	monitors    map[string]*monitoringv1.ServiceMonitor
	scaled      map[string]map[string]any
	accounts    map[string]*corev1.ServiceAccount
}

// valueSets are the chart's value files checked: the defaults, every
// option on, and host ports with preferred zone spreading.
var valueSets = []struct {
	name  string
	files []string
}{
	{"defaults", nil},
	{"all-on", []string{"ci/all-on-values.yaml"}},
	{"hostport", []string{"ci/hostport-values.yaml"}},
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "deploy", "helm", "livefuse") }

func valueArgs(files []string) []string {
	var a []string
	for _, f := range files {
		a = append(a, "-f", f)
	}
	return a
}

// renderChart runs helm template and decodes every manifest strictly.
func renderChart(t *testing.T, files []string) rendered {
	t.Helper()
	args := append([]string{"template", "lf", ".", "--namespace", "media"}, valueArgs(files)...)
	out := run(t, chartDir(t), nil, helmBin(t), args...)
	r := rendered{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, monitors: map[string]*monitoringv1.ServiceMonitor{},
		scaled: map[string]map[string]any{}, accounts: map[string]*corev1.ServiceAccount{},
	}
	for _, doc := range splitDocs(t, out) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("manifest: %v\n%s", err, doc)
		}
		var obj interface{ GetName() string }
		var err error
		switch gvk := tm.APIVersion + "/" + tm.Kind; gvk {
		case "apps/v1/Deployment":
			o := &appsv1.Deployment{}
			err, obj = strictDecode(doc, o), o
			r.deployments[o.Name] = o
		case "v1/Service":
			o := &corev1.Service{}
			err, obj = strictDecode(doc, o), o
			r.services[o.Name] = o
		case "v1/ConfigMap":
			o := &corev1.ConfigMap{}
			err, obj = strictDecode(doc, o), o
			r.configMaps[o.Name] = o
		case "v1/Secret":
			o := &corev1.Secret{}
			err, obj = strictDecode(doc, o), o
			r.secrets[o.Name] = o
		case "v1/ServiceAccount":
			o := &corev1.ServiceAccount{}
			err, obj = strictDecode(doc, o), o
			r.accounts[o.Name] = o
		case "policy/v1/PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			err, obj = strictDecode(doc, o), o
			r.pdbs[o.Name] = o
		case "monitoring.coreos.com/v1/ServiceMonitor":
			o := &monitoringv1.ServiceMonitor{}
			err, obj = strictDecode(doc, o), o
			r.monitors[o.Name] = o
		case "keda.sh/v1alpha1/ScaledObject":
			var u map[string]any
			if err := yaml.Unmarshal(doc, &u); err != nil {
				t.Fatal(err)
			}
			name, _ := lookup(u, "metadata.name").(string)
			checkScaledObject(t, name, u)
			r.scaled[name] = u
			continue
		default:
			t.Fatalf("unexpected kind %s in the rendered chart:\n%s", gvk, doc)
		}
		if err != nil {
			t.Fatalf("%s/%s does not decode strictly: %v\n%s", tm.Kind, tm.APIVersion, err, doc)
		}
		if obj.GetName() == "" {
			t.Fatalf("%s without a name", tm.Kind)
		}
	}
	return r
}

func TestChartLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", "."}, valueArgs(vs.files)...)
			run(t, chartDir(t), nil, helmBin(t), args...)
		})
	}
}

// TestChartRefusesBadValues: values that would give a broken deployment
// fail at helm template, with a message naming the value.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"network.mode=host", "network.mode"},
		{"unitZoneSpread=maybe", "unitZoneSpread"},
		{"drain.timeout=30", "duration"},
		{"etcd.endpoints=null", "etcd.endpoints"},
		{"secrets.existingSecret=", "secrets.existingSecret"},
		{"config.lms.api_token=plain", "config.lms.api_token: a secret"},
		{"config.recording.s3.secret_key=plain", "config.recording.s3.secret_key: a secret"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			out, err := helmCmd(t, "template", "lf", ".", "--set", tc.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded; want a failure naming %s", tc.set, tc.want)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("helm template --set %s: message does not name %s:\n%s", tc.set, tc.want, out)
			}
		})
	}
}

func TestChartManifests(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			r := renderChart(t, vs.files)
			units := unitDeployments(t, r)
			if len(units) != 2 {
				t.Fatalf("unit Deployments: %d, want 2 (a and b)", len(units))
			}
			checkZones(t, vs.name, units)
			for unit, d := range units {
				checkUnitPod(t, r, unit, d)
			}
			checkServices(t, r)
			checkPDB(t, r, units)
			checkNoSecretsInConfigMaps(t, r)
			if d, ok := r.deployments["lf-livefuse-edge"]; ok {
				checkEdge(t, r, d)
			} else {
				t.Error("no edge Deployment")
			}
			switch vs.name {
			case "all-on":
				if len(r.monitors) != 1 || len(r.scaled) != 1 {
					t.Errorf("all-on: %d ServiceMonitors, %d ScaledObjects; want 1 each", len(r.monitors), len(r.scaled))
				}
				checkMonitors(t, r)
				checkScaleTargets(t, r)
				for unit, d := range units {
					spec := d.Spec.Template.Spec
					if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
						t.Errorf("unit %s: hostNetwork %v dnsPolicy %q with network.mode hostNetwork", unit, spec.HostNetwork, spec.DNSPolicy)
					}
					if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
						t.Errorf("unit %s: strategy %s with host ports; want Recreate", unit, d.Spec.Strategy.Type)
					}
				}
			case "hostport":
				for unit, d := range units {
					c := d.Spec.Template.Spec.Containers[0]
					for _, p := range c.Ports {
						if (p.Name == "api") != (p.HostPort == 0) {
							t.Errorf("unit %s: port %s hostPort %d; want the media ports on the host, the API not", unit, p.Name, p.HostPort)
						}
					}
				}
			default:
				if len(r.monitors)+len(r.scaled) != 0 {
					t.Error("defaults render a ServiceMonitor or ScaledObject: they need CRDs and are opt-in")
				}
				for unit, d := range units {
					for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
						if p.HostPort != 0 || d.Spec.Template.Spec.HostNetwork {
							t.Errorf("unit %s: host port or host network by default", unit)
						}
					}
				}
			}
		})
	}
}

// unitDeployments maps unit name to its Deployment.
func unitDeployments(t *testing.T, r rendered) map[string]*appsv1.Deployment {
	units := map[string]*appsv1.Deployment{}
	for _, d := range r.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] != "origin" {
			continue
		}
		u := d.Spec.Template.Labels["livefuse.io/unit"]
		if u == "" {
			t.Errorf("origin Deployment %s without a livefuse.io/unit label", d.Name)
		}
		units[u] = d
	}
	return units
}

// checkZones: the two units can never share a zone (required
// anti-affinity across units on the zone key, or distinct pinned zones),
// or, with unitZoneSpread preferred, the scheduler is asked to keep them
// apart.
func checkZones(t *testing.T, set string, units map[string]*appsv1.Deployment) {
	const zoneKey = "topology.kubernetes.io/zone"
	zones := map[string]string{}
	for unit, d := range units {
		pod := d.Spec.Template
		aff := pod.Spec.Affinity
		if aff == nil || aff.PodAntiAffinity == nil {
			t.Errorf("unit %s: no pod anti-affinity", unit)
			continue
		}
		var terms []corev1.PodAffinityTerm
		terms = append(terms, aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
		preferred := set == "hostport"
		if preferred {
			for _, w := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				terms = append(terms, w.PodAffinityTerm)
			}
		}
		// Every other unit's pod must match a term on the zone key; this
		// unit's own pods (a rolling update) must not.
		for other, od := range units {
			matched := false
			for _, term := range terms {
				sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
				if err != nil {
					t.Fatalf("unit %s: anti-affinity selector: %v", unit, err)
				}
				if term.TopologyKey == zoneKey && sel.Matches(labels.Set(od.Spec.Template.Labels)) {
					matched = true
				}
			}
			if other != unit && !matched {
				t.Errorf("unit %s: nothing keeps unit %s out of its zone", unit, other)
			}
			if other == unit && matched {
				t.Errorf("unit %s: its anti-affinity matches its own pods (a rolling update could never schedule)", unit)
			}
		}
		if na := aff.NodeAffinity; na != nil && na.RequiredDuringSchedulingIgnoredDuringExecution != nil {
			for _, term := range na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
				for _, e := range term.MatchExpressions {
					if e.Key == zoneKey && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 {
						zones[unit] = e.Values[0]
					}
				}
			}
		}
	}
	if set == "all-on" {
		if len(zones) != 2 || zones["a"] == zones["b"] {
			t.Errorf("pinned zones %v: want a and b in two different zones", zones)
		}
	}
}

// unitConfig returns the config template of a unit's pod.
func unitConfig(t *testing.T, r rendered, d *appsv1.Deployment) (string, map[string]any) {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.Name == "config-template" {
			cm, ok := r.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("%s: ConfigMap %s is not rendered", d.Name, v.ConfigMap.Name)
			}
			tmpl := cm.Data["livefuse.yaml.tmpl"]
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(tmpl), &cfg); err != nil {
				t.Fatalf("%s: config template: %v", cm.Name, err)
			}
			return tmpl, cfg
		}
	}
	t.Fatalf("%s: no config-template volume", d.Name)
	return "", nil
}

func durationOf(t *testing.T, cfg map[string]any, key string) time.Duration {
	t.Helper()
	s, _ := cfg[key].(string)
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("config %s %q: %v", key, s, err)
	}
	return d
}

func checkUnitPod(t *testing.T, r rendered, unit string, d *appsv1.Deployment) {
	spec := d.Spec.Template.Spec
	tmpl, cfg := unitConfig(t, r, d)
	checkConfigKeys(t, "unit "+unit+" config", cfg)
	if cfg["unit"] != unit {
		t.Errorf("unit %s: config says unit %v", unit, cfg["unit"])
	}
	if eps, _ := lookup(cfg, "lms.etcd.endpoints").([]any); len(eps) == 0 {
		t.Errorf("unit %s: no external etcd endpoints in its config", unit)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("unit %s: %d containers, want 1", unit, len(spec.Containers))
	}
	c := spec.Containers[0]

	// Probes: readiness on /readyz, liveness on /healthz, on the API port
	// the config binds.
	apiPort := containerPort(c, "api")
	if apiPort == 0 {
		t.Fatalf("unit %s: no api port", unit)
	}
	if addr, _ := lookup(cfg, "lms.api_addr").(string); addr != fmt.Sprintf(":%d", apiPort) {
		t.Errorf("unit %s: lms.api_addr %q, container port api %d", unit, addr, apiPort)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"startup", c.StartupProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("unit %s: no HTTP %s probe", unit, p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "api" {
			t.Errorf("unit %s: %s probe %s on %s, want %s on api", unit, p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// Drain: the grace period covers the preStop wait, the drain and the
	// shutdown; preStop only waits.
	drain, shutdown := durationOf(t, cfg, "drain_timeout"), durationOf(t, cfg, "shutdown_timeout")
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatalf("unit %s: no terminationGracePeriodSeconds", unit)
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Errorf("unit %s: preStop is not a sleep (it must only wait for endpoint removal)", unit)
	} else {
		if c.Lifecycle.PreStop.Exec != nil || c.Lifecycle.PreStop.HTTPGet != nil {
			t.Errorf("unit %s: preStop does more than wait", unit)
		}
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if preStop <= 0 || preStop > 30*time.Second {
			t.Errorf("unit %s: preStop sleeps %s", unit, preStop)
		}
	}
	if grace < preStop+drain+shutdown {
		t.Errorf("unit %s: terminationGracePeriodSeconds %s < preStop %s + drain_timeout %s + shutdown_timeout %s", unit, grace, preStop, drain, shutdown)
	}

	// Security: non-root, no escalation, read-only root, no API token.
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("unit %s: pod securityContext does not enforce a non-root user", unit)
	}
	for _, ctr := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := ctr.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("unit %s: container %s may escalate privileges or write its root filesystem", unit, ctr.Name)
		}
		if sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("unit %s: container %s runs as root", unit, ctr.Name)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("unit %s: the service account token is mounted", unit)
	}
	if _, ok := r.accounts[spec.ServiceAccountName]; !ok {
		t.Errorf("unit %s: service account %q not rendered", unit, spec.ServiceAccountName)
	}

	// Secrets: the server's env and the render-config init container only
	// reference the Secret; the rendered config fills every placeholder.
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "render-config" {
		t.Fatalf("unit %s: want the render-config init container", unit)
	}
	env := map[string]string{}
	for _, e := range append(slices.Clone(spec.InitContainers[0].Env), c.Env...) {
		if e.Value != "" {
			t.Errorf("unit %s: env %s has a literal value; secrets come from the Secret", unit, e.Name)
		}
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("unit %s: env %s is not from a Secret", unit, e.Name)
			continue
		}
		env[e.Name] = secretValue(r, e.ValueFrom.SecretKeyRef)
	}
	for name := range placeholders(tmpl) {
		if _, ok := env[name]; !ok {
			t.Errorf("unit %s: placeholder ${%s} has no env in render-config", unit, name)
		}
	}
	got := renderConfig(t, []byte(tmpl), env)
	if v := lookup(got, "lms.api_token"); v != env["LIVEFUSE_API_TOKEN"] {
		t.Errorf("unit %s: rendered api_token is not the Secret's", unit)
	}
	if v := got["relay_secret"]; v != env["LIVEFUSE_RELAY_SECRET"] {
		t.Errorf("unit %s: rendered relay_secret is not the Secret's", unit)
	}
	checkConfigKeys(t, "unit "+unit+" rendered config", got)

	// Every relay address is a rendered unit Service's RTMP port.
	for _, u := range lookup(cfg, "units").([]any) {
		relay, _ := u.(map[string]any)["relay"].(string)
		host, port, _ := strings.Cut(relay, ":")
		svc, ok := r.services[host]
		if !ok || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port && p.Name == "rtmp" }) {
			t.Errorf("unit %s: relay %s is no rendered Service's rtmp port", unit, relay)
		}
	}
}

// secretValue returns the value a secretKeyRef reads from a rendered
// Secret, or a stand-in when the Secret is made outside the chart.
func secretValue(r rendered, ref *corev1.SecretKeySelector) string {
	if s, ok := r.secrets[ref.Name]; ok {
		if v, ok := s.StringData[ref.Key]; ok {
			return v
		}
		return string(s.Data[ref.Key])
	}
	return "stand-in-" + ref.Key + `-with-'quote"-and\backslash`
}

func placeholders(s string) map[string]bool {
	out := map[string]bool{}
	for {
		i := strings.Index(s, "${LIVEFUSE_")
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return out
		}
		out[s[i+2:i+j]] = true
		s = s[i+j:]
	}
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// checkServices: every Service selects pods that exist and targets ports
// they name.
func checkServices(t *testing.T, r rendered) {
	for _, s := range r.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		n := 0
		for _, d := range r.deployments {
			if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				continue
			}
			n++
			for _, p := range s.Spec.Ports {
				if containerPort(d.Spec.Template.Spec.Containers[0], p.TargetPort.String()) == 0 {
					t.Errorf("Service %s port %s: pod of %s has no port %s", s.Name, p.Name, d.Name, p.TargetPort.String())
				}
			}
		}
		if n == 0 {
			t.Errorf("Service %s selects no rendered pod", s.Name)
		}
	}
}

// checkPDB: one budget over both units' pods allowing one down at a time
// (never both units by a voluntary disruption, never blocking a drain).
func checkPDB(t *testing.T, r rendered, units map[string]*appsv1.Deployment) {
	var found bool
	for _, p := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		all := true
		for _, d := range units {
			all = all && sel.Matches(labels.Set(d.Spec.Template.Labels))
		}
		if !all {
			continue
		}
		found = true
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("PDB %s: maxUnavailable %v, want 1", p.Name, p.Spec.MaxUnavailable)
		}
	}
	if !found {
		t.Error("no PodDisruptionBudget covers both units")
	}
}

// checkNoSecretsInConfigMaps: no Secret value and no secret-looking key
// with a literal value appears in any ConfigMap.
func checkNoSecretsInConfigMaps(t *testing.T, r rendered) {
	var values []string
	for _, s := range r.secrets {
		for _, v := range s.StringData {
			values = append(values, v)
		}
		for _, v := range s.Data {
			values = append(values, string(v))
		}
	}
	for _, cm := range r.configMaps {
		for key, data := range cm.Data {
			for _, v := range values {
				if v != "" && strings.Contains(data, v) {
					t.Errorf("ConfigMap %s/%s holds a Secret value", cm.Name, key)
				}
			}
			var doc map[string]any
			if yaml.Unmarshal([]byte(data), &doc) != nil {
				continue
			}
			walkSecrets(t, cm.Name, "", doc)
		}
	}
}

func walkSecrets(t *testing.T, cm, path string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			walkSecrets(t, cm, path+"."+k, val)
		}
	case []any:
		for i, val := range v {
			walkSecrets(t, cm, fmt.Sprintf("%s[%d]", path, i), val)
		}
	case string:
		last := path[strings.LastIndexAny(path, ".]")+1:]
		secretish := strings.HasSuffix(last, "token") || strings.HasSuffix(last, "secret") || strings.HasSuffix(last, "secret_key") ||
			strings.HasSuffix(last, "access_key") || last == "master_key" || last == "play_key"
		if secretish && v != "" && !strings.HasPrefix(v, "${LIVEFUSE_") {
			t.Errorf("ConfigMap %s: %s has a literal value", cm, path)
		}
	}
}

func checkEdge(t *testing.T, r rendered, d *appsv1.Deployment) {
	spec := d.Spec.Template.Spec
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("edge: not forced non-root")
	}
	if len(spec.TopologySpreadConstraints) == 0 || spec.TopologySpreadConstraints[0].TopologyKey != "topology.kubernetes.io/zone" {
		t.Error("edge: not spread across zones")
	}
	cm := r.configMaps["lf-livefuse-edge"]
	if cm == nil {
		t.Fatal("edge: no nginx ConfigMap")
	}
	conf := cm.Data["nginx.conf"]
	for _, want := range []string{"server lf-livefuse-a:8080 max_fails", "server lf-livefuse-b:8080 backup", "listen 0.0.0.0:8088;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("edge nginx.conf lacks %q", want)
		}
	}
	if strings.Contains(conf, "@") {
		t.Errorf("edge nginx.conf keeps a placeholder:\n%s", conf)
	}
}

func checkMonitors(t *testing.T, r rendered) {
	for _, m := range r.monitors {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		var matched []*corev1.Service
		for _, s := range r.services {
			if sel.Matches(labels.Set(s.Labels)) {
				matched = append(matched, s)
			}
		}
		if len(matched) != 1 {
			t.Fatalf("ServiceMonitor %s selects %d Services, want the API Service", m.Name, len(matched))
		}
		for _, ep := range m.Spec.Endpoints {
			if ep.Path != "/metrics" || !slices.ContainsFunc(matched[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				t.Errorf("ServiceMonitor %s: endpoint %s%s is not a port of %s", m.Name, ep.Port, ep.Path, matched[0].Name)
			}
		}
	}
}

// checkScaleTargets: the ScaledObject scales a rendered Deployment, and
// its queries name metrics the real server exports.
func checkScaleTargets(t *testing.T, r rendered) {
	names := metricNames(t)
	for name, so := range r.scaled {
		target, _ := lookup(so, "spec.scaleTargetRef.name").(string)
		if _, ok := r.deployments[target]; !ok {
			t.Errorf("ScaledObject %s scales %q, not a rendered Deployment", name, target)
		}
		triggers, _ := lookup(so, "spec.triggers").([]any)
		for _, tr := range triggers {
			q, _ := lookup(tr, "metadata.query").(string)
			var used []string
			for _, f := range strings.FieldsFunc(q, func(r rune) bool {
				return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
			}) {
				if strings.HasPrefix(f, "livefuse_") {
					used = append(used, f)
				}
			}
			if len(used) == 0 {
				t.Errorf("ScaledObject %s: query %q uses no livefuse metric", name, q)
			}
			if missing := hasAll(names, used...); len(missing) > 0 {
				t.Errorf("ScaledObject %s: query uses %v, which livefuse does not export", name, missing)
			}
		}
	}
}

// checkScaledObject checks a KEDA ScaledObject (keda.sh/v1alpha1) against
// its documented fields: unknown fields fail, as they would in the CRD's
// structural schema.
func checkScaledObject(t *testing.T, name string, u map[string]any) {
	t.Helper()
	allowed := func(path string, v any, keys ...string) {
		m, ok := v.(map[string]any)
		if !ok {
			t.Errorf("ScaledObject %s: %s is not an object", name, path)
			return
		}
		for k := range m {
			if !slices.Contains(keys, k) {
				t.Errorf("ScaledObject %s: unknown field %s.%s", name, path, k)
			}
		}
	}
	allowed("", u, "apiVersion", "kind", "metadata", "spec")
	spec := u["spec"]
	allowed("spec", spec, "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
		"minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers")
	allowed("spec.scaleTargetRef", lookup(spec, "scaleTargetRef"), "apiVersion", "kind", "name", "envSourceContainerName")
	if lookup(spec, "scaleTargetRef.name") == nil {
		t.Errorf("ScaledObject %s: scaleTargetRef.name is required", name)
	}
	for _, k := range []string{"pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"} {
		if v, ok := lookup(spec, k).(float64); ok && (v < 0 || v != float64(int64(v))) {
			t.Errorf("ScaledObject %s: %s %v is not a whole number", name, k, v)
		}
	}
	if adv := lookup(spec, "advanced"); adv != nil {
		allowed("spec.advanced", adv, "restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers")
		if hpa := lookup(adv, "horizontalPodAutoscalerConfig"); hpa != nil {
			allowed("spec.advanced.horizontalPodAutoscalerConfig", hpa, "name", "behavior")
			if b := lookup(hpa, "behavior"); b != nil {
				j, _ := yaml.Marshal(b)
				if err := strictDecode(j, &autoscalingv2.HorizontalPodAutoscalerBehavior{}); err != nil {
					t.Errorf("ScaledObject %s: behavior: %v", name, err)
				}
			}
		}
	}
	triggers, ok := lookup(spec, "triggers").([]any)
	if !ok || len(triggers) == 0 {
		t.Errorf("ScaledObject %s: no triggers", name)
	}
	for i, tr := range triggers {
		p := fmt.Sprintf("spec.triggers[%d]", i)
		allowed(p, tr, "type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics")
		if lookup(tr, "type") != "prometheus" {
			t.Errorf("ScaledObject %s: %s type %v, want prometheus", name, p, lookup(tr, "type"))
			continue
		}
		md := lookup(tr, "metadata")
		allowed(p+".metadata", md, "serverAddress", "query", "threshold", "activationThreshold", "namespace",
			"customHeaders", "ignoreNullValues", "unsafeSsl", "queryParameters", "authModes")
		for _, k := range []string{"serverAddress", "query", "threshold"} {
			if s, ok := lookup(md, k).(string); !ok || s == "" {
				t.Errorf("ScaledObject %s: %s.metadata.%s must be a non-empty string", name, p, k)
			}
		}
		if s, _ := lookup(md, "threshold").(string); s != "" {
			if f, err := strconv.ParseFloat(s, 64); err != nil || f <= 0 {
				t.Errorf("ScaledObject %s: %s threshold %q is not a positive number", name, p, s)
			}
		}
	}
}

// TestChartEdgeTemplateInSync: the chart's copy of the nginx edge
// template is the one in deploy/nginx (helm reads only files in the chart).
func TestChartEdgeTemplateInSync(t *testing.T) {
	root := repoRoot(t)
	a, err := os.ReadFile(filepath.Join(root, "deploy", "nginx", "livefuse-edge.conf.template"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "helm", "livefuse", "files", "livefuse-edge.conf.template"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("deploy/helm/livefuse/files/livefuse-edge.conf.template differs from deploy/nginx/livefuse-edge.conf.template: copy it over")
	}
}
