package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a Go duration string ("30s",
// "1m30s") or with a day suffix ("14d"); a bare number is seconds.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration like time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "want a duration such as 30s, 5m or 14d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return lineError(n, err.Error())
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ParseDuration parses a Go duration, a number of days ("14d") or a bare
// number of seconds. Negative durations, NaN and infinities are errors:
// none of the configuration's durations can be negative, and a NaN would
// convert to an arbitrary duration.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	bad := func() (time.Duration, error) {
		return 0, fmt.Errorf("invalid duration %q: want a duration such as 30s, 5m or 14d", s)
	}
	number := func(v string, max float64) (float64, bool) {
		n, err := strconv.ParseFloat(v, 64)
		return n, err == nil && !math.IsNaN(n) && n >= 0 && n <= max
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, ok := number(days, 36500)
		if !ok {
			return bad()
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		n, ok := number(s, 1e9)
		if !ok {
			return bad()
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return bad()
	}
	return d, nil
}

// lineError is a value's decoding problem as the YAML library reports its
// own: a *yaml.TypeError, after which it goes on decoding the rest of the
// file (any other error stops it there), so that every problem is listed.
func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
