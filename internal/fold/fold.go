// Package fold compares text under Unicode case folding, as
// strings.EqualFold does, where the standard library has no such function.
package fold

import "strings"

// HasPrefix reports whether s begins with prefix, ignoring case: header
// names such as "nats-msg-id" and "Nats-Msg-Id" are the same header to
// agentrelay.
func HasPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
