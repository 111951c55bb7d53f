// Package agentapi is the client of the Workspace Agents trigger API:
//
//	POST {base}/v1/workspace_agents/{id}/trigger
//	Authorization: Bearer <token>
//	Idempotency-Key: <key>
//	{"input": "...", "conversation_key": "..."}
//
// which answers 202 Accepted with no body, or 401, 403, 404 or 409.
//
// A Client holds the connection pool and the call timeout; an Agent binds it
// to one validated TriggerID and a TokenSource. Agent.Trigger returns nil when
// the API accepted the event, or an *Error whose Class says what kind of
// failure it was (the caller decides what to do about it). Tokens are carried
// as Secret values, which never print. A call may carry a send check
// (WithSendCheck), asked as its request is written: an ordered route's
// owner uses it so that a process stopped after its own check does not
// send the call late.
//
// The sub-package emulator serves the same endpoint for tests and dev mode.
package agentapi
