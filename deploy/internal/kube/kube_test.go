package kube_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/agentrelay/agentrelay/deploy/internal/kube"
)

func TestDecodeIsStrict(t *testing.T) {
	for doc, problem := range map[string]string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {replica: 2}\n":                           "unknown field",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {replicas: 2, replicas: 3}\n":             "already set",
		"apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\nspec: {maxReplicas: 3}\n":            "unknown field",
		"apiVersion: jetstream.nats.io/v1beta2\nkind: Consumer\nmetadata: {name: a}\nspec: {ack_policy: explicit}\n": "unknown field",
		"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\n":                                            "no typed decoder",
		"kind: Deployment\n": "apiVersion and kind are required",
	} {
		if _, err := kube.Decode([]byte(doc)); err == nil || !strings.Contains(err.Error(), problem) {
			t.Errorf("%q: want an error containing %q, got %v", doc, problem, err)
		}
	}
}

func TestDecodeAllSplitsDocuments(t *testing.T) {
	objs, err := kube.DecodeAll([]byte("# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n--- # next\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n---\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].String() != "Deployment/a" || objs[1].String() != "Service/b" {
		t.Fatalf("objects %v", objs)
	}
	if deps := kube.All[*appsv1.Deployment](objs); len(deps) != 1 || deps[0].Name != "a" {
		t.Errorf("All[*Deployment] = %v", deps)
	}
}
