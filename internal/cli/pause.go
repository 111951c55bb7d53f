package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// pausedForever is how far ahead "pause until resumed" sets the pause.
const pausedForever = 100 * 365 * 24 * time.Hour

func newPauseCmd(e *env, g *globalFlags) *cobra.Command {
	var until string
	cmd := &cobra.Command{
		Use:               "pause ROUTE",
		ValidArgsFunction: completeRoutes(e, g, true),
		Short:             "Stop delivery for one route on every replica (JetStream consumer pause)",
		Long: `Pause the route's durable consumer on the server, so no replica receives its
messages until --until or "agentrelay resume ROUTE". Messages wait in the
stream; nothing is lost and no delivery attempt is spent. Needs nats-server
2.11 or later.

--until takes a time (RFC 3339) or a duration from now (30m, 2h, 1d); without
it the route stays paused until resumed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, r, err := connectForRoute(cmd.Context(), e, g, args[0])
			if err != nil {
				return err
			}
			defer t.Close()
			at := time.Now().Add(pausedForever)
			if until != "" {
				if at, err = parseFuture(until, time.Now()); err != nil {
					return usageError{fmt.Errorf("--until: %w", err)}
				}
			}
			resp, err := t.js.PauseConsumer(cmd.Context(), r.Stream, r.Durable, at)
			if err != nil {
				return consumerError(r.Name, r.Stream, r.Durable, "pausing", err)
			}
			if until == "" {
				printf(e.stdout, "paused route %s (consumer %s on %s) until resumed\n", r.Name, r.Durable, r.Stream)
			} else {
				printf(e.stdout, "paused route %s (consumer %s on %s) until %s\n", r.Name, r.Durable, r.Stream, resp.PauseUntil.UTC().Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&until, "until", "", "resume automatically at this time or after this duration")
	return cmd
}

// ErrNotPaused: resume was asked for a route whose consumer is not paused.
var ErrNotPaused = errors.New("not paused")

func newResumeCmd(e *env, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "resume ROUTE",
		ValidArgsFunction: completeRoutes(e, g, true),
		Short:             "Resume delivery for a paused route",
		Long: `Resume the route's durable consumer on the server, so every replica receives
its messages again. A route that is not paused is left alone, and resume
exits 1 saying so. A route paused by route health (a replica stopped it for
a route-wide condition, and probes) is resumed too, and route health pauses
it again if the condition still holds: see agentrelay status for why it
stopped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, r, err := connectForRoute(cmd.Context(), e, g, args[0])
			if err != nil {
				return err
			}
			defer t.Close()
			c, err := t.js.Consumer(cmd.Context(), r.Stream, r.Durable)
			if err != nil {
				return consumerError(r.Name, r.Stream, r.Durable, "looking up", err)
			}
			info := c.CachedInfo()
			if !info.Paused {
				return fmt.Errorf("route %s (consumer %s on %s) is %w: nothing to resume", r.Name, r.Durable, r.Stream, ErrNotPaused)
			}
			byHealth := info.Config.PauseUntil != nil && routestatus.IsHealthPause(*info.Config.PauseUntil)
			if _, err := t.js.ResumeConsumer(cmd.Context(), r.Stream, r.Durable); err != nil {
				return consumerError(r.Name, r.Stream, r.Durable, "resuming", err)
			}
			printf(e.stdout, "resumed route %s (consumer %s on %s)\n", r.Name, r.Durable, r.Stream)
			if byHealth {
				printf(e.stdout, "it was paused by route health: a replica pauses it again if the route's condition still holds (agentrelay status says why it stopped)\n")
			}
			return nil
		},
	}
}

// parseFuture reads a time (RFC 3339) or a duration from now.
func parseFuture(s string, now time.Time) (time.Time, error) {
	if t, ok := parseAbsolute(s); ok {
		if !t.After(now) {
			return time.Time{}, fmt.Errorf("%s is in the past", t.Format(time.RFC3339))
		}
		return t, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither a time (RFC 3339) nor a duration like 30m or 2h", s)
	}
	return now.Add(d), nil
}

// consumerError says clearly which of stream or consumer is missing.
func consumerError(route, stream, durable, doing string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("route %s: stream %s does not exist", route, stream)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return fmt.Errorf("route %s: consumer %s does not exist on stream %s (the worker creates it at start-up)", route, durable, stream)
	}
	return fmt.Errorf("route %s: %s consumer %s on %s: %w", route, doing, durable, stream, err)
}
