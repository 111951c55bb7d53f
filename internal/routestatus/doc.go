// Package routestatus is the vocabulary a replica and `agentrelay status`
// share about a route, without the worker: what one replica knows of a
// route (Status, Ordered), how a replica's status service is asked for it
// (Subject, Request, Answer), how a route's consumer is named
// (DefaultDurable), and how route health marks the consumer pauses it sets
// (HealthPauseUntil). The consumer package fills these in; internal/app
// serves them; internal/inspect and the command line read them, and link
// none of the worker.
package routestatus
