package faultsuite

import (
	"testing"

	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// Every reason the worker dead-letters with before calling the API is one
// whose event the checker says must never reach the API; the API's own
// answers and max_attempts, which follow calls, are not. A reason added to
// deadletter without telling the checker fails here.
func TestReasonsGivenWithoutACallMustNotReachTheAPI(t *testing.T) {
	afterACall := map[deadletter.Reason]bool{
		deadletter.ReasonBadRequest: true, deadletter.ReasonForbidden: true, deadletter.ReasonNotFound: true,
		deadletter.ReasonRejected: true, deadletter.ReasonMaxAttempts: true,
	}
	for _, r := range deadletter.Reasons() {
		if got, want := isPoisonReason(string(r)), !afterACall[r]; got != want {
			t.Errorf("isPoisonReason(%s) = %v, want %v", r, got, want)
		}
	}
}
