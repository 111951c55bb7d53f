package mapping

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/jsonvalue"
)

var bench2KiB = []byte(`{"ticket":{"id":"T-4711","priority":"high","customer":{"id":99123,"name":"Ada Lovelace","tier":"enterprise","region":"eu-west-1"},"tags":["billing","export","timeout","quarterly-report"]},"summary":"Exports of the quarterly report time out after two minutes","description":"` + strings.Repeat("The customer reports that the export of the quarterly report times out. ", 22) + `","created_at":"2026-12-01T09:30:00Z","source":"crm","version":3}`)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTemplate is a template over a 2 KiB event, evaluated directly
// (as Eval does) and by the interpreter (what it would cost without the
// template path). Compare cpu-ns/op.
func BenchmarkTemplate(b *testing.B) {
	m, err := Compile(Spec{Input: `"Ticket " + data.ticket.id + " (" + data.ticket.priority + "): " + data.summary + "\n\n" + data.description`})
	if err != nil {
		b.Fatal(err)
	}
	data, err := jsonvalue.Parse(bench2KiB)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("template", func(b *testing.B) {
		b.ReportAllocs()
		c0 := cpuTime()
		for b.Loop() {
			if _, err := m.Eval(ctx, &Event{Data: data}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-c0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("interpreter", func(b *testing.B) {
		b.ReportAllocs()
		c0 := cpuTime()
		for b.Loop() {
			if _, _, err := m.input.prg.ContextEval(ctx, &activation{ev: &Event{Data: data}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-c0)/float64(b.N), "cpu-ns/op")
	})
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	c0 := cpuTime()
	for b.Loop() {
		if _, err := jsonvalue.Parse(bench2KiB); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-c0)/float64(b.N), "cpu-ns/op")
}
