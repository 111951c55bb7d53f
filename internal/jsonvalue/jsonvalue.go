// Package jsonvalue parses the JSON of an arbitrary producer's event into
// plain Go values, for the expressions of a route's mapping to read: objects
// as map[string]any, arrays as []any, strings, numbers as int64 when they
// are integers that fit and float64 otherwise, booleans and nil.
//
// It is strict where encoding/json is lenient, for the reason the message
// contract is (internal/event): every reader of an event must see the same
// event. A key repeated in an object, invalid UTF-8 and escapes of lone
// surrogates are refused rather than resolved (encoding/json keeps the last
// of repeated keys and turns the rest into U+FFFD). It is also faster than
// encoding/json's reflection into `any` (a 2 KiB event in about a third of
// the time, see BENCHMARKS.md), which matters on a mapped route: every
// event is parsed.
package jsonvalue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrSyntax is the error of every input that is not one JSON value by the
// rules above.
var ErrSyntax = errors.New("not valid JSON")

// MaxDepth bounds how deeply arrays and objects nest: deeper input is an
// error, not a deep recursion.
const MaxDepth = 100

// Parse parses data as exactly one JSON value, with only whitespace around.
func Parse(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrSyntax)
	}
	p := parser{data: data}
	p.skipWS()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.i != len(p.data) {
		return nil, p.fail("data after the JSON value")
	}
	return v, nil
}

// Member is one member of an object parsed by ParseObject: its key, its
// value and the bytes it was parsed from.
type Member struct {
	Key   string
	Value any
	Raw   []byte
}

// ParseObject parses data as exactly one JSON object and returns its members
// in the order they appear, each with its raw JSON (a sub-slice of data).
// What is not an object is an error that says so.
func ParseObject(data []byte) ([]Member, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrSyntax)
	}
	p := parser{data: data}
	p.skipWS()
	if p.i >= len(p.data) || p.data[p.i] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrSyntax)
	}
	var members []Member
	err := p.object(0, func(key string, start int, v any) bool {
		for _, m := range members {
			if m.Key == key {
				return false
			}
		}
		members = append(members, Member{Key: key, Value: v, Raw: data[start:p.i]})
		return true
	})
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.i != len(p.data) {
		return nil, p.fail("data after the JSON object")
	}
	return members, nil
}

type parser struct {
	data []byte
	i    int
}

func (p *parser) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrSyntax, what, p.i)
}

func (p *parser) skipWS() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (any, error) {
	if p.i >= len(p.data) {
		return nil, p.fail("unexpected end")
	}
	switch c := p.data[p.i]; {
	case c == '{':
		m := map[string]any{}
		err := p.object(depth, func(key string, _ int, v any) bool {
			if _, dup := m[key]; dup {
				return false
			}
			m[key] = v
			return true
		})
		return m, err
	case c == '[':
		return p.array(depth)
	case c == '"':
		return p.str()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, p.fail("unexpected character")
}

func (p *parser) literal(word string) error {
	if len(p.data)-p.i < len(word) || string(p.data[p.i:p.i+len(word)]) != word {
		return p.fail("invalid literal")
	}
	p.i += len(word)
	return nil
}

// object parses an object at p.i, calling add with each member's key, the
// offset its value starts at and its value; p.i is then just after the
// value. add reports false for a key the object already has: the objects
// being built are their own record of the keys seen.
func (p *parser) object(depth int, add func(key string, start int, v any) bool) error {
	if depth >= MaxDepth {
		return p.fail(fmt.Sprintf("nested deeper than %d", MaxDepth))
	}
	p.i++ // '{'
	p.skipWS()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			return p.fail("expected a string key")
		}
		keyAt := p.i
		key, err := p.str()
		if err != nil {
			return err
		}
		p.skipWS()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return p.fail("expected ':'")
		}
		p.i++
		p.skipWS()
		start := p.i
		v, err := p.value(depth + 1)
		if err != nil {
			return err
		}
		if !add(key, start, v) {
			p.i = keyAt
			return p.fail(fmt.Sprintf("the key %s appears more than once", quoteShort(key)))
		}
		p.skipWS()
		if p.i >= len(p.data) {
			return p.fail("unexpected end in an object")
		}
		switch p.data[p.i] {
		case ',':
			p.i++
			p.skipWS()
		case '}':
			p.i++
			return nil
		default:
			return p.fail("expected ',' or '}'")
		}
	}
}

