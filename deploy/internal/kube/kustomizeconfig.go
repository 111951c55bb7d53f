package kube

import (
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/resid"

	"github.com/agentrelay/agentrelay/deploy/internal/strict"
)

// TransformerConfig is a kustomize `configurations:` file: how kustomize's
// built-in transformers treat fields of custom resources. Only name
// references are used here; kustomize keeps its own type internal, so this
// mirrors it.
type TransformerConfig struct {
	NameReference []NameBackReferences `json:"nameReference"`
}

// NameBackReferences lists the fields that hold the name of a resource of
// kind Gvk, so that a rename (namePrefix, generator hash) follows.
type NameBackReferences struct {
	resid.Gvk  `json:",inline"`
	FieldSpecs types.FsSlice `json:"fieldSpecs"`
}

// DecodeTransformerConfig decodes a `configurations:` file strictly.
func DecodeTransformerConfig(data []byte) (*TransformerConfig, error) {
	var c TransformerConfig
	if err := strict.YAML(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
