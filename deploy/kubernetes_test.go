package deploy_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/agentrelay/agentrelay/deploy/internal/image"
	"github.com/agentrelay/agentrelay/deploy/internal/kube"
	"github.com/agentrelay/agentrelay/internal/app"
)

// The example overlay is what a platform engineer applies: it must build,
// every object must decode strictly, and it must hold the whole deployment.
func TestExampleOverlayBuildsIntoTheWholeDeployment(t *testing.T) {
	d := renderExample(t)
	want := map[string]int{
		"Namespace": 1, "ServiceAccount": 1, "Deployment": 1, "Service": 1,
		"PodDisruptionBudget": 1, "ScaledObject": 1, "ServiceMonitor": 1,
		"PrometheusRule": 1, "AlertmanagerConfig": 1, "NetworkPolicy": 1,
		"ConfigMap": 2, // the configuration and the dashboard
	}
	got := map[string]int{}
	for _, o := range d.objs {
		got[o.Kind]++
		if o.Kind != "Namespace" && o.Namespace != "agentrelay" {
			t.Errorf("%s is in namespace %q, want agentrelay", o, o.Namespace)
		}
	}
	for kind, n := range want {
		if got[kind] != n {
			t.Errorf("%d %s objects, want %d", got[kind], kind, n)
		}
	}
	for kind := range got {
		if _, ok := want[kind]; !ok {
			t.Errorf("unexpected %s objects: add them to this test's list", kind)
		}
	}
}

// The base on its own (no KEDA) still runs several replicas.
func TestBaseAloneRunsSeveralReplicas(t *testing.T) {
	objs, err := kube.RenderObjects(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	dep := only[*appsv1.Deployment](t, objs)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("base Deployment replicas = %v, want at least 2", dep.Spec.Replicas)
	}
}

// Every name and selector that ties the objects together resolves, in the
// example and after a namePrefix (kustomize must rename the references
// too, including the ScaledObject's, which it only knows through the
// overlay's configurations file).
func TestReferencesResolve(t *testing.T) {
	t.Run("example", func(t *testing.T) { checkReferences(t, renderExample(t)) })
	t.Run("with a namePrefix", func(t *testing.T) {
		dir := t.TempDir()
		abs, err := filepath.Abs(exampleOverlay)
		if err != nil {
			t.Fatal(err)
		}
		// kustomize refuses an absolute path to another kustomization.
		rel, err := filepath.Rel(dir, abs)
		if err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: team-a-\nresources:\n  - %s\n", rel)
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
		d := renderDir(t, dir)
		if !strings.HasPrefix(d.dep.Name, "team-a-") {
			t.Fatalf("Deployment %s was not renamed", d.dep.Name)
		}
		checkReferences(t, d)
	})
}

func checkReferences(t *testing.T, d deployment) {
	t.Helper()
	podLabels := labels.Set(d.dep.Spec.Template.Labels)
	selects := func(what string, sel *metav1.LabelSelector, set labels.Set) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if s.Empty() || !s.Matches(set) {
			t.Errorf("%s selector %s does not match %v", what, s, set)
		}
	}
	selects("Deployment "+d.dep.Name, d.dep.Spec.Selector, podLabels)

	sa := only[*corev1.ServiceAccount](t, d.objs)
	if d.pod.ServiceAccountName != sa.Name {
		t.Errorf("pod runs as ServiceAccount %q, the overlay creates %q", d.pod.ServiceAccountName, sa.Name)
	}

	svc := only[*corev1.Service](t, d.objs)
	selects("Service "+svc.Name, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, podLabels)
	for _, p := range svc.Spec.Ports {
		if _, ok := containerPort(d.container, p.TargetPort); !ok {
			t.Errorf("Service %s port %s targets %s, which container %s does not expose", svc.Name, p.Name, p.TargetPort.String(), d.container.Name)
		}
	}

	sm := only[*monitoringv1.ServiceMonitor](t, d.objs)
	selects("ServiceMonitor "+sm.Name, &sm.Spec.Selector, svc.Labels)
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
			t.Errorf("ServiceMonitor %s scrapes port %q, which Service %s does not name", sm.Name, ep.Port, svc.Name)
		}
	}
	if sm.Spec.JobLabel != "" && svc.Labels[sm.Spec.JobLabel] == "" {
		t.Errorf("ServiceMonitor jobLabel %q is not a label of Service %s", sm.Spec.JobLabel, svc.Name)
	}

	pdb := only[*policyv1.PodDisruptionBudget](t, d.objs)
	selects("PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector, podLabels)

	so := only[*kube.ScaledObject](t, d.objs)
	if ref := so.Spec.ScaleTargetRef; ref == nil || ref.Name != d.dep.Name || (ref.Kind != "" && ref.Kind != "Deployment") {
		t.Errorf("ScaledObject %s scales %+v, want Deployment %s", so.Name, ref, d.dep.Name)
	}

	// The Secret with the agent tokens is created out of band, so the
	// deploy guide must say how.
	guide := readDoc(t, deployingDoc)
	for _, v := range d.pod.Volumes {
		if v.Secret != nil && !strings.Contains(guide, v.Secret.SecretName) {
			t.Errorf("volume %s mounts Secret %s, which %s does not tell how to create", v.Name, v.Secret.SecretName, deployingDoc)
		}
	}
}

