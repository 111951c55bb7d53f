// Package kube reads agentrelay's Kubernetes manifests the strict way: every
// document decodes into a typed struct with unknown and duplicate fields
// rejected, so a misspelt or misplaced field fails a test instead of being
// silently dropped by the API server (or worse, by a CRD's pruning).
package kube

import (
	"bytes"
	"fmt"
	"regexp"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/agentrelay/agentrelay/deploy/internal/strict"
)

// Object is one decoded manifest.
type Object struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	// Value is the typed object, a pointer: *appsv1.Deployment,
	// *ScaledObject, *types.Kustomization, ...
	Value any
}

// String names the object as kubectl does: Kind/name.
func (o Object) String() string { return o.Kind + "/" + o.Name }

// typed returns a new typed value for a manifest's apiVersion and kind, or
// false when the kind is not one agentrelay's manifests use. Adding a new
// kind to deploy/ means adding it here, with its real Go type when one is
// importable or a mirror of its CRD schema (keda.go, nack.go) when not.
func typed(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, true
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, true
	case "monitoring.coreos.com/v1alpha1/AlertmanagerConfig":
		return &monitoringv1alpha1.AlertmanagerConfig{}, true
	case "keda.sh/v1alpha1/ScaledObject":
		return &ScaledObject{}, true
	case "jetstream.nats.io/v1beta2/Stream":
		return &Stream{}, true
	case "jetstream.nats.io/v1beta2/Consumer":
		return &Consumer{}, true
	case "kustomize.config.k8s.io/v1beta1/Kustomization", "kustomize.config.k8s.io/v1alpha1/Component":
		return &types.Kustomization{}, true
	}
	return nil, false
}

// header is what every manifest starts with.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// Decode strictly decodes one YAML (or JSON) document into its typed struct.
// An unknown field, a field whose name differs in case, a duplicate field, a
// wrong type or a kind this package has no type for is an error.
func Decode(doc []byte) (Object, error) {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return Object{}, err
	}
	if h.APIVersion == "" || h.Kind == "" {
		return Object{}, fmt.Errorf("not a Kubernetes object: apiVersion and kind are required")
	}
	v, ok := typed(h.APIVersion, h.Kind)
	if !ok {
		return Object{}, fmt.Errorf("%s %s: no typed decoder for this kind (add one to deploy/internal/kube)", h.APIVersion, h.Kind)
	}
	if err := strict.YAML(doc, v); err != nil {
		return Object{}, fmt.Errorf("%s/%s: %w", h.Kind, h.Metadata.Name, err)
	}
	return Object{APIVersion: h.APIVersion, Kind: h.Kind, Name: h.Metadata.Name, Namespace: h.Metadata.Namespace, Value: v}, nil
}

// DecodeAll decodes every document of a multi-document YAML stream.
func DecodeAll(data []byte) ([]Object, error) {
	var objs []Object
	for i, doc := range SplitDocuments(data) {
		o, err := Decode(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

var separator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// SplitDocuments splits a YAML stream at its "---" lines and drops
// documents that hold nothing but comments and blank lines.
func SplitDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range separator.Split(string(data), -1) {
		var v any
		if err := yaml.Unmarshal([]byte(d), &v); err == nil && v == nil {
			continue
		}
		docs = append(docs, bytes.TrimSpace([]byte(d)))
	}
	return docs
}

// All returns the values of type T among objs, in order; T is a pointer
// type such as *appsv1.Deployment.
func All[T any](objs []Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}
