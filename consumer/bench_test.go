package consumer

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
)

// Micro-benchmarks of the per-message hot path: decode, idempotency key,
// decide. Run with
//
//	go test -run '^$' -bench . -benchmem ./consumer/ ./agentapi/

var benchBody = []byte(`{"input":"Summarise ticket 4711: the customer reports that exports of the quarterly report time out after two minutes and asks for a workaround.","conversation_key":"conv-711"}`)

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"plain", string(benchBody)},
		{"escapes", `{"input":"Line one\nLine \"two\"\tcaf\u00e9 \\ end","conversation_key":"conv-711"}`},
		// The reflective decoder, for comparison: what every body
		// cost before the fast path (and what unusual bodies still do).
		{"fallback", `{"input":"Summarise ticket 4711: the customer reports that exports of the quarterly report time out.","conversation_key":null}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := Contract{}
			data := []byte(bc.body)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, reason, err := c.Decode(data, nil); reason != "" {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkIdempotencyKey(b *testing.B) {
	md := &jetstream.MsgMetadata{Stream: "EVENTS", Timestamp: time.Unix(1700000000, 123)}
	md.Sequence.Stream = 123456
	b.Run("msg-id", func(b *testing.B) {
		h := nats.Header{jetstream.MsgIDHeader: []string{"01HZX3V7K9Q2M4N6P8R0S2T4V6"}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := IdempotencyKey(h, md); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("derived", func(b *testing.B) {
		h := nats.Header{}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := IdempotencyKey(h, md); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecide(b *testing.B) {
	p := RetryPolicy{}
	for _, o := range []Outcome{
		{Class: agentapi.ClassAccepted, Status: 202},
		{Class: agentapi.ClassServerError, Status: 503},
		{Class: ClassPoison, Reason: ReasonInvalidJSON},
	} {
		b.Run(string(o.Class), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Decide(o, Attempts{Delivered: 3, Failed: 3}, p, 0.5)
			}
		})
	}
}

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
