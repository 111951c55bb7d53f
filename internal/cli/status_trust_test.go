package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/routestatus"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// forger answers the status service's requests for route thread like a
// replica would, with what it likes: it subscribes to the subjects a
// replica does (the ones NATS permissions must keep for the worker's role)
// and lists itself in the service's INFO.
func forger(t *testing.T, s *stack, answers map[string][]byte) {
	t.Helper()
	nc, _ := s.nats.Connect(t)
	route := inspect.Route{Name: "thread", Stream: stream, Durable: "agentrelay-thread"}
	info, _ := json.Marshal(micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: routestatus.ServiceName, ID: "forged1"},
		Endpoints: []micro.EndpointInfo{{Name: "status-thread", Subject: routestatus.Subject(route.Stream, route.Durable)}}})
	for _, subj := range []string{routestatus.Subject(route.Stream, route.Durable), routestatus.OrderedSubject(route.Stream, route.Durable), "$SRV.INFO.agentrelay"} {
		_, err := nc.Subscribe(subj, func(m *nats.Msg) {
			if m.Subject == "$SRV.INFO.agentrelay" {
				_ = m.Respond(info)
				return
			}
			_ = m.Respond(answers[m.Subject])
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// forgedOrdered is an owner's answer with negative counts and 5,000 keys.
func forgedOrdered(pin string) routestatus.Ordered {
	o := routestatus.Ordered{Route: "thread", PinID: pin, Holding: -5, Running: -1, BlockedKeys: 5000}
	for i := range 5000 {
		o.Blocked = append(o.Blocked, routestatus.BlockedKey{Key: fmt.Sprintf("forged-%d", i), Waiting: 1, OldestSeq: uint64(i + 1), Since: time.Now()})
	}
	return o
}

// Anyone who may answer on the status subjects can answer anything:
// status believes no answer that breaks a bound (negative counts, more
// keys than it asked for), shows none of it, says it refused it and whose
// it was.
func TestStatusRefusesAForgedAnswer(t *testing.T) {
	t.Parallel()
	s := orderedStack(t)
	s.startWorker()
	s.publish("work.thread.x", `{"input":"s0","conversation_key":"stuck"}`, "forged-0")
	var pin string
	testenv.Eventually(t, 10*time.Second, "the route pinned", func() bool {
		c, err := s.nats.JS.Consumer(context.Background(), stream, "agentrelay-thread")
		if err != nil {
			return false
		}
		for _, g := range c.CachedInfo().PriorityGroups {
			pin = g.PinnedClientID
		}
		return pin != ""
	})
	s.stop() // the pin stays for its TTL: only the forger answers now
	// Made once, before: the forger answers at once (under the race
	// detector, marshalling 5,000 keys takes a while).
	o := forgedOrdered(pin)
	old, _ := json.Marshal(o)
	forged, _ := json.Marshal(routestatus.Answer{Replica: routestatus.Replica{ID: "forged1", Host: "evil"},
		Status: routestatus.Status{Route: "thread", Health: "healthy", InFlight: -3, Limit: 64, Ordered: &o}})
	forger(t, s, map[string][]byte{"agentrelay.ordered.WORK.agentrelay-thread": old, "agentrelay.status.WORK.agentrelay-thread": forged})
	// --wait: room for a loaded machine; status stops as soon as every
	// replica the service's INFO lists (the forger) has answered.
	code, out, errOut := s.cli("", "status", "--json", "--blocked-keys", "10", "--wait", "20s")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: exit %d: %v\n%s%s", code, err, out, errOut)
	}
	var thread *struct{}
	for _, r := range rep.Routes {
		if r.Route != "thread" {
			continue
		}
		thread = &struct{}{}
		if r.OwnerHolds != nil {
			t.Errorf("status shows the forged answer as the owner's: holding %d, %d keys", r.OwnerHolds.Holding, len(r.OwnerHolds.Blocked))
		}
		if len(r.Replicas) != 1 || r.Replicas[0].Status != nil || r.Replicas[0].Refused == "" || r.Replicas[0].Replica.ID != "forged1" {
			t.Errorf("the forged answer is not reported as refused, with whose it was: %+v", r.Replicas)
		}
	}
	if thread == nil {
		t.Fatalf("no route thread in %s", out)
	}
	if strings.Contains(out, `":-`) || strings.Contains(out, "forged-10") {
		t.Errorf("status --json printed a negative count or more keys than asked for:\n%.2000s", out)
	}
	_, text, _ := s.cli("", "status", "--wait", "20s")
	if !strings.Contains(text, "answer refused, from replica forged1 (host evil)") || strings.Contains(text, "-5") {
		t.Errorf("status does not say it refused the forged answer:\n%s", text)
	}
}
