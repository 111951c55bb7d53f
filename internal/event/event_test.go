package event_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	. "github.com/agentrelay/agentrelay/internal/event"
)

func TestDecodeJSONContract(t *testing.T) {
	t.Parallel()
	c := Contract{MaxInputBytes: 16}.WithDefaults()
	rows := []struct {
		name, body string
		want       agentapi.Event
		reason     deadletter.Reason
	}{
		{"input only", `{"input":"hello"}`, agentapi.Event{Input: "hello"}, ""},
		{"input and conversation key", `{"input":"hi","conversation_key":"thread-1"}`, agentapi.Event{Input: "hi", ConversationKey: "thread-1"}, ""},
		{"null conversation key", `{"input":"hi","conversation_key":null}`, agentapi.Event{Input: "hi"}, ""},
		{"surrounding whitespace", " \n{\"input\":\"hi\"}\n", agentapi.Event{Input: "hi"}, ""},
		{"escaped unicode", `{"input":"caf\u00e9"}`, agentapi.Event{Input: "café"}, ""},
		{"not JSON", `hello`, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"JSON array", `["hello"]`, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"truncated", `{"input":"hel`, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"input not a string", `{"input":42}`, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"unknown field (a misspelt key)", `{"input":"hi","conversationKey":"x"}`, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"trailing data", `{"input":"hi"} {"input":"again"}`, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"missing input", `{"conversation_key":"x"}`, agentapi.Event{}, deadletter.ReasonMissingInput},
		{"empty input", `{"input":""}`, agentapi.Event{}, deadletter.ReasonMissingInput},
		{"null input", `{"input":null}`, agentapi.Event{}, deadletter.ReasonMissingInput},
		{"empty body", ``, agentapi.Event{}, deadletter.ReasonInvalidJSON},
		{"input over the limit", `{"input":"0123456789abcdefX"}`, agentapi.Event{}, deadletter.ReasonInputTooLarge},
		{"invalid UTF-8", "{\"input\":\"caf\xe9\"}", agentapi.Event{}, deadletter.ReasonInvalidUTF8},
		{"control character in conversation key", `{"input":"hi","conversation_key":"a\u001bb"}`, agentapi.Event{}, deadletter.ReasonInvalidConversationKey},
	}
	for _, r := range rows {
		ev, reason, err := c.Decode([]byte(r.body), nil)
		if reason != r.reason || ev != r.want {
			t.Errorf("%s: Decode(%q) = %+v, %q, %v; want %+v, %q", r.name, r.body, ev, reason, err, r.want, r.reason)
		}
		if (reason != "") != (err != nil) {
			t.Errorf("%s: a reason must come with an error saying what is wrong (reason %q, err %v)", r.name, reason, err)
		}
	}
}

func TestDecodeRefusesAHugeJSONBodyWithoutParsingIt(t *testing.T) {
	t.Parallel()
	c := Contract{MaxInputBytes: 10}.WithDefaults()
	body := `{"input":"` + strings.Repeat("x", 200_000) + `"}`
	_, reason, err := c.Decode([]byte(body), nil)
	if reason != deadletter.ReasonInputTooLarge || !strings.Contains(err.Error(), "body is") {
		t.Fatalf("got %q, %v", reason, err)
	}
}

func TestDecodeTextContract(t *testing.T) {
	t.Parallel()
	c := Contract{Format: BodyText, ConversationKeyHeader: "Thread", MaxInputBytes: 13}.WithDefaults()
	h := nats.Header{"thread": []string{"t-9"}} // producers do not always keep the case
	ev, reason, err := c.Decode([]byte(`{"not":"json"`), h)
	if reason != "" || ev.Input != `{"not":"json"` || ev.ConversationKey != "t-9" {
		t.Errorf("text body: %+v %q %v", ev, reason, err)
	}
	for body, want := range map[string]deadletter.Reason{"": deadletter.ReasonMissingInput, "12345678901234": deadletter.ReasonInputTooLarge, "\xff": deadletter.ReasonInvalidUTF8} {
		if _, reason, _ := c.Decode([]byte(body), nil); reason != want {
			t.Errorf("text body %q: reason %q, want %q", body, reason, want)
		}
	}
}

