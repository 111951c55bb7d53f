package deadletter

// Reason is the machine-readable reason a message was dead-lettered. It is
// carried in the letter's Agentrelay-Reason header and as a metric label,
// so the set is small and fixed.
type Reason string

// Dead-letter reasons.
const (
	// Poison messages, dead-lettered without calling the API.
	ReasonInvalidJSON            Reason = "invalid_json"             // body is not the API's JSON object
	ReasonMissingInput           Reason = "missing_input"            // input absent or empty
	ReasonInputTooLarge          Reason = "input_too_large"          // input (or body) over the route's limit
	ReasonInvalidUTF8            Reason = "invalid_utf8"             // body or text fields not valid UTF-8
	ReasonInvalidIdempotencyKey  Reason = "invalid_idempotency_key"  // message id unusable as a header value
	ReasonInvalidConversationKey Reason = "invalid_conversation_key" // conversation key too long or with control characters
	ReasonInvalidCloudEvent      Reason = "invalid_cloudevent"       // a CloudEvents route's message is not a valid CloudEvent
	ReasonMappingFailed          Reason = "mapping_failed"           // the route's mapping failed on the event, or mapped an empty input
	ReasonTriggerNotAllowed      Reason = "trigger_not_allowed"      // the event names a trigger id outside the route's allowed_trigger_ids, or a malformed one

	// Permanent answers of the API.
	ReasonBadRequest Reason = "bad_request" // 400
	ReasonForbidden  Reason = "forbidden"   // 403
	ReasonNotFound   Reason = "not_found"   // 404
	ReasonRejected   Reason = "rejected"    // any other 4xx that retrying cannot fix (405, 413, 422, ...)

	// ReasonMaxAttempts: the message failed on its own as often as its
	// budget allows.
	ReasonMaxAttempts Reason = "max_attempts"
)

// Reasons lists every reason, in the order above: for metrics that export
// one series per reason, and for shell completion.
func Reasons() []Reason {
	return []Reason{
		ReasonInvalidJSON, ReasonMissingInput, ReasonInputTooLarge, ReasonInvalidUTF8,
		ReasonInvalidIdempotencyKey, ReasonInvalidConversationKey,
		ReasonInvalidCloudEvent, ReasonMappingFailed, ReasonTriggerNotAllowed,
		ReasonBadRequest, ReasonForbidden, ReasonNotFound, ReasonRejected, ReasonMaxAttempts,
	}
}
