package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentrelay/agentrelay/internal/didyoumean"
)

// The YAML library reports what it cannot decode in Go terms ("line 9:
// cannot unmarshal !!str `lots` into int"), and its check for unknown
// fields names Go types. The fieldWalker walks the document along the Go
// types instead and says what does not fit in the file's terms, for the
// whole file at once: "routes[0].max_in_flit: unknown field (did you mean
// max_in_flight?) at line 7", "routes[0].max_in_flight: want a whole
// number, got "lots" at line 9".

// yamlProblem is a value of the file that does not fit the field it sets.
type yamlProblem struct {
	line int
	msg  string // "path: what is wrong at line N"
	// restates, when set, is the path whose validation problems only say
	// this one again: a field that could not be decoded is zero, and
	// "routes[0].trigger_id: required" after "routes[0].trigger_id: want a
	// single value, got a list" is noise. "" is the whole file.
	restates *string
}

// explainYAML lists what does not fit in the document root, in the file's
// terms and ordered by line: unknown fields, and the YAML library's
// decoding errors (problems) of root. It takes out of root what did not
// fit: unknown and repeated keys go, values of the wrong kind become their
// type's zero value. Then root decodes without an error, and every list in
// it keeps its length. An error the walker cannot place is kept as the
// library wrote it.
func explainYAML(root *yaml.Node, problems []string) []yamlProblem {
	w := fieldWalker{
		seen:    map[*yaml.Node]bool{},
		walked:  map[walkedKey]bool{},
		fields:  map[reflect.Type]map[string]reflect.Type{},
		decoded: len(problems) == 0,
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		w.walk(root.Content[0], reflect.TypeFor[Config](), "")
	}
	placed := map[int]bool{}
	for _, p := range w.found {
		placed[p.line] = true
	}
	out := w.found
	seen := map[string]bool{}
	for _, p := range problems {
		line, _, _ := cutYAMLLine(p)
		// A merged mapping's problem is reported once per merge.
		if (line == 0 || !placed[line]) && !seen[p] {
			seen[p] = true
			out = append(out, yamlProblem{line: line, msg: p})
		}
	}
	slices.SortStableFunc(out, func(a, b yamlProblem) int { return a.line - b.line })
	return out
}

// cutYAMLLine splits the YAML library's "line N: " prefix off a message.
// (A function rather than a package-level regexp: nothing is compiled at
// start-up for the rare bad file.)
func cutYAMLLine(msg string) (line int, rest string, ok bool) {
	num, rest, found := strings.Cut(strings.TrimPrefix(msg, "line "), ": ")
	if !found || !strings.HasPrefix(msg, "line ") {
		return 0, msg, false
	}
	line, err := strconv.Atoi(num)
	if err != nil {
		return 0, msg, false
	}
	return line, rest, true
}

// fieldWalker walks a YAML document along the Go type it decodes into and
// notes every value that does not fit: a key that names no field (with the
// field it most resembles), a key set twice, a value of the wrong kind.
type fieldWalker struct {
	found []yamlProblem
	seen  map[*yaml.Node]bool // nodes reported
	// walked: a mapping or a list is walked once per type, however many
	// aliases and merges lead to it, so that the walk is as long as the
	// document.
	walked map[walkedKey]bool
	fields map[reflect.Type]map[string]reflect.Type
	// decoded: the library reported nothing, so only what it takes
	// without a word is left to find (see fraction).
	decoded bool
}

type walkedKey struct {
	n *yaml.Node
	t reflect.Type
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *fieldWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		k := walkedKey{n, t}
		if w.walked[k] {
			return
		}
		w.walked[k] = true
	}
	switch {
	case reflect.PointerTo(t).Implements(unmarshalerType):
		w.decode(n, t, path)
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			w.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		w.walkMapping(n, t, path)
	default:
		w.decode(n, t, path)
	}
}

