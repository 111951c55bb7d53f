package event_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
)

// The seed corpora run as ordinary tests in `make test`; run a fuzzer with
// e.g. go test -run='^$' -fuzz=FuzzDecodeJSON -fuzztime=60s ./consumer

// poisonReasons are the reasons Decode may give.
var poisonReasons = map[deadletter.Reason]bool{
	deadletter.ReasonInvalidJSON: true, deadletter.ReasonMissingInput: true, deadletter.ReasonInputTooLarge: true,
	deadletter.ReasonInvalidUTF8: true, deadletter.ReasonInvalidConversationKey: true,
}

// checkDecoded holds what every decoded message must satisfy: an event the
// client will send as it is (Validate passes, the input within the limit),
// or a poison reason with an error that is safe to log and put in a header.
func checkDecoded(t *testing.T, c event.Contract, data []byte, ev agentapi.Event, reason deadletter.Reason, err error) bool {
	t.Helper()
	if (reason == "") != (err == nil) {
		t.Fatalf("Decode(%q) = reason %q with error %v: a reason comes with an error, and only then", data, reason, err)
	}
	if reason != "" {
		if !poisonReasons[reason] {
			t.Errorf("Decode(%q): unknown reason %q", data, reason)
		}
		if ev != (agentapi.Event{}) && reason != deadletter.ReasonInvalidConversationKey {
			t.Errorf("Decode(%q): refused (%s) but returned an event %+v", data, reason, ev)
		}
		if msg := err.Error(); !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("Decode(%q): error carries raw control bytes: %q", data, msg)
		}
		return false
	}
	if verr := ev.Validate(); verr != nil {
		t.Errorf("Decode(%q) accepted an event the client refuses: %+v: %v", data, ev, verr)
	}
	if len(ev.Input) > c.MaxInputBytes || ev.IdempotencyKey != "" {
		t.Errorf("Decode(%q) = %+v: over the input limit, or with a key", data, ev)
	}
	return true
}

// promptDecode decodes and fails the test if that takes more than five
// seconds: a message that makes Decode spin would hold a worker slot (and
// its keep-alive) forever.
func promptDecode(t *testing.T, c event.Contract, data []byte, h nats.Header) (agentapi.Event, deadletter.Reason, error) {
	t.Helper()
	type result struct {
		ev     agentapi.Event
		reason deadletter.Reason
		err    error
	}
	done := make(chan result, 1)
	go func() {
		ev, reason, err := c.Decode(data, h)
		done <- result{ev, reason, err}
	}()
	select {
	case r := <-done:
		return r.ev, r.reason, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("Decode(%q) has not returned after 5s", data)
		return agentapi.Event{}, "", nil
	}
}

