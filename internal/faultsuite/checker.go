// Package faultsuite proves agentrelay's promise under faults: every event
// published is either accepted by the agent API exactly once (per trigger id
// and Idempotency-Key) or sits in the dead-letter stream with the right
// reason, through worker crashes, broker restarts and failovers, API faults
// and outages, token rotations and bad input.
//
// The suite itself is in the package's tests: it builds the real worker
// binary, runs several replicas against an embedded nats-server (or a
// three-node cluster) and the API emulator, publishes a known set of events
// and injects faults while they flow. This file is the part that judges the
// outcome: Check compares the producer's manifest with what the API accepted
// (the emulator's ledger), what it was asked (every request), what the
// dead-letter stream holds and what the consumers still owe.
//
// Running it:
//
//	go test -run TestFaultSuite ./internal/faultsuite   # the short profiles (make faults)
//	AGENTRELAY_CHAOS=1 go test -run TestChaos -v -timeout 60m ./internal/faultsuite   # make chaos
//
// Every run prints its seed; AGENTRELAY_FAULT_SEED=<seed> replays the same
// manifest and fault schedule (timing still varies). AGENTRELAY_FAULT_LOGDIR
// keeps the worker processes' logs there.
//
// # Dead-lettered and accepted
//
// An event must end accepted exactly once or dead-lettered, but in one
// corner it can be both without being lost or fired twice: an attempt whose
// acceptance never reached the worker (the answer dropped, a timeout after
// the API enqueued, a worker killed before its ack) followed by failures up
// to max_attempts gives a max_attempts dead letter of an accepted event; so
// does a worker killed after storing a max_attempts dead letter and before
// terminating the message, when the redelivery then succeeds. A replay of
// such a dead letter is answered from the API's idempotency record. Poison,
// forbidden and unknown events cannot end up both: they are never accepted,
// and a repeated dead letter is deduplicated by its message id. Check
// counts the corner under Options.AllowDeadLetterAfterAccept; the suite's
// profiles give every event a retry budget it cannot exhaust (max_attempts
// 1000), so for them any dead letter of an event that must be accepted is a
// failure.
package faultsuite

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Kind is what the producer meant an event to be, and so what must become of
// it.
type Kind string

// Event kinds.
const (
	// KindAccept: the API must accept the event exactly once.
	KindAccept Kind = "accept"
	// KindNotRunnable: the event goes to an agent that is not runnable at
	// first. It must be accepted exactly once and never dead-lettered. (The
	// route stops at the first 409 and waits with its events in the
	// stream, so most of them are never answered 409: whether the path was
	// taken at all is the suite's check, not the checker's.)
	KindNotRunnable Kind = "not_runnable"
	// KindDeadLetter: the event must be dead-lettered with WantReason and
	// never accepted (poison, a forbidden agent, an unknown agent).
	KindDeadLetter Kind = "dead_letter"
	// KindAcceptOrDeadLetter: either outcome is right, but exactly one of
	// them: accepted exactly once and never dead-lettered, or dead-lettered
	// once with WantReason (and WantStatus, WantClass when set) and never
	// accepted. Never both, never neither. It is for an event whose outcome
	// depends on timing the suite does not control: one for an agent whose
	// calls hang for a while is accepted once the agent recovers, unless a
	// replica that has not yet stopped the agent spends the event's own
	// timeout budget first (agent health is per replica), which
	// dead-letters it as max_attempts with class timeout.
	KindAcceptOrDeadLetter Kind = "accept_or_dead_letter"
)

// Event is one published event of the producer's manifest.
type Event struct {
	// MsgID is the event's Nats-Msg-Id, unique in the manifest. Dead
	// letters carry it as Agentrelay-Original-Nats-Msg-Id.
	MsgID string
	// ConversationKey, for an event of an ordered route, is its key: the
	// API must accept the key's events in manifest (publish) order, one
	// call at a time.
	ConversationKey string
	// Key is the Idempotency-Key the worker must send for it; "" when the
	// message id is not a valid key (such an event is poison).
	Key string
	// TriggerID is the agent the event's route calls.
	TriggerID string
	// Input is the input the API receives for it: unique in the manifest,
	// so a request or a ledger entry can be traced to its event whatever
	// key it carried. "" for poison whose body yields no input.
	Input string
	// Kind says what must become of the event.
	Kind Kind
	// WantReason is the Agentrelay-Reason its dead letter must carry
	// (KindDeadLetter, and KindAcceptOrDeadLetter when it is
	// dead-lettered).
	WantReason string
	// WantStatus and WantClass, when set, are the Agentrelay-Status and
	// Agentrelay-Class its dead letter must carry: how its last call ended
	// (an event the API always fails).
	WantStatus, WantClass string
}