// walkMapping walks the keys of a mapping that sets the fields of t, and
// takes out the keys that set none, or set one again.
func (w *fieldWalker) walkMapping(n *yaml.Node, t reflect.Type, path string) {
	fields, ok := w.fields[t]
	if !ok {
		fields = yamlFields(t)
		w.fields[t] = fields
	}
	var keys map[string]*yaml.Node // to find a key set twice, which the library reports
	if !w.decoded {
		keys = map[string]*yaml.Node{}
	}
	var kept []*yaml.Node // n.Content without what is taken out, once something is
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, v := n.Content[i], n.Content[i+1]
		if w.walkKey(key, v, t, fields, keys, path) {
			if kept != nil {
				kept = append(kept, key, v)
			}
		} else if kept == nil {
			kept = append(make([]*yaml.Node, 0, len(n.Content)), n.Content[:i]...)
		}
	}
	if kept != nil {
		n.Content = kept
	}
}

// walkKey walks the pair key: v of a mapping that sets the fields of t, and
// reports whether it stays.
func (w *fieldWalker) walkKey(key, v *yaml.Node, t reflect.Type, fields map[string]reflect.Type, keys map[string]*yaml.Node, path string) bool {
	k := key
	for k.Kind == yaml.AliasNode && k.Alias != nil {
		k = k.Alias
	}
	if k.Kind != yaml.ScalarNode {
		w.add(k, nil, "%s: a key must be a name, not a list or a mapping, at line %d", where(path), k.Line)
		return false
	}
	if k.Tag == "!!merge" || (k.Value == "<<" && k.Style == 0) {
		w.walkMerge(v, t, path)
		return true
	}
	p := joinPath(path, k.Value)
	if first, ok := keys[k.Value]; ok {
		w.add(k, &p, "%s: set twice, at lines %d and %d", p, first.Line, k.Line)
		return false
	}
	if keys != nil {
		keys[k.Value] = k
	}
	if ft, ok := fields[k.Value]; ok {
		w.walk(v, ft, p)
		return true
	}
	msg := p + ": unknown field"
	var meant *string
	if s := suggest(k.Value, fields); s != "" {
		msg += " (did you mean " + s + "?)"
		meant = ptr(joinPath(path, s))
	}
	// A key in a mapping merged into others ("<<: *a") is named where it
	// is written, the first place found.
	w.add(k, meant, "%s at line %d", msg, k.Line)
	return false
}

