// Package mapping turns an arbitrary producer's event into a trigger call
// with CEL expressions (https://cel.dev): a route's input, conversation key
// and trigger id, each an expression over the event.
//
// The expressions see these variables:
//
//	data     the event's data: the parsed JSON body (or a CloudEvent's data),
//	         or the body as a string when it is not JSON
//	subject  the message's subject, a string
//	tokens   the subject's tokens, a list of strings (tokens[0] is the first)
//	headers  the message's headers, a map of each name to its first value
//	ce       the CloudEvent's attributes, a map (empty when the route does
//	         not read CloudEvents)
//
// CEL is typed, has no side effects and no I/O, and its cost is measured as
// it runs (Kubernetes and Envoy use it for exactly this). Compile parses and
// type-checks the expressions, so that `config check` and start-up name the
// field of every mistake; Eval runs them under a cost limit (MaxCost, with
// what they build charged by its size) and checks its context in loops, so
// an expression written (or fed) to be slow or large ends in an error, not
// in a stuck route or an exhausted memory. The standard library and the
// strings extension are available, less the calls whose one result can be
// far larger than the event (see checkCalls); templates (literals and
// fields joined with +) skip the interpreter (see template).
//
// What each expression must give:
//
//	input             a string; a number or boolean is formatted as CEL's
//	                  string() formats it, a map or list as compact JSON (so
//	                  `data` alone forwards the whole event). null, or an
//	                  empty result, is an error.
//	conversation_key  a string, an integer (formatted), or null for none
//	trigger_id        a string
package mapping

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/structpb"
)

// The fields a mapping sets, named as in the configuration file.
const (
	FieldInput           = "input"
	FieldConversationKey = "conversation_key"
	FieldTriggerID       = "trigger_id"
)

// Limits on evaluation.
const (
	// MaxCost is the most an expression may cost in one evaluation, in
	// CEL's cost units (about one per operation, more for work on long
	// strings and lists). A template over a 2 KiB event costs a few dozen;
	// the limit leaves room for loops over a few thousand list elements
	// and stops a runaway one within a few milliseconds of CPU.
	MaxCost = 100_000
	// InterruptEvery is how many loop iterations pass between checks of
	// Eval's context: a worker that drains does not wait for a long
	// evaluation to end.
	InterruptEvery = 100
	// MaxExpressionLen bounds the text of an expression.
	MaxExpressionLen = 16 << 10
	// maxErrorLen bounds an evaluation error's text: it goes into logs
	// and a dead letter's header.
	maxErrorLen = 256
)

// ErrEval is wrapped by every error of Eval: the event does not map.
var ErrEval = errors.New("mapping failed")

// Spec is a route's mapping: a CEL expression per field; an empty one maps
// nothing for its field.
type Spec struct {
	Input           string
	ConversationKey string
	TriggerID       string
}

// IsZero reports whether s maps nothing.
func (s Spec) IsZero() bool { return s == Spec{} }

