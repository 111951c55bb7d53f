package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"

	"github.com/agentrelay/agentrelay/deploy/internal/grafana"
	"github.com/agentrelay/agentrelay/deploy/internal/promcheck"
)

// requiredAlerts are the situations an on-call engineer must hear about,
// each with the metric its rule must watch.
var requiredAlerts = map[string]string{
	"AgentrelayDeadLettersRising":        "agentrelay_dead_letters_total",
	"AgentrelayRouteStopped":             "agentrelay_route_health",
	"AgentrelayConsumerLagGrowing":       "agentrelay_consumer_pending_messages",
	"AgentrelayNoSuccessfulTriggers":     "agentrelay_trigger_requests_total",
	"AgentrelayReplicaNotReady":          "agentrelay_ready",
	"AgentrelayDeadLetterPublishFailing": "agentrelay_dead_letter_publish_failures_total",
	"AgentrelayDeadLettersAging":         "agentrelay_dead_letter_oldest_age_seconds",
	"AgentrelayOldestEventWaiting":       "agentrelay_oldest_unacked_age_seconds",
}

// alertRules returns the alerting rules of the example overlay.
func alertRules(t *testing.T, d deployment) []monitoringv1.Rule {
	t.Helper()
	var rules []monitoringv1.Rule
	for _, g := range only[*monitoringv1.PrometheusRule](t, d.objs).Spec.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				t.Errorf("recording rule %s: the alerts must work on the worker's own series", r.Record)
				continue
			}
			rules = append(rules, r)
		}
	}
	return rules
}

// Every alert parses, says how urgent it is, what happened and where its
// runbook is, and the required situations are all covered.
func TestAlertRulesAreComplete(t *testing.T) {
	d := renderExample(t)
	runbook := markdownAnchors(readDoc(t, runbookDoc))
	// Runbook links point at sections of docs/runbook.md, wherever the
	// overlay's runbookBaseURL says the repository is.
	runbookBase := overlaySettings(t)["runbookBaseURL"] + "#"
	if !strings.HasSuffix(runbookBase, "/docs/runbook.md#") {
		t.Errorf("runbookBaseURL %q must name docs/runbook.md", strings.TrimSuffix(runbookBase, "#"))
	}
	seen := map[string]bool{}
	for _, r := range alertRules(t, d) {
		if seen[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		expr, err := promcheck.Parse(r.Expr.String())
		if err != nil {
			t.Errorf("alert %s: expr does not parse: %v", r.Alert, err)
			continue
		}
		if r.For != nil {
			if _, err := model.ParseDuration(string(*r.For)); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, *r.For, err)
			}
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: annotation %s is required", r.Alert, a)
			}
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
		if !ok || !slices.Contains(runbook, anchor) {
			t.Errorf("alert %s: runbook_url %q must be %s<anchor of a heading of %s>", r.Alert, r.Annotations["runbook_url"], runbookBase, runbookDoc)
		}
		if metric, ok := requiredAlerts[r.Alert]; ok && !slices.Contains(metricNames(expr), metric) {
			t.Errorf("alert %s must watch %s", r.Alert, metric)
		}
	}
	for name := range requiredAlerts {
		if !seen[name] {
			t.Errorf("alert %s is missing", name)
		}
	}
}

// metricNames lists the metric names an expression selects.
func metricNames(e parser.Expr) []string {
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// markdownAnchors lists the anchors GitHub gives a document's headings:
// lower case, punctuation dropped, spaces as hyphens.
func markdownAnchors(doc string) []string {
	var anchors []string
	for _, line := range strings.Split(doc, "\n") {
		text, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(text)) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		anchors = append(anchors, b.String())
	}
	return anchors
}

// requiredPanels are the views the dashboard must have: the metric a
// query selects and the label it is broken down by ("" for none).
var requiredPanels = []struct {
	view, metric, by string
}{
	{"throughput by outcome", "agentrelay_messages_finished_total", "outcome"},
	{"trigger latency quantiles", "agentrelay_trigger_duration_seconds_bucket", "le"},
	{"lag (pending)", "agentrelay_consumer_pending_messages", "route"},
	{"lag (ack pending)", "agentrelay_consumer_ack_pending_messages", "route"},
	{"route health states", "agentrelay_route_health", "state"},
	{"dead letters by reason", "agentrelay_dead_letters_total", "reason"},
	{"in flight", "agentrelay_messages_in_flight", "route"},
	{"in-flight limit", "agentrelay_messages_in_flight_limit", "route"},
	{"retry waiting", "agentrelay_messages_retry_waiting", "route"},
	{"oldest unacknowledged event", "agentrelay_oldest_unacked_age_seconds", "route"},
	{"trigger calls by status code", "agentrelay_trigger_requests_total", "code"},
	{"trigger calls by error kind", "agentrelay_trigger_requests_total", "error"},
}

