// Package promcheck checks PromQL written for agentrelay (alert rules,
// dashboard queries) against what a running agentrelay really exports: every
// selected series must exist in a scrape, every label a query filters or
// groups on must be one the series carries, and every label a template
// prints must survive the query's aggregations.
package promcheck

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Catalog is what one /metrics scrape says exists: series names, as
// Prometheus stores them (a histogram X as X_bucket, X_sum and X_count), with
// the label names and values seen on each.
type Catalog struct {
	series map[string]map[string]map[string]bool // name → label → values
}

// ParseExposition reads a scrape in the Prometheus text format.
func ParseExposition(r io.Reader) (*Catalog, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape: %w", err)
	}
	list := slices.Collect(maps.Values(fams))
	samples, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, list...)
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape: %w", err)
	}
	c := &Catalog{series: map[string]map[string]map[string]bool{}}
	for _, s := range samples {
		name := string(s.Metric[model.MetricNameLabel])
		labels := c.series[name]
		if labels == nil {
			labels = map[string]map[string]bool{}
			c.series[name] = labels
		}
		for k, v := range s.Metric {
			if k == model.MetricNameLabel {
				continue
			}
			if labels[string(k)] == nil {
				labels[string(k)] = map[string]bool{}
			}
			labels[string(k)][string(v)] = true
		}
	}
	return c, nil
}

// Has reports whether the scrape had a series named name.
func (c *Catalog) Has(name string) bool {
	_, ok := c.series[name]
	return ok
}

// Names returns the series names, sorted.
func (c *Catalog) Names() []string {
	return slices.Sorted(maps.Keys(c.series))
}

// Labels returns the label names seen on series name, sorted.
func (c *Catalog) Labels(name string) []string {
	return slices.Sorted(maps.Keys(c.series[name]))
}

// Values returns the values seen for label on series name, sorted.
func (c *Catalog) Values(name, label string) []string {
	return slices.Sorted(maps.Keys(c.series[name][label]))
}

// HasValue reports whether series name carried label=value.
func (c *Catalog) HasValue(name, label, value string) bool {
	return c.series[name][label][value]
}
