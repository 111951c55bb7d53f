package telemetry_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentrelay/agentrelay/internal/observe"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// Trigger calls keep HTTP status codes and error kinds in separate labels:
// a query on code never meets "timeout", and one on error never meets
// "503". Primed series exist at zero before the first call.
func TestTriggerCallsKeepStatusCodesApartFromErrorKinds(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := telemetry.NewMetrics(reg).Route("r")
	r.Prime(observe.KnownLabels{Codes: []string{"202"}, Errors: []string{"network"}})
	r.Trigger(202, "accepted", 0.01)
	r.Trigger(503, "server_error", 0.01)
	r.Trigger(0, "timeout", 10)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "agentrelay_trigger_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(ls, ",")] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"code=,error=network,route=r": 0,
		"code=,error=timeout,route=r": 1,
		"code=202,error=,route=r":     1,
		"code=503,error=,route=r":     1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("agentrelay_trigger_requests_total series:\n got %v\nwant %v", got, want)
	}
}

// Retry waits go up and down with the replica's delayed naks; an accepted
// replay counts as a replay and sets the last acceptance.
func TestRetryWaitingAcceptedAndReplays(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := telemetry.NewMetrics(reg).Route("r")
	r.RetryWaiting(3)
	r.RetryWaiting(-2)
	r.Accepted(1700000000.5, false)
	r.Accepted(1700000001.5, true)
	r.TokenReloaded()
	r.SetOldestUnacked(42)
	for name, want := range map[string]float64{
		"agentrelay_messages_retry_waiting":          1,
		"agentrelay_last_accepted_timestamp_seconds": 1700000001.5,
		"agentrelay_replays_accepted_total":          1,
		"agentrelay_token_reloads_total":             1,
		"agentrelay_oldest_unacked_age_seconds":      42,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := -1.0
		for _, mf := range mfs {
			if mf.GetName() == name {
				m := mf.GetMetric()[0]
				if m.GetGauge() != nil {
					got = m.GetGauge().GetValue()
				} else {
					got = m.GetCounter().GetValue()
				}
			}
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
