package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML library reports an unknown field in Go terms ("line 7: field
// max_in_flit not found in type config.RouteDefault"). yamlUnknownField
// recognises such a report, so that it can be said again in the file's
// terms: "routes[0].max_in_flit: unknown field (did you mean
// max_in_flight?) at line 7".
var yamlUnknownField = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)

// explainUnknownFields rewrites the YAML library's unknown-field reports
// among problems with the path of the field and the known field it most
// resembles, once each. A report it cannot place is kept as it is.
func explainUnknownFields(data []byte, problems []string) []string {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return problems
	}
	w := fieldWalker{found: map[lineKey]string{}, budget: 100_000}
	if len(root.Content) > 0 {
		w.walk(root.Content[0], reflect.TypeFor[Config](), "")
	}
	out := make([]string, 0, len(problems))
	seen := map[string]bool{}
	for _, p := range problems {
		if m := yamlUnknownField.FindStringSubmatch(p); m != nil {
			line, _ := strconv.Atoi(m[1])
			if msg, ok := w.found[lineKey{line, m[2]}]; ok {
				p = msg
			}
		}
		// A merged mapping's unknown key is reported once per merge.
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

type lineKey struct {
	line int
	key  string
}

// fieldWalker walks a YAML document along the Go type it decodes into and
// notes every key that names no field, with its path and a suggestion.
type fieldWalker struct {
	found  map[lineKey]string
	budget int // nodes left to visit: aliases could make the walk long
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *fieldWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	if w.budget--; w.budget < 0 {
		return
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch {
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			w.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				continue
			}
			if k.Tag == "!!merge" || (k.Value == "<<" && k.Style == 0) {
				w.walkMerge(v, t, path)
				continue
			}
			p := joinPath(path, k.Value)
			if ft, ok := fields[k.Value]; ok {
				w.walk(v, ft, p)
				continue
			}
			msg := p + ": unknown field"
			if s := suggest(k.Value, fields); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			// A key in a mapping merged into others ("<<: *a") is
			// named where it is written, the first place found.
			if lk := (lineKey{k.Line, k.Value}); w.found[lk] == "" {
				w.found[lk] = fmt.Sprintf("%s at line %d", msg, k.Line)
			}
		}
	}
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
		d := editDistance(k, norm(name))
		if d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