func md(stream string, seq uint64, ts time.Time) *jetstream.MsgMetadata {
	return &jetstream.MsgMetadata{Stream: stream, Sequence: jetstream.SequencePair{Stream: seq}, Timestamp: ts}
}

func TestIdempotencyKeyPrecedence(t *testing.T) {
	t.Parallel()
	ts := time.Unix(1732800000, 123456789)
	m := md("EVENTS", 42, ts)
	rows := []struct {
		name string
		h    nats.Header
		want string
	}{
		{"explicit Idempotency-Key wins (replay sets it)", nats.Header{"Idempotency-Key": {"replayed-1"}, "Nats-Msg-Id": {"orig"}}, "replayed-1"},
		{"explicit key in another case", nats.Header{"idempotency-key": {"k-lower"}}, "k-lower"},
		{"producer's Nats-Msg-Id", nats.Header{"Nats-Msg-Id": {"order-7:v2"}}, "order-7:v2"},
		{"derived from stream, sequence and stored time", nil, "EVENTS:42:1732800000123456789"},
	}
	for _, r := range rows {
		got, err := IdempotencyKey(r.h, m)
		if err != nil || got != r.want {
			t.Errorf("%s: got %q, %v; want %q", r.name, got, err, r.want)
		}
	}
}

// The same stored message gives the same key on every redelivery; a
// sequence number reused after broker data loss (another timestamp) does not
// alias the earlier event.
func TestDerivedKeyIsStableAndDoesNotAlias(t *testing.T) {
	t.Parallel()
	ts := time.Unix(1732800000, 1)
	a, _ := IdempotencyKey(nil, md("S", 7, ts))
	b, _ := IdempotencyKey(nil, md("S", 7, ts))
	c, _ := IdempotencyKey(nil, md("S", 7, ts.Add(time.Nanosecond)))
	d, _ := IdempotencyKey(nil, md("T", 7, ts))
	if a != b {
		t.Errorf("not stable: %q vs %q", a, b)
	}
	if a == c || a == d {
		t.Errorf("aliases: %q %q %q", a, c, d)
	}
	odd := DerivedKey("ÉVÉNEMENTS", 1, 2)
	if err := agentapi.ValidateIdempotencyKey(odd); err != nil || odd == DerivedKey("EVENEMENTS", 1, 2) {
		t.Errorf("stream name outside the key alphabet gives %q (%v)", odd, err)
	}
}

func TestHostileMessageIDsArePoisonNotRewritten(t *testing.T) {
	t.Parallel()
	m := md("S", 1, time.Unix(1, 0))
	for _, id := range []string{
		"../../admin", "a/b", "a%2Fb", "line\r\nX-Evil: 1", "nul\x00byte", "ｏrder-1" /* fullwidth o */, "with space",
		strings.Repeat("k", agentapi.MaxIdempotencyKeyLen+1),
	} {
		for _, hdr := range []string{"Nats-Msg-Id", "Idempotency-Key"} {
			_, err := IdempotencyKey(nats.Header{hdr: {id}}, m)
			if !errors.Is(err, agentapi.ErrInvalidIdempotencyKey) {
				t.Errorf("%s %q accepted (err %v)", hdr, id, err)
			}
		}
	}
}

// A lone surrogate escape is not a character: encoding/json would turn it
// into U+FFFD and the API would get a mangled input. A real U+FFFD, written
// or escaped, is fine, and so is an escaped surrogate pair.
func TestLoneSurrogatesAreRefusedNotMangled(t *testing.T) {
	t.Parallel()
	c := Contract{}.WithDefaults()
	for body, want := range map[string]deadletter.Reason{
		`{"input":"a\ud800b"}`:                         deadletter.ReasonInvalidUTF8,
		`{"input":"x","conversation_key":"\udc00"}`:    deadletter.ReasonInvalidUTF8,
		`{"input":"\ufffd and \ud800"}`:                deadletter.ReasonInvalidUTF8,
		"{\"input\":\"a real \uFFFD\"}":                "",
		`{"input":"an escaped \uFFFD"}`:                "",
		`{"input":"a pair \ud83d\ude00","extra":null}`: deadletter.ReasonInvalidJSON,
		`{"input":"a pair \ud83d\ude00"}`:              "",
		`{"Input":"case-variant field, lone \ud800"}`:  deadletter.ReasonInvalidJSON,
	} {
		_, reason, err := c.Decode([]byte(body), nil)
		if reason != want {
			t.Errorf("%s: reason %q (%v), want %q", body, reason, err, want)
		}
	}
}