// FieldError is a compile error of one field's expression.
type FieldError struct {
	Field string // FieldInput, FieldConversationKey or FieldTriggerID
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Mapping is a compiled Spec. It is safe for concurrent use.
type Mapping struct {
	spec            Spec
	input           *program
	conversationKey *program
	triggerID       *program
	uses            uses
}

// uses are the variables the expressions read: the others are not built.
type uses struct{ data, subject, tokens, headers, ce bool }

type program struct {
	field string
	prg   cel.Program
	tmpl  *template // nil unless the expression is a template
}

// Compile parses and type-checks s. The error joins a *FieldError for every
// expression that does not compile, in field order.
func Compile(s Spec) (*Mapping, error) {
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	m := &Mapping{spec: s}
	var errs []error
	for _, f := range []struct {
		field string
		expr  string
		dst   **program
		want  func(*cel.Type) bool
		what  string
	}{
		{FieldInput, s.Input, &m.input, inputType, "a string (or a number, boolean, map or list, formatted)"},
		{FieldConversationKey, s.ConversationKey, &m.conversationKey, keyType, "a string, an integer or null"},
		{FieldTriggerID, s.TriggerID, &m.triggerID, stringType, "a string"},
	} {
		if strings.TrimSpace(f.expr) == "" {
			if f.expr != "" {
				errs = append(errs, &FieldError{f.field, errors.New("the expression is blank")})
			}
			continue
		}
		p, u, err := compile(env, f.field, f.expr, f.want, f.what)
		if err != nil {
			errs = append(errs, &FieldError{f.field, err})
			continue
		}
		*f.dst = p
		m.uses.data = m.uses.data || u.data
		m.uses.subject = m.uses.subject || u.subject
		m.uses.tokens = m.uses.tokens || u.tokens
		m.uses.headers = m.uses.headers || u.headers
		m.uses.ce = m.uses.ce || u.ce
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// Spec returns the expressions m was compiled from.
func (m *Mapping) Spec() Spec { return m.spec }

// MapsInput, MapsConversationKey and MapsTriggerID report which fields m
// sets.
func (m *Mapping) MapsInput() bool           { return m != nil && m.input != nil }
func (m *Mapping) MapsConversationKey() bool { return m != nil && m.conversationKey != nil }
func (m *Mapping) MapsTriggerID() bool       { return m != nil && m.triggerID != nil }

// UsesData reports whether an expression reads the data: when none does,
// the caller need not parse the body.
func (m *Mapping) UsesData() bool { return m != nil && m.uses.data }

func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("data", cel.DynType),
		cel.Variable("subject", cel.StringType),
		cel.Variable("tokens", cel.ListType(cel.StringType)),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("ce", cel.MapType(cel.StringType, cel.DynType)),
		// Templates want join, split, lowerAscii, trim and the
		// like; the version is pinned so that an upgrade of cel-go
		// cannot change what an expression means.
		// Version 5 is the first whose functions are charged by size.
		ext.Strings(ext.StringsVersion(5)),
		// data.?field.orValue("default") for optional fields.
		cel.OptionalTypes(),
		// 1 == 1.0, and comparisons of a JSON number whatever its type.
		cel.CrossTypeNumericComparisons(true),
		cel.ParserExpressionSizeLimit(MaxExpressionLen),
	)
}

func compile(env *cel.Env, field, expr string, want func(*cel.Type) bool, what string) (*program, uses, error) {
	var u uses
	if len(expr) > MaxExpressionLen {
		return nil, u, fmt.Errorf("the expression is longer than %d bytes", MaxExpressionLen)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, u, issuesError(iss)
	}
	if err := checkCalls(ast.NativeRep().Expr()); err != nil {
		return nil, u, err
	}
	if t := ast.OutputType(); !want(t) {
		return nil, u, fmt.Errorf("the expression gives %s; it must give %s", typeName(t), what)
	}
	for _, r := range ast.NativeRep().ReferenceMap() {
		switch r.Name {
		case "data":
			u.data = true
		case "subject":
			u.subject = true
		case "tokens":
			u.tokens = true
		case "headers":
			u.headers = true
		case "ce":
			u.ce = true
		}
	}
	prg, err := env.Program(ast,
		cel.CostLimit(MaxCost),
		cel.CostTracking(sizeCost{}),
		cel.InterruptCheckFrequency(InterruptEvery),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return nil, u, err
	}
	return &program{field: field, prg: prg, tmpl: compileTemplate(ast.NativeRep().Expr())}, u, nil
}

// sizeCost charges a call that gives a string or bytes by the size of its
// result, a tenth of its bytes (CEL's own rate for a + b), whatever the
// operands' declared types. CEL charges by size only the calls it resolved
// to one overload when it checked the expression: a + b on dyn operands,
// which every field of an event is, cost 1, and a loop concatenating the
// event's strings ran out of memory long before the cost limit.
type sizeCost struct{}

func (sizeCost) CallCost(_, _ string, _ []ref.Val, result ref.Val) *uint64 {
	var n uint64
	switch r := result.(type) {
	case types.String:
		n = uint64(len(r))
	case types.Bytes:
		n = uint64(len(r))
	default:
		return nil
	}
	n = 1 + n/10
	return &n
}

// checkCalls refuses the calls whose single result could be far larger
// than the event, allocated before any cost is counted: replace and format
// (a replacement or a formatted list repeated for every match or element),
// and join but on a list of the event's own (data.tags.join(", ")) with a
// literal separator, whose result is then no larger than the event plus
// the separators. Everything else either copies at most its input, or is
// charged by the size of its result as it runs (see sizeCost).
func checkCalls(e celast.Expr) error {
	var err error
	celast.PreOrderVisit(e, celast.NewExprVisitor(func(x celast.Expr) {
		if err != nil || x.Kind() != celast.CallKind {
			return
		}
		c := x.AsCall()
		switch c.FunctionName() {
		case "replace":
			err = errors.New("replace() is not available: its result can grow as the square of the event's size")
		case "format":
			err = errors.New(`format() is not available: use + ("Ticket " + data.id)`)
		case "join":
			if !c.IsMemberFunction() {
				return
			}
			if _, ok := selection(c.Target()); !ok {
				err = errors.New("join() is only available on a list of the event's (data.tags.join(\", \")), not on a computed one")
				return
			}
			if len(c.Args()) == 1 && c.Args()[0].Kind() != celast.LiteralKind {
				err = errors.New("join()'s separator must be a literal string")
			}
		}
	}))
	return err
}

// issuesError is CEL's compile errors as one line each, with their line
// and column, without the source excerpts CEL draws under them (the
// configuration's error names the field; the expression is in the file).
func issuesError(iss *cel.Issues) error {
	var msgs []string
	for _, e := range iss.Errors() {
		msg := strings.TrimSuffix(e.Message, " (in container '')")
		msgs = append(msgs, fmt.Sprintf("%s (at %d:%d)", msg, e.Location.Line(), e.Location.Column()+1))
	}
	if len(msgs) == 0 {
		return errors.New(strings.TrimSpace(iss.String()))
	}
	return errors.New(strings.Join(msgs, "; "))
}

func typeName(t *cel.Type) string {
	if t == nil {
		return "no value"
	}
	return t.String()
}

func isDyn(t *cel.Type) bool { return t.Kind() == types.DynKind || t.Kind() == types.AnyKind }

func stringType(t *cel.Type) bool { return isDyn(t) || t.Kind() == types.StringKind }

func keyType(t *cel.Type) bool {
	switch t.Kind() {
	case types.StringKind, types.IntKind, types.UintKind, types.NullTypeKind:
		return true
	}
	return isDyn(t)
}

func inputType(t *cel.Type) bool {
	switch t.Kind() {
	case types.StringKind, types.IntKind, types.UintKind, types.DoubleKind, types.BoolKind, types.MapKind, types.ListKind:
		return true
	}
	return isDyn(t)
}

// Event is what the expressions read. Data is only read when UsesData.
type Event struct {
	Data    any
	Subject string
	Header  nats.Header
	// CE holds a CloudEvent's attributes, nil when there is none.
	CE map[string]any
	// MaxInput is the largest input the route takes, in bytes; 0 is no
	// limit. A map or list is not formatted past it (ErrInputTooLarge).
	MaxInput int
}

// ErrInputTooLarge is the error of Eval when the input would be longer than
// Event.MaxInput: the event is refused whole, never cut to fit.
var ErrInputTooLarge = errors.New("the input is longer than max_input_bytes")

// Result is what a mapping gave for one event. A field's Has* is false when
// the mapping does not set that field.
type Result struct {
	Input              string
	HasInput           bool
	ConversationKey    string
	HasConversationKey bool
	TriggerID          string
	HasTriggerID       bool
}

// Eval runs the expressions over ev. An error wraps ErrEval and is one
// line, at most a few hundred bytes, starting with the field
// ("input: no such key: summary"). Eval does not check lengths: the
// caller applies its own limits to the results.
func (m *Mapping) Eval(ctx context.Context, ev *Event) (Result, error) {
	var r Result
	if m == nil {
		return r, nil
	}
	act := &activation{ev: ev}
	if m.triggerID != nil {
		v, err := m.triggerID.eval(ctx, act)
		if err != nil {
			return r, err
		}
		s, ok := v.Value().(string)
		if !ok {
			return r, m.triggerID.fail(fmt.Errorf("gives %s, not a string", kind(v)))
		}
		r.TriggerID, r.HasTriggerID = s, true
	}
	if m.input != nil {
		v, err := m.input.eval(ctx, act)
		if err != nil {
			return r, err
		}
		s, err := inputText(v, ev.MaxInput)
		if err != nil {
			return r, m.input.fail(err)
		}
		if s == "" {
			return r, m.input.fail(errors.New("the input is empty"))
		}
		r.Input, r.HasInput = s, true
	}
	if m.conversationKey != nil {
		v, err := m.conversationKey.eval(ctx, act)
		if err != nil {
			return r, err
		}
		switch x := v.(type) {
		case types.String:
			r.ConversationKey = string(x)
		case types.Int, types.Uint:
			r.ConversationKey = fmt.Sprint(x.Value())
		case types.Null:
		default:
			return r, m.conversationKey.fail(fmt.Errorf("gives %s, not a string, an integer or null", kind(v)))
		}
		r.HasConversationKey = true
	}
	return r, nil
}

func (p *program) eval(ctx context.Context, act *activation) (ref.Val, error) {
	if p.tmpl != nil {
		if s, ok := p.tmpl.eval(act.ev); ok {
			return types.String(s), nil
		}
	}
	v, _, err := p.prg.ContextEval(ctx, act)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "cost limit exceeded"):
			err = fmt.Errorf("the expression exceeded its cost limit of %d", MaxCost)
		case ctx.Err() != nil:
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return nil, p.fail(err)
	}
	return v, nil
}

