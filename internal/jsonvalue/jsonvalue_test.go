package jsonvalue

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
	}{
		{`"x"`, "x"},
		{` {"a": [1, -2, 3.5, 1e2, true, false, null, "s"]} `, map[string]any{"a": []any{int64(1), int64(-2), 3.5, 100.0, true, false, nil, "s"}}},
		{`9223372036854775807`, int64(math.MaxInt64)},
		{`9223372036854775808`, 9223372036854775808.0}, // past int64: a float
		{`-0`, int64(0)},
		{`{}`, map[string]any{}},
		{`[]`, []any{}},
		{`"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"`, "café 😀 \"q\" \\ / \b\f\n\r\t"},
		{`"Ünïcode ✓"`, "Ünïcode ✓"},
	} {
		got, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("Parse(%s): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%s) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "unexpected end"},
		{`{"a":1,"a":2}`, `the key "a" appears more than once`},
		{`{"a":{"b":1,"b":1}}`, `the key "b" appears more than once`},
		{`"\ud800"`, "lone surrogate"},
		{`"\udc00\ud800"`, "lone surrogate"},
		{`"\ud800x"`, "lone surrogate"},
		{"\"\xff\"", "not valid UTF-8"},
		{"\"a\nb\"", "control character"},
		{`{"a":1}x`, "data after the JSON value"},
		{`01`, "invalid number"},
		{`1.`, "invalid number"},
		{`-`, "invalid number"},
		{`1e999`, "out of range"},
		{`tru`, "invalid literal"},
		{`{"a" 1}`, "expected ':'"},
		{`[1 2]`, "expected ',' or ']'"},
		{`{a:1}`, "expected a string key"},
		{`"\x"`, "invalid escape"},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "nested deeper than 100"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an ErrSyntax saying %q", tc.in, err, tc.want)
		}
	}
	// As deep as allowed is fine.
	if _, err := Parse([]byte(strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth))); err != nil {
		t.Errorf("nesting of %d: %v", MaxDepth, err)
	}
}

func TestParseErrorQuotesKeysShortAndInASCII(t *testing.T) {
	key := "\u212a" + strings.Repeat("k", 500)
	_, err := Parse([]byte(`{"` + key + `":1,"` + key + `":2}`))
	if err == nil || len(err.Error()) > 200 || !strings.Contains(err.Error(), `\u212a`) {
		t.Fatalf("error %q: want a short one with the key in ASCII", err)
	}
}

func TestParseObjectKeepsOrderAndRawValues(t *testing.T) {
	ms, err := ParseObject([]byte(`{"b": {"x": [1, 2]} , "a":"s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Key != "b" || string(ms[0].Raw) != `{"x": [1, 2]}` || ms[1].Key != "a" || string(ms[1].Raw) != `"s"` || ms[1].Value != "s" {
		t.Fatalf("members %+v", ms)
	}
	for _, in := range []string{`[1]`, `"s"`, `{"a":1} 2`, `{"a":1,"a":1}`} {
		if _, err := ParseObject([]byte(in)); err == nil {
			t.Errorf("ParseObject(%s): no error", in)
		}
	}
}

// Whatever encoding/json parses without a repeated key, Parse parses to the
// same value (numbers aside: encoding/json's are float64).
func FuzzParseAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,"x",null,true]}`, `"\u00e9\ud83d\ude00"`, `[{"a":{}}]`, `-12e-3`, `{"a":1,"a":2}`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		var want any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		jerr := dec.Decode(&want)
		if jerr == nil && dec.More() {
			jerr = errors.New("more")
		}
		if err == nil && jerr != nil {
			t.Fatalf("Parse took %q, encoding/json refuses it: %v", data, jerr)
		}
		if err != nil || jerr != nil {
			return
		}
		if !reflect.DeepEqual(got, numbersAsParsed(want)) {
			t.Fatalf("Parse(%q) = %#v, encoding/json %#v", data, got, want)
		}
	})
}

func numbersAsParsed(v any) any {
	switch v := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil && !strings.ContainsAny(string(v), ".eE") {
			return n
		}
		f, _ := strconv.ParseFloat(string(v), 64)
		return f
	case map[string]any:
		for k, e := range v {
			v[k] = numbersAsParsed(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbersAsParsed(e)
		}
	}
	return v
}

var bench2KiB = []byte(`{"ticket":{"id":"T-4711","priority":"high","customer":{"id":99123,"name":"Ada Lovelace","tier":"enterprise","region":"eu-west-1"},"tags":["billing","export","timeout","quarterly-report"]},"summary":"Exports of the quarterly report time out after two minutes","description":"` + strings.Repeat("The customer reports that the export of the quarterly report times out. ", 22) + `","created_at":"2026-12-01T09:30:00Z","source":"crm","version":3}`)

func BenchmarkParse2KiB(b *testing.B) {
	b.Run("jsonvalue", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(bench2KiB)))
		for b.Loop() {
			if _, err := Parse(bench2KiB); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(bench2KiB)))
		for b.Loop() {
			var v any
			if err := json.Unmarshal(bench2KiB, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// special agrees with the byte-by-byte rule on every word tried: each byte
// value in each position, among ordinary bytes.
func TestSpecialFindsEveryQuoteBackslashAndControl(t *testing.T) {
	for pos := 0; pos < 8; pos++ {
		for c := 0; c < 256; c++ {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			w := uint64(0)
			for i := 7; i >= 0; i-- {
				w = w<<8 | uint64(b[i])
			}
			want := c < 0x20 || c == '"' || c == '\\'
			if got := special(w); got != want {
				t.Fatalf("byte %#x at %d: special = %v", c, pos, got)
			}
		}
	}
}
