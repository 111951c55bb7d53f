// Package inspect tells what NATS holds about agentrelay's routes and
// events, for the SRE commands: each route's status (its consumer, its dead
// letters, and what each replica answers of it) and the story of one event
// (where it is, its key, its state on each route, its dead letters and
// replays). It only reads; the commands in internal/cli parse flags and
// print what it returns.
package inspect

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// Source is what inspect reads: a configuration and a connection to its
// NATS.
type Source struct {
	Config *config.Config
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// ErrNoRoute is returned for a route name the configuration does not have.
var ErrNoRoute = errors.New("no such route in the configuration")

// Route is a configured route as the tools see it: where its consumer
// reads, named with the worker's defaults.
type Route struct {
	Name   string
	Stream string
	// Subjects are its consumer's filter subjects; none means every
	// subject of the stream.
	Subjects []string
	// Durable is its consumer's name.
	Durable string
	// Ordering is "conversation_key" for a route that runs the events of
	// one conversation key one at a time (OrderByConversationKey), else
	// "none".
	Ordering string
}

// OrderByConversationKey is the ordering of a route that runs the events
// of one conversation key one at a time, as the configuration file and
// status name it.
const OrderByConversationKey = "conversation_key"

// RouteOf is the configured route rc with the worker's defaults.
func RouteOf(rc config.Route) Route {
	r := Route{Name: rc.Name, Stream: rc.Stream, Subjects: rc.Subjects, Durable: rc.Durable, Ordering: rc.Ordering}
	if r.Durable == "" {
		r.Durable = routestatus.DefaultDurable(rc.Name)
	}
	if r.Ordering != OrderByConversationKey {
		r.Ordering = "none"
	}
	return r
}

// Route returns the configuration's route called name, with its defaults.
func (s *Source) Route(name string) (Route, error) {
	for _, r := range s.Config.Routes {
		if r.Name == name {
			return RouteOf(r), nil
		}
	}
	return Route{}, fmt.Errorf("%w: %q", ErrNoRoute, name)
}

// Routes returns the configuration's routes with their defaults.
func (s *Source) Routes() []Route {
	out := make([]Route, 0, len(s.Config.Routes))
	for _, r := range s.Config.Routes {
		out = append(out, RouteOf(r))
	}
	return out
}

// DeadLetterConfig is the configuration's dead-letter section, resolved.
func (s *Source) DeadLetterConfig() deadletter.Config {
	return appconfig.DeadLetter(s.Config.DeadLetter).WithDefaults()
}

// ReplayPolicy is where the configuration lets replays go: each route, the
// subjects its consumer captures (its stream's, when it filters none), the
// trigger it calls and its contract, mapping compiled (a route whose
// mapping does not compile is an error: config check reports it).
func (s *Source) ReplayPolicy(ctx context.Context, allowTriggerChange bool) (dlq.Policy, error) {
	p := dlq.Policy{AllowTriggerChange: allowTriggerChange}
	for _, r := range s.Config.Routes {
		filters := r.Subjects
		if len(filters) == 0 {
			st, err := s.JS.Stream(ctx, r.Stream)
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				// captures nothing: its letters are refused, saying why
			case err != nil:
				return p, fmt.Errorf("route %s: looking up stream %s: %w", r.Name, r.Stream, err)
			default:
				filters = st.CachedInfo().Config.Subjects
			}
		}
		// The contract as the worker reads with it, mapping included: a
		// replay's trigger id and key are what the mapping makes of it.
		contract, err := appconfig.Contract(r)
		if err != nil {
			return p, fmt.Errorf("route %s: %w", r.Name, err)
		}
		p.Routes = append(p.Routes, dlq.Route{Name: r.Name, Stream: r.Stream, TriggerID: r.TriggerID, Filters: filters, Contract: contract.WithDefaults()})
	}
	return p, nil
}

// isNotFound reports whether err says a stream message does not exist.
// The server answers a missing sequence with a 404 API error (10037),
// which the client does not always map to jetstream.ErrMsgNotFound.
func isNotFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrMsgNotFound) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound)
}

// Count is n and its noun, in the right number: "1 dead letter", "2 dead
// letters".
func Count[N ~int | ~int64 | ~uint64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprint(n) + " " + many
}

// orUnknown names a subject, or says it is unknown.
func orUnknown(subject string) string {
	if subject == "" {
		return "its subject (unknown)"
	}
	return subject
}
