package consumer_test

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

// A relay that has drained, once its connections are closed, leaves no
// goroutine behind: no pull loop, lag watcher, pull receiver, handler,
// keep-alive timer or rebind. The run goes through every settle path
// (accepted, retried after a 503, dead-lettered poison) so each has run.
func TestRelayLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// Cleanups run last-in first-out: this one after the harness has
	// closed the connections and stopped the server and the emulator.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	h := newHarness(t, emulator.WithTrigger("agtch_leak", true), emulator.WithFaults(emulator.Faults{Latency: 20 * time.Millisecond}))
	h.emu.Script(emulator.Fault{Kind: emulator.FaultServerError}, emulator.Fault{Kind: emulator.FaultServerError})
	r := h.route("leak", "events.leak.>", h.agent("agtch_leak"))
	run := h.start(r)
	for i := range 40 {
		body := `{"input":"x"}`
		if i%10 == 3 {
			body = `{"input":` // poison
		}
		h.publish("events.leak.x", body, nil, fmt.Sprintf("leak-%d", i))
	}
	h.waitSettled(30*time.Second, "leak")
	run.stop(t)
	if got := h.emu.LedgerLen(); got != 36 {
		t.Errorf("accepted %d events, want 36", got)
	}
}
