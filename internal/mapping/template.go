package mapping

import (
	"strings"

	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// A template is the commonest mapping: string literals and fields of the
// event joined with +, as in `"Ticket " + data.ticket.id + ": " +
// data.summary`, or a single field (`tokens[1]`). Such an expression is
// evaluated here without the interpreter, when every field is present and
// a string, and its result is one the interpreter would give within the
// cost limit; in every other case (a missing field, a number, a result
// near the cost limit) the interpreter runs it, so results and errors are
// the interpreter's. It is several times faster: the interpreter tracks
// the cost of every step and allocates each partial result (see
// BENCHMARKS.md).
type template struct {
	parts []part
	adds  int // the + operations, for the cost bound
}

// part is a literal, or a variable with the keys and indexes that select
// a string from it.
type part struct {
	literal string
	root    string // "" for a literal; else the variable
	path    []key
}

// key is one selection: a map key, or a list index when isIndex.
type key struct {
	name    string
	index   int64
	isIndex bool
}

// compileTemplate returns e as a template, or nil when it is not one.
func compileTemplate(e celast.Expr) *template {
	t := &template{}
	if !t.add(e) {
		return nil
	}
	return t
}

func (t *template) add(e celast.Expr) bool {
	switch e.Kind() {
	case celast.LiteralKind:
		s, ok := e.AsLiteral().(types.String)
		if !ok {
			return false
		}
		t.parts = append(t.parts, part{literal: string(s)})
		return true
	case celast.CallKind:
		c := e.AsCall()
		if c.FunctionName() == operators.Add && !c.IsMemberFunction() && len(c.Args()) == 2 {
			t.adds++
			return t.add(c.Args()[0]) && t.add(c.Args()[1])
		}
	}
	p, ok := selection(e)
	if !ok {
		return false
	}
	t.parts = append(t.parts, p)
	return true
}

// selection reads a chain of field selections and constant indexes on a
// variable: data.a.b, data["a"][0], tokens[1], headers["X"], ce.id.
func selection(e celast.Expr) (part, bool) {
	var rev []key
	for {
		switch e.Kind() {
		case celast.IdentKind:
			name := e.AsIdent()
			switch name {
			case "data", "subject", "tokens", "headers", "ce":
			default:
				return part{}, false
			}
			p := part{root: name}
			for i := len(rev) - 1; i >= 0; i-- {
				p.path = append(p.path, rev[i])
			}
			return p, true
		case celast.SelectKind:
			s := e.AsSelect()
			if s.IsTestOnly() {
				return part{}, false
			}
			rev = append(rev, key{name: s.FieldName()})
			e = s.Operand()
		case celast.CallKind:
			c := e.AsCall()
			if c.FunctionName() != operators.Index || len(c.Args()) != 2 || c.Args()[1].Kind() != celast.LiteralKind {
				return part{}, false
			}
			switch k := c.Args()[1].AsLiteral().(type) {
			case types.String:
				rev = append(rev, key{name: string(k)})
			case types.Int:
				rev = append(rev, key{index: int64(k), isIndex: true})
			default:
				return part{}, false
			}
			e = c.Args()[0]
		default:
			return part{}, false
		}
	}
}

// eval gives the template's string, and false when the interpreter must
// decide: a part that is not there or not a string, or a result whose
// cost could come near MaxCost.
func (t *template) eval(ev *Event) (string, bool) {
	var buf [8]string
	vals := buf[:0]
	n := 0
	cost := 0
	for _, p := range t.parts {
		s, ok := p.resolve(ev)
		if !ok {
			return "", false
		}
		vals = append(vals, s)
		n += len(s)
		// An upper bound of the interpreter's cost: two per variable
		// and per selection (it charges one each).
		if p.root != "" {
			cost += 2 + 2*len(p.path)
		}
	}
	// Each + costs the interpreter at most a tenth of its result (at
	// most n) plus one: bounded by adds × (n/10 + 2).
	cost += t.adds * (n/10 + 2)
	if cost > MaxCost {
		return "", false
	}
	if len(vals) == 1 {
		return vals[0], true
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range vals {
		b.WriteString(s)
	}
	return b.String(), true
}

// resolve gives the string p selects from ev, and false when it is not one.
func (p part) resolve(ev *Event) (string, bool) {
	if p.root == "" {
		return p.literal, true
	}
	var v any
	switch p.root {
	case "data":
		v = ev.Data
	case "subject":
		v = ev.Subject
	case "ce":
		if ev.CE == nil {
			return "", false
		}
		v = ev.CE
	case "tokens":
		if len(p.path) == 0 || !p.path[0].isIndex {
			return "", false
		}
		tokens := strings.Split(ev.Subject, ".")
		i := p.path[0].index
		if i < 0 || i >= int64(len(tokens)) || len(p.path) > 1 {
			return "", false
		}
		return tokens[i], true
	case "headers":
		if len(p.path) != 1 || p.path[0].isIndex {
			return "", false
		}
		vv := ev.Header[p.path[0].name]
		if len(vv) == 0 {
			return "", false
		}
		return vv[0], true
	}
	for _, k := range p.path {
		switch x := v.(type) {
		case map[string]any:
			if k.isIndex {
				return "", false
			}
			e, ok := x[k.name]
			if !ok {
				return "", false
			}
			v = e
		case []any:
			if !k.isIndex || k.index < 0 || k.index >= int64(len(x)) {
				return "", false
			}
			v = x[k.index]
		default:
			return "", false
		}
	}
	s, ok := v.(string)
	return s, ok
}