// A JSON body's keys are "input" and "conversation_key", spelt exactly so
// (after JSON unescaping: no case folding, no Unicode folding), each at
// most once. Anything else is invalid_json: a filter upstream that reads the
// first of two keys, or exact keys only, must never see a different event
// from the one the agent gets.
func TestDecodeTakesExactKeysOnlyAndEachOnce(t *testing.T) {
	c := Contract{}.WithDefaults()
	for _, r := range []struct{ body, errWants string }{
		{`{"input":"a","input":"b"}`, `"input" more than once`},
		{`{"input":"benign","INPUT":"evil"}`, `"INPUT" is not "input"`},
		{`{"INPUT":"evil","input":"benign"}`, `"INPUT" is not "input"`},
		{`{"Input":"x"}`, `"Input" is not "input"`},
		{`{"input":"x","conversation_\u212aey":"k"}`, `"conversation_\u212aey" is not "conversation_key"`},
		{"{\"input\":\"x\",\"conversation_\u212aey\":\"k\"}", `"conversation_\u212aey" is not "conversation_key"`},
		{`{"input":"x","Conversation_Key":"k"}`, `"Conversation_Key" is not "conversation_key"`},
		{`{"input":"x","conversation_key":"a","conversation_key":"b"}`, `"conversation_key" more than once`},
		{`{"input":"x","conversation_key":null,"conversation_key":"k"}`, `"conversation_key" more than once`},
		{`{"input":"a","\u0069nput":"b"}`, `"input" more than once`},
		{`{"input":"x","conversationKey":"k"}`, `unknown key "conversationKey"`},
		{`{"input":"x","` + strings.Repeat("k", 5000) + `":1}`, `unknown key "kkkk`},
	} {
		ev, reason, err := c.Decode([]byte(r.body), nil)
		if reason != deadletter.ReasonInvalidJSON || ev != (agentapi.Event{}) {
			t.Errorf("Decode(%.80q) = %+v, %q (%v); want invalid_json", r.body, ev, reason, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, r.errWants) || len(msg) > 300 {
			t.Errorf("Decode(%.80q): error %q does not say %q (or is unbounded)", r.body, msg, r.errWants)
		}
	}
	// Exact after unescaping: an escaped spelling of the key is the key.
	ev, reason, err := c.Decode([]byte(`{"\u0069nput":"x","conversation\u005fkey":"k"}`), nil)
	if reason != "" || ev != (agentapi.Event{Input: "x", ConversationKey: "k"}) {
		t.Errorf("escaped key names: %+v, %q, %v", ev, reason, err)
	}
}

// Case variants of a key header that disagree make the key ambiguous: the
// message is poison rather than sent with whichever variant a map visit
// finds first (which could differ between a call and its retry).
func TestConflictingKeyHeadersArePoison(t *testing.T) {
	t.Parallel()
	m := md("S", 1, time.Unix(1, 0))
	for _, h := range []nats.Header{
		{"Idempotency-Key": {"a"}, "idempotency-key": {"b"}},
		{"idempotency-key": {"a"}, "IDEMPOTENCY-KEY": {"b"}},
		{"Nats-Msg-Id": {"a"}, "nats-msg-id": {"b"}},
	} {
		if _, err := IdempotencyKey(h, m); !errors.Is(err, agentapi.ErrInvalidIdempotencyKey) {
			t.Errorf("%v: %v", h, err)
		}
	}
	// Variants that agree are one key, whatever the map order.
	for range 20 {
		k, err := IdempotencyKey(nats.Header{"idempotency-key": {"same"}, "IDEMPOTENCY-KEY": {"same"}}, m)
		if err != nil || k != "same" {
			t.Fatalf("%q %v", k, err)
		}
	}
	c := Contract{Format: BodyText}.WithDefaults()
	if _, reason, _ := c.Decode([]byte("x"), nats.Header{"conversation-key": {"a"}, "CONVERSATION-KEY": {"b"}}); reason != deadletter.ReasonInvalidConversationKey {
		t.Errorf("conflicting conversation keys: %q", reason)
	}
}
