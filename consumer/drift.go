package consumer

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerMode says who owns the routes' durable consumers.
type ConsumerMode string

// Consumer modes.
const (
	// ManageConsumers: agentrelay creates each route's consumer when it is
	// missing and rewrites an existing one to match the route, logging a
	// warning with every field it changes (default).
	ManageConsumers ConsumerMode = "manage"
	// ObserveConsumers: the consumers belong to an operator (NACK, the
	// nats CLI). agentrelay never creates or updates one: a missing
	// consumer is a set-up error, retried like a missing stream, and one
	// that differs from the route is used as it is, with a warning naming
	// the differences.
	ObserveConsumers ConsumerMode = "observe"
)

// ErrConsumerMissing is wrapped by the set-up error for a route whose
// consumer does not exist in ObserveConsumers mode.
var ErrConsumerMissing = errors.New("consumer does not exist")

// ErrConsumerUnusable is wrapped by the set-up error for a route whose
// existing consumer, in ObserveConsumers mode, cannot work with agentrelay
// at all (not explicit acks, a push consumer, an ordered route without its
// pinned priority group).
var ErrConsumerUnusable = errors.New("consumer cannot be used")

// ConsumerDrift lists the fields of the consumer settings agentrelay sets
// in which theirs (an existing consumer's) differs from ours (what the
// route needs), each as "field: theirs -> ours", in a fixed order. Fields
// agentrelay does not decide are left out: where the consumer starts (fixed
// at creation), the description and metadata (labels, not behaviour), and
// the server's own additions. An empty list means the consumer already is
// what the route needs.
func ConsumerDrift(theirs, ours jetstream.ConsumerConfig) []string {
	var out []string
	diff := func(field, a, b string) {
		if a != b {
			out = append(out, fmt.Sprintf("%s: %s -> %s", field, a, b))
		}
	}
	diff("ack_policy", jsonName(theirs.AckPolicy), jsonName(ours.AckPolicy))
	diff("ack_wait", theirs.AckWait.String(), ours.AckWait.String())
	diff("max_ack_pending", fmt.Sprint(theirs.MaxAckPending), fmt.Sprint(ours.MaxAckPending))
	diff("max_deliver", maxDeliverText(theirs.MaxDeliver), maxDeliverText(ours.MaxDeliver))
	diff("backoff", durationsText(theirs.BackOff), durationsText(ours.BackOff))
	diff("filter_subjects", listText(filters(theirs)), listText(filters(ours)))
	diff("priority_policy", jsonName(theirs.PriorityPolicy), jsonName(ours.PriorityPolicy))
	diff("priority_groups", listText(theirs.PriorityGroups), listText(ours.PriorityGroups))
	if theirs.PriorityPolicy == jetstream.PriorityPolicyPinned || ours.PriorityPolicy == jetstream.PriorityPolicyPinned {
		diff("pinned_ttl", theirs.PinnedTTL.String(), ours.PinnedTTL.String())
	}
	diff("deliver_subject", orNone(theirs.DeliverSubject), orNone(ours.DeliverSubject))
	return out
}

// unusable lists why agentrelay cannot relay through an operator's
// consumer theirs at all, for route r: what ObserveConsumers refuses rather
// than warns about.
func unusable(theirs jetstream.ConsumerConfig, r Route) []string {
	var out []string
	if theirs.AckPolicy != jetstream.AckExplicitPolicy {
		out = append(out, fmt.Sprintf("ack_policy is %s, not explicit: a message would leave the stream before its event is accepted", jsonName(theirs.AckPolicy)))
	}
	if theirs.DeliverSubject != "" {
		out = append(out, "it is a push consumer (deliver_subject is set); agentrelay pulls")
	}
	if r.Ordering == OrderByConversationKey {
		if theirs.PriorityPolicy != jetstream.PriorityPolicyPinned || !slices.Contains(theirs.PriorityGroups, orderGroup) {
			out = append(out, fmt.Sprintf("the route is ordered, which needs priority_policy pinned_client with the priority group %q", orderGroup))
		}
		if most := maxAdoptedWindow * r.MaxAckPending; theirs.MaxAckPending <= 0 || theirs.MaxAckPending > most {
			out = append(out, fmt.Sprintf("the route is ordered, which needs max_ack_pending set and at most %d (%d × %d × max_in_flight) so that one replica can hold every unsettled message", most, maxAdoptedWindow, OrderedHoldFactor))
		}
	}
	return out
}

func filters(c jetstream.ConsumerConfig) []string {
	if c.FilterSubject != "" {
		return []string{c.FilterSubject}
	}
	return c.FilterSubjects
}

func listText(l []string) string {
	if len(l) == 0 {
		return "(none)"
	}
	return "[" + strings.Join(l, " ") + "]"
}

func durationsText(l []time.Duration) string {
	if len(l) == 0 {
		return "(none)"
	}
	s := make([]string, len(l))
	for i, d := range l {
		s[i] = d.String()
	}
	return listText(s)
}

func maxDeliverText(n int) string {
	if n <= 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

// jsonName is a policy as the server's JSON (and `nats consumer info`)
// names it; "(none)" for the zero priority policy.
func jsonName(p json.Marshaler) string {
	b, err := p.MarshalJSON()
	if err != nil {
		return fmt.Sprint(p)
	}
	return orNone(strings.Trim(string(b), `"`))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
