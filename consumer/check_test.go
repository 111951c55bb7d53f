package consumer_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
)

// Check is the one place that decides what the relay accepts: zero means
// the default, negative is refused, and relations between fields are
// checked on the values the defaults give, never silently adjusted.
func TestCheckRefusesWhatDefaultsWouldHaveToAdjust(t *testing.T) {
	ok := consumer.Route{Name: "r", Stream: "S"}
	for _, tc := range []struct {
		name   string
		route  func(*consumer.Route)
		opts   consumer.Options
		route2 *consumer.Route
		want   string // "" for no problem; else the field of the one problem
	}{
		{name: "zero values are defaults", want: ""},
		{name: "negative max in flight", route: func(r *consumer.Route) { r.MaxInFlight = -1 }, want: "MaxInFlight"},
		{name: "ack pending below in flight", route: func(r *consumer.Route) { r.MaxInFlight, r.MaxAckPending = 10, 9 }, want: "MaxAckPending"},
		{name: "ack pending below the default in flight", route: func(r *consumer.Route) { r.MaxAckPending = 63 }, want: "MaxAckPending"},
		{name: "ack pending equal to in flight", route: func(r *consumer.Route) { r.MaxInFlight, r.MaxAckPending = 10, 10 }, want: ""},
		{name: "ack wait under the minimum", route: func(r *consumer.Route) { r.AckWait = 999 * time.Millisecond }, want: "AckWait"},
		{name: "ack wait at the minimum", route: func(r *consumer.Route) { r.AckWait = consumer.MinAckWait }, want: ""},
		{name: "NaN rate", route: func(r *consumer.Route) { r.MaxRate = math.NaN() }, want: "MaxRate"},
		{name: "unknown deliver policy", route: func(r *consumer.Route) { r.Deliver = "last" }, want: "Deliver"},
		{name: "unknown body format", route: func(r *consumer.Route) { r.Contract.Format = "yaml" }, want: "Contract.Format"},
		{name: "max backoff below the default initial", route: func(r *consumer.Route) { r.Retry.MaxBackoff = 500 * time.Millisecond }, want: "Retry.MaxBackoff"},
		{name: "initial backoff above the default max", route: func(r *consumer.Route) { r.Retry.InitialBackoff = 5 * time.Second }, want: "Retry.MaxBackoff"},
		{name: "multiplier below 1", route: func(r *consumer.Route) { r.Retry.Multiplier = 0.5 }, want: "Retry.Multiplier"},
		{name: "failure ratio above 1", route: func(r *consumer.Route) { r.Breaker.FailureRatio = 2 }, want: "Breaker.FailureRatio"},
		{name: "max probe interval below the probe interval", route: func(r *consumer.Route) { r.Breaker.ProbeInterval = 10 * time.Second }, want: "Breaker.MaxProbeInterval"},
		{name: "pull expiry too short for the heartbeat", opts: consumer.Options{PullExpiry: 2 * time.Second}, want: "PullExpiry"},
		{name: "default pull expiry too short for a long heartbeat", opts: consumer.Options{PullHeartbeat: 3 * time.Second}, want: "PullExpiry"},
		{name: "pull expiry just long enough", opts: consumer.Options{PullExpiry: 3 * time.Second, PullHeartbeat: time.Second}, want: ""},
		{name: "duplicate window longer than max age", opts: consumer.Options{DeadLetter: deadletter.Config{MaxAge: 30 * time.Minute}}, want: "DeadLetter.DuplicateWindow"},
		{name: "negative drain grace", opts: consumer.Options{DrainGrace: -time.Second}, want: "DrainGrace"},
		{name: "same name twice", route2: &consumer.Route{Name: "r", Stream: "T"}, want: "Name"},
		{name: "same default durable on one stream", route2: &consumer.Route{Name: "q", Stream: "S", Durable: "agentrelay-r"}, want: "Durable"},
		{name: "same durable on two streams", route2: &consumer.Route{Name: "q", Stream: "T", Durable: "agentrelay-r"}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			if tc.route != nil {
				tc.route(&r)
			}
			routes := []consumer.Route{r}
			if tc.route2 != nil {
				routes = append(routes, *tc.route2)
			}
			ps := consumer.Check(routes, tc.opts)
			switch {
			case tc.want == "" && len(ps) > 0:
				t.Errorf("refused: %v", ps)
			case tc.want != "" && (len(ps) != 1 || ps[0].Field != tc.want):
				t.Errorf("got %v, want one problem with %s", ps, tc.want)
			}
		})
	}
}

// New refuses what Check finds, rather than running with adjusted values.
func TestNewRefusesWhatCheckFinds(t *testing.T) {
	_, err := consumer.New(nil, []consumer.Route{{Name: "r", Stream: "S", Agent: nil, AckWait: time.Millisecond}}, consumer.Options{PullExpiry: time.Second})
	if err == nil {
		t.Fatal("New accepted a route with no agent, a short ack wait and a short pull expiry")
	}
	for _, want := range []string{"no agent", "AckWait", "PullExpiry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
