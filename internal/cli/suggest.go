package cli

import (
	"fmt"
	"strings"
)

// suggestion returns ` (did you mean "x"?)` for the known value closest to
// v, when one is close enough to be a typo of it, else the known values.
func suggestion(v string, known []string) string {
	best, bestD := "", 3 // more than two edits apart is not a typo
	for _, k := range known {
		if d := editDistance(strings.ToLower(v), strings.ToLower(k)); d < bestD {
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

// editDistance is the Levenshtein distance between a and b, by bytes;
// '-' and '_' count as the same (max-attempts for max_attempts).
func editDistance(a, b string) int {
	same := func(x, y byte) bool {
		return x == y || (x == '-' || x == '_') && (y == '-' || y == '_')
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if same(a[i-1], b[j-1]) {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
