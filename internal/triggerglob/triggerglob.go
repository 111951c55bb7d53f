// Package triggerglob matches trigger ids against the patterns of a route's
// allowed_trigger_ids: the list of the agents a route that takes its
// trigger id from the event may call. An id that no pattern matches is
// never called.
//
// A pattern is a trigger id in which '*' stands for any run of id
// characters (letters, digits, '_' and '-'), possibly empty, and '?' for
// exactly one. It must begin with the literal "agtch_" that every trigger id
// begins with, so that allowing every id is written, and read, as
// "agtch_*", never as a bare "*".
package triggerglob

import (
	"errors"
	"fmt"
	"strings"
)

const prefix = "agtch_"

// ErrPattern is wrapped by the error of a pattern that is not valid.
var ErrPattern = errors.New("invalid trigger id pattern")

// Check reports why p is not a valid pattern, or nil.
func Check(p string) error {
	if !strings.HasPrefix(p, prefix) {
		return fmt.Errorf("%w %q: a pattern begins with %q (use %q to allow every trigger id)", ErrPattern, short(p), prefix, prefix+"*")
	}
	if len(p) > 256 {
		return fmt.Errorf("%w: longer than 256 bytes", ErrPattern)
	}
	for i := len(prefix); i < len(p); i++ {
		if c := p[i]; !isIDByte(c) && c != '*' && c != '?' {
			return fmt.Errorf("%w %q: byte %d is not a letter, digit, '_', '-', '*' or '?'", ErrPattern, short(p), i)
		}
	}
	return nil
}

// Patterns is a checked list of patterns. The zero value matches nothing.
type Patterns struct{ list []string }

// Compile checks every pattern and returns them as Patterns; the error
// joins the problem of each pattern that is not valid.
func Compile(patterns []string) (Patterns, error) {
	var errs []error
	for _, p := range patterns {
		if err := Check(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Patterns{}, err
	}
	return Patterns{list: append([]string(nil), patterns...)}, nil
}

// MustCompile is Compile for patterns known to be valid (tests, the demo).
// It returns the zero Patterns, which matches nothing, on an invalid one.
func MustCompile(patterns ...string) Patterns {
	ps, _ := Compile(patterns)
	return ps
}

// Match reports whether id matches one of the patterns.
func (ps Patterns) Match(id string) bool {
	for _, p := range ps.list {
		if match(p, id) {
			return true
		}
	}
	return false
}

// Len is the number of patterns.
func (ps Patterns) Len() int { return len(ps.list) }

// String lists the patterns, comma-separated.
func (ps Patterns) String() string { return strings.Join(ps.list, ", ") }

// match is glob matching with '*' and '?', in time linear in len(p) ×
// len(s) at worst: a '*' remembers where it stands, and a mismatch goes
// back to it with one more byte taken.
func match(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]) && isIDByte(s[si]):
			pi++
			si++
		case star >= 0 && isIDByte(s[mark]):
			pi, mark = star+1, mark+1
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
