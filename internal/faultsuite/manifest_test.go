package faultsuite

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// The routes every worker runs, and the agents behind them.
const (
	workStream = "EVENTS"

	triggerOrders = "agtch_orders" // JSON bodies; accepts
	triggerNotes  = "agtch_notes"  // text bodies; accepts
	triggerPaused = "agtch_paused" // not runnable until the suite says so: 409
	triggerLocked = "agtch_locked" // the token may not call it: 403
	triggerGhost  = "agtch_ghost"  // not registered: 404
	triggerConvo  = "agtch_convo"  // an ordered route: each conversation's events in publish order

	// maxInputBytes is the orders and notes routes' input limit.
	maxInputBytes = 2048
)

// planned is a manifest event with the message that carries it.
type planned struct {
	Event
	subject string
	body    []byte
	header  nats.Header
	stored  bool // the stream acknowledged it: only stored events are in the manifest
	// published is when the stream acknowledged it.
	published time.Time
}

// mix is what share of a run's events is of each sort (weights, not
// percentages). Events for the not-runnable agent are counted separately.
var mix = []struct {
	sort   string
	weight int
}{
	{"orders", 40}, {"orders-explicit-key", 4}, {"notes", 12}, {"convo", 8},
	{"locked", 6}, {"ghost", 5},
	{"poison-json", 5}, {"poison-missing", 4}, {"poison-large", 3}, {"poison-utf8", 4},
	{"poison-key", 6}, {"poison-conversation", 3},
}

// makeManifest plans n events, paused of them for the not-runnable agent.
// Those come first in time (within the first quarter), so that each is
// answered 409 before the agent becomes runnable; the rest are shuffled.
func makeManifest(rng *rand.Rand, n, paused int) []planned {
	total := 0
	for _, m := range mix {
		total += m.weight
	}
	others := make([]planned, 0, n)
	for i := paused; i < n; i++ {
		w := rng.IntN(total)
		for _, m := range mix {
			if w < m.weight {
				others = append(others, makeEvent(rng, i, m.sort))
				break
			}
			w -= m.weight
		}
	}
	rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	isPaused := make([]bool, n)
	for _, i := range rng.Perm(max(n/4, paused))[:paused] {
		isPaused[i] = true
	}
	out := make([]planned, n)
	for i, p := 0, 0; i < n; i++ {
		if isPaused[i] {
			out[i] = makeEvent(rng, p, "paused")
			p++
			continue
		}
		out[i], others = others[0], others[1:]
	}
	return out
}

// texts make inputs that exercise escaping all the way to the API.
var texts = []string{
	"Summarise the customer escalation.",
	`quotes " and backslash \ and <html> & amp`,
	"line one\nline two\ttabbed",
	"unicode: café, 日本語, emoji 😀, separators \u2028\u2029",
	"a longer one: " + strings.Repeat("lorem ipsum ", 20),
}

