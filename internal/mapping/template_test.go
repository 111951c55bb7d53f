package mapping

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/jsonvalue"
)

var templates = []string{
	`"Ticket " + data.ticket.id + ": " + data.summary`,
	`data.summary`,
	`data["summary"]`,
	`data.ticket["id"] + "/" + data.tags[0]`,
	`data.tags[1] + data.tags[5]`,
	`tokens[1]`,
	`tokens[0] + "." + tokens[7]`,
	`subject`,
	`headers["X-Tenant"] + "-" + data.ticket.id`,
	`headers["Missing"]`,
	`ce.type + " " + ce.id`,
	`"literal only"`,
	`"a" + "b"`,
	`data.number`,
	`"n=" + data.number`,
	`data.none`,
	`data.missing`,
	`data.ticket`,
	`data.tags`,
	`data.ticket.id.missing`,
	`data.tags[-1]`,
	`data.tags["x"]`,
	`data.ticket[0]`,
}

// For every template and event, the fast path gives what the interpreter
// gives, or steps aside for it.
func TestTemplatesAgreeWithTheInterpreter(t *testing.T) {
	events := []*Event{
		eventFrom(t, `{"ticket":{"id":"T-1"},"summary":"s","tags":["a","b"],"number":7,"none":null}`, "agents.agtch_x.events", map[string]any{"type": "t", "id": "1"}),
		eventFrom(t, `{"ticket":{"id":7},"summary":["s"],"tags":[]}`, "a", nil),
		eventFrom(t, `"just a string"`, "", nil),
		eventFrom(t, `[1,2]`, "x.y.z.a.b.c.d.e", map[string]any{"type": 1}),
		{Data: []byte{0xff}, Subject: "s"},
	}
	for _, expr := range templates {
		m, err := Compile(Spec{Input: expr})
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		p := m.input
		if p.tmpl == nil {
			t.Errorf("%s: not taken as a template", expr)
			continue
		}
		for i, ev := range events {
			fast, ok := p.tmpl.eval(ev)
			v, _, err := p.prg.ContextEval(context.Background(), &activation{ev: ev})
			switch {
			case !ok:
				// The interpreter decides; nothing to compare.
			case err != nil:
				t.Errorf("%s on event %d: the fast path gave %q, the interpreter %v", expr, i, fast, err)
			case v.Value() != fast:
				t.Errorf("%s on event %d: the fast path gave %q, the interpreter %#v", expr, i, fast, v.Value())
			}
		}
	}
	// Expressions that are not templates stay with the interpreter.
	for _, expr := range []string{`data.summary.upperAscii()`, `has(data.x) ? "a" : "b"`, `data.?x.orValue("y")`, `string(data.number)`, `data.tags.join(",")`, `1 + 2 == 3 ? "a" : "b"`} {
		m, err := Compile(Spec{Input: expr})
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if m.input.tmpl != nil {
			t.Errorf("%s: taken as a template", expr)
		}
	}
}

// A template whose result would cost the interpreter near its limit is
// left to it, so the limit means the same either way.
func TestTemplateStepsAsideNearTheCostLimit(t *testing.T) {
	m, err := Compile(Spec{Input: strings.Repeat("data.s + ", 30) + "data.s"})
	if err != nil {
		t.Fatal(err)
	}
	big := &Event{Data: map[string]any{"s": strings.Repeat("x", 50_000)}}
	if _, ok := m.input.tmpl.eval(big); ok {
		t.Fatal("the fast path built a 1.5 MB input the interpreter's cost limit refuses")
	}
	if _, err := m.Eval(context.Background(), big); err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("Eval: %v, want the cost limit", err)
	}
	small := &Event{Data: map[string]any{"s": "x"}}
	if s, ok := m.input.tmpl.eval(small); !ok || s != strings.Repeat("x", 31) {
		t.Fatalf("small event: %q %v", s, ok)
	}
}

func eventFrom(t *testing.T, body, subject string, ce map[string]any) *Event {
	t.Helper()
	v, err := jsonvalue.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return &Event{Data: v, Subject: subject, CE: ce, Header: nats.Header{"X-Tenant": {"acme"}}}
}

// Random events from the fuzzer, the same verdict from both paths.
func FuzzTemplatesAgreeWithTheInterpreter(f *testing.F) {
	f.Add([]byte(`{"ticket":{"id":"T-1"},"summary":"s","tags":["a","b"]}`), "agents.agtch_x.events")
	f.Add([]byte(`{"ticket":{"id":1},"summary":null}`), "a.b")
	var progs []*program
	for _, expr := range templates {
		m, err := Compile(Spec{Input: expr})
		if err != nil {
			f.Fatal(err)
		}
		progs = append(progs, m.input)
	}
	f.Fuzz(func(t *testing.T, body []byte, subject string) {
		v, err := jsonvalue.Parse(body)
		if err != nil {
			return
		}
		ev := &Event{Data: v, Subject: subject, Header: nats.Header{"X-Tenant": {"acme"}}}
		for _, p := range progs {
			fast, ok := p.tmpl.eval(ev)
			if !ok {
				continue
			}
			r, _, err := p.prg.ContextEval(context.Background(), &activation{ev: ev})
			if err != nil || r.Value() != fast {
				t.Fatalf("fast %q, interpreter %v %v", fast, r, err)
			}
		}
	})
}
