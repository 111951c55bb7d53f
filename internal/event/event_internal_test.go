package event

import (
	"strings"
	"testing"
)

// The decoder's tests that need its unexported halves (decodeFast,
// decodeStrict); the contract tests are in message_test.go.

// TestDecodeFastMatchesStrict checks the fast path against the strict
// decoder (encoding/json for values, exact keys) on bodies at the edges of
// what it handles: wherever it answers, the answer is the strict decoder's.
func TestDecodeFastMatchesStrict(t *testing.T) {
	t.Parallel()
	for _, body := range fastSeeds {
		checkFast(t, []byte(body))
	}
}

var fastSeeds = []string{
	string(benchBody),
	`{"input":"x"}`, ` {"input":"x"} `, "\t{\n\"input\" : \"x\" ,\r\"conversation_key\":\"k\"}\n",
	`{"conversation_key":"k","input":"x"}`, `{"input":"x","input":"y"}`, `{"Input":"x"}`, `{"INPUT":"x"}`,
	`{"input":"x","conversation_key":null}`, `{"input":null}`, `{"input":""}`, `{}`, `{"input":1}`,
	`{"input":"x",}`, `{"input":"x"}x`, `{"input":"x"}{}`, `{"input":"a\"b\\c\/d\be\ff\ng\rh\ti"}`,
	`{"input":"\u00e9\u0041\u00E9\u20ac"}`, `{"input":"\ud83d\ude00"}`, `{"input":"\ud800"}`, `{"input":"\u12"}`,
	`{"input":"\u12g4"}`, `{"input":"\x"}`, "{\"input\":\"a\x01b\"}", `{"in\u0070ut":"x"}`, `{"input":"x"`,
	`{"input" "x"}`, `{"input":"x" "conversation_key":"k"}`, `["x"]`, `"x"`, ``, ` `, `{"input":"\u0000"}`,
	`{"input":"x","conversationKey":"k"}`, `{"inpu\u017f":"x"}`, "\u00a0{\"input\":\"x\"}", `{"input":"x"} `,
	`{"input":"caf` + "\u00e9" + `\u2028"}`, `{"input":"\u+123"}`, `{"input":"\u-123"}`,
	`{"input":"benign","INPUT":"evil"}`, `{"input":"x","conversation_\u212aey":"k"}`, "{\"conversation_\u212aey\":\"k\",\"input\":\"x\"}",
	`{"input":"a","\u0069nput":"b"}`, `{"input":"x","conversation_key":null,"conversation_key":"k"}`,
}

func checkFast(t *testing.T, data []byte) {
	t.Helper()
	if !validUTF8(data) {
		return
	}
	got, ok := decodeFast(data)
	if !ok {
		return
	}
	want, err := decodeStrict(data)
	if err != nil {
		t.Fatalf("%q: fast path accepted what the strict decoder refuses: %v", data, err)
	}
	// A key the fast path accepts may be absent, which Decode treats as
	// "" like a null.
	if got != want {
		t.Fatalf("%q: fast path %+v, strict decoder %+v", data, got, want)
	}
}

func FuzzDecodeFastMatchesStrict(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkFast(t, data) })
}

func validUTF8(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }
