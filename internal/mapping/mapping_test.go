package mapping

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/jsonvalue"
)

func mustCompile(t *testing.T, s Spec) *Mapping {
	t.Helper()
	m, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", s, err)
	}
	return m
}

func ticket(t testing.TB) *Event {
	data, err := jsonvalue.Parse([]byte(`{"ticket":{"id":"T-4711","number":4711,"priority":2.5,"open":true,"tags":["a","b"]},"summary":"Export times out","customer":{"id":"cus_9"},"none":null}`))
	if err != nil {
		t.Fatal(err)
	}
	return &Event{
		Data:    data,
		Subject: "agents.agtch_support_eu.events",
		Header:  nats.Header{"X-Tenant": {"acme", "ignored"}},
		CE:      map[string]any{"id": "A-1", "source": "/crm", "type": "ticket.created"},
	}
}

func TestTemplateInputAndTheOtherFields(t *testing.T) {
	m := mustCompile(t, Spec{
		Input:           `"Ticket " + data.ticket.id + ": " + data.summary`,
		ConversationKey: `data.customer.id`,
		TriggerID:       `tokens[1]`,
	})
	r, err := m.Eval(context.Background(), ticket(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Input: "Ticket T-4711: Export times out", HasInput: true,
		ConversationKey: "cus_9", HasConversationKey: true, TriggerID: "agtch_support_eu", HasTriggerID: true}
	if r != want {
		t.Fatalf("Eval = %+v\nwant %+v", r, want)
	}
}

func TestInputValues(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{`data.summary`, "Export times out"},
		{`data.ticket.number`, "4711"},
		{`data.ticket.priority`, "2.5"},
		{`data.ticket.open`, "true"},
		{`data.ticket.tags`, `["a","b"]`},
		// The whole event, as compact JSON with sorted keys.
		{`data.customer`, `{"id":"cus_9"}`},
		{`{"who": headers["X-Tenant"], "what": ce.type, "n": 1}`, `{"n":1,"what":"ticket.created","who":"acme"}`},
		{`"<b>" + subject + "</b>"`, "<b>agents.agtch_support_eu.events</b>"}, // not HTML-escaped
		{`data.summary.lowerAscii().split(" ")[0] + "!"`, "export!"},
		{`data.?missing.orValue("no summary")`, "no summary"},
		{`has(data.summary) ? data.summary.upperAscii() : "none"`, "EXPORT TIMES OUT"},
		{`data.ticket.tags.join(", ")`, "a, b"},
		{`string(data.ticket.number) + "!"`, "4711!"},
	} {
		m := mustCompile(t, Spec{Input: tc.expr})
		r, err := m.Eval(context.Background(), ticket(t))
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if r.Input != tc.want || !r.HasInput {
			t.Errorf("%s = %q, want %q", tc.expr, r.Input, tc.want)
		}
	}
}

func TestConversationKeyValues(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{`data.customer.id`, "cus_9"},
		{`data.ticket.number`, "4711"},
		{`null`, ""},
		{`data.none`, ""},
		{`headers["X-Tenant"] + "-" + data.ticket.id`, "acme-T-4711"},
	} {
		r, err := mustCompile(t, Spec{ConversationKey: tc.expr}).Eval(context.Background(), ticket(t))
		if err != nil || r.ConversationKey != tc.want || !r.HasConversationKey {
			t.Errorf("%s = %q, %v; want %q", tc.expr, r.ConversationKey, err, tc.want)
		}
	}
}

func TestCompileErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		spec  Spec
		field string
		want  string
	}{
		{Spec{Input: `"a" + `}, FieldInput, "Syntax error"},
		{Spec{Input: `payload.summary`}, FieldInput, "undeclared reference to 'payload' (at 1:1)"},
		{Spec{Input: `subject > 1`}, FieldInput, "found no matching overload"},
		{Spec{Input: `b"bytes"`}, FieldInput, "gives bytes; it must give a string"},
		{Spec{Input: `null`}, FieldInput, "gives null_type"},
		{Spec{Input: `  `}, FieldInput, "blank"},
		{Spec{ConversationKey: `1.5`}, FieldConversationKey, "gives double; it must give a string, an integer or null"},
		{Spec{TriggerID: `tokens`}, FieldTriggerID, "gives list(string); it must give a string"},
		{Spec{TriggerID: `tokens[1] + 1`}, FieldTriggerID, "no matching overload"},
		{Spec{Input: strings.Repeat("a", MaxExpressionLen+1)}, FieldInput, "longer than"},
		// Calls whose one result can be far larger than the event.
		{Spec{Input: `data.s.replace("a", data.s)`}, FieldInput, "replace() is not available"},
		{Spec{Input: `"%s".format([data.s])`}, FieldInput, "format() is not available"},
		{Spec{Input: `data.l.map(x, data.s).join("")`}, FieldInput, "join() is only available on a list of the event's"},
		{Spec{Input: `data.tags.join(data.s)`}, FieldInput, "separator must be a literal"},
	} {
		_, err := Compile(tc.spec)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Compile(%+v) = %v\nwant a %s error saying %q", tc.spec, err, tc.field, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Compile(%+v): the error has several lines: %q", tc.spec, err)
		}
	}
	// Every broken field is reported, not only the first.
	_, err := Compile(Spec{Input: `x`, ConversationKey: `y`, TriggerID: `z`})
	for _, f := range []string{"input: ", "conversation_key: ", "trigger_id: "} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("three broken fields: %v lacks %q", err, f)
		}
	}
}