// Accepted is one entry of the API's ledger: an event it enqueued.
type Accepted struct {
	TriggerID string
	Key       string
	Input     string
}

// Request is one request the API received, whatever became of it.
type Request struct {
	TriggerID string
	Key       string
	Input     string // "" when the body had none
	Status    int    // 0 when no answer was written (hang, drop, client gone)
}

// DeadLetter is one message of the dead-letter stream.
type DeadLetter struct {
	OriginalMsgID string // Agentrelay-Original-Nats-Msg-Id
	Key           string // Idempotency-Key header; "" when absent
	Reason        string // Agentrelay-Reason
	Status        string // Agentrelay-Status; "" when absent
	Class         string // Agentrelay-Class
}

// ConsumerState is what a route's durable consumer still owes.
type ConsumerState struct {
	Name       string
	Pending    uint64 // not yet delivered
	AckPending int    // delivered and not settled (including nak delays)
}

// Observed is everything the checker compares with the manifest.
type Observed struct {
	Ledger   []Accepted
	Requests []Request
	// KeyOverlaps lists calls the API received for an ordered route's
	// conversation key while another call for it was in flight (not
	// counting the same worker's call that it had given up at its
	// timeout).
	KeyOverlaps []string
	DeadLetters []DeadLetter
	Consumers   []ConsumerState
}

// Options relax the checker where agentrelay's guarantee is weaker than
// "exactly one outcome".
type Options struct {
	// AllowDeadLetterAfterAccept accepts an event that must be accepted,
	// was accepted exactly once, and also has a max_attempts dead letter.
	// That is no loss and no double fire, and it can happen legitimately
	// when an attempt's acceptance never reached the worker (a dropped
	// answer, a timeout after the API enqueued) and every later attempt up
	// to max_attempts failed; or when a worker crashed after storing a
	// max_attempts dead letter and before terminating the message, and the
	// redelivery then succeeded. A suite whose retry budget cannot run out
	// leaves it off, so such a dead letter fails the run.
	AllowDeadLetterAfterAccept bool
}

// Reason values the checker itself knows about.
const reasonMaxAttempts = "max_attempts"

// Report is the checker's verdict and figures.
type Report struct {
	Events       int
	ByKind       map[Kind]int
	AcceptedOnce int // events that must be accepted and were, exactly once
	// DeadLettered counts dead-letter stream messages by reason.
	DeadLettered map[string]int
	Requests     int
	// RequestsByStatus counts requests by the status the API answered (0:
	// none).
	RequestsByStatus map[int]int
	// NotRunnableRetried counts KindNotRunnable events answered 409 at
	// least once (the probes and the calls in flight when the route
	// stopped).
	NotRunnableRetried int
	// Ordered counts acceptances of ordered events checked for order.
	Ordered int
	// AcceptedAndDeadLettered counts events accepted once and also
	// dead-lettered as max_attempts (see Options).
	AcceptedAndDeadLettered int
	// EitherAccepted and EitherDeadLettered count the
	// KindAcceptOrDeadLetter events by the outcome they had.
	EitherAccepted, EitherDeadLettered int

	Lost       []string // events with no outcome at all
	Duplicated []string // events accepted more than once
	Violations []string // every other broken rule
}

// OK reports whether every invariant held.
func (r *Report) OK() bool {
	return len(r.Lost) == 0 && len(r.Duplicated) == 0 && len(r.Violations) == 0
}

// Problems lists every broken invariant, lost and duplicated events first.
func (r *Report) Problems() []string {
	var out []string
	for _, s := range r.Lost {
		out = append(out, "lost: "+s)
	}
	for _, s := range r.Duplicated {
		out = append(out, "accepted more than once: "+s)
	}
	return append(out, r.Violations...)
}

// String prints the figures, one per line.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "events:            %d (%s)\n", r.Events, countsString(r.ByKind))
	fmt.Fprintf(&b, "accepted once:     %d\n", r.AcceptedOnce)
	fmt.Fprintf(&b, "lost:              %d\n", len(r.Lost))
	fmt.Fprintf(&b, "accepted twice:    %d\n", len(r.Duplicated))
	fmt.Fprintf(&b, "dead-lettered:     %d (%s)\n", sum(r.DeadLettered), countsString(r.DeadLettered))
	fmt.Fprintf(&b, "409 then accepted: %d\n", r.NotRunnableRetried)
	fmt.Fprintf(&b, "ordered, in order: %d accepted events of ordered conversations\n", r.Ordered)
	if r.AcceptedAndDeadLettered > 0 {
		fmt.Fprintf(&b, "accepted and dead-lettered (max_attempts): %d\n", r.AcceptedAndDeadLettered)
	}
	if n := r.ByKind[KindAcceptOrDeadLetter]; n > 0 {
		fmt.Fprintf(&b, "either outcome:    %d events: %d accepted once, %d dead-lettered\n", n, r.EitherAccepted, r.EitherDeadLettered)
	}
	fmt.Fprintf(&b, "API requests:      %d (by status: %s)\n", r.Requests, countsString(r.RequestsByStatus))
	fmt.Fprintf(&b, "violations:        %d\n", len(r.Violations))
	return b.String()
}

