// Package deploy holds what it takes to run agentrelay on Kubernetes: the
// container image (docker/), kustomize manifests (kubernetes/), the NATS
// streams and consumers (nats/), alerts and a dashboard. It has no code of
// its own; its tests check every file here against the agentrelay binary,
// built as the image builds it and run as the pod runs it.
//
// It is a Go module of its own, so that the Kubernetes, kustomize and
// Prometheus libraries the checks need stay out of the worker's module.
package deploy
