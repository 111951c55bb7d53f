package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Micro-benchmarks of the per-message hot path: decode, idempotency key,
// decide. Run with
//
//	go test -run '^$' -bench . -benchmem ./internal/event/ ./consumer/ ./agentapi/

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
			c := Contract{}.WithDefaults()
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

// BenchmarkDecodeBody compares the hand-written fast path with what
// encoding/json alone costs for the same bodies (the strict token walk plus
// the lone-surrogate check, which is what Decode would do without
// decodeFast): issue #13 asks whether the hand-written decoder earns its
// place. The parts Decode does either way (utf8.Valid, the key check) are
// left out.
func BenchmarkDecodeBody(b *testing.B) {
	long := `{"input":"` + strings.Repeat("The quarterly export times out after two minutes. ", 80) + `","conversation_key":"conv-711"}`
	for _, bc := range []struct{ name, body string }{
		{"plain", string(benchBody)},
		{"escapes", `{"input":"Line one\nLine \"two\"\tcaf\u00e9 \\ end","conversation_key":"conv-711"}`},
		{"4KiB", long},
	} {
		data := []byte(bc.body)
		b.Run(bc.name+"/hand-written", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, ok := decodeFast(data); !ok {
					b.Fatal("fast path refused")
				}
			}
		})
		b.Run(bc.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				f, err := decodeStrict(data)
				if err != nil || mangled(data, f.input, f.conversationKey) {
					b.Fatal(err)
				}
			}
		})
		// The cheapest encoding/json can do, for scale: json.Unmarshal
		// into a struct. It is not enough on its own (keys match without
		// regard to case, the last of repeated keys wins), so it is not
		// a candidate, only a lower bound for one.
		b.Run(bc.name+"/json-unmarshal-lower-bound", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var v struct {
					Input           *string `json:"input"`
					ConversationKey *string `json:"conversation_key"`
				}
				if err := json.Unmarshal(data, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
