package telemetry

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gauges gathers reg's gauges of one family as "label=value,..." → value.
func gauges(t *testing.T, reg *prometheus.Registry, family string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

// The dead-letter backlog gauges: nothing before the first reading; then a
// series for every configured route and known reason (0 when none), the
// oldest letter's age computed when scraped, and a later reading replaces
// every series (a reason replayed away goes back to 0, an unknown route's
// series goes).
func TestDeadLetterBacklogGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	m.dlBacklog.now = func() time.Time { return now }
	if g := gauges(t, reg, "agentrelay_dead_letters_waiting"); len(g) != 0 {
		t.Errorf("before the first reading: %v", g)
	}
	routes, reasons := []string{"a", "b"}, []string{"forbidden", "max_attempts"}
	m.SetDeadLetterBacklog(routes, reasons,
		map[DeadLetterKey]int{{"a", "forbidden"}: 3, {"other", "forbidden"}: 1},
		map[string]time.Time{"a": now.Add(-8 * 24 * time.Hour), "other": now.Add(-time.Hour)})
	w := gauges(t, reg, "agentrelay_dead_letters_waiting")
	want := map[string]float64{
		"reason=forbidden,route=a,": 3, "reason=max_attempts,route=a,": 0,
		"reason=forbidden,route=b,": 0, "reason=max_attempts,route=b,": 0,
		"reason=forbidden,route=other,": 1,
	}
	if len(w) != len(want) {
		t.Errorf("waiting %v, want %v", w, want)
	}
	for k, v := range want {
		if w[k] != v {
			t.Errorf("waiting %s = %v, want %v", k, w[k], v)
		}
	}
	o := gauges(t, reg, "agentrelay_dead_letter_oldest_age_seconds")
	if o["route=a,"] != 8*24*3600 || o["route=b,"] != 0 || o["route=other,"] != 3600 {
		t.Errorf("oldest ages %v", o)
	}
	now = now.Add(time.Minute) // scraped later, without a new reading
	if o := gauges(t, reg, "agentrelay_dead_letter_oldest_age_seconds"); o["route=a,"] != 8*24*3600+60 {
		t.Errorf("age a minute later: %v", o["route=a,"])
	}

	m.SetDeadLetterBacklog(routes, reasons, map[DeadLetterKey]int{}, map[string]time.Time{})
	w = gauges(t, reg, "agentrelay_dead_letters_waiting")
	if len(w) != 4 || w["reason=forbidden,route=a,"] != 0 {
		t.Errorf("after a replay: %v", w)
	}
	if o := gauges(t, reg, "agentrelay_dead_letter_oldest_age_seconds"); len(o) != 2 || o["route=a,"] != 0 {
		t.Errorf("oldest after a replay: %v", o)
	}
}
