package telemetry

import (
	"testing"

	"github.com/agentrelay/agentrelay/internal/verdict"
	"github.com/prometheus/client_golang/prometheus"
)

// The per-message metric calls of the relay: Received, Trigger, Finished,
// made as the relay makes them, through observe.RouteObserver.
// Run with go test -run '^$' -bench . -benchmem ./internal/telemetry/
// (BENCHMARKS.md, 2026-11-30: a cache of the labelled children saved about
// 0.2 µs of this and was removed.)
func BenchmarkRouteMetricsPerMessage(b *testing.B) {
	r := NewMetrics(prometheus.NewRegistry()).ObserveRoute("bench")
	b.ReportAllocs()
	for b.Loop() {
		r.Received()
		r.Trigger(202, "accepted", 0.05)
		r.Finished(verdict.Ack, "accepted", 1, 0.05)
	}
}
