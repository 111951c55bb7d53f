package routestatus

// Every replica runs a NATS service (nats.go micro, named ServiceName) with
// one endpoint per route on Subject, without a queue group: every replica
// hears a request and answers with what it knows of the route (an Answer).
// internal/app serves it; `agentrelay status` asks.

// ServiceName is the name of the worker's NATS service.
const ServiceName = "agentrelay"

// DefaultKeys is how many blocked keys of an ordered route an answer lists
// when the request does not say.
const DefaultKeys = 10

// MaxRequest bounds a request's body: {"max_keys": n} needs a few bytes.
const MaxRequest = 1024

// Subject is the subject on which every replica running the route that
// reads stream through the consumer named durable answers:
// agentrelay.status.<stream>.<consumer>, a consumer's identity (two
// deployments may share route names, not consumers).
func Subject(stream, durable string) string {
	return "agentrelay.status." + stream + "." + durable
}

// OrderedSubject is the subject of the status service's first version,
// kept for `agentrelay status` commands older than the workers: only the
// owner of an ordered route answers on it, with an Ordered.
func OrderedSubject(stream, durable string) string {
	return "agentrelay.ordered." + stream + "." + durable
}

// Request is the body of a request (optional: empty means the defaults).
type Request struct {
	// MaxKeys is how many blocked keys of an ordered route to list, the
	// longest waiting first (at most MaxBlockedKeys). Default DefaultKeys.
	MaxKeys int `json:"max_keys,omitempty"`
}

// Answer is one replica's answer.
type Answer struct {
	Replica Replica `json:"replica"`
	Status  Status  `json:"status"`
}

// Replica says who answers: its status service instance (micro's id, as
// `nats micro ls` lists it), its NATS connection's name and client id, its
// host name and its version. All of it is the replica's own word.
type Replica struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	Host     string `json:"host,omitempty"`
	ClientID uint64 `json:"client_id,omitempty"`
	Version  string `json:"version,omitempty"`
}

// Error codes of an answer, in micro's error header.
const (
	ErrBadRequest = "400"
	ErrTooLarge   = "413"
	ErrNoRoute    = "404"
)
