package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// logRecorder keeps what a relay logs, as JSON lines.
type logRecorder struct{ testenv.LogBuffer }

func (l *logRecorder) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

// records are the logged records at level.
func (l *logRecorder) records(t *testing.T, level string) []map[string]any {
	t.Helper()
	recs, err := l.Records(level)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// setUpOnce runs one relay's set-up for r in mode, with its logs in rec.
func setUpOnce(t *testing.T, h *harness, r consumer.Route, mode consumer.ConsumerMode, rec *logRecorder) error {
	t.Helper()
	relay, err := consumer.New(h.nats.JS, []consumer.Route{r}, consumer.Options{Consumers: mode, Logger: rec.logger()})
	if err != nil {
		t.Fatal(err)
	}
	return relay.Setup(ctxTimeout(t, 10*time.Second))
}

// operatorEdits changes the route's consumer the way `nats consumer edit
// --max-pending 1000 --wait 30s` does.
func operatorEdits(t *testing.T, h *harness, durable string) {
	t.Helper()
	c := h.consumerInfo(durable).Config
	c.MaxAckPending, c.AckWait = 1000, 30*time.Second
	if _, err := h.nats.JS.UpdateConsumer(context.Background(), stream, c); err != nil {
		t.Fatal(err)
	}
}

// The one WARN a set-up logged for the route's consumer, with its diff.
func driftWarning(t *testing.T, rec *logRecorder) string {
	t.Helper()
	var diffs []string
	for _, r := range rec.records(t, "WARN") {
		if d, ok := r["diff"].(string); ok {
			diffs = append(diffs, r["msg"].(string)+" | "+d)
		}
	}
	if len(diffs) != 1 {
		t.Fatalf("want one warning with a diff, got %q", diffs)
	}
	return diffs[0]
}

// `nats consumer edit ... --max-pending 1000` and a restart: in manage mode
// the relay puts the route's settings back, and says which it changed.
func TestConsumerDriftManageRestoresAndSaysSo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.route("dm", "events.dm.>", h.agent("agtch_dm")) // max_ack_pending 16 × 8
	if err := setUpOnce(t, h, r, consumer.ManageConsumers, &logRecorder{}); err != nil {
		t.Fatal(err)
	}
	operatorEdits(t, h, "agentrelay-dm")

	var rec logRecorder
	if err := setUpOnce(t, h, r, "", &rec); err != nil { // the default mode manages
		t.Fatal(err)
	}
	w := driftWarning(t, &rec)
	for _, want := range []string{"rewriting", "ack_wait: 30s -> 5s", "max_ack_pending: 1000 -> 128"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q does not say %q", w, want)
		}
	}
	if c := h.consumerInfo("agentrelay-dm").Config; c.MaxAckPending != 128 || c.AckWait != 5*time.Second {
		t.Errorf("consumer not restored: max_ack_pending %d, ack_wait %v", c.MaxAckPending, c.AckWait)
	}
}

// In observe mode the operator's consumer is used as it is: the relay
// warns with the same diff and changes nothing, and events still flow
// through it.
func TestConsumerDriftObserveLeavesTheOperatorsConsumerAlone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_do", true))
	r := h.route("do", "events.do.>", h.agent("agtch_do"))
	if err := setUpOnce(t, h, r, consumer.ManageConsumers, &logRecorder{}); err != nil {
		t.Fatal(err)
	}
	operatorEdits(t, h, "agentrelay-do")
	before := h.consumerInfo("agentrelay-do").Config

	var rec logRecorder
	h.startWith(func(o *consumer.Options) { o.Consumers, o.Logger = consumer.ObserveConsumers, rec.logger() }, r)
	w := driftWarning(t, &rec)
	for _, want := range []string{"using it as it is", "ack_wait: 30s -> 5s", "max_ack_pending: 1000 -> 128"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q does not say %q", w, want)
		}
	}
	if strings.Contains(w, "rewriting") {
		t.Errorf("observe mode warns of a rewrite: %q", w)
	}
	h.publish("events.do.x", `{"input":"x"}`, nil, "do-1")
	h.waitSettled(10*time.Second, "do")
	after := h.consumerInfo("agentrelay-do").Config
	if after.MaxAckPending != 1000 || after.AckWait != 30*time.Second || after.Description != before.Description {
		t.Errorf("observe mode changed the consumer: %+v", after)
	}
}

