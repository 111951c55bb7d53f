package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Share is a part of a whole, 0 to 1, written as a number or as true (1)
// or false (0): `log.accepted: true` logs every accepted event,
// `log.accepted: 0.01` one in a hundred.
type Share float64

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Share) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "want true, false or a share from 0 to 1")
	}
	v, err := ParseShare(n.Value)
	if err != nil {
		return lineError(n, err.Error())
	}
	*s = Share(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s Share) MarshalYAML() (any, error) {
	switch s {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return float64(s), nil
}

// ParseShare parses true, false or a number from 0 to 1.
func ParseShare(s string) (float64, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true":
		return 1, nil
	case "false", "":
		return 0, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > 1 {
		return 0, fmt.Errorf("invalid share %q: want true, false or a share from 0 to 1", s)
	}
	return v, nil
}
