package promcheck_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/deploy/internal/promcheck"
)

const exposition = `# TYPE agentrelay_dead_letters_total counter
agentrelay_dead_letters_total{route="orders",reason="forbidden"} 1
# TYPE agentrelay_trigger_duration_seconds histogram
agentrelay_trigger_duration_seconds_bucket{route="orders",le="0.1"} 1
agentrelay_trigger_duration_seconds_bucket{route="orders",le="+Inf"} 1
agentrelay_trigger_duration_seconds_sum{route="orders"} 0.05
agentrelay_trigger_duration_seconds_count{route="orders"} 1
# TYPE agentrelay_ready gauge
agentrelay_ready 1
`

func scope(t *testing.T) promcheck.Scope {
	t.Helper()
	cat, err := promcheck.ParseExposition(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	return promcheck.Scope{Catalog: cat, TargetLabels: []string{"namespace", "pod", "job"}, Synthetic: []string{"up"}}
}

// A scrape lists series as Prometheus stores them: histograms by bucket,
// sum and count, with le on the buckets.
func TestCatalogExpandsHistograms(t *testing.T) {
	cat := scope(t).Catalog
	for _, name := range []string{"agentrelay_trigger_duration_seconds_bucket", "agentrelay_trigger_duration_seconds_sum", "agentrelay_trigger_duration_seconds_count"} {
		if !cat.Has(name) {
			t.Errorf("catalog lacks %s: %v", name, cat.Names())
		}
	}
	if !slices.Contains(cat.Labels("agentrelay_trigger_duration_seconds_bucket"), "le") {
		t.Error("buckets carry le")
	}
}

func TestCheck(t *testing.T) {
	s := scope(t)
	for _, tc := range []struct {
		expr    string
		problem string // "" for none
	}{
		{`sum by (namespace, route, reason) (increase(agentrelay_dead_letters_total[10m])) > 0`, ""},
		{`histogram_quantile(0.99, sum by (le) (rate(agentrelay_trigger_duration_seconds_bucket{route=~".*"}[5m])))`, ""},
		{`max by (pod) (up{job="agentrelay"}) == 0`, ""},
		{`agentrelay_dead_letter_total`, "no series agentrelay_dead_letter_total"},
		{`agentrelay_trigger_duration_seconds`, "no series agentrelay_trigger_duration_seconds"},
		{`agentrelay_dead_letters_total{reasn="forbidden"}`, `has no label "reasn"`},
		{`agentrelay_dead_letters_total{reason="forbiden"}`, "matches no value"},
		{`sum by (outcome) (agentrelay_dead_letters_total)`, `groups by "outcome"`},
		{`{route="orders"}`, "selects no metric by name"},
		{`sum(rate(agentrelay_ready[5m])`, "unclosed"},
	} {
		errs := promcheck.Check(tc.expr, s)
		switch {
		case tc.problem == "" && len(errs) > 0:
			t.Errorf("%s: unexpected problems %v", tc.expr, errs)
		case tc.problem != "" && !slices.ContainsFunc(errs, func(e error) bool { return strings.Contains(e.Error(), tc.problem) }):
			t.Errorf("%s: want a problem containing %q, got %v", tc.expr, tc.problem, errs)
		}
	}
}

func TestOutputLabels(t *testing.T) {
	s := scope(t)
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (route, reason) (agentrelay_dead_letters_total)`, []string{"reason", "route"}},
		{`histogram_quantile(0.9, sum by (le, route) (rate(agentrelay_trigger_duration_seconds_bucket[5m])))`, []string{"route"}},
		{`max by (route) (agentrelay_dead_letters_total) > 0 unless on (route) sum by (route) (agentrelay_dead_letters_total) > 5`, []string{"route"}},
		{`max by (pod) (agentrelay_ready) == 0 or max by (namespace) (up) == 0`, []string{"namespace", "pod"}},
		{`sum(agentrelay_dead_letters_total) / on () sum(agentrelay_ready)`, nil},
		{`agentrelay_ready`, []string{"job", "namespace", "pod"}},
	} {
		e, err := promcheck.Parse(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := promcheck.OutputLabels(e, s); !slices.Equal(got, tc.want) {
			t.Errorf("%s: output labels %v, want %v", tc.expr, got, tc.want)
		}
	}
}
