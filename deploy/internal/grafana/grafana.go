// Package grafana reads the agentrelay dashboard: a strict mirror of the
// parts of Grafana's dashboard JSON model the dashboard uses, and the PromQL
// queries in it with Grafana's template variables expanded, so that they can
// be parsed and checked.
package grafana

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/agentrelay/agentrelay/deploy/internal/strict"
)

// Dashboard is a Grafana dashboard (JSON model). Fields the dashboard does
// not use are absent, so an unknown (or misspelt) key fails decoding;
// panel field configuration and options are Grafana's own business and are
// kept raw.
type Dashboard struct {
	UID           string     `json:"uid"`
	Title         string     `json:"title"`
	Description   string     `json:"description"`
	Tags          []string   `json:"tags"`
	Timezone      string     `json:"timezone"`
	Editable      bool       `json:"editable"`
	GraphTooltip  int        `json:"graphTooltip"`
	SchemaVersion int        `json:"schemaVersion"`
	Version       int        `json:"version"`
	Refresh       string     `json:"refresh"`
	Time          TimeRange  `json:"time"`
	Templating    Templating `json:"templating"`
	Panels        []Panel    `json:"panels"`
}

// TimeRange is the default time range.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Templating holds the dashboard's variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a template variable: a data source picker or a query.
type Variable struct {
	Name       string         `json:"name"`
	Label      string         `json:"label"`
	Type       string         `json:"type"`
	Datasource *DatasourceRef `json:"datasource,omitempty"`
	Query      string         `json:"query"`
	Refresh    int            `json:"refresh,omitempty"`
	IncludeAll bool           `json:"includeAll,omitempty"`
	Multi      bool           `json:"multi,omitempty"`
	AllValue   string         `json:"allValue,omitempty"`
}

// DatasourceRef points at a data source, here always the variable.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Panel is one panel.
type Panel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description,omitempty"`
	GridPos     GridPos         `json:"gridPos"`
	Datasource  *DatasourceRef  `json:"datasource"`
	FieldConfig json.RawMessage `json:"fieldConfig,omitempty"`
	Options     json.RawMessage `json:"options,omitempty"`
	Targets     []Target        `json:"targets"`
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Target is one PromQL query of a panel.
type Target struct {
	RefID        string `json:"refId"`
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat,omitempty"`
	Format       string `json:"format,omitempty"`
	Instant      bool   `json:"instant,omitempty"`
}

// Parse decodes a dashboard strictly.
func Parse(data []byte) (*Dashboard, error) {
	var d Dashboard
	if err := strict.JSON(data, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return &d, nil
}

// Query is a PromQL expression found in the dashboard, with its template
// variables expanded.
type Query struct {
	Where  string // "panel \"Title\" query A" or "variable route"
	Expr   string
	Legend string
}

// Queries returns every PromQL expression of the dashboard: each panel
// target, and the series selector inside each label_values(...) variable
// query.
func (d *Dashboard) Queries() ([]Query, error) {
	var qs []Query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		sel, err := labelValuesSelector(v.Query)
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", v.Name, err)
		}
		qs = append(qs, Query{Where: "variable " + v.Name, Expr: Expand(sel)})
	}
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			qs = append(qs, Query{Where: fmt.Sprintf("panel %q query %s", p.Title, t.RefID), Expr: Expand(t.Expr), Legend: t.LegendFormat})
		}
	}
	return qs, nil
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// labelValuesSelector turns label_values(selector, label) into a query
// for the selector, grouped by the label, so that a check covers both.
func labelValuesSelector(q string) (string, error) {
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		return "", fmt.Errorf("query %q is not label_values(selector, label)", q)
	}
	return fmt.Sprintf("count by (%s) (%s)", m[2], m[1]), nil
}

var (
	rangeVariable = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
	variable      = regexp.MustCompile(`\$\{[a-zA-Z_][a-zA-Z0-9_]*(:[a-z]+)?\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[a-zA-Z_][a-zA-Z0-9_]*\]\]`)
)

// Expand replaces Grafana's template variables the way a query sees them
// when every value is selected: interval variables by a duration, and every
// other variable by ".*", which only works inside a regex matcher (=~), as
// a multi-value variable must be used.
func Expand(expr string) string {
	expr = rangeVariable.ReplaceAllString(expr, "5m")
	return variable.ReplaceAllString(expr, ".*")
}

// LegendLabels returns the label names a legend format prints ({{route}}).
func LegendLabels(legend string) []string {
	var out []string
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}

var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
