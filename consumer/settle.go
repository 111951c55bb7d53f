package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

// This file carries out a verdict, once per message, with its bookkeeping:
// the ledger, the route's policy, the Finished observation, the delivery
// span and the log line. A message leaves the stream only after the API
// accepted it (ack) or its dead letter was stored (publish acknowledged by
// JetStream, then term).

// settle carries out act for the delivery d whose last attempt ended in
// out.
func (rn *runner) settle(d *delivery, out Outcome, act Action) {
	var settleErr error
	level, logMsg := slog.LevelInfo, "retrying"
	switch act.Verdict {
	case verdict.Ack:
		level, logMsg = rn.accepted(d), "accepted"
		rn.ledger.forget(d.seq())
		rn.policy.settling(d.msg, false)
		if settleErr = d.msg.Ack(); settleErr != nil {
			rn.m.SettleFailed("ack")
		}
	case verdict.Retry:
		if out.RouteWide || out.Class == ClassGated || out.Class == agentapi.ClassCanceled {
			level = slog.LevelDebug
		}
		settleErr = rn.retry(d.msg, act.Delay)
	case verdict.DeadLetter:
		act, out, level, logMsg, settleErr = rn.deadLetter(d, out, act)
	}
	rn.policy.settled(d.msg)
	rn.m.Finished(act.Verdict, string(out.Class), d.attempts.Delivered, time.Since(d.start).Seconds())
	d.span.settled(d, out, act, settleErr)
	if settleErr != nil {
		level = max(level, slog.LevelWarn)
	}
	if rn.log.Enabled(context.Background(), level) {
		rn.logSettled(level, logMsg, d, out, act, settleErr)
	}
}

// retry hands msg back: with a delay (a nak with a delay, counted as
// waiting), or at once for another replica.
func (rn *runner) retry(msg *pulledMsg, delay time.Duration) error {
	rn.policy.settling(msg, true)
	if delay <= 0 {
		rn.eng.giveBack(msg)
		return nil
	}
	if err := msg.NakWithDelay(delay); err != nil {
		rn.m.SettleFailed("nak")
		return err
	}
	rn.watch.retryWaits.add(time.Now().Add(delay))
	rn.m.RetryWaiting(1)
	return nil
}

// deadLetter stores d's dead letter and terminates the original. When the
// letter cannot be stored the verdict stands and the original is kept:
// tried again in place (an ordered route), or handed back with a backoff.
// It returns what was carried out.
func (rn *runner) deadLetter(d *delivery, out Outcome, act Action) (Action, Outcome, slog.Level, string, error) {
	for {
		stored, err := rn.storeLetter(d, out, act)
		if err == nil {
			rn.ledger.forget(d.seq())
			if stored.Form != deadletter.FormFull {
				// Sized down to what the server stores: say what is missing.
				rn.log.Warn("dead letter stored in a smaller form", "stream_seq", d.seq(), "form", string(stored.Form),
					"body_omitted", stored.BodyOmitted, "dropped_headers", stored.DroppedHeaders, "refusal", errString(stored.Refusal))
			}
			rn.m.DeadLettered(string(act.Reason))
			rn.policy.settling(d.msg, false)
			settleErr := d.msg.TermWithReason(string(act.Reason))
			if settleErr != nil {
				// The copy is stored; a redelivery publishes it again under
				// the same dead-letter message id and JetStream drops the
				// duplicate.
				rn.m.SettleFailed("term")
			}
			return act, out, slog.LevelWarn, "dead-lettered", settleErr
		}
		rn.m.DeadLetterFailed(rn.ledger.letterRefused(d.seq()))
		out.Err = withLetterError(out.Err, err)
		again, carried := rn.policy.onRetry(afterLetterRefused(d.attempts, rn.route.Retry, rn.relay.opts.Jitter()))
		if again {
			rn.logSettled(slog.LevelError, "dead-letter publish failed; holding the ordered event and retrying", d, out, act, nil)
			d.span.event("dead-letter publish failed; holding the ordered event", out)
			continue
		}
		carried.Reason = act.Reason
		return carried, out, slog.LevelError, "dead-letter publish failed; keeping the message and retrying", rn.retry(d.msg, carried.Delay)
	}
}

// storeLetter publishes d's dead letter and waits for JetStream's ack.
func (rn *runner) storeLetter(d *delivery, out Outcome, act Action) (deadletter.Stored, error) {
	f := deadletter.Facts{
		Reason: string(act.Reason), Class: string(out.Class), Status: out.Status,
		Route: rn.route.Name, TriggerID: d.dec.triggerID(rn.route),
		Attempts: d.attempts.Delivered, IdempotencyKey: d.dec.key,
	}
	if out.Err != nil {
		f.Error = out.Err.Error()
	}
	rn.policy.letter(d.msg, &f)
	ctx, cancel := context.WithTimeout(context.Background(), rn.relay.opts.DeadLetter.PublishTimeout)
	defer cancel()
	return rn.relay.dl.Publish(ctx, d.msg, d.md, f)
}

func withLetterError(err, letterErr error) error {
	if err == nil {
		return fmt.Errorf("dead-letter publish: %w", letterErr)
	}
	return fmt.Errorf("%w (dead-letter publish: %w)", err, letterErr)
}

func (rn *runner) logSettled(level slog.Level, logMsg string, d *delivery, out Outcome, act Action, settleErr error) {
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.Uint64("stream_seq", d.seq()),
		slog.Int("attempt", d.attempts.Delivered),
		slog.String("idempotency_key", d.dec.key),
		slog.String("class", string(out.Class)),
		slog.Duration("latency", time.Since(d.start)),
	)
	if rn.agents != nil {
		attrs = append(attrs, slog.String("trigger_id", d.dec.triggerID(rn.route)))
	}
	if d.attempts.Failed > 0 {
		attrs = append(attrs, slog.Int("failures", d.attempts.Failed))
	}
	if out.RouteWide {
		attrs = append(attrs, slog.Bool("route_wide", true))
	}
	if out.Status != 0 {
		attrs = append(attrs, slog.Int("status", out.Status))
	}
	switch act.Verdict {
	case verdict.Retry:
		attrs = append(attrs, slog.Duration("delay", act.Delay))
	case verdict.DeadLetter:
		attrs = append(attrs, slog.String("reason", string(act.Reason)))
	}
	if out.Err != nil {
		attrs = append(attrs, slog.String("err", out.Err.Error()))
	}
	if settleErr != nil {
		attrs = append(attrs, slog.String("settle_err", settleErr.Error()))
	}
	rn.log.LogAttrs(d.span.context(context.Background()), level, logMsg, attrs...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