func (p *program) fail(err error) error {
	return evalError{field: p.field, err: err}
}

// evalError is an evaluation error: one line, bounded, wrapping ErrEval.
type evalError struct {
	field string
	err   error
}

func (e evalError) Error() string {
	return oneLine(e.field+": "+e.err.Error(), maxErrorLen)
}

func (e evalError) Unwrap() []error { return []error{ErrEval, e.err} }

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "..."
	}
	return s
}

func kind(v ref.Val) string {
	if v == nil {
		return "nothing"
	}
	return v.Type().TypeName()
}

var jsonValueType = reflect.TypeOf(&structpb.Value{})

// inputText formats an input expression's value, at most max bytes of it
// when max > 0.
func inputText(v ref.Val, max int) (string, error) {
	switch x := v.(type) {
	case types.String:
		return string(x), nil
	case types.Null:
		return "", errors.New("the input is null")
	case types.Int, types.Uint, types.Double, types.Bool:
		s := v.ConvertToType(types.StringType)
		if types.IsError(s) {
			return "", fmt.Errorf("%v", s)
		}
		return string(s.(types.String)), nil
	}
	switch v.(type) {
	case traits.Mapper, traits.Lister:
		if max > 0 && jsonSize(v, max) > max {
			return "", fmt.Errorf("%w (%d bytes) as JSON", ErrInputTooLarge, max)
		}
		native, err := v.ConvertToNative(jsonValueType)
		if err != nil {
			return "", fmt.Errorf("gives a %s that is not JSON: %w", kind(v), err)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(native.(*structpb.Value).AsInterface()); err != nil {
			return "", err
		}
		out := strings.TrimSuffix(b.String(), "\n")
		if max > 0 && len(out) > max {
			return "", fmt.Errorf("%w (%d bytes) as JSON", ErrInputTooLarge, max)
		}
		return out, nil
	}
	return "", fmt.Errorf("gives %s, not a string", kind(v))
}

// jsonSize is a lower bound of the size of v's JSON, counted only until it
// passes limit: a list of the same long string a million times (a map()
// over the event builds one cheaply) is refused without being written out.
func jsonSize(v ref.Val, limit int) int {
	n := 0
	var walk func(v ref.Val)
	walk = func(v ref.Val) {
		if n > limit {
			return
		}
		switch x := v.(type) {
		case types.String:
			n += len(x) + 2
		case types.Bytes:
			n += (len(x)+2)/3*4 + 2
		case traits.Lister:
			n += 2
			it := x.Iterator()
			for first := true; it.HasNext() == types.True && n <= limit; first = false {
				if !first {
					n++
				}
				walk(it.Next())
			}
		case traits.Mapper:
			n += 2
			it := x.Iterator()
			for first := true; it.HasNext() == types.True && n <= limit; first = false {
				if !first {
					n++
				}
				k := it.Next()
				n++
				walk(k)
				walk(x.Get(k))
			}
		default:
			n++
		}
	}
	walk(v)
	return n
}

// activation resolves the variables from an Event, building each only when
// an expression reads it.
type activation struct {
	ev      *Event
	tokens  ref.Val
	headers ref.Val
	ce      ref.Val
}

var emptyMap = types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{})

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "data":
		return a.ev.Data, true
	case "subject":
		return a.ev.Subject, true
	case "tokens":
		if a.tokens == nil {
			a.tokens = types.NewStringList(types.DefaultTypeAdapter, strings.Split(a.ev.Subject, "."))
		}
		return a.tokens, true
	case "headers":
		if a.headers == nil {
			m := make(map[string]string, len(a.ev.Header))
			for k, vv := range a.ev.Header {
				if len(vv) > 0 {
					m[k] = vv[0]
				}
			}
			a.headers = types.NewStringStringMap(types.DefaultTypeAdapter, m)
		}
		return a.headers, true
	case "ce":
		if a.ce == nil {
			if a.ev.CE == nil {
				a.ce = emptyMap
			} else {
				a.ce = types.NewStringInterfaceMap(types.DefaultTypeAdapter, a.ev.CE)
			}
		}
		return a.ce, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }
