package consumer

import (
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

func BenchmarkDecide(b *testing.B) {
	p := RetryPolicy{}.WithDefaults()
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