// Check compares the manifest with what was observed. Every event must have
// exactly the outcome its kind demands; nothing may be accepted that was not
// published, or more than once; every request must carry its event's key
// (retries reuse it); poison must never reach the API; and no consumer may
// owe anything.
func Check(manifest []Event, obs Observed, opt Options) Report {
	c := checker{
		manifest: manifest,
		opt:      opt,
		r: Report{
			Events:           len(manifest),
			ByKind:           map[Kind]int{},
			DeadLettered:     map[string]int{},
			RequestsByStatus: map[int]int{},
			Requests:         len(obs.Requests),
		},
	}
	// The order of the checks is the order of the report's violations.
	c.indexManifest()
	c.checkOrder(obs.Ledger, obs.KeyOverlaps)
	c.checkLedger(obs.Ledger)
	c.checkRequests(obs.Requests)
	c.checkDeadLetters(obs.DeadLetters)
	for i := range manifest {
		c.checkOutcome(&manifest[i])
	}
	c.checkConsumers(obs.Consumers)
	sort.Strings(c.r.Lost)
	sort.Strings(c.r.Duplicated)
	return c.r
}

// checker is one run of Check: the report it fills, the manifest's indexes
// and what each event got, gathered by one check and judged by the last.
type checker struct {
	manifest []Event
	opt      Options
	r        Report

	byMsgID map[string]*Event
	byInput map[string]*Event
	byKey   map[triggerKey]*Event

	acceptedByKey   map[*Event]int
	acceptedByInput map[*Event]int
	saw409          map[*Event]bool
	dead            map[*Event][]DeadLetter
}

// triggerKey is what the API deduplicates on: a trigger id and an
// Idempotency-Key.
type triggerKey struct{ trigger, key string }

func (c *checker) violate(format string, args ...any) {
	c.r.Violations = append(c.r.Violations, fmt.Sprintf(format, args...))
}

// indexManifest counts the manifest by kind, indexes its events by message
// id, input and key, and reports a manifest that cannot be judged: a message
// id or input used twice, a dead letter with no reason, an unknown kind.
func (c *checker) indexManifest() {
	c.byMsgID = make(map[string]*Event, len(c.manifest))
	c.byInput = make(map[string]*Event, len(c.manifest))
	c.byKey = make(map[triggerKey]*Event, len(c.manifest))
	for i := range c.manifest {
		e := &c.manifest[i]
		c.r.ByKind[e.Kind]++
		if _, dup := c.byMsgID[e.MsgID]; dup {
			c.violate("manifest: message id %q used twice", e.MsgID)
		}
		c.byMsgID[e.MsgID] = e
		if e.Input != "" {
			if _, dup := c.byInput[e.Input]; dup {
				c.violate("manifest: input %q used twice", short(e.Input))
			}
			c.byInput[e.Input] = e
		}
		if e.Key != "" {
			c.byKey[triggerKey{e.TriggerID, e.Key}] = e
		}
		switch e.Kind {
		case KindAccept, KindNotRunnable:
		case KindDeadLetter, KindAcceptOrDeadLetter:
			if e.WantReason == "" {
				c.violate("manifest: %s (%s) names no reason for its dead letter", e.MsgID, e.Kind)
			}
		default:
			c.violate("manifest: %s has unknown kind %q", e.MsgID, e.Kind)
		}
	}
}

// checkOrder checks the ordered routes: each conversation key's events
// accepted in manifest order (the first acceptance of each; a replay is
// answered from the idempotency record and adds nothing to the ledger), and
// never two calls at once for one key.
func (c *checker) checkOrder(ledger []Accepted, keyOverlaps []string) {
	index := make(map[string]int, len(c.manifest))
	for i := range c.manifest {
		if c.manifest[i].ConversationKey != "" && c.manifest[i].Input != "" {
			index[c.manifest[i].Input] = i
		}
	}
	lastOf := map[string]int{}
	for _, a := range ledger {
		i, ok := index[a.Input]
		if !ok {
			continue
		}
		e := &c.manifest[i]
		if last, seen := lastOf[e.ConversationKey]; seen && i < last {
			c.violate("%s: conversation %s reordered: accepted after %s, which was published later", e.MsgID, e.ConversationKey, c.manifest[last].MsgID)
		}
		lastOf[e.ConversationKey] = max(lastOf[e.ConversationKey], i)
		c.r.Ordered++
	}
	for _, o := range keyOverlaps {
		c.violate("two calls at once for one conversation of an ordered route: %s", o)
	}
}

