package deploy_test

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/deploy/internal/kube"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/tracing"
)

// KEDA's settings that every trigger shares are set once, in settings.yaml:
// the monitoring endpoint and the lag threshold (and natsAccount, tested
// on its own). A copy with other values carries them into every trigger.
func TestKEDASettingsLiveInOnePlace(t *testing.T) {
	const endpoint, threshold = "nats-mon.nats-prod.svc:8222", "256"
	d := copiedOverlay(t, map[string][2]string{"settings.yaml": settingEdit(t, "natsMonitoringEndpoint", endpoint)})
	for _, tr := range only[*kube.ScaledObject](t, d.objs).Spec.Triggers {
		if got := tr.Metadata["natsServerMonitoringEndpoint"]; got != endpoint {
			t.Errorf("with natsMonitoringEndpoint %s, trigger %q reads %q", endpoint, tr.Name, got)
		}
	}
	d = copiedOverlay(t, map[string][2]string{"settings.yaml": settingEdit(t, "lagThreshold", threshold)})
	for _, tr := range only[*kube.ScaledObject](t, d.objs).Spec.Triggers {
		if got := tr.Metadata["lagThreshold"]; got != threshold {
			t.Errorf("with lagThreshold %s, trigger %q has %q", threshold, tr.Name, got)
		}
	}
}

// The example runs with the defaults the docs' figures assume (a killed
// replica's events go elsewhere within about ack_wait, 4 s; the drain
// budget), so that what a platform engineer copies behaves as documented.
func TestExampleKeepsTheDocumentedDefaults(t *testing.T) {
	d := renderExample(t)
	for i, rc := range d.config.Routes {
		r := app.Route(rc, nil).WithDefaults()
		if r.AckWait != consumer.DefaultAckWait {
			t.Errorf("routes[%d] (%s): ack_wait %v, want the default %v the docs' recovery figures assume", i, r.Name, r.AckWait, consumer.DefaultAckWait)
		}
		if r.MaxInFlight != consumer.DefaultMaxInFlight {
			t.Errorf("routes[%d] (%s): max_in_flight %d, want the default %d", i, r.Name, r.MaxInFlight, consumer.DefaultMaxInFlight)
		}
		// The default window leaves room for the events that wait out a
		// retry delay beside KEDA's replica cap (TestAutoscalingOnConsumerLag).
		if r.MaxAckPending != consumer.DefaultAckPendingFactor*r.MaxInFlight {
			t.Errorf("routes[%d] (%s): max_ack_pending %d, want the default %d x max_in_flight", i, r.Name, r.MaxAckPending, consumer.DefaultAckPendingFactor)
		}
	}
	w := d.config.Worker
	if got := w.DrainGrace.D(); got != consumer.DefaultDrainGrace {
		t.Errorf("worker.drain_grace %v, want the default %v", got, consumer.DefaultDrainGrace)
	}
	if got := w.PullExpiry.D(); got != consumer.DefaultPullExpiry {
		t.Errorf("worker.pull_expiry %v, want the default %v", got, consumer.DefaultPullExpiry)
	}
}

// envOf returns the container's plain environment (no valueFrom).
func envOf(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// The example carries the OpenTelemetry settings, with tracing off; turning
// OTEL_SDK_DISABLED to "false" is all it takes to export spans over OTLP.
func TestTracingIsConfiguredAndOff(t *testing.T) {
	env := envOf(renderExample(t).container)
	tc, err := tracing.ParseEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if tc.On {
		t.Errorf("tracing is on (%s); the example must ship with it off", tc.Why)
	}
	if env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" {
		t.Fatal("no OTEL_EXPORTER_OTLP_ENDPOINT: the settings to switch tracing on are missing")
	}
	env["OTEL_SDK_DISABLED"] = "false"
	tc, err = tracing.ParseEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !tc.On || !slices.Equal(tc.Exporters, []string{tracing.ExporterOTLP}) {
		t.Errorf("with OTEL_SDK_DISABLED=false: tracing %+v, want on, exporting over OTLP", tc)
	}
}

// peer is one end of a connection as a NetworkPolicy sees it: a pod in a
// namespace, or an address outside the cluster.
type peer struct {
	namespace string // for a pod
	ip        net.IP // for an address outside the cluster
}

// allowsEgress reports whether a rule of the policy lets the pod connect to
// p on port/protocol. Pod selectors are taken as matching: the test checks
// namespaces, addresses and ports.
func allowsEgress(np *networkingv1.NetworkPolicy, p peer, port int, proto corev1.Protocol) bool {
	for _, r := range np.Spec.Egress {
		if portMatches(r.Ports, port, proto) && peerMatches(r.To, p) {
			return true
		}
	}
	return false
}

func portMatches(ports []networkingv1.NetworkPolicyPort, port int, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pr := corev1.ProtocolTCP
		if p.Protocol != nil {
			pr = *p.Protocol
		}
		if pr == proto && (p.Port == nil || p.Port.IntValue() == port) {
			return true
		}
	}
	return false
}