func (p *parser) array(depth int) (any, error) {
	if depth >= MaxDepth {
		return nil, p.fail(fmt.Sprintf("nested deeper than %d", MaxDepth))
	}
	p.i++ // '['
	p.skipWS()
	out := []any{}
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		return out, nil
	}
	for {
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.skipWS()
		if p.i >= len(p.data) {
			return nil, p.fail("unexpected end in an array")
		}
		switch p.data[p.i] {
		case ',':
			p.i++
			p.skipWS()
		case ']':
			p.i++
			return out, nil
		default:
			return nil, p.fail("expected ',' or ']'")
		}
	}
}

// str parses the string at p.i (a '"'). The input is valid UTF-8 (checked
// once by the callers), so only escapes need decoding.
func (p *parser) str() (string, error) {
	p.i++
	start := p.i
	// Eight bytes at a time to the first that is a quote, a backslash or a
	// control character: most of a string's bytes are none of these.
	for p.i+8 <= len(p.data) && !special(binary.LittleEndian.Uint64(p.data[p.i:])) {
		p.i += 8
	}
	for p.i < len(p.data) {
		switch c := p.data[p.i]; {
		case c == '"':
			s := string(p.data[start:p.i])
			p.i++
			return s, nil
		case c == '\\':
			return p.unescape(start)
		case c < 0x20:
			return "", p.fail("control character in a string")
		}
		p.i++
	}
	return "", p.fail("unterminated string")
}

// special reports whether any of the eight bytes in w is '"', '\\' or a
// control character (below 0x20), with the classic bit tricks: a byte b is
// below n when (b - n) borrows into its high bit while b's high bit is
// clear; it equals c when b ^ c is below 1.
func special(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := func(x uint64, n uint64) uint64 { return (x - ones*n) & ^x & highs }
	return below(w, 0x20)|below(w^(ones*'"'), 1)|below(w^(ones*'\\'), 1) != 0
}

func (p *parser) unescape(start int) (string, error) {
	out := make([]byte, 0, p.i-start+16)
	out = append(out, p.data[start:p.i]...)
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), nil
		case c < 0x20:
			return "", p.fail("control character in a string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.data) {
			return "", p.fail("unterminated string")
		}
		switch e := p.data[p.i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4(p.i + 2)
			if !ok {
				return "", p.fail(`invalid \u escape`)
			}
			p.i += 6
			if utf16.IsSurrogate(r) {
				// A pair is one character; a lone half is none.
				lo, ok := p.hex4(p.i + 2)
				if r >= 0xdc00 || !ok || p.data[p.i] != '\\' || p.data[p.i+1] != 'u' {
					return "", p.fail("an escape that is not a Unicode character (a lone surrogate)")
				}
				if r = utf16.DecodeRune(r, lo); r == utf8.RuneError {
					return "", p.fail("an escape that is not a Unicode character (a lone surrogate)")
				}
				p.i += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return "", p.fail("invalid escape")
		}
		p.i += 2
	}
	return "", p.fail("unterminated string")
}

func (p *parser) hex4(at int) (rune, bool) {
	if at+4 > len(p.data) {
		return 0, false
	}
	var r rune
	for _, c := range p.data[at : at+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number parses a JSON number: an int64 when it has no fraction or
// exponent and fits, else a float64 (a finite one: 1e999 is an error).
func (p *parser) number() (any, error) {
	start := p.i
	if p.data[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	intStart := p.i
	if n := digits(); n == 0 || n > 1 && p.data[intStart] == '0' {
		return nil, p.fail("invalid number")
	}
	integer := true
	if p.i < len(p.data) && p.data[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.fail("invalid number")
		}
		integer = false
	}
	if p.i < len(p.data) && (p.data[p.i] == 'e' || p.data[p.i] == 'E') {
		p.i++
		if p.i < len(p.data) && (p.data[p.i] == '+' || p.data[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.fail("invalid number")
		}
		integer = false
	}
	text := string(p.data[start:p.i])
	if integer {
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) {
		p.i = start
		return nil, p.fail("number out of range")
	}
	return f, nil
}

// quoteShort quotes at most the first 40 bytes of s in ASCII: keys come
// from producers and errors go into logs and dead-letter headers.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%+q...", s[:max])
	}
	return fmt.Sprintf("%+q", s)
}
