package consumer

import "github.com/agentrelay/agentrelay/agentapi"

// knownLabels are the label values a route's counters can take, created at
// zero when the route starts so that alerts on increase() see the first
// event of each. They follow Decide: what each class can end in.
func knownLabels() KnownLabels {
	retryable := []agentapi.Class{
		agentapi.ClassUnauthorized, agentapi.ClassConflict, agentapi.ClassRateLimited,
		agentapi.ClassServerError, agentapi.ClassTimeout, agentapi.ClassNetwork, agentapi.ClassUnexpected,
	}
	k := KnownLabels{
		Finished: []Finish{{VerdictAck, string(agentapi.ClassAccepted)}},
		Reasons: []string{
			string(ReasonInvalidJSON), string(ReasonMissingInput), string(ReasonInputTooLarge), string(ReasonInvalidUTF8),
			string(ReasonInvalidIdempotencyKey), string(ReasonInvalidConversationKey), string(ReasonBadRequest),
			string(ReasonForbidden), string(ReasonNotFound), string(ReasonRejected), string(ReasonMaxAttempts),
		},
		Codes:     []string{"202", "400", "401", "403", "404", "409", "429", "500", "502", "503", "504"},
		Errors:    []string{string(agentapi.ClassTimeout), string(agentapi.ClassNetwork)},
		SettleOps: []string{"ack", "nak", "term", "in_progress"},
	}
	for _, c := range Conditions() {
		k.States = append(k.States, c.String())
		if c != ConditionNone {
			for _, t := range []Transition{Tripped, ProbeFailed, Resumed} {
				k.Transitions = append(k.Transitions, [2]string{t.String(), c.String()})
			}
		}
	}
	for _, c := range retryable {
		k.Finished = append(k.Finished,
			Finish{VerdictRetry, string(c)},
			Finish{VerdictDeadLetter, string(c)})
	}
	for _, c := range []agentapi.Class{ClassGated, agentapi.ClassCanceled} {
		k.Finished = append(k.Finished, Finish{VerdictRetry, string(c)})
	}
	for _, c := range []agentapi.Class{ClassPoison, agentapi.ClassBadRequest, agentapi.ClassForbidden, agentapi.ClassNotFound, agentapi.ClassClientError} {
		k.Finished = append(k.Finished, Finish{VerdictDeadLetter, string(c)})
	}
	return k
}