func peerMatches(to []networkingv1.NetworkPolicyPeer, p peer) bool {
	if len(to) == 0 {
		return true
	}
	for _, t := range to {
		switch {
		case t.IPBlock != nil && p.ip != nil:
			_, cidr, err := net.ParseCIDR(t.IPBlock.CIDR)
			if err != nil || !cidr.Contains(p.ip) {
				continue
			}
			excluded := false
			for _, e := range t.IPBlock.Except {
				if _, ex, err := net.ParseCIDR(e); err == nil && ex.Contains(p.ip) {
					excluded = true
				}
			}
			if !excluded {
				return true
			}
		case t.IPBlock == nil && p.namespace != "" && t.NamespaceSelector != nil:
			sel, err := metav1.LabelSelectorAsSelector(t.NamespaceSelector)
			if err == nil && sel.Matches(labels.Set{"kubernetes.io/metadata.name": p.namespace}) {
				return true
			}
		}
	}
	return false
}

// serviceEndpoint reads a URL's in-cluster Service namespace (host
// <service>.<namespace>.svc...) and port.
func serviceEndpoint(t *testing.T, raw string, defaultPort int) (namespace string, port int) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	parts := strings.Split(u.Hostname(), ".")
	if len(parts) < 3 || parts[2] != "svc" {
		t.Fatalf("%q: want a Service address, <service>.<namespace>.svc[.cluster.local]", raw)
	}
	port = defaultPort
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			t.Fatal(err)
		}
	}
	return parts[1], port
}

// The NetworkPolicy lets the worker reach exactly what it is configured to
// use (NATS, the trigger API, DNS, the OTLP collector) and lets Prometheus
// scrape its metrics port, and refuses what it does not need.
func TestNetworkPolicyAllowsWhatTheWorkerUses(t *testing.T) {
	d := renderExample(t)
	np := only[*networkingv1.NetworkPolicy](t, d.objs)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.dep.Spec.Template.Labels)) {
		t.Fatalf("NetworkPolicy %s selects %v, not the worker's pods %v", np.Name, np.Spec.PodSelector, d.dep.Spec.Template.Labels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("policyTypes %v: want Ingress and Egress", np.Spec.PolicyTypes)
	}

	// Ingress: the metrics port only, and only from named peers.
	metrics, ok := containerPort(d.container, intstr.FromString("metrics"))
	if !ok {
		t.Fatal("the container has no metrics port")
	}
	if len(np.Spec.Ingress) == 0 {
		t.Error("no ingress rule: Prometheus cannot scrape the worker")
	}
	for i, r := range np.Spec.Ingress {
		if len(r.From) == 0 {
			t.Errorf("ingress[%d] admits any peer", i)
		}
		for _, p := range r.Ports {
			cp, ok := containerPort(d.container, *p.Port)
			if !ok || cp.ContainerPort != metrics.ContainerPort {
				t.Errorf("ingress[%d] opens port %s, want only the metrics port %d", i, p.Port.String(), metrics.ContainerPort)
			}
		}
		if len(r.Ports) == 0 {
			t.Errorf("ingress[%d] opens every port", i)
		}
	}

	type need struct {
		what  string
		peer  peer
		port  int
		proto corev1.Protocol
	}
	var needs []need
	for _, server := range strings.Split(d.config.NATS.URL, ",") {
		ns, port := serviceEndpoint(t, strings.TrimSpace(server), 4222)
		needs = append(needs, need{"NATS " + server, peer{namespace: ns}, port, corev1.ProtocolTCP})
	}
	api, err := url.Parse(d.config.API.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	apiPort := 443
	if p := api.Port(); p != "" {
		apiPort, _ = strconv.Atoi(p)
	}
	// The API is outside the cluster; any public address stands for it.
	needs = append(needs, need{"the trigger API " + api.Host, peer{ip: net.ParseIP("104.18.32.47")}, apiPort, corev1.ProtocolTCP})
	otlp := envOf(d.container)["OTEL_EXPORTER_OTLP_ENDPOINT"]
	if otlp == "" {
		t.Fatal("the container sets no OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	ns, port := serviceEndpoint(t, otlp, 4318)
	needs = append(needs,
		need{"the OTLP collector " + otlp, peer{namespace: ns}, port, corev1.ProtocolTCP},
		need{"DNS over UDP", peer{namespace: "kube-system"}, 53, corev1.ProtocolUDP},
		need{"DNS over TCP", peer{namespace: "kube-system"}, 53, corev1.ProtocolTCP},
	)
	for _, n := range needs {
		if !allowsEgress(np, n.peer, n.port, n.proto) {
			t.Errorf("egress to %s (port %d/%s) is not allowed", n.what, n.port, n.proto)
		}
	}

	for _, n := range []need{
		{"a database in the cluster", peer{namespace: "default"}, 5432, corev1.ProtocolTCP},
		{"NATS's monitoring port", peer{namespace: "nats"}, 8222, corev1.ProtocolTCP},
		{"plain HTTP outside", peer{ip: net.ParseIP("104.18.32.47")}, 80, corev1.ProtocolTCP},
		{"the cloud metadata service", peer{ip: net.ParseIP("169.254.169.254")}, 443, corev1.ProtocolTCP},
		{"a pod address through the API rule", peer{ip: net.ParseIP("10.1.2.3")}, 443, corev1.ProtocolTCP},
	} {
		if allowsEgress(np, n.peer, n.port, n.proto) {
			t.Errorf("egress to %s (port %d/%s) is allowed; the worker does not need it", n.what, n.port, n.proto)
		}
	}
}
