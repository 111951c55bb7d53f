package telemetry

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// series returns the series of the metric name in reg, by their label
// values joined with "/".
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += "/"
				}
				key += l.GetValue()
			}
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 { return m.GetCounter().GetValue() + m.GetGauge().GetValue() }

// A route's per-agent metrics label the first MaxTriggerIDLabels agents by
// id and every later one as OverflowTriggerID: a route serving thousands
// of agents costs a bounded number of series.
func TestAgentMetricsBoundTheirTriggerIDs(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewMetrics(reg).Route("many")
	for i := range 3 * MaxTriggerIDLabels {
		r.AgentTrigger(fmt.Sprintf("agtch_%04d", i), 202, "")
	}
	// Labels sort by name: code, error, route, trigger_id.
	got := series(t, reg, "agentrelay_agent_trigger_requests_total")
	if len(got) != MaxTriggerIDLabels+1 {
		t.Errorf("%d series of agent_trigger_requests_total, want %d and the overflow", len(got), MaxTriggerIDLabels)
	}
	if v := got["202//many/"+OverflowTriggerID]; v != 2*MaxTriggerIDLabels {
		t.Errorf("overflow series counts %v calls, want %d", v, 2*MaxTriggerIDLabels)
	}
	if v := got["202//many/agtch_0000"]; v != 1 {
		t.Errorf("agtch_0000 counts %v calls, want 1", v)
	}
}

// An agent's stop and recovery move agent_stopped and route_agents_stopped
// together, for the agents past the bound too.
func TestAgentHealthGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewMetrics(reg).Route("many")
	for i := range MaxTriggerIDLabels + 2 {
		r.AgentTrigger(fmt.Sprintf("agtch_%04d", i), 202, "")
	}
	r.AgentHealth("agtch_0001", "healthy", "not_runnable")
	r.AgentHealth("agtch_0100", "healthy", "not_runnable") // past the bound
	r.AgentHealth("agtch_0101", "healthy", "outage")       // past the bound
	// Labels sort by name: condition, route, trigger_id.
	stopped := func(id, cond string) float64 { return series(t, reg, "agentrelay_agent_stopped")[cond+"/many/"+id] }
	byState := func(cond string) float64 { return series(t, reg, "agentrelay_route_agents_stopped")[cond+"/many"] }
	if stopped("agtch_0001", "not_runnable") != 1 || stopped(OverflowTriggerID, "not_runnable") != 1 || stopped(OverflowTriggerID, "outage") != 1 {
		t.Error("agent_stopped does not show the three stopped agents")
	}
	if byState("not_runnable") != 2 || byState("outage") != 1 {
		t.Errorf("route_agents_stopped = %v not_runnable, %v outage; want 2 and 1", byState("not_runnable"), byState("outage"))
	}
	r.AgentHealth("agtch_0001", "not_runnable", "healthy")
	r.AgentHealth("agtch_0100", "not_runnable", "healthy")
	if byState("not_runnable") != 0 || stopped(OverflowTriggerID, "not_runnable") != 0 {
		t.Error("the gauges did not follow the agents' recovery")
	}
	if got := series(t, reg, "agentrelay_agent_stopped"); len(got) != 2 {
		// agtch_0001's series is gone; the overflow's two remain.
		t.Errorf("agent_stopped series %v, want the overflow's two only", got)
	}
}