// A consumer that already matches the route is rewritten without a word:
// the warning means something changed, for ordered routes too.
func TestConsumerDriftUnchangedConsumerIsNotReported(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	plain := h.route("dp", "events.dp.>", h.agent("agtch_dp"))
	ordered := h.route("dq", "events.dq.>", h.agent("agtch_dq"))
	ordered.Ordering = consumer.OrderByConversationKey
	ordered.Subjects = []string{"events.dq.a", "events.dq.b"}
	for _, r := range []consumer.Route{plain, ordered} {
		for _, mode := range []consumer.ConsumerMode{consumer.ManageConsumers, consumer.ManageConsumers, consumer.ObserveConsumers} {
			var rec logRecorder
			if err := setUpOnce(t, h, r, mode, &rec); err != nil {
				t.Fatal(err)
			}
			if w := rec.records(t, "WARN"); len(w) > 0 {
				t.Errorf("route %s, %s: warnings for a consumer that matches: %v", r.Name, mode, w)
			}
		}
	}
}

// Observing, the relay never creates a consumer: a missing one is a set-up
// error (which Run's caller retries, as for a missing stream), and once the
// operator has created it, set-up binds it.
func TestConsumerObserveMissingIsASetupError(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.route("dx", "events.dx.>", h.agent("agtch_dx"))
	relay, err := consumer.New(h.nats.JS, []consumer.Route{r}, consumer.Options{Consumers: consumer.ObserveConsumers})
	if err != nil {
		t.Fatal(err)
	}
	err = relay.Setup(ctxTimeout(t, 10*time.Second))
	if !errors.Is(err, consumer.ErrConsumerMissing) || !strings.Contains(err.Error(), `"agentrelay-dx" on stream "EVENTS"`) {
		t.Fatalf("got %v, want ErrConsumerMissing naming the consumer", err)
	}
	if _, err := h.nats.JS.Consumer(context.Background(), stream, "agentrelay-dx"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("observe mode created the consumer (lookup: %v)", err)
	}
	if _, err := h.nats.JS.CreateConsumer(context.Background(), stream, r.ConsumerConfig()); err != nil {
		t.Fatal(err)
	}
	if err := relay.Setup(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Errorf("set-up after the operator created the consumer: %v", err)
	}
}

// A consumer agentrelay cannot work through at all is refused when
// observing, not used: with ack_policy none each message would be gone
// before its event was accepted.
func TestConsumerObserveRefusesAnUnusableConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.route("du", "events.du.>", h.agent("agtch_du"))
	cfg := r.ConsumerConfig()
	cfg.AckPolicy = jetstream.AckNonePolicy
	if _, err := h.nats.JS.CreateConsumer(context.Background(), stream, cfg); err != nil {
		t.Fatal(err)
	}
	err := setUpOnce(t, h, r, consumer.ObserveConsumers, &logRecorder{})
	if !errors.Is(err, consumer.ErrConsumerUnusable) || !strings.Contains(err.Error(), "ack_policy is none") {
		t.Errorf("got %v, want ErrConsumerUnusable for ack_policy none", err)
	}
}

func TestConsumerDriftNamesEachFieldTheirsToOurs(t *testing.T) {
	t.Parallel()
	ours := consumer.Route{Name: "r", Stream: "S", Subjects: []string{"a.>", "b.>"}, Ordering: consumer.OrderByConversationKey, MaxInFlight: 4}.ConsumerConfig()
	theirs := ours
	theirs.MaxAckPending, theirs.MaxDeliver, theirs.AckWait = 1000, 5, time.Minute
	theirs.FilterSubjects = []string{"a.>"}
	theirs.PriorityPolicy, theirs.PriorityGroups = jetstream.PriorityPolicyNone, nil
	theirs.Description, theirs.Metadata = "managed by NACK", map[string]string{"_nats.ver": "2.11"}
	got := consumer.ConsumerDrift(theirs, ours)
	want := []string{
		"ack_wait: 1m0s -> 4s",
		"max_ack_pending: 1000 -> 64",
		"max_deliver: 5 -> unlimited",
		"filter_subjects: [a.>] -> [a.> b.>]",
		"priority_policy: (none) -> pinned_client",
		"priority_groups: (none) -> [agentrelay]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff\n got %q\nwant %q", got, want)
	}
	if d := consumer.ConsumerDrift(ours, ours); len(d) != 0 {
		t.Errorf("a consumer differs from itself: %q", d)
	}
}

func TestConsumerModeIsChecked(t *testing.T) {
	t.Parallel()
	ps := consumer.Check(nil, consumer.Options{Consumers: "own"})
	if len(ps) != 1 || ps[0].Field != "Consumers" || !strings.Contains(ps[0].Message, `"own" is not "manage" or "observe"`) {
		t.Errorf("problems %v", ps)
	}
}
