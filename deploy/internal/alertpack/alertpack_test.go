package alertpack_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/deploy/internal/alertpack"
)

// Inhibition follows Alertmanager: the source must fire with the same
// values of the equal labels (absent on both sides counts as equal), and an
// alert matching both sides of a rule is not silenced by its own kind.
func TestInhibitedFollowsAlertmanager(t *testing.T) {
	rules, err := alertpack.ParseInhibitRules([]byte(`inhibit_rules:
  - source_matchers: [alertname="Cause"]
    target_matchers: [alertname=~"Effect|Cause"]
    equal: [route]
`))
	if err != nil {
		t.Fatal(err)
	}
	cause := func(route string) alertpack.Labels { return alertpack.Labels{"alertname": "Cause", "route": route} }
	effect := func(route string) alertpack.Labels { return alertpack.Labels{"alertname": "Effect", "route": route} }
	for _, c := range []struct {
		name   string
		target alertpack.Labels
		firing []alertpack.Labels
		want   bool
	}{
		{"same route", effect("a"), []alertpack.Labels{cause("a")}, true},
		{"other route", effect("b"), []alertpack.Labels{cause("a")}, false},
		{"no cause firing", effect("a"), nil, false},
		{"equal label absent on both", alertpack.Labels{"alertname": "Effect"}, []alertpack.Labels{{"alertname": "Cause"}}, true},
		{"equal label absent on one", effect("a"), []alertpack.Labels{{"alertname": "Cause"}}, false},
		{"a cause does not silence its own kind", cause("a"), []alertpack.Labels{cause("a")}, false},
	} {
		if got := alertpack.Inhibited(rules, c.target, c.firing); got != c.want {
			t.Errorf("%s: Inhibited = %v, want %v", c.name, got, c.want)
		}
	}
}

// A file Alertmanager would refuse is refused, every problem named.
func TestParseInhibitRulesRefusesWhatAlertmanagerWould(t *testing.T) {
	for src, want := range map[string]string{
		"inhibit_rules: []\n": "no inhibit_rules",
		"inhibit_rules:\n  - source_match: {alertname: A}\n    target_matchers: [alertname=B]\n":          "unknown field",
		"inhibit_rules:\n  - source_matchers: ['alertname=~\"(\"']\n    target_matchers: [alertname=B]\n": "source_matchers",
		"inhibit_rules:\n  - source_matchers: [alertname=A]\n":                                            "no target_matchers",
	} {
		_, err := alertpack.ParseInhibitRules([]byte(src))
		if !errors.Is(err, alertpack.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInhibitRules(%q) = %v, want ErrInvalid mentioning %q", src, err, want)
		}
	}
}

// The PrometheusRule keeps the rules and their comments, and refuses a
// rules file Prometheus would refuse.
func TestPrometheusRuleWrapsTheRulesFile(t *testing.T) {
	src := "# about the file\ngroups:\n  - name: g\n    rules:\n      # why\n      - alert: A\n        expr: up == 0\n"
	out, err := alertpack.PrometheusRule([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: PrometheusRule\n", "spec:\n  groups:\n    - name: g\n", "      # why\n        - alert: A\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "about the file") {
		t.Error("the source's own header was copied")
	}
	if _, err := alertpack.PrometheusRule([]byte("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n")); !errors.Is(err, alertpack.ErrInvalid) {
		t.Errorf("a bad expression: %v, want ErrInvalid", err)
	}
}
