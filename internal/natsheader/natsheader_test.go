package natsheader

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/testenv"
)

// ValidName agrees with the NATS client: a name it accepts is sent, and a
// name it refuses is refused by the client too (the whole message).
func TestValidNameIsTheClientsRule(t *testing.T) {
	n := testenv.StartNATS(t)
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"X-Conversation-Key", true},
		{"Nats-Msg-Id", true},
		{"a_b.c~!#$%&'*+^`|", true},
		{"", false},
		{"with space", false},
		{"colon:", false},
		{"paren(", false},
		{"slash/", false},
		{"quote\"", false},
		{"brace{", false},
		{"at@", false},
		{"tab\t", false},
		{"del\x7f", false},
		{"ünïcode", false},
	} {
		if got := ValidName(tc.name); got != tc.want {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.want)
		}
		if tc.name == "" {
			continue
		}
		err := n.NC.PublishMsg(&nats.Msg{Subject: "h", Header: nats.Header{tc.name: {"v"}}})
		if sent := err == nil; sent != tc.want {
			t.Errorf("the client sends a header named %q: %v (%v); ValidName says %v", tc.name, sent, err, tc.want)
		}
		if err != nil && !errors.Is(err, nats.ErrBadHeaderMsg) {
			t.Errorf("header %q: %v", tc.name, err)
		}
	}
}
