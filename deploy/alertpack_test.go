package deploy_test

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/agentrelay/agentrelay/deploy/internal/alertpack"
	"github.com/agentrelay/agentrelay/deploy/internal/promcheck"
	"github.com/agentrelay/agentrelay/deploy/internal/strict"
)

// The alert pack has one source per kind: the plain Prometheus rules file
// (what `promtool check rules` and a Prometheus without the operator read)
// and the plain Alertmanager inhibit rules. The operator's PrometheusRule
// and AlertmanagerConfig are generated from them and never drift.
func TestAlertPackIsGeneratedFromOneSource(t *testing.T) {
	for _, g := range []struct {
		source, target string
		render         func([]byte) ([]byte, error)
	}{
		{alertpack.RulesSource, alertpack.PrometheusRulePath, alertpack.PrometheusRule},
		{alertpack.InhibitSource, alertpack.AlertmanagerCfgPath, alertpack.AlertmanagerConfig},
	} {
		src, err := os.ReadFile(g.source)
		if err != nil {
			t.Fatal(err)
		}
		want, err := g.render(src)
		if err != nil {
			t.Fatalf("%s: %v", g.source, err)
		}
		got, err := os.ReadFile(g.target)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what %s generates: run `make alerts`", g.target, g.source)
		}
	}
}

// promtoolTests mirrors the parts of a `promtool test rules` file this test
// reads; strict decoding keeps it honest about the rest.
type promtoolTests struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Name        string `json:"name"`
		Interval    string `json:"interval"`
		InputSeries []struct {
			Series string `json:"series"`
			Values string `json:"values"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert has promtool unit tests where it fires, with its annotations
// spelled out, and where it has cleared later in the same test: the pack
// pages on the cause and stops when the cause is gone. (`make
// deploy-promtool` runs them; this test keeps them complete.)
func TestPromtoolTestsFireAndClearEveryAlert(t *testing.T) {
	src, err := os.ReadFile(alertpack.RulesSource)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := alertpack.ParseRules(src)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(alertpack.RulesTests)
	if err != nil {
		t.Fatal(err)
	}
	var tests promtoolTests
	if err := strict.YAML(data, &tests); err != nil {
		t.Fatalf("%s: %v", alertpack.RulesTests, err)
	}
	if !slices.Equal(tests.RuleFiles, []string{"agentrelay.rules.yaml"}) {
		t.Errorf("%s tests %v, want the rules file beside it", alertpack.RulesTests, tests.RuleFiles)
	}
	fires, clears := map[string]bool{}, map[string]bool{}
	for _, g := range tests.Tests {
		firedAt := map[string]time.Duration{}
		for _, c := range g.AlertRuleTest {
			d, err := model.ParseDuration(c.EvalTime)
			if err != nil {
				t.Fatalf("%s: eval_time %q: %v", g.Name, c.EvalTime, err)
			}
			at := time.Duration(d)
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
				for _, a := range c.ExpAlerts {
					if a.ExpAnnotations["summary"] == "" || a.ExpAnnotations["description"] == "" {
						t.Errorf("%s: %s at %s: spell out the summary and description it must say", g.Name, c.Alertname, c.EvalTime)
					}
				}
				if _, ok := firedAt[c.Alertname]; !ok {
					firedAt[c.Alertname] = at
				}
				continue
			}
			if first, ok := firedAt[c.Alertname]; ok && at > first {
				clears[c.Alertname] = true
			}
		}
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert] {
				t.Errorf("alert %s: no promtool test where it fires", r.Alert)
			}
			if !clears[r.Alert] {
				t.Errorf("alert %s: no promtool test where it clears after firing", r.Alert)
			}
		}
	}
}

