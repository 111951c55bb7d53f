package telemetry

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DeadLetterKey is a route and a reason, as agentrelay_dead_letters_waiting
// labels them.
type DeadLetterKey struct{ Route, Reason string }

// deadLetterBacklog exports what the dead-letter stream holds, as a
// collector so that a refresh replaces every series at once (letters of a
// reason replayed away leave no stale series) and the oldest letter's age
// is computed at scrape time, not frozen at the last refresh.
//
// Every replica reads the same stream and reports the same values: these
// are gauges of shared state, to be combined with max (not sum) across
// replicas, like agentrelay_consumer_*.
type deadLetterBacklog struct {
	waitingDesc, oldestDesc *prometheus.Desc
	now                     func() time.Time

	mu      sync.Mutex
	set     bool
	waiting map[DeadLetterKey]int
	oldest  map[string]time.Time
	routes  []string
}

func newDeadLetterBacklog() *deadLetterBacklog {
	return &deadLetterBacklog{
		waitingDesc: prometheus.NewDesc(namespace+"_dead_letters_waiting",
			"Dead letters waiting in the dead-letter stream, by route and reason (read every lag_interval; the same on every replica: use max). Routes not configured and unknown reasons count as \"other\".",
			[]string{"route", "reason"}, nil),
		oldestDesc: prometheus.NewDesc(namespace+"_dead_letter_oldest_age_seconds",
			"Age of the route's oldest dead letter waiting in the dead-letter stream, 0 when none (the same on every replica: use max). The stream expires letters at its max_age (14 days by default).",
			[]string{"route"}, nil),
		now: time.Now,
	}
}

func (c *deadLetterBacklog) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.waitingDesc
	ch <- c.oldestDesc
}

func (c *deadLetterBacklog) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.set {
		return
	}
	for k, n := range c.waiting {
		ch <- prometheus.MustNewConstMetric(c.waitingDesc, prometheus.GaugeValue, float64(n), k.Route, k.Reason)
	}
	now := c.now()
	for _, r := range c.routes {
		age := 0.0
		if t, ok := c.oldest[r]; ok {
			age = max(now.Sub(t).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.oldestDesc, prometheus.GaugeValue, age, r)
	}
}

// SetDeadLetterBacklog replaces agentrelay_dead_letters_waiting and
// agentrelay_dead_letter_oldest_age_seconds. routes and reasons are the
// label values exported even at 0 (a series that exists from the start lets
// a query tell "none waiting" from "not reported"); waiting and oldest hold
// what the stream holds, with bounded label values only.
func (m *Metrics) SetDeadLetterBacklog(routes, reasons []string, waiting map[DeadLetterKey]int, oldest map[string]time.Time) {
	c := m.dlBacklog
	w := make(map[DeadLetterKey]int, len(routes)*len(reasons)+len(waiting))
	for _, r := range routes {
		for _, reason := range reasons {
			w[DeadLetterKey{r, reason}] = 0
		}
	}
	all := append([]string(nil), routes...)
	for k, n := range waiting {
		w[k] = n
	}
	for r := range oldest {
		if !slices.Contains(all, r) {
			all = append(all, r)
		}
	}
	o := make(map[string]time.Time, len(oldest))
	for r, t := range oldest {
		o[r] = t
	}
	c.mu.Lock()
	c.set, c.waiting, c.oldest, c.routes = true, w, o, all
	c.mu.Unlock()
}
