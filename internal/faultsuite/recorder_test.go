package faultsuite

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// The recorder's overlap check reports two calls of one ordered
// conversation in the API at once. A worker's own call that it gave up on
// (its timeout) is over for that worker, though the API may notice the
// hang-up a moment after the worker's next call arrives; the call still
// counts against every other worker.
func TestRecorderOverlapsIgnoreOnlyAWorkersOwnAbandonedCall(t *testing.T) {
	t.Parallel()
	const token, hang = "tok-recorder", "hang-me"
	emu := emulator.New(emulator.WithToken(token, triggerConvo))
	// A hang the client does not give up on ends after hangFor, the API
	// closing the connection.
	const hangFor = 5 * time.Second
	emu.SetFaults(emulator.Faults{HangFor: hangFor, ByInput: []emulator.InputFault{{Marker: hang, Fault: emulator.Fault{Kind: emulator.FaultHang}}}})
	api := startAPI(t, emu, 0, 1)

	// call sends one event of conversation ck from worker slot; its
	// client gives up when ctx ends.
	call := func(ctx context.Context, slot int, input, ck string) error {
		body := fmt.Sprintf(`{"input":%q,"conversation_key":%q}`, input, ck)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.WorkerURL(slot)+"/v1/workspace_agents/"+triggerConvo+"/trigger", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Idempotency-Key", input)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	inAPI := func(ck string, n int) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d calls of %s in the API", n, ck), func() bool {
			api.rec.mu.Lock()
			defer api.rec.mu.Unlock()
			return len(api.rec.convo[ck]) == n
		})
	}
	// hangUntil starts a call that hangs until the returned func gives up
	// on it and waits for the API to let it go.
	hangUntil := func(slot int, input, ck string) (giveUp func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = call(ctx, slot, input, ck)
		}()
		return func() { cancel(); <-done }
	}

	// Worker 1 abandons a hanging call, and its next call of the key
	// reaches the API before the API has noticed: not an overlap.
	giveUp := hangUntil(1, hang+"-a1", "same-worker")
	inAPI("same-worker", 1)
	next := hangUntil(1, hang+"-a2", "same-worker")
	inAPI("same-worker", 2)
	giveUp()
	next()

	// Worker 2 calls a key while worker 1's call is in the API, and
	// worker 1 gives that call up later: an overlap.
	giveUp = hangUntil(1, hang+"-b1", "other-worker")
	inAPI("other-worker", 1)
	if err := call(context.Background(), 2, "b2", "other-worker"); err != nil {
		t.Fatal(err)
	}
	giveUp()

	// Worker 1 calls a key again while its own first call is still in
	// the API, a call it never gives up on (the API ends it): an overlap.
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = call(context.Background(), 1, hang+"-c1", "still-running")
	}()
	inAPI("still-running", 1)
	if err := call(context.Background(), 1, "c2", "still-running"); err != nil {
		t.Fatal(err)
	}
	<-ended

	got := api.rec.keyOverlaps()
	if len(got) != 2 || !strings.HasPrefix(got[0], "other-worker (b2 from worker 2") || !strings.HasPrefix(got[1], "still-running (c2 from worker 1") {
		t.Fatalf("overlaps:\n%s\nwant other-worker's b2 (worker 2) and still-running's c2 (worker 1), nothing for same-worker", strings.Join(got, "\n"))
	}
	if n := api.rec.afterOwnAbandoned(); n != 1 {
		t.Errorf("%d calls after their worker's own abandoned call, want 1 (same-worker's a2)", n)
	}
}
