// Package natsheader knows which header names NATS messages may carry. It
// is the one place in agentrelay with that rule (the configuration checks
// a conversation-key header name with it; the dead-letter writer checks
// the headers it carries over), and it depends on nothing, so that the
// configuration package stays free of the NATS client.
package natsheader

import "strings"

// forbidden are the bytes nats.go refuses in a header name besides
// controls, space and non-ASCII: ADR-4 forbids only ':', and nats.go is
// stricter (it refuses the whole message for any of these).
const forbidden = `"()/,:;<=>?@[\]{}`

// ValidName reports whether nats.go sends a header of this name: printable
// ASCII (33 to 126) without the separators it forbids.
func ValidName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(forbidden, c) >= 0 {
			return false
		}
	}
	return true
}
