package telemetry

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentrelay/agentrelay/consumer"
)

// The per-message metric calls of the relay: Received, Trigger, Finished,
// made as the relay makes them, through consumer.RouteObserver.
// Run with go test -run '^$' -bench . -benchmem ./internal/telemetry/
//
// "label-cache" is the route's cache of bound counters; "with-label-values"
// looks the same counters up on every call, as issue #13 asks to compare.
func BenchmarkRouteMetricsPerMessage(b *testing.B) {
	b.Run("label-cache", func(b *testing.B) {
		r := NewMetrics(prometheus.NewRegistry()).ObserveRoute("bench")
		b.ReportAllocs()
		for b.Loop() {
			r.Received()
			r.Trigger(202, "accepted", 0.05)
			r.Finished(consumer.VerdictAck, "accepted", 1, 0.05)
		}
	})
	b.Run("with-label-values", func(b *testing.B) {
		m := NewMetrics(prometheus.NewRegistry())
		r := m.Route("bench")
		b.ReportAllocs()
		for b.Loop() {
			r.Received()
			m.requests.WithLabelValues("bench", statusText(202), "").Inc()
			r.triggerSeconds.Observe(0.05)
			m.finished.WithLabelValues("bench", outcomes[outcomeIndex(consumer.VerdictAck)], "accepted").Inc()
			r.processSeconds[0].Observe(0.05)
			r.attempts[0].Observe(1)
		}
	})
}