// checkLedger counts what the API accepted, per event: by key, and by input
// (which catches an event accepted again under another key). An acceptance
// of nothing published, or of one event's key with another's input, is a
// violation.
func (c *checker) checkLedger(ledger []Accepted) {
	c.acceptedByKey = map[*Event]int{}
	c.acceptedByInput = map[*Event]int{}
	for _, a := range ledger {
		e := c.byKey[triggerKey{a.TriggerID, a.Key}]
		if e == nil {
			c.violate("the API accepted an event that was never published: trigger %s, key %q, input %q", a.TriggerID, a.Key, short(a.Input))
		} else {
			c.acceptedByKey[e]++
			if a.Input != e.Input {
				c.violate("%s: accepted under its key with the input of another event (%q)", e.MsgID, short(a.Input))
			}
		}
		if ie := c.byInput[a.Input]; ie != nil {
			c.acceptedByInput[ie]++
		}
	}
}

// checkRequests checks what the API was asked: no poison, and every request
// for its event's trigger with its event's key. It counts the answers and
// notes the events answered 409.
func (c *checker) checkRequests(requests []Request) {
	c.saw409 = map[*Event]bool{}
	for _, q := range requests {
		c.r.RequestsByStatus[q.Status]++
		e := c.byInput[q.Input]
		if e == nil {
			c.violate("a request for no published event: trigger %s, key %q, input %q", q.TriggerID, q.Key, short(q.Input))
			continue
		}
		switch {
		case e.Kind == KindDeadLetter && e.Key == "":
			c.violate("%s: poison with an invalid idempotency key reached the API (sent with key %q)", e.MsgID, q.Key)
		case e.Kind == KindDeadLetter && isPoisonReason(e.WantReason):
			c.violate("%s: poison (%s) reached the API", e.MsgID, e.WantReason)
		case q.Key != e.Key:
			c.violate("%s: a request carried key %q instead of %q (retries must reuse the key)", e.MsgID, q.Key, e.Key)
		case q.TriggerID != e.TriggerID:
			c.violate("%s: sent to trigger %s instead of %s", e.MsgID, q.TriggerID, e.TriggerID)
		}
		if q.Status == 409 {
			c.saw409[e] = true
		}
	}
}

// checkDeadLetters gathers the dead-letter stream by event: each dead letter
// must be of a published event and keep its Idempotency-Key.
func (c *checker) checkDeadLetters(dls []DeadLetter) {
	c.dead = map[*Event][]DeadLetter{}
	for _, d := range dls {
		c.r.DeadLettered[d.Reason]++
		e := c.byMsgID[d.OriginalMsgID]
		if e == nil {
			c.violate("a dead letter for no published event: original message id %q, reason %s", d.OriginalMsgID, d.Reason)
			continue
		}
		c.dead[e] = append(c.dead[e], d)
		if d.Key != e.Key {
			c.violate("%s: dead letter carries Idempotency-Key %q, want %q (a replay must keep the key)", e.MsgID, d.Key, e.Key)
		}
	}
}

// checkOutcome judges one event's outcome, from what the earlier checks
// gathered: never accepted twice or dead-lettered twice, and the outcome its
// kind demands.
func (c *checker) checkOutcome(e *Event) {
	n := max(c.acceptedByKey[e], c.acceptedByInput[e])
	dls := c.dead[e]
	if n > 1 {
		c.r.Duplicated = append(c.r.Duplicated, fmt.Sprintf("%s (%d times)", e.MsgID, n))
	}
	if len(dls) > 1 {
		c.violate("%s: dead-lettered %d times", e.MsgID, len(dls))
	}
	switch e.Kind {
	case KindAccept, KindNotRunnable:
		c.checkAcceptedOnce(e, n, dls)
	case KindDeadLetter:
		c.checkDeadLettered(e, n, dls)
	case KindAcceptOrDeadLetter:
		c.checkEitherOutcome(e, n, dls)
	}
}

