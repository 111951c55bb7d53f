package strict_test

import (
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/deploy/internal/strict"
)

type target struct {
	LegendFormat string `json:"legendFormat"`
	Nested       struct {
		N int `json:"n"`
	} `json:"nested"`
}

func TestStrictDecoding(t *testing.T) {
	for doc, problem := range map[string]string{
		`{"legendFormat": "a"}`:                      "",
		`{"legendformat": "a"}`:                      "unknown field",
		`{"legendFormat": "a", "other": 1}`:          "unknown field",
		`{"nested": {"n": 1, "m": 2}}`:               "unknown field",
		`{"legendFormat": "a", "legendFormat": "b"}`: "duplicate field",
		"legendFormat: a\nlegendFormat: b\n":         "already set",
		"nested:\n  N: 1\n":                          "unknown field",
	} {
		var v target
		var err error
		if strings.HasPrefix(doc, "{") {
			err = strict.JSON([]byte(doc), &v)
		} else {
			err = strict.YAML([]byte(doc), &v)
		}
		switch {
		case problem == "" && err != nil:
			t.Errorf("%s: %v", doc, err)
		case problem != "" && (err == nil || !strings.Contains(err.Error(), problem)):
			t.Errorf("%s: want an error containing %q, got %v", doc, problem, err)
		}
	}
}