// One cause pages once: with the shipped inhibit rules, each cause's alerts
// reach a receiver as one notification, and an alert of another route, or
// of a cause of its own, is never held back.
func TestInhibitRulesPageOncePerCause(t *testing.T) {
	src, err := os.ReadFile(alertpack.InhibitSource)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := alertpack.ParseInhibitRules(src)
	if err != nil {
		t.Fatal(err)
	}
	alert := func(name, route string) alertpack.Labels {
		return alertpack.Labels{"alertname": name, "namespace": "agentrelay", "route": route}
	}
	for _, c := range []struct {
		cause string
		// firing are the alerts the cause raises; want those still sent.
		firing, want []alertpack.Labels
	}{{
		cause: "a route stopped by an API outage",
		firing: []alertpack.Labels{alert("AgentrelayRouteStopped", "a"), alert("AgentrelayNoSuccessfulTriggers", "a"),
			alert("AgentrelayConsumerLagGrowing", "a"), alert("AgentrelayOldestEventWaiting", "a")},
		want: []alertpack.Labels{alert("AgentrelayRouteStopped", "a")},
	}, {
		cause: "no call accepted, route not stopped (a proxy answering 200)",
		firing: []alertpack.Labels{alert("AgentrelayNoSuccessfulTriggers", "a"), alert("AgentrelayConsumerLagGrowing", "a"),
			alert("AgentrelayOldestEventWaiting", "a")},
		want: []alertpack.Labels{alert("AgentrelayNoSuccessfulTriggers", "a")},
	}, {
		cause:  "the dead-letter stream is full",
		firing: []alertpack.Labels{alert("AgentrelayDeadLetterPublishFailing", "a"), alert("AgentrelayOldestEventWaiting", "a")},
		want:   []alertpack.Labels{alert("AgentrelayDeadLetterPublishFailing", "a")},
	}, {
		cause: "route a stopped, route b's backlog growing on its own",
		firing: []alertpack.Labels{alert("AgentrelayRouteStopped", "a"), alert("AgentrelayNoSuccessfulTriggers", "a"),
			alert("AgentrelayConsumerLagGrowing", "b")},
		want: []alertpack.Labels{alert("AgentrelayRouteStopped", "a"), alert("AgentrelayConsumerLagGrowing", "b")},
	}, {
		cause: "a stopped route and dead letters from before it",
		firing: []alertpack.Labels{alert("AgentrelayRouteStopped", "a"), alert("AgentrelayDeadLettersRising", "a"),
			alert("AgentrelayDeadLettersAging", "a")},
		want: []alertpack.Labels{alert("AgentrelayRouteStopped", "a"), alert("AgentrelayDeadLettersRising", "a"),
			alert("AgentrelayDeadLettersAging", "a")},
	}} {
		t.Run(c.cause, func(t *testing.T) {
			var sent []alertpack.Labels
			for _, a := range c.firing {
				if !alertpack.Inhibited(rules, a, c.firing) {
					sent = append(sent, a)
				}
			}
			if !slices.Equal(names(sent), names(c.want)) {
				t.Errorf("sent %v, want %v", names(sent), names(c.want))
			}
		})
	}

	// Every alert a rule names exists in the rules file.
	rulesSrc, err := os.ReadFile(alertpack.RulesSource)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := alertpack.ParseRules(rulesSrc)
	if err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
		}
	}
	for i, r := range rules {
		for _, m := range slices.Concat(r.Source, r.Target) {
			if m.Name == "alertname" && !slices.ContainsFunc(alerts, m.Matches) {
				t.Errorf("inhibit rule %d: %s matches no alert of %s", i, m, alertpack.RulesSource)
			}
		}
	}
}

func names(ls []alertpack.Labels) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l["alertname"]+"/"+l["route"])
	}
	sort.Strings(out)
	return out
}

// metricName is an agentrelay metric named in a document.
var metricName = regexp.MustCompile(`agentrelay_[a-z_]+[a-z]`)

// Every metric the runbook sends an on-call engineer to has a dashboard
// panel that queries it: "look at agentrelay_dead_letters_waiting on the
// dashboard" must find a panel.
func TestDashboardShowsEveryMetricTheRunbookNames(t *testing.T) {
	queries, err := loadDashboard(t).Queries()
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, q := range queries {
		e, err := promcheck.Parse(q.Expr)
		if err != nil {
			t.Fatalf("%s: %v", q.Where, err)
		}
		for _, m := range metricNames(e) {
			shown[m] = true
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if base, ok := strings.CutSuffix(m, suffix); ok {
					shown[base] = true
				}
			}
		}
	}
	named := metricName.FindAllString(readDoc(t, runbookDoc), -1)
	if len(named) == 0 {
		t.Fatalf("%s names no metric: the pattern is broken", runbookDoc)
	}
	for _, m := range named {
		if !shown[m] {
			t.Errorf("%s names %s, and no dashboard panel queries it", runbookDoc, m)
			shown[m] = true // once
		}
	}
}