// containerPort resolves a port reference (number or name) to the
// container's port.
func containerPort(c corev1.Container, ref intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, p := range c.Ports {
		if (ref.Type == intstr.String && p.Name == ref.StrVal) || (ref.Type == intstr.Int && p.ContainerPort == ref.IntVal) {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// The pod meets the "restricted" Pod Security Standard, which its namespace
// enforces, and runs as the image's own non-root user.
func TestPodIsLockedDown(t *testing.T) {
	d := renderExample(t)
	ns := only[*corev1.Namespace](t, d.objs)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s does not enforce the restricted Pod Security Standard", ns.Name)
	}

	psc := d.pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot must be true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod securityContext.seccompProfile must be RuntimeDefault")
	}
	uid, gid := imageUser(t)
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid {
		t.Errorf("pod runAsUser must be the image's user %d", uid)
	}
	if psc == nil || psc.RunAsGroup == nil || *psc.RunAsGroup != gid {
		t.Errorf("pod runAsGroup must be the image's group %d", gid)
	}
	if d.pod.AutomountServiceAccountToken == nil || *d.pod.AutomountServiceAccountToken {
		t.Error("the worker never calls the Kubernetes API: automountServiceAccountToken must be false")
	}
	if d.pod.HostNetwork || d.pod.HostPID || d.pod.HostIPC {
		t.Error("the pod must not share the host's network, PID or IPC namespace")
	}

	for _, c := range append(slices.Clone(d.pod.InitContainers), d.pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s must not be privileged", c.Name)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s must drop ALL capabilities and add none", c.Name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("container %s runs as root", c.Name)
		}
		if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@") {
			t.Errorf("container %s image %q must be pinned to a tag or digest", c.Name, c.Image)
		}
	}
}

// imageUser is the numeric user of the image (deploy/internal/image).
func imageUser(*testing.T) (uid, gid int64) {
	return image.UID, image.GID
}

// Requests let the scheduler place the pods; limits bound a runaway; the Go
// runtime's soft memory limit sits below the hard one.
func TestResourcesAreBounded(t *testing.T) {
	d := renderExample(t)
	res := d.container.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := res.Requests[name]
		lim, okLim := res.Limits[name]
		if !okReq || !okLim {
			t.Errorf("container %s must set both a request and a limit for %s", d.container.Name, name)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s request %s exceeds its limit %s", name, req.String(), lim.String())
		}
	}
	memLimit := res.Limits[corev1.ResourceMemory]
	v, ok := containerEnv(d.container)("GOMEMLIMIT")
	if !ok {
		t.Fatal("GOMEMLIMIT is not set: the Go runtime would not know the container's memory limit")
	}
	soft, err := parseGoMemLimit(v)
	if err != nil {
		t.Fatal(err)
	}
	if soft >= memLimit.Value() {
		t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", v, memLimit.String())
	}
}

