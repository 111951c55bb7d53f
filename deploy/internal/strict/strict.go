// Package strict decodes YAML and JSON as strictly as the Kubernetes API
// server's strict field validation: keys match field names exactly (Go's
// encoding/json would accept "replicas" for "Replicas" and "legendformat"
// for "legendFormat", which the real consumers ignore), and unknown and
// duplicate fields are errors.
package strict

import (
	"errors"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// JSON decodes data into v strictly.
func JSON(data []byte, v any) error {
	problems, err := sigsjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(problems...)
}

// YAML decodes data into v strictly: duplicate keys are refused while the
// YAML is converted to JSON, the rest as JSON does.
func YAML(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	return JSON(j, v)
}
