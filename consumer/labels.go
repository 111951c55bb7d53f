package consumer

import (
	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/observe"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// knownLabels are the label values a route's counters can take, created at
// zero when the route starts so that alerts on increase() see the first
// event of each. They follow Decide: what each class can end in.
func knownLabels() observe.KnownLabels {
	retryable := []agentapi.Class{
		agentapi.ClassUnauthorized, agentapi.ClassConflict, agentapi.ClassRateLimited,
		agentapi.ClassServerError, agentapi.ClassTimeout, agentapi.ClassNetwork, agentapi.ClassUnexpected,
	}
	k := observe.KnownLabels{
		Finished: []observe.Finish{{Verdict: verdict.Ack, Class: string(agentapi.ClassAccepted)}},
		Reasons: []string{
			string(deadletter.ReasonInvalidJSON), string(deadletter.ReasonMissingInput), string(deadletter.ReasonInputTooLarge), string(deadletter.ReasonInvalidUTF8),
			string(deadletter.ReasonInvalidIdempotencyKey), string(deadletter.ReasonInvalidConversationKey), string(deadletter.ReasonBadRequest),
			string(deadletter.ReasonForbidden), string(deadletter.ReasonNotFound), string(deadletter.ReasonRejected), string(deadletter.ReasonMaxAttempts),
		},
		Codes:     []string{"202", "400", "401", "403", "404", "409", "429", "500", "502", "503", "504"},
		Errors:    []string{string(agentapi.ClassTimeout), string(agentapi.ClassNetwork)},
		SettleOps: []string{"ack", "nak", "term", "in_progress"},
	}
	for _, c := range conditions() {
		k.States = append(k.States, c.String())
		if c != conditionNone {
			for _, t := range []transition{becameStopped, probeFailed, resumed} {
				k.Transitions = append(k.Transitions, [2]string{t.String(), c.String()})
			}
		}
	}
	for _, c := range retryable {
		k.Finished = append(k.Finished,
			observe.Finish{Verdict: verdict.Retry, Class: string(c)},
			observe.Finish{Verdict: verdict.DeadLetter, Class: string(c)})
	}
	for _, c := range []agentapi.Class{ClassGated, agentapi.ClassCanceled} {
		k.Finished = append(k.Finished, observe.Finish{Verdict: verdict.Retry, Class: string(c)})
	}
	for _, c := range []agentapi.Class{ClassPoison, agentapi.ClassBadRequest, agentapi.ClassForbidden, agentapi.ClassNotFound, agentapi.ClassClientError} {
		k.Finished = append(k.Finished, observe.Finish{Verdict: verdict.DeadLetter, Class: string(c)})
	}
	return k
}
