package consumer

import (
	"testing"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// BenchmarkDecide is the decision on the per-message hot path.
func BenchmarkDecide(b *testing.B) {
	p := RetryPolicy{}.WithDefaults()
	for _, o := range []Outcome{
		{Class: agentapi.ClassAccepted, Status: 202},
		{Class: agentapi.ClassServerError, Status: 503},
		{Class: ClassPoison, Reason: deadletter.ReasonInvalidJSON},
	} {
		b.Run(string(o.Class), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Decide(o, Attempts{Delivered: 3, Failed: 3}, p, 0.5)
			}
		})
	}
}
