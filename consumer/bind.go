package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// binding is a route's JetStream consumer as this replica bound it, and
// what it remembers to bind it again.
type binding struct {
	cons          atomic.Pointer[jetstream.Consumer]
	rebinding     atomic.Bool
	ackFloor      atomic.Uint64 // the consumer's ack floor as last seen (stream sequence)
	streamCreated atomic.Int64  // the stream's creation time at bind, to tell a re-created stream
	clustered     atomic.Bool   // the consumer lives on a JetStream cluster
}

// credible reports whether a consumer info answer can be believed. In a
// cluster, a node that has just restarted and not yet set up its copy of
// the consumer answers with the configuration and an empty state (ack
// floor 0, nothing unsettled) and no cluster information; every answer of
// a node that knows the consumer carries it. An empty state taken for the
// truth would lift an ordered route's fence early, or re-create a deleted
// consumer from the start of its stream.
func (b *binding) credible(info *jetstream.ConsumerInfo) bool {
	return info.Cluster != nil || !b.clustered.Load()
}

// bind creates or updates the route's durable consumer (ManageConsumers),
// or looks it up and uses it as it is (ObserveConsumers).
//
// Where a consumer starts is only decided when it is created: an existing
// consumer keeps its own deliver policy (JetStream refuses to change it).
// When the consumer disappears under a running relay (deleted by hand, lost
// with its stream's leader) it is re-created after the last ack floor the
// relay saw, not from the start of the stream: with the configured policy
// ("all") every event the stream still retains would be triggered again.
// If the stream itself was re-created meanwhile, its sequence numbers mean
// something else, and the configured policy applies.
//
// An existing consumer that differs from the route is never changed
// silently: the differences are logged as a warning, whether bind rewrites
// the consumer or, observing, uses it as it is. Someone changed it on
// purpose (`nats consumer edit`, NACK), and a restart that undoes that
// without a word is how an operator's fix disappears.
func (rn *runner) bind(ctx context.Context) error {
	js := rn.relay.js
	st, err := js.Stream(ctx, rn.route.Stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("route %q: stream %q does not exist", rn.route.Name, rn.route.Stream)
		}
		return fmt.Errorf("route %q: looking up stream %q: %w", rn.route.Name, rn.route.Stream, err)
	}
	created := st.CachedInfo().Created.UnixNano()
	cfg := rn.route.ConsumerConfig()
	observe := rn.relay.opts.Consumers == ObserveConsumers
	existing, err := js.Consumer(ctx, rn.route.Stream, rn.route.Durable)
	var drift []string
	switch {
	case err == nil:
		ec := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = ec.DeliverPolicy, ec.OptStartSeq, ec.OptStartTime
		drift = ConsumerDrift(ec, cfg)
		if observe {
			if why := unusable(ec, rn.route); len(why) > 0 {
				return fmt.Errorf("route %q: %w: %q on stream %q: %s", rn.route.Name, ErrConsumerUnusable,
					rn.route.Durable, rn.route.Stream, strings.Join(why, "; "))
			}
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if observe {
			return fmt.Errorf("route %q: %w: %q on stream %q (consumers are observed, not managed: create it with NACK or the nats CLI)",
				rn.route.Name, ErrConsumerMissing, rn.route.Durable, rn.route.Stream)
		}
		if floor := rn.bound.ackFloor.Load(); floor > 0 && rn.bound.streamCreated.Load() == created {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = floor + 1
			rn.log.Error("consumer is gone; re-creating it after its last known ack floor (later messages are delivered again, with their original keys)",
				"consumer", rn.route.Durable, "start_seq", floor+1)
		}
	default:
		return fmt.Errorf("route %q: looking up consumer %q on stream %q: %w", rn.route.Name, rn.route.Durable, rn.route.Stream, err)
	}
	var c jetstream.Consumer
	if observe {
		c = existing
		if len(drift) > 0 {
			rn.log.Warn("consumer differs from the route; using it as it is, since consumers are observed, not managed",
				"consumer", rn.route.Durable, "diff", strings.Join(drift, "; "))
		}
	} else {
		if len(drift) > 0 {
			rn.log.Warn("consumer differs from the route; rewriting it to match (observe consumers instead to keep changes made with NACK or the nats CLI)",
				"consumer", rn.route.Durable, "diff", strings.Join(drift, "; "))
		}
		if c, err = js.CreateOrUpdateConsumer(ctx, rn.route.Stream, cfg); err != nil {
			return fmt.Errorf("route %q: creating or updating consumer %q on stream %q: %w",
				rn.route.Name, rn.route.Durable, rn.route.Stream, err)
		}
	}
	rn.bound.streamCreated.Store(created)
	// A consumer's info carries cluster information only when the consumer
	// is replicated by a JetStream cluster (a stream's info always does).
	rn.bound.clustered.Store(c.CachedInfo().Cluster != nil)
	rn.bound.ackFloor.Store(c.CachedInfo().AckFloor.Stream)
	rn.bound.cons.Store(&c)
	return nil
}

// rebind re-creates a consumer that was deleted under us (by an operator,
// or lost with a stream), once at a time, in the background.
func (rn *runner) rebind() {
	if !rn.bound.rebinding.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer rn.bound.rebinding.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rn.bind(ctx); err != nil {
			rn.log.Error("consumer is gone and could not be bound again", "consumer", rn.route.Durable, "err", err)
		}
	}()
}
