package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/config"
)

// pausedForever is how far ahead "pause until resumed" sets the pause.
const pausedForever = 100 * 365 * 24 * time.Hour

func newPauseCmd(e *env, g *globalFlags) *cobra.Command {
	var until string
	cmd := &cobra.Command{
		Use:   "pause ROUTE",
		Short: "Stop delivery for one route on every replica (JetStream consumer pause)",
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

func newResumeCmd(e *env, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "resume ROUTE",
		Short: "Resume delivery for a paused route",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, r, err := connectForRoute(cmd.Context(), e, g, args[0])
			if err != nil {
				return err
			}
			defer t.Close()
			if _, err := t.js.ResumeConsumer(cmd.Context(), r.Stream, r.Durable); err != nil {
				return consumerError(r.Name, r.Stream, r.Durable, "resuming", err)
			}
			printf(e.stdout, "resumed route %s (consumer %s on %s)\n", r.Name, r.Durable, r.Stream)
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
