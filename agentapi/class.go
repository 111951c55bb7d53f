package agentapi

import (
	"errors"
	"fmt"
	"time"
)

// Class is the response class of a trigger call: what kind of answer (or
// failure) it was, independent of what the caller does about it. The
// consumer's decision table maps classes to actions.
type Class string

// Response classes.
const (
	ClassAccepted     Class = "accepted"     // 202 only: the API durably queued the event
	ClassBadRequest   Class = "bad_request"  // 400: the request itself is malformed
	ClassUnauthorized Class = "unauthorized" // 401, or no token available
	ClassForbidden    Class = "forbidden"    // 403: valid token, no permission for this agent
	ClassNotFound     Class = "not_found"    // 404: unknown id or not visible to the workspace
	ClassConflict     Class = "conflict"     // 409: channel or agent not runnable
	ClassRateLimited  Class = "rate_limited" // 429
	ClassClientError  Class = "client_error" // any other 4xx except 408
	ClassServerError  Class = "server_error" // 5xx, and 408 (the server gave up waiting)
	ClassUnexpected   Class = "unexpected"   // 1xx, 2xx other than 202, 3xx: never sent by the API; a proxy or a wrong base URL
	ClassTimeout      Class = "timeout"      // no complete answer within the call timeout
	ClassNetwork      Class = "network"      // connection refused, reset, dropped before an answer
	ClassCanceled     Class = "canceled"     // the caller canceled the call (shutdown), not the API's doing
)

// ClassOf returns the class of an HTTP status code.
func ClassOf(status int) Class {
	switch {
	case status == 202:
		// Only 202: the API answers nothing else on acceptance. A 200
		// from a catch-all behind a wrong base URL must not be taken for
		// acceptance, or every event would be acked and lost.
		return ClassAccepted
	case status == 400:
		return ClassBadRequest
	case status == 401:
		return ClassUnauthorized
	case status == 403:
		return ClassForbidden
	case status == 404:
		return ClassNotFound
	case status == 408:
		return ClassServerError
	case status == 409:
		return ClassConflict
	case status == 429:
		return ClassRateLimited
	case status >= 400 && status < 500:
		return ClassClientError
	case status >= 500 && status < 600:
		return ClassServerError
	default:
		return ClassUnexpected
	}
}

// Transient reports whether the class is a server-side or transport failure
// that says the API is unhealthy (5xx, timeouts, network errors). These are
// what a circuit breaker counts; a 4xx or a 429 means the API is up and
// answering.
func (c Class) Transient() bool {
	return c == ClassServerError || c == ClassTimeout || c == ClassNetwork
}

// MaxErrorBody is how much of an error response body is kept for
// diagnostics. The rest is discarded unread beyond a small drain budget.
const MaxErrorBody = 2 << 10

// Error is a trigger call that did not end in acceptance.
type Error struct {
	TriggerID  TriggerID
	Class      Class
	StatusCode int           // 0 when no response was received
	Status     string        // status line text, e.g. "503 Service Unavailable"; sanitised, bounded
	RetryAfter time.Duration // parsed Retry-After; 0 when absent or unparseable
	// Body is what an operator needs of the answer's body: the message
	// (type, code) of a JSON error, else the start of the body. At most
	// MaxErrorText bytes.
	Body string
	Err  error // the transport error for network, timeout and canceled classes; its text sanitised
}

// Error implements error. It names the trigger, status and class and quotes
// the start of the body; it never includes request headers.
func (e *Error) Error() string {
	var s string
	switch {
	case e.StatusCode != 0:
		s = fmt.Sprintf("agentapi: trigger %s: %s (%s)", e.TriggerID, e.Status, e.Class)
	case e.Err != nil:
		s = fmt.Sprintf("agentapi: trigger %s: %s: %v", e.TriggerID, e.Class, e.Err)
	default:
		s = fmt.Sprintf("agentapi: trigger %s: %s", e.TriggerID, e.Class)
	}
	if e.RetryAfter > 0 {
		s += " retry after " + e.RetryAfter.String()
	}
	if e.Body != "" {
		// Body is sanitised (no control or format characters) and
		// bounded, so it can stand unquoted; quoting would be escaped
		// again by every log encoder.
		s += ": " + e.Body
	}
	return s
}

// Unwrap returns the transport error, if any.
func (e *Error) Unwrap() error { return e.Err }

// ClassOfError returns the class of an error returned by a trigger call:
// ClassAccepted for nil, the Error's class, or ClassNetwork for anything else.
func ClassOfError(err error) Class {
	if err == nil {
		return ClassAccepted
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ClassNetwork
}
