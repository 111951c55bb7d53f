package cli

import (
	"fmt"
	"strings"

	"github.com/agentrelay/agentrelay/internal/didyoumean"
)

// suggestion returns ` (did you mean "x"?)` for the known value closest to
// v, when one is close enough to be a typo of it, else the known values.
func suggestion(v string, known []string) string {
	best, bestD := "", 3 // more than two edits apart is not a typo
	for _, k := range known {
		if d := didyoumean.Distance(strings.ToLower(v), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	if len(known) > 0 {
		return " (known: " + strings.Join(known, ", ") + ")"
	}
	return ""
}