// parseGoMemLimit parses a GOMEMLIMIT value (bytes, or with a B, KiB, MiB,
// GiB or TiB suffix).
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		factor int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.factor, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// The probes and the Service hit the port the worker listens on
// (metrics.listen, after environment overrides), on the paths it serves
// (checked against a running worker in TestAgainstARunningWorker).
func TestProbesTargetTheWorkersListener(t *testing.T) {
	d := renderExample(t)
	_, portText, err := net.SplitHostPort(d.config.Metrics.Listen)
	if err != nil {
		t.Fatalf("metrics.listen %q: %v", d.config.Metrics.Listen, err)
	}
	listen, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("metrics.listen %q: port is not a number", d.config.Metrics.Listen)
	}
	c := d.container
	probes := map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"startupProbe":   {c.StartupProbe, "/healthz"},
		"livenessProbe":  {c.LivenessProbe, "/healthz"},
		"readinessProbe": {c.ReadinessProbe, "/readyz"},
	}
	for name, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s must be an HTTP GET of %s", name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s path %s, want %s", name, p.probe.HTTPGet.Path, p.path)
		}
		port, ok := containerPort(c, p.probe.HTTPGet.Port)
		if !ok {
			t.Errorf("%s port %s is not a container port", name, p.probe.HTTPGet.Port.String())
			continue
		}
		if int(port.ContainerPort) != listen {
			t.Errorf("%s probes port %d, the worker listens on %d (metrics.listen %s)", name, port.ContainerPort, listen, d.config.Metrics.Listen)
		}
	}
	// The listener starts only once NATS is connected (the worker retries
	// for up to 2 minutes) and the routes are set up (up to 30 seconds);
	// see internal/app.Run. A startup probe that gives up earlier has the
	// kubelet kill a worker that is merely waiting for NATS.
	if sp := c.StartupProbe; sp != nil {
		budget := time.Duration(sp.PeriodSeconds*sp.FailureThreshold) * time.Second
		if budget < 150*time.Second {
			t.Errorf("startup probe gives up after %v; the worker may take 2m30s to start listening", budget)
		}
	}
}

// A pod is killed terminationGracePeriodSeconds after SIGTERM. The worker
// needs drain_grace for in-flight calls, then up to pull_expiry + 5s for
// its pulls to end after canceling the rest (consumer runner.drain), 5s to
// flush acks and 2s to close the HTTP listener (internal/app.Run): 12s on
// top of the two settings, plus 3s of slack.
func TestGracePeriodCoversTheDrain(t *testing.T) {
	d := renderExample(t)
	if d.pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds is not set (the default, 30s, is too short)")
	}
	grace := time.Duration(*d.pod.TerminationGracePeriodSeconds) * time.Second
	w := d.config.Worker
	need := w.DrainGrace.D() + w.PullExpiry.D() + 15*time.Second
	if grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v must exceed drain_grace %v + pull_expiry %v + 15s = %v",
			grace, w.DrainGrace, w.PullExpiry, need)
	}
}

// The configuration comes from the ConfigMap, and every file it names
// (tokens, NATS credentials, TLS files) from a read-only volume. Agent
// tokens come from a Secret mounted as a directory: with subPath the kubelet
// never updates the file, and a rotated token would not reach the worker.
func TestConfigAndTokensComeFromMountedVolumes(t *testing.T) {
	checkMounts(t, renderExample(t))
}

// checkMounts checks that every file the configuration names is in a
// read-only volume mounted without subPath, secrets in Secret volumes.
func checkMounts(t *testing.T, d deployment) {
	t.Helper()
	if len(d.config.Routes) == 0 {
		t.Fatal("the configuration has no routes")
	}
	for field, file := range filesTheWorkerReads(d.config) {
		m, vol, ok := mountFor(d, file)
		switch {
		case !ok:
			t.Errorf("%s %s is in no volume mounted into container %s", field, file, d.container.Name)
		case !m.ReadOnly:
			t.Errorf("%s: volume %s must be mounted read-only", field, m.Name)
		case m.SubPath != "" || m.SubPathExpr != "":
			t.Errorf("%s: volume %s is mounted with subPath, so the file is never updated on rotation", field, m.Name)
		case (strings.HasSuffix(field, "token.file") || isNATSSecretField(field)) && vol.Secret == nil:
			t.Errorf("%s %s must come from a Secret, not %s", field, file, vol.Name)
		}
	}
	for i, r := range d.config.Routes {
		if r.Token.Env == "" {
			continue
		}
		ok := slices.ContainsFunc(d.container.Env, func(e corev1.EnvVar) bool {
			return e.Name == r.Token.Env && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		})
		if !ok {
			t.Errorf("routes[%d].token.env %s must be set from a Secret key", i, r.Token.Env)
		}
	}
}

// isNATSSecretField reports whether a configuration field names a NATS
// secret (credentials, seed, password, token), which belongs in a Secret.
func isNATSSecretField(field string) bool {
	switch field {
	case "nats.credentials_file", "nats.nkey_seed_file", "nats.password_file", "nats.token_file":
		return true
	}
	return false
}

