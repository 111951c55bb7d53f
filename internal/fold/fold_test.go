package fold

import "testing"

func TestHasPrefix(t *testing.T) {
	for _, tc := range []struct {
		s, prefix string
		want      bool
	}{
		{"Nats-Msg-Id", "Nats-", true},
		{"nats-msg-id", "Nats-", true},
		{"NATS-X", "nats-", true},
		{"Nat", "Nats-", false},
		{"X-Nats-", "Nats-", false},
		{"", "", true},
		{"Agentrelay-Reason", "agentrelay-", true},
	} {
		if got := HasPrefix(tc.s, tc.prefix); got != tc.want {
			t.Errorf("HasPrefix(%q, %q) = %v, want %v", tc.s, tc.prefix, got, tc.want)
		}
	}
}