// decode decodes the value n of the field at path, of type t, as the YAML
// library does, and notes why it does not fit; then n becomes the zero
// value.
func (w *fieldWalker) decode(n *yaml.Node, t reflect.Type, path string) {
	var err error
	if !w.decoded {
		err = n.Decode(reflect.New(t).Interface())
	}
	var msg string
	var te *yaml.TypeError
	switch {
	case err == nil && fraction(n, t):
		msg = mismatch(n, t)
	case err == nil:
		return
	case !errors.As(err, &te) || len(te.Errors) == 0:
		msg = err.Error()
	default:
		_, msg, _ = cutYAMLLine(te.Errors[0])
		if strings.HasPrefix(msg, "cannot unmarshal ") {
			msg = mismatch(n, t)
		}
	}
	w.add(n, &path, "%s: %s at line %d", where(path), msg, n.Line)
	// The zero value, not null: the library drops a list's element that
	// decodes from null.
	var zero yaml.Node
	if zero.Encode(reflect.Zero(t).Interface()) != nil {
		zero = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	zero.Line, zero.Column = n.Line, n.Column
	*n = zero
}

// add notes a problem found at node n, unless n was reported already.
func (w *fieldWalker) add(n *yaml.Node, restates *string, format string, args ...any) {
	if w.seen[n] {
		return
	}
	w.seen[n] = true
	w.found = append(w.found, yamlProblem{line: n.Line, msg: fmt.Sprintf(format, args...), restates: restates})
}

// walkMerge walks the value of a "<<" merge key: a mapping, or a list of
// them, whose keys belong to the mapping that holds the merge key.
func (w *fieldWalker) walkMerge(v *yaml.Node, t reflect.Type, path string) {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind != yaml.SequenceNode {
		w.walk(v, t, path)
		return
	}
	for _, e := range v.Content {
		w.walk(e, t, path)
	}
}

// mismatch says what the field of type t wants and what n is instead. It
// quotes n only where a number or a boolean is wanted: a value put where a
// mapping belongs may be a secret ("token: sk-..." for "token: {env: ...}").
func mismatch(n *yaml.Node, t reflect.Type) string {
	var want, note string
	switch t.Kind() {
	case reflect.Bool:
		want = "true or false"
	case reflect.Int, reflect.Int64:
		want = "a whole number"
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		lo, hi := intRange(t)
		want = fmt.Sprintf("a whole number from %d to %d", lo, hi)
	case reflect.Float32, reflect.Float64:
		want = "a number"
	case reflect.Slice:
		want = "a list"
	case reflect.Struct:
		want = "a mapping of settings"
		if t == reflect.TypeFor[Token]() {
			want, note = "{file: PATH} or {env: VARIABLE}", " (the token itself does not go in this file)"
		}
	default:
		want = "a single value"
	}
	got := "a single value"
	switch {
	case n.Kind == yaml.MappingNode:
		got = "a mapping"
	case n.Kind == yaml.SequenceNode:
		got = "a list"
	case t.Kind() != reflect.Slice && t.Kind() != reflect.Struct && t.Kind() != reflect.String:
		got = quote(n.Value)
	}
	return "want " + want + ", got " + got + note
}

// fraction reports whether n is a number with a fraction, which the YAML
// library truncates when t is an integer type.
func fraction(n *yaml.Node, t reflect.Type) bool {
	if k := t.Kind(); k < reflect.Int || k > reflect.Uint64 || n.Kind != yaml.ScalarNode || n.ShortTag() != "!!float" {
		return false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
	return err != nil || f != math.Trunc(f)
}

// intRange is the range of a sized integer type.
func intRange(t reflect.Type) (lo int64, hi uint64) {
	bits := t.Bits()
	if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64 {
		return 0, 1<<bits - 1
	}
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

// quote quotes a value from the file for a message, cut short when long.
func quote(s string) string {
	if len(s) > 40 {
		s = strings.ToValidUTF8(s[:40], "") + "..."
	}
	return strconv.Quote(s)
}

// where names a path for a message: the top of the file has none.
func where(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

func ptr[T any](v T) *T { return &v }

// yamlFields maps the YAML names of a struct's fields to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
		case strings.Contains(opts, "inline"):
			for k, v := range yamlFields(f.Type) {
				fields[k] = v
			}
		case name == "":
			fields[strings.ToLower(f.Name)] = f.Type
		default:
			fields[name] = f.Type
		}
	}
	return fields
}

// joinPath appends a key to a path, quoting a key that is not a plain
// name (and cutting a long one short): keys come from the file, and the
// path goes into an error message.
func joinPath(path, key string) string {
	plain := key != "" && len(key) <= 64
	for i := 0; i < len(key) && plain; i++ {
		c := key[i]
		plain = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
	}
	if !plain {
		if len(key) > 64 {
			key = strings.ToValidUTF8(key[:64], "") + "..."
		}
		return fmt.Sprintf("%s[%q]", path, key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest returns the known field that key most likely misspells, or "".
// Case, '_' and '-' are ignored ("maxInFlight" is max_in_flight), and a
// few typos are allowed, more in longer names.
func suggest(key string, fields map[string]reflect.Type) string {
	if len(key) > 64 {
		return ""
	}
	norm := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '_' || r == '-' {
				return -1
			}
			return r
		}, strings.ToLower(s))
	}
	k := norm(key)
	limit := min(1+len(k)/4, 3)
	best, bestD := "", limit+1
	for name := range fields {
		d := didyoumean.Distance(k, norm(name))
		if d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	return best
}