// KEDA scales the Deployment on the lag of every route's consumer, between a
// floor that keeps the worker available and a cap past which replicas could
// not get messages anyway.
func TestAutoscalingOnConsumerLag(t *testing.T) {
	d := renderExample(t)
	so := only[*kube.ScaledObject](t, d.objs)
	spec := so.Spec
	if spec.MinReplicaCount == nil || *spec.MinReplicaCount < 2 {
		t.Errorf("minReplicaCount %v: want at least 2, so one replica can drain while another works", spec.MinReplicaCount)
	}
	if spec.MaxReplicaCount == nil {
		t.Fatal("maxReplicaCount must be set: KEDA's default is 100")
	}
	maxReplicas := int(*spec.MaxReplicaCount)
	if spec.MinReplicaCount != nil && int(*spec.MinReplicaCount) > maxReplicas {
		t.Errorf("minReplicaCount %d exceeds maxReplicaCount %d", *spec.MinReplicaCount, maxReplicas)
	}
	if d.dep.Spec.Replicas != nil {
		t.Error("the Deployment sets replicas while KEDA owns the count: every apply would reset it")
	}

	triggers := map[string]kube.ScaleTrigger{}
	for _, tr := range spec.Triggers {
		if tr.Type != "nats-jetstream" {
			t.Errorf("trigger %q has type %q, want nats-jetstream", tr.Name, tr.Type)
			continue
		}
		for _, key := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
			if tr.Metadata[key] == "" {
				t.Errorf("trigger %q: metadata.%s is required", tr.Name, key)
			}
		}
		if _, _, err := net.SplitHostPort(tr.Metadata["natsServerMonitoringEndpoint"]); err != nil {
			t.Errorf("trigger %q: natsServerMonitoringEndpoint %q is not host:port", tr.Name, tr.Metadata["natsServerMonitoringEndpoint"])
		}
		triggers[tr.Metadata["stream"]+"/"+tr.Metadata["consumer"]] = tr
	}
	for i, rc := range d.config.Routes {
		r := app.Route(rc, nil).WithDefaults()
		key := r.Stream + "/" + r.Durable
		tr, ok := triggers[key]
		if !ok {
			// KEDA falls back to the stream's last sequence when the
			// consumer is not found, and scales out to the cap.
			t.Errorf("routes[%d] (%s): no nats-jetstream trigger on stream %s consumer %s", i, r.Name, r.Stream, r.Durable)
			continue
		}
		delete(triggers, key)
		lag, err := strconv.Atoi(tr.Metadata["lagThreshold"])
		if err != nil {
			t.Errorf("trigger %q: lagThreshold %q is not a number", tr.Name, tr.Metadata["lagThreshold"])
		} else if lag < r.MaxInFlight {
			// Messages being processed count as lag (num_ack_pending):
			// below max_in_flight, busy replicas alone ask for more.
			t.Errorf("trigger %q: lagThreshold %d is below the route's max_in_flight %d", tr.Name, lag, r.MaxInFlight)
		}
		// max_ack_pending caps unsettled messages across all replicas;
		// replicas beyond max_ack_pending / max_in_flight only wait.
		if maxReplicas*r.MaxInFlight > r.MaxAckPending {
			t.Errorf("routes[%d] (%s): maxReplicaCount %d x max_in_flight %d exceeds max_ack_pending %d",
				i, r.Name, maxReplicas, r.MaxInFlight, r.MaxAckPending)
		}
	}
	for key, tr := range triggers {
		t.Errorf("trigger %q watches %s, which no route consumes", tr.Name, key)
	}

	// At the floor, the budget must still let a node drain evict a pod.
	pdb := only[*policyv1.PodDisruptionBudget](t, d.objs)
	minReplicas := 1
	if spec.MinReplicaCount != nil {
		minReplicas = int(*spec.MinReplicaCount)
	}
	if allowed := disruptionsAllowed(pdb.Spec, minReplicas); allowed < 1 {
		t.Errorf("with %d replicas the PodDisruptionBudget allows %d evictions: node drains would block", minReplicas, allowed)
	}
	if minReplicas-disruptionsAllowed(pdb.Spec, minReplicas) < 1 {
		t.Errorf("with %d replicas the PodDisruptionBudget lets every replica go at once", minReplicas)
	}
}

// disruptionsAllowed is how many of n healthy pods a budget lets go.
func disruptionsAllowed(spec policyv1.PodDisruptionBudgetSpec, n int) int {
	scaled := func(v *intstr.IntOrString, roundUp bool) int {
		x, err := intstr.GetScaledValueFromIntOrPercent(v, n, roundUp)
		if err != nil {
			return -1
		}
		return x
	}
	switch {
	case spec.MaxUnavailable != nil:
		return scaled(spec.MaxUnavailable, true)
	case spec.MinAvailable != nil:
		return n - scaled(spec.MinAvailable, true)
	}
	return n
}