// A JSON body is accepted only when it is one JSON object with a non-empty
// string input and at most a string conversation key, each key spelt
// exactly so and given once, in valid UTF-8; and then the event is exactly
// what encoding/json reads from it (which, for such a body, is what any
// reader reads, whether it takes the first or the last of repeated keys, or
// folds case or not). Whatever the bytes, Decode does not panic and a
// refusal has a reason.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"input":"hello"}`, `{"input":"hi","conversation_key":"thread-1"}`, `{"input":"hi","conversation_key":null}`,
		" \n{\"input\":\"hi\"}\n", `{"input":"caf\u00e9"}`, `hello`, `["hello"]`, `{"input":"hel`, `{"input":42}`,
		`{"input":"hi","conversationKey":"x"}`, `{"input":"hi"} {"input":"again"}`, `{"conversation_key":"x"}`,
		`{"input":""}`, `{"input":null}`, ``, `{"input":"0123456789abcdefX"}`, "{\"input\":\"caf\xe9\"}",
		`{"input":"hi","conversation_key":"a\u001bb"}`, `{"INPUT":"case"}`, `{"input":"a","input":"b"}`,
		`{"\u0069nput":"escaped name"}`, `{"input":"\ud800"}`, `{"input":"x","conversation_key":7}`, `{"input":"\u0000"}`,
		`{"input":"x"}garbage`, `{"input":"x"}` + "\x00", `null`, `{}`, `{"input":{"nested":"x"}}`,
		`{"input":"benign","INPUT":"evil"}`, `{"INPUT":"evil","input":"benign"}`, `{"input":"x","conversation_\u212aey":"k"}`,
		"{\"input\":\"x\",\"conversation_\u212aey\":\"k\"}", `{"input":"a","\u0069nput":"b"}`, `{"Input":"x"}`,
		`{"input":"x","conversation_key":"a","conversation_key":"b"}`, `{"input":"x","conversation_key":null,"conversation_key":"k"}`,
		`{"inpu\u017f":"x"}`, `{"input":"x","Conversation_Key":"k"}`,
	} {
		f.Add([]byte(s))
	}
	c := event.Contract{MaxInputBytes: 16}.WithDefaults()
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, reason, err := promptDecode(t, c, data, nil)
		if !checkDecoded(t, c, data, ev, reason, err) {
			return
		}
		if !utf8.Valid(data) {
			t.Fatalf("Decode accepted invalid UTF-8 %q as %+v", data, ev)
		}
		// encoding/json, strict, reads the same event.
		var ref struct {
			Input           *string `json:"input"`
			ConversationKey *string `json:"conversation_key"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ref); err != nil || ref.Input == nil || *ref.Input != ev.Input ||
			(ref.ConversationKey != nil && *ref.ConversationKey != ev.ConversationKey) {
			t.Errorf("Decode(%q) = %+v; encoding/json reads %v", data, ev, err)
		}
		// Its keys are the two names, byte for byte after unescaping,
		// each once.
		if keys, err := topLevelKeys(data); err != nil {
			t.Errorf("Decode(%q) accepted a body whose keys cannot be listed: %v", data, err)
		} else if len(keys) == 0 || len(keys) > 2 || (len(keys) == 2 && keys[0] == keys[1]) {
			t.Errorf("Decode(%q) accepted the keys %q", data, keys)
		} else {
			for _, k := range keys {
				if k != "input" && k != "conversation_key" {
					t.Errorf("Decode(%q) accepted the key %+q", data, k)
				}
			}
		}
		// What is sent is that event, whatever the producer's spelling.
		var sent map[string]string
		body, err := ev.Body()
		if err == nil {
			err = json.Unmarshal(body, &sent)
		}
		if err != nil || sent["input"] != ev.Input || sent["conversation_key"] != ev.ConversationKey {
			t.Errorf("Decode(%q) = %+v, sent as %v (%v)", data, ev, sent, err)
		}
	})
}

// topLevelKeys lists the keys of the JSON object in data, in order and with
// repeats.
func topLevelKeys(data []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// A text body is the input byte for byte when it is non-empty valid UTF-8
// within the limit; the conversation key comes from the configured header
// in any case, and is refused when it holds control characters.
func FuzzDecodeText(f *testing.F) {
	for _, s := range []struct{ body, name, value string }{
		{"plain text input", "Conversation-Key", "thread-9"}, {`{"not":"json"`, "thread", "t-9"}, {"", "Conversation-Key", ""},
		{"\xff", "Conversation-Key", "k"}, {"12345678901234567", "", ""}, {"ok", "conversation-key", "a\x1b[2Jb"},
		{"ok", "Conversation-Key", "a\r\nb"}, {"ok", "Conversation-Key", strings.Repeat("k", 1025)}, {"\x00\x01", "X", "y"},
	} {
		f.Add([]byte(s.body), s.name, s.value)
	}
	c := event.Contract{Format: event.BodyText, MaxInputBytes: 16}.WithDefaults()
	f.Fuzz(func(t *testing.T, body []byte, name, value string) {
		h := nats.Header{}
		if name != "" {
			h[name] = []string{value}
		}
		ev, reason, err := promptDecode(t, c, body, h)
		if !checkDecoded(t, c, body, ev, reason, err) {
			return
		}
		if ev.Input != string(body) {
			t.Errorf("text body %q became input %q", body, ev.Input)
		}
		if strings.EqualFold(name, event.HeaderConversationKey) && ev.ConversationKey != value {
			t.Errorf("conversation key header %q=%q became %q", name, value, ev.ConversationKey)
		}
	})
}

// The Idempotency-Key of a message is the same on every redelivery, is
// always a valid key, and is the producer's own key or message id exactly
// when one is given (never a rewritten one): an invalid one is an error,
// and the message poison.
func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []struct {
		idem, msgID, stream string
		seq                 uint64
		ts                  int64
	}{
		{"", "", "EVENTS", 42, 1732800000123456789}, {"replayed-1", "orig", "EVENTS", 1, 1}, {"", "order-7:v2", "S", 1, 1},
		{"", "../../admin", "S", 1, 1}, {"a/b", "ok", "S", 1, 1}, {"", "line\r\nX-Evil: 1", "S", 1, 1},
		{"", "", "ÉVÉNEMENTS", 1, 2}, {"", "", "xc389", 1, 2}, {"", "", strings.Repeat("s", 255), 1 << 63, -1},
		{"", "", "", 0, 0}, {"", "", "a.b", 1, 1}, {"ｏrder-1", "", "S", 1, 1}, {"", "", "S T", 7, 7},
	} {
		f.Add(s.idem, s.msgID, s.stream, s.seq, s.ts)
	}
	f.Fuzz(func(t *testing.T, idem, msgID, stream string, seq uint64, ts int64) {
		h := nats.Header{}
		if idem != "" {
			h["Idempotency-Key"] = []string{idem}
		}
		if msgID != "" {
			h[jetstream.MsgIDHeader] = []string{msgID}
		}
		md := &jetstream.MsgMetadata{Stream: stream, Sequence: jetstream.SequencePair{Stream: seq}, Timestamp: time.Unix(0, ts)}
		k, err := event.IdempotencyKey(h, md)
		k2, err2 := event.IdempotencyKey(h, md)
		if k != k2 || (err == nil) != (err2 == nil) {
			t.Fatalf("not stable across redeliveries: %q %v / %q %v", k, err, k2, err2)
		}
		given := idem
		if given == "" {
			given = msgID
		}
		switch {
		case err != nil:
			if given == "" || agentapi.ValidateIdempotencyKey(given) == nil || !errors.Is(err, agentapi.ErrInvalidIdempotencyKey) {
				t.Errorf("keys %q/%q: error %v, but the given key is valid or absent", idem, msgID, err)
			}
		case given != "" && k != given:
			t.Errorf("keys %q/%q: sent %q, not the producer's key", idem, msgID, k)
		case given == "" && k != event.DerivedKey(stream, seq, ts):
			t.Errorf("no key given: sent %q, not the derived key", k)
		case agentapi.ValidateIdempotencyKey(k) != nil:
			t.Errorf("keys %q/%q, stream %q: sent the invalid key %q", idem, msgID, stream, k)
		}
	})
}

// A derived key is always a valid key, and two different messages never
// share one: not two streams, not two sequence numbers, not two stored
// times. (Stream names near NATS's 255-byte limit are cut to their tail,
// which the test leaves out.)
func FuzzDerivedKeyIsValidAndDistinct(f *testing.F) {
	f.Add("EVENTS", uint64(42), int64(1732800000123456789), "EVENTS", uint64(43), int64(1732800000123456789))
	f.Add("ÉVÉNEMENTS", uint64(1), int64(2), "EVENEMENTS", uint64(1), int64(2))
	f.Add("S", uint64(1), int64(23), "S", uint64(12), int64(3))
	f.Add("a:1", uint64(2), int64(3), "a", uint64(1), int64(2))
	f.Fuzz(func(t *testing.T, s1 string, q1 uint64, t1 int64, s2 string, q2 uint64, t2 int64) {
		k1, k2 := event.DerivedKey(s1, q1, t1), event.DerivedKey(s2, q2, t2)
		for _, k := range []string{k1, k2} {
			if err := agentapi.ValidateIdempotencyKey(k); err != nil {
				t.Fatalf("derived key %q is invalid: %v", k, err)
			}
		}
		if len(s1) > 100 || len(s2) > 100 {
			return
		}
		if k1 == k2 && (s1 != s2 || q1 != q2 || t1 != t2) {
			t.Errorf("(%q, %d, %d) and (%q, %d, %d) share the key %q", s1, q1, t1, s2, q2, t2, k1)
		}
	})
}
