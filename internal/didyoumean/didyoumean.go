// Package didyoumean measures how far apart two words are, for the "did
// you mean" hints of the configuration and the command line: one rule, so
// both suggest alike.
package didyoumean

// Distance is the Levenshtein distance between a and b, by bytes, with '-'
// and '_' counted as the same (max-attempts for max_attempts).
func Distance(a, b string) int {
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
