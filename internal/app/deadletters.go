package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// maxBacklogLetters bounds how many dead letters' headers one replica reads
// for agentrelay_dead_letters_waiting (a few hundred bytes each). Beyond it
// the counts cover the oldest letters only, and a warning says so; the
// oldest ages stay right.
const maxBacklogLetters = 100_000

// watchDeadLetters exports the dead-letter backlog
// (agentrelay_dead_letters_waiting, agentrelay_dead_letter_oldest_age_seconds)
// every interval, until the returned stop is called. A stream that did not
// change costs one stream info request (see dlq.Backlog).
func watchDeadLetters(ctx context.Context, js jetstream.JetStream, cfg *config.Config, m *telemetry.Metrics, log *slog.Logger, interval time.Duration) (stop func()) {
	routes, reasons := routeNames(cfg), dlq.Reasons()
	if interval <= 0 {
		// worker.lag_interval left out: the relay's default, as the
		// relay resolves it (a zero interval would panic the ticker).
		interval = consumer.DefaultLagInterval
	}
	b := dlq.NewBacklog(js, appconfig.DeadLetter(cfg.DeadLetter), routes, maxBacklogLetters)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		failing, truncated := false, false
		for {
			rctx, rcancel := context.WithTimeout(ctx, max(interval, 10*time.Second))
			w, err := b.Refresh(rctx)
			rcancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if !failing {
					log.Warn("reading the dead-letter stream for agentrelay_dead_letters_waiting failed; the gauges keep their last values", "err", err)
				}
				failing = true
			default:
				if failing {
					log.Info("reading the dead-letter stream for agentrelay_dead_letters_waiting works again")
				}
				if !w.Complete && !truncated {
					log.Warn("more dead letters than agentrelay_dead_letters_waiting counts: it covers the oldest only", "max", maxBacklogLetters)
				}
				failing, truncated = false, !w.Complete
				waiting := make(map[telemetry.DeadLetterKey]int, len(w.Letters))
				for k, n := range w.Letters {
					waiting[telemetry.DeadLetterKey{Route: k.Route, Reason: k.Reason}] = n
				}
				m.SetDeadLetterBacklog(routes, reasons, waiting, w.Oldest)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