// loadDashboard reads the dashboard strictly.
func loadDashboard(t *testing.T) *grafana.Dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	dash, err := grafana.Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return dash
}

// The dashboard is importable and provisioned as it is, every query parses,
// and it shows the views an operator needs.
func TestDashboardHasTheRequiredViews(t *testing.T) {
	dash := loadDashboard(t)
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard needs a uid (stable links) and a title")
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v grafana.Variable) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Error("the dashboard needs a Prometheus data source variable named datasource, so it imports into any Grafana")
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q must use the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24-column grid", p.Title, p.GridPos)
		}
	}

	queries, err := dash.Queries()
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	for _, q := range queries {
		e, err := promcheck.Parse(q.Expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", q.Where, q.Expr, err)
			continue
		}
		for _, rp := range requiredPanels {
			if slices.Contains(metricNames(e), rp.metric) && groupsBy(e, rp.by) {
				covered[rp.view] = true
			}
		}
	}
	for _, rp := range requiredPanels {
		if !covered[rp.view] {
			t.Errorf("no dashboard query shows %s (%s by %s)", rp.view, rp.metric, rp.by)
		}
	}
}

// groupsBy reports whether an aggregation in e keeps label (by (...)).
func groupsBy(e parser.Expr, label string) bool {
	found := false
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if a, ok := n.(*parser.AggregateExpr); ok && !a.Without && slices.Contains(a.Grouping, label) {
			found = true
		}
		return nil
	})
	return found
}

// The dashboard reaches Grafana through the monitoring component's
// ConfigMap, which the sidecar finds by its label.
func TestDashboardIsProvisioned(t *testing.T) {
	d := renderExample(t)
	want, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range onlyConfigMapsLabelled(d, "grafana_dashboard") {
		for _, v := range cm.Data {
			if v == string(want) {
				return
			}
		}
	}
	t.Errorf("no ConfigMap labelled grafana_dashboard holds %s", dashboardPath)
}

func onlyConfigMapsLabelled(d deployment, label string) []*corev1.ConfigMap {
	var out []*corev1.ConfigMap
	for _, o := range d.objs {
		if cm, ok := o.Value.(*corev1.ConfigMap); ok && cm.Labels[label] != "" {
			out = append(out, cm)
		}
	}
	return out
}

// templateLabel finds {{ $labels.name }} in alert annotations.
var templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// checkAlertsAgainst checks every alert expression against a running
// worker's scrape, and that the labels its annotations print survive the
// expression's aggregations.
func checkAlertsAgainst(t *testing.T, d deployment, scope promcheck.Scope) {
	t.Helper()
	for _, r := range alertRules(t, d) {
		expr := r.Expr.String()
		for _, err := range promcheck.Check(expr, scope) {
			t.Errorf("alert %s: %v", r.Alert, err)
		}
		e, err := promcheck.Parse(expr)
		if err != nil {
			continue
		}
		out := promcheck.OutputLabels(e, scope)
		for name, text := range r.Annotations {
			for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
				if !slices.Contains(out, m[1]) {
					t.Errorf("alert %s: annotation %s prints $labels.%s, but the expression only keeps %v", r.Alert, name, m[1], out)
				}
			}
		}
		// A job matcher must name the job the ServiceMonitor gives the
		// worker's series.
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for _, m := range vs.LabelMatchers {
					if m.Name == "job" && !m.Matches(workerJob(t, d)) {
						t.Errorf("alert %s: %s does not match the worker's job %q", r.Alert, m, workerJob(t, d))
					}
				}
			}
			return nil
		})
	}
}

// workerJob is the job label Prometheus gives the worker's series: the
// Service label named by the ServiceMonitor's jobLabel, else the Service's
// name.
func workerJob(t *testing.T, d deployment) string {
	t.Helper()
	svc := only[*corev1.Service](t, d.objs)
	sm := only[*monitoringv1.ServiceMonitor](t, d.objs)
	if sm.Spec.JobLabel != "" {
		return svc.Labels[sm.Spec.JobLabel]
	}
	return svc.Name
}

// checkDashboardAgainst checks every dashboard query against a running
// worker's scrape, and that legends print labels the query keeps.
func checkDashboardAgainst(t *testing.T, scope promcheck.Scope) {
	t.Helper()
	queries, err := loadDashboard(t).Queries()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		for _, err := range promcheck.Check(q.Expr, scope) {
			t.Errorf("%s: %v", q.Where, err)
		}
		e, err := promcheck.Parse(q.Expr)
		if err != nil {
			continue
		}
		out := promcheck.OutputLabels(e, scope)
		for _, l := range grafana.LegendLabels(q.Legend) {
			if !slices.Contains(out, l) {
				t.Errorf("%s: legend prints {{%s}}, but the query only keeps %v", q.Where, l, out)
			}
		}
	}
}
