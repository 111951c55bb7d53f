package inspect_test

import (
	"testing"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/inspect"
)

// The tools name a route's consumer and ordering as the worker does,
// without linking it: the same defaults, the same words.
func TestRouteOfIsTheWorkersRoute(t *testing.T) {
	for _, rc := range []config.Route{
		{Name: "plain", Stream: "W"},
		{Name: "named", Stream: "W", Durable: "my-consumer", Subjects: []string{"w.a", "w.b"}},
		{Name: "ordered", Stream: "W", Ordering: "conversation_key"},
		{Name: "unordered", Stream: "W", Ordering: "none"},
	} {
		got, want := inspect.RouteOf(rc), app.Route(rc, nil).WithDefaults()
		if got.Name != want.Name || got.Stream != want.Stream || got.Durable != want.Durable ||
			len(got.Subjects) != len(want.Subjects) || got.Ordering != string(want.Ordering) {
			t.Errorf("%s: the tools see %+v, the worker runs %+v", rc.Name, got, want)
		}
	}
	if inspect.OrderByConversationKey != string(consumer.OrderByConversationKey) {
		t.Errorf("ordering %q, the worker's %q", inspect.OrderByConversationKey, consumer.OrderByConversationKey)
	}
}