// checkEitherOutcome judges an event that may end either way, but one way
// only: accepted once with no dead letter, or dead-lettered as it wants and
// never accepted.
func (c *checker) checkEitherOutcome(e *Event, n int, dls []DeadLetter) {
	switch {
	case n == 0 && len(dls) == 0:
		c.r.Lost = append(c.r.Lost, fmt.Sprintf("%s (accepted or dead-lettered as %s, trigger %s): neither accepted nor dead-lettered", e.MsgID, e.WantReason, e.TriggerID))
	case n > 0 && len(dls) > 0:
		c.violate("%s: accepted and also dead-lettered (%s); it must be one or the other", e.MsgID, reasons(dls))
	case n == 1:
		c.r.EitherAccepted++
	case n == 0:
		c.checkDeadLettered(e, n, dls)
		c.r.EitherDeadLettered++
	}
}

// checkAcceptedOnce judges an event that must be accepted, n times by the
// ledger, with dead letters dls. A max_attempts dead letter besides one
// acceptance passes only under Options.AllowDeadLetterAfterAccept.
func (c *checker) checkAcceptedOnce(e *Event, n int, dls []DeadLetter) {
	switch {
	case n == 0 && len(dls) == 0:
		c.r.Lost = append(c.r.Lost, fmt.Sprintf("%s (%s, trigger %s): neither accepted nor dead-lettered", e.MsgID, e.Kind, e.TriggerID))
	case n == 0:
		c.violate("%s: dead-lettered (%s) instead of accepted", e.MsgID, reasons(dls))
	case len(dls) > 0:
		if c.opt.AllowDeadLetterAfterAccept && n == 1 && onlyReason(dls, reasonMaxAttempts) {
			c.r.AcceptedAndDeadLettered++
		} else {
			c.violate("%s: accepted and also dead-lettered (%s)", e.MsgID, reasons(dls))
		}
	case n == 1:
		c.r.AcceptedOnce++
	}
	if e.Kind == KindNotRunnable && c.saw409[e] {
		c.r.NotRunnableRetried++
	}
}

// checkDeadLettered judges an event that must be dead-lettered: never
// accepted, and dead-lettered with the reason (and, when the manifest names
// them, the status and class) it wants.
func (c *checker) checkDeadLettered(e *Event, n int, dls []DeadLetter) {
	switch {
	case n > 0:
		c.violate("%s: accepted, but must be dead-lettered as %s", e.MsgID, e.WantReason)
	case len(dls) == 0:
		c.r.Lost = append(c.r.Lost, fmt.Sprintf("%s (must be dead-lettered as %s): not in the dead-letter stream", e.MsgID, e.WantReason))
	case !onlyReason(dls, e.WantReason):
		c.violate("%s: dead-lettered as %s, want %s", e.MsgID, reasons(dls), e.WantReason)
	case e.WantStatus != "" && dls[0].Status != e.WantStatus, e.WantClass != "" && dls[0].Class != e.WantClass:
		c.violate("%s: dead letter says status %q class %q, want status %q class %q (its last call)", e.MsgID, dls[0].Status, dls[0].Class, e.WantStatus, e.WantClass)
	}
}

// checkConsumers checks that no route's consumer still owes a message.
func (c *checker) checkConsumers(consumers []ConsumerState) {
	for _, cs := range consumers {
		if cs.Pending != 0 || cs.AckPending != 0 {
			c.violate("consumer %s still owes %d pending and %d ack-pending messages", cs.Name, cs.Pending, cs.AckPending)
		}
	}
}

// isPoisonReason reports whether a dead-letter reason is one given without
// calling the API.
func isPoisonReason(reason string) bool {
	switch reason {
	case "invalid_json", "missing_input", "input_too_large", "invalid_utf8", "invalid_idempotency_key", "invalid_conversation_key",
		"invalid_cloudevent", "mapping_failed", "trigger_not_allowed":
		return true
	}
	return false
}

func onlyReason(dls []DeadLetter, reason string) bool {
	for _, d := range dls {
		if d.Reason != reason {
			return false
		}
	}
	return len(dls) > 0
}

func reasons(dls []DeadLetter) string {
	rs := make([]string, len(dls))
	for i, d := range dls {
		rs[i] = d.Reason
	}
	return strings.Join(rs, ", ")
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func sum[K comparable](m map[K]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// countsString prints a map of counts sorted by key: "a=1 b=2".
func countsString[K comparable](m map[K]int) string {
	keys := slices.Collect(maps.Keys(m))
	strs := make([]string, len(keys))
	for i, k := range keys {
		strs[i] = fmt.Sprintf("%v=%d", k, m[k])
	}
	slices.Sort(strs)
	if len(strs) == 0 {
		return "none"
	}
	return strings.Join(strs, " ")
}