func TestEvalErrorsAreBoundedAndWrapErrEval(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Input: `data.missing`}, "input: no such key: missing"},
		{Spec{Input: `"Ticket " + data.ticket.number`}, "input: no such overload"},
		{Spec{Input: `data.none`}, "input: the input is null"},
		{Spec{Input: `data.summary.substring(0, 0)`}, "input: the input is empty"},
		{Spec{Input: `data.ticket.tags[7]`}, "input: index out of bounds"},
		{Spec{TriggerID: `data.ticket.number`}, "trigger_id: gives int, not a string"},
		{Spec{ConversationKey: `data.ticket.tags`}, "conversation_key: gives list, not a string"},
		{Spec{Input: `data.ticket["` + strings.Repeat("k", 600) + `"]`}, "input: no such key: kkk"},
	} {
		_, err := mustCompile(t, tc.spec).Eval(context.Background(), ticket(t))
		if !errors.Is(err, ErrEval) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: %v\nwant ErrEval starting %q", tc.spec, err, tc.want)
			continue
		}
		if len(err.Error()) > maxErrorLen+3 || strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("%+v: error not one bounded line: %q", tc.spec, err)
		}
	}
}

// An expression written to be slow, a loop in a loop in a loop over the
// event's list, is stopped by the cost limit; the same expression over a
// short list runs, so it is the limit that stops it.
func TestCostLimitStopsASlowExpression(t *testing.T) {
	slow := mustCompile(t, Spec{Input: `data.all(x, data.all(y, data.all(z, x + y + z != ""))) ? "all" : "some"`})
	list := func(n int) []any {
		l := make([]any, n)
		for i := range l {
			l[i] = "item"
		}
		return l
	}
	if r, err := slow.Eval(context.Background(), &Event{Data: list(5)}); err != nil || r.Input != "all" {
		t.Fatalf("over 5 items: %q, %v", r.Input, err)
	}
	_, err := slow.Eval(context.Background(), &Event{Data: list(1000)})
	if !errors.Is(err, ErrEval) || !strings.Contains(err.Error(), "exceeded its cost limit") {
		t.Fatalf("over 1000 items (10^9 iterations): %v, want the cost limit", err)
	}
	// Concatenating the event's strings in a loop is charged by size:
	// CEL alone charges 1 for a + b on dyn operands, and this one would
	// allocate 300 × 300 strings of 4 KB (360 MB) well within its limit.
	long := make([]any, 300)
	for i := range long {
		long[i] = strings.Repeat("y", 1000)
	}
	grow := mustCompile(t, Spec{Input: `string(data.map(x, data.map(y, x + y + x + y)).size())`})
	if _, err := grow.Eval(context.Background(), &Event{Data: long}); !errors.Is(err, ErrEval) || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("concatenating in a loop: %v, want the cost limit", err)
	}
}

func TestUnusedVariablesAreNotNeeded(t *testing.T) {
	m := mustCompile(t, Spec{TriggerID: `tokens[1]`})
	if m.UsesData() {
		t.Error("tokens[1] reads no data")
	}
	if !mustCompile(t, Spec{Input: `data.x`}).UsesData() {
		t.Error("data.x reads data")
	}
	// Without a CloudEvent, ce is an empty map.
	r, err := mustCompile(t, Spec{Input: `ce.?id.orValue("none")`}).Eval(context.Background(), &Event{})
	if err != nil || r.Input != "none" {
		t.Fatalf("ce without a CloudEvent: %q, %v", r.Input, err)
	}
}

func TestNilMappingMapsNothing(t *testing.T) {
	var m *Mapping
	if r, err := m.Eval(context.Background(), &Event{}); err != nil || r != (Result{}) || m.MapsInput() || m.MapsTriggerID() || m.UsesData() {
		t.Fatalf("nil mapping: %+v, %v", r, err)
	}
}

// A map or list input is formatted only within the route's limit: one
// that would be longer is refused before it is written out, even when a
// loop made it cheaply out of one long string.
func TestInputAsJSONWithinTheLimit(t *testing.T) {
	m := mustCompile(t, Spec{Input: `data`})
	if r, err := m.Eval(context.Background(), &Event{Data: map[string]any{"a": "b"}, MaxInput: 9}); err != nil || r.Input != `{"a":"b"}` {
		t.Fatalf("9 bytes, limit 9: %q %v", r.Input, err)
	}
	if _, err := m.Eval(context.Background(), &Event{Data: map[string]any{"a": "bc"}, MaxInput: 9}); !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("10 bytes, limit 9: %v", err)
	}
	bomb := mustCompile(t, Spec{Input: `data.l.map(x, data.s)`})
	l := make([]any, 5000)
	ev := &Event{Data: map[string]any{"l": l, "s": strings.Repeat("z", 100_000)}, MaxInput: 256 << 10}
	if _, err := bomb.Eval(context.Background(), ev); !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("5000 × 100 KB as JSON: %v, want ErrInputTooLarge", err)
	}
}
