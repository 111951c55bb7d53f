// Package subject compares NATS subjects and subject filters: "*" matches
// one token, a final ">" one or more. It is the one place in agentrelay
// that knows these rules; the server's own matching is the reference.
package subject

import "strings"

// Matches reports whether the literal subject matches filter.
func Matches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range ft {
		switch {
		case t == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case t != "*" && t != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}

// Covers reports whether every subject that sub matches also matches
// pattern: a stream listening on pattern stores all of sub ("agentrelay.>"
// covers "agentrelay.dlq.>", "agents.*" does not cover "agents.x.>").
func Covers(pattern, sub string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, p := range pt {
		switch {
		case p == ">":
			return i < len(st)
		case i >= len(st) || st[i] == ">":
			return false
		case p != "*" && (st[i] == "*" || p != st[i]):
			return false
		}
	}
	return len(pt) == len(st)
}

// Overlap reports whether some subject matches both a and b.
func Overlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != "*" && bt[i] != "*" && at[i] != bt[i] {
			return false
		}
	}
	return len(at) == len(bt)
}