// makeEvent plans event i of the given sort. Message ids are unique, and so
// are inputs: "event <i> ...".
func makeEvent(rng *rand.Rand, i int, sort string) planned {
	id := fmt.Sprintf("ev-%06d", i)
	input := fmt.Sprintf("event %06d: %s", i, texts[rng.IntN(len(texts))])
	jsonBody := func(fields map[string]any) []byte {
		b, err := json.Marshal(fields)
		if err != nil {
			panic(err)
		}
		return b
	}
	p := planned{Event: Event{MsgID: id, Key: id, Input: input}}
	accept := func(trigger, subject string) {
		p.TriggerID, p.Kind, p.subject = trigger, KindAccept, subject
	}
	deadLetter := func(trigger, subject, reason string) {
		p.TriggerID, p.Kind, p.WantReason, p.subject = trigger, KindDeadLetter, reason, subject
	}
	orders := "events.orders." + id
	notes := "events.notes." + id
	switch sort {
	case "orders":
		accept(triggerOrders, orders)
		fields := map[string]any{"input": input}
		if rng.IntN(2) == 0 {
			fields["conversation_key"] = fmt.Sprintf("thread-%d", rng.IntN(50))
		}
		p.body = jsonBody(fields)
	case "orders-explicit-key":
		// An Idempotency-Key header wins over the message id.
		accept(triggerOrders, orders)
		p.Key = "idem-" + id
		p.header = nats.Header{"Idempotency-Key": {p.Key}}
		p.body = jsonBody(map[string]any{"input": input})
	case "notes":
		accept(triggerNotes, notes)
		p.body = []byte(input)
		if rng.IntN(2) == 0 {
			p.header = nats.Header{"Conversation-Key": {fmt.Sprintf("note-thread-%d", rng.IntN(50))}}
		}
	case "convo":
		// 24 conversations: each key sees events often enough to queue
		// behind a retry.
		accept(triggerConvo, "events.convo."+id)
		p.ConversationKey = fmt.Sprintf("convo-%d", rng.IntN(24))
		p.body = jsonBody(map[string]any{"input": input, "conversation_key": p.ConversationKey})
	case "paused":
		p.TriggerID, p.Kind, p.subject = triggerPaused, KindNotRunnable, "events.paused."+id
		p.body = jsonBody(map[string]any{"input": input})
	case "locked":
		deadLetter(triggerLocked, "events.locked."+id, "forbidden")
		p.body = jsonBody(map[string]any{"input": input})
	case "ghost":
		deadLetter(triggerGhost, "events.ghost."+id, "not_found")
		p.body = jsonBody(map[string]any{"input": input})
	case "poison-json":
		deadLetter(triggerOrders, orders, "invalid_json")
		switch rng.IntN(4) {
		case 0:
			p.Input, p.body = "", []byte("not json "+id)
		case 1: // a misspelt field must not be dropped silently
			p.body = []byte(fmt.Sprintf(`{"input":%q,"conversationKey":"x"}`, input))
		case 2:
			p.body = []byte(fmt.Sprintf(`{"input":%q} {"input":"again"}`, input))
		case 3:
			p.Input, p.body = "", []byte(`{"input":`)
		}
	case "poison-missing":
		p.Input = ""
		if rng.IntN(3) == 0 {
			deadLetter(triggerNotes, notes, "missing_input")
			p.body = nil
		} else {
			deadLetter(triggerOrders, orders, "missing_input")
			p.body = []byte([]string{`{"conversation_key":"c"}`, `{"input":""}`, `{"input":null}`}[rng.IntN(3)])
		}
	case "poison-large":
		p.Input = input + " " + strings.Repeat("x", maxInputBytes)
		if rng.IntN(2) == 0 {
			deadLetter(triggerNotes, notes, "input_too_large")
			p.body = []byte(p.Input)
		} else {
			deadLetter(triggerOrders, orders, "input_too_large")
			p.body = jsonBody(map[string]any{"input": p.Input})
		}
	case "poison-utf8":
		// Were it mangled and sent, the API would see U+FFFD instead.
		raw := fmt.Sprintf("event %06d: caf\xe9", i)
		p.Input = strings.ToValidUTF8(raw, "\uFFFD")
		if rng.IntN(2) == 0 {
			deadLetter(triggerNotes, notes, "invalid_utf8")
			p.body = []byte(raw)
		} else {
			deadLetter(triggerOrders, orders, "invalid_utf8")
			p.body = []byte(`{"input":"` + raw + `"}`)
		}
	case "poison-key":
		// A message id that would redirect or split the request if it
		// were used as it is.
		deadLetter(triggerOrders, orders, "invalid_idempotency_key")
		p.Key = ""
		p.MsgID = []string{
			id + "/x", id + "/../../admin", id + "%2Fadmin", id + " with space", id + "..x",
			"ｅv" + id[2:] /* fullwidth e */, id + "\\x", id + "?q=1", id + strings.Repeat("k", 250),
		}[rng.IntN(9)]
		p.body = jsonBody(map[string]any{"input": input})
	case "poison-conversation":
		if rng.IntN(2) == 0 {
			deadLetter(triggerNotes, notes, "invalid_conversation_key")
			p.body = []byte(input)
			p.header = nats.Header{"Conversation-Key": {"thread\x1b[2J"}}
		} else {
			deadLetter(triggerOrders, orders, "invalid_conversation_key")
			p.body = jsonBody(map[string]any{"input": input, "conversation_key": []string{"a\u0001b", strings.Repeat("k", 1100)}[rng.IntN(2)]})
		}
	default:
		panic("unknown sort " + sort)
	}
	return p
}
