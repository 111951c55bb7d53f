package promcheck

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Scope is what a query may refer to.
type Scope struct {
	// Catalog is the scrape of a running agentrelay.
	Catalog *Catalog
	// TargetLabels are labels Prometheus's service discovery adds to every
	// scraped series (namespace, pod, job, ...): a scrape does not show
	// them, yet queries may use them.
	TargetLabels []string
	// Synthetic are series Prometheus records itself for every target
	// (up), carrying only the target labels.
	Synthetic []string
}

func (s Scope) isTargetLabel(l string) bool { return slices.Contains(s.TargetLabels, l) }

// labelsOf returns the label names a series selected by name carries.
func (s Scope) labelsOf(name string) []string {
	ls := slices.Clone(s.TargetLabels)
	if s.Catalog.Has(name) {
		ls = append(ls, s.Catalog.Labels(name)...)
	}
	slices.Sort(ls)
	return slices.Compact(ls)
}

// Parse parses a PromQL expression with Prometheus's own parser.
func Parse(expr string) (parser.Expr, error) {
	return parser.NewParser(parser.Options{}).ParseExpr(expr)
}

// Check parses expr and returns every problem found against the scope:
// a syntax error; a selector without a metric name or naming a series the
// scrape lacks; a matcher on a label the series lacks, or whose value
// matches nothing the scrape shows; an aggregation grouping by a label none
// of its series carry.
func Check(expr string, s Scope) []error {
	e, err := Parse(expr)
	if err != nil {
		return []error{err}
	}
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			checkSelector(n, s, add)
		case *parser.AggregateExpr:
			checkGrouping(n, s, add)
		}
		return nil
	})
	return problems
}

// selectorName is the metric name a selector picks, if it names one.
func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

func checkSelector(vs *parser.VectorSelector, s Scope, add func(string, ...any)) {
	name := selectorName(vs)
	switch {
	case name == "":
		add("%s: selects no metric by name", vs)
		return
	case slices.Contains(s.Synthetic, name):
	case !s.Catalog.Has(name):
		add("%s: no series %s in the worker's /metrics", vs, name)
		return
	}
	have := s.labelsOf(name)
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel {
			continue
		}
		if !slices.Contains(have, m.Name) {
			add("%s: %s has no label %q (it has %s)", vs, name, m.Name, strings.Join(have, ", "))
			continue
		}
		if s.isTargetLabel(m.Name) || slices.Contains(s.Synthetic, name) {
			continue
		}
		// A filter that matches none of the values the worker produced is
		// most likely a typo ("acked" vs "ack", "2xx" vs "2..").
		if m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp {
			seen := s.Catalog.Values(name, m.Name)
			if !slices.ContainsFunc(seen, m.Matches) {
				add("%s: %s matches no value of %s in the worker's /metrics (seen: %s)", vs, m, name, strings.Join(seen, ", "))
			}
		}
	}
}

func checkGrouping(ae *parser.AggregateExpr, s Scope, add func(string, ...any)) {
	if ae.Without || len(ae.Grouping) == 0 {
		return
	}
	var have []string
	relabels := false
	parser.Inspect(ae.Expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			have = append(have, s.labelsOf(selectorName(n))...)
		case *parser.Call:
			if n.Func.Name == "label_replace" || n.Func.Name == "label_join" {
				relabels = true
			}
		}
		return nil
	})
	if relabels {
		return
	}
	for _, g := range ae.Grouping {
		if !slices.Contains(have, g) {
			add("%s: groups by %q, which none of its series carry", ae, g)
		}
	}
}
