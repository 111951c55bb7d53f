package consumer_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// Events waiting out a retry delay are counted in
// agentrelay_messages_retry_waiting, not in agentrelay_messages_in_flight,
// and the age of the route's oldest unacknowledged event grows with the
// oldest one (the lowest over the route's filters) until it is accepted.
// Then both are 0, and agentrelay_last_accepted_timestamp_seconds says
// when.
func TestRetryWaitingAndOldestUnacked(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_slow", true))
	rt := h.route("slow", "events.slow.b.>", h.agent("agtch_slow"))
	rt.Subjects = []string{"events.slow.a.>", "events.slow.b.>"}
	// The first call of each event fails; the retry waits 3s (no jitter).
	rt.Retry = consumer.RetryPolicy{MaxAttempts: 5, InitialBackoff: 3 * time.Second, MaxBackoff: 3 * time.Second}
	h.emu.Script(
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, TriggerID: "agtch_slow"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, TriggerID: "agtch_slow"},
	)
	start := time.Now()
	r := h.startWith(func(o *consumer.Options) { o.Jitter = func() float64 { return 1 } }, rt)
	val := func(name string) float64 { return metricValue(t, r, name, "slow") }

	if v := val("agentrelay_last_accepted_timestamp_seconds"); v != 0 {
		t.Errorf("last accepted before any event = %v, want 0", v)
	}
	beforeB := time.Now()
	h.publish("events.slow.b.1", `{"input":"first"}`, nil, "b-1")
	testenv.Eventually(t, 5*time.Second, "b waits out its retry delay", func() bool {
		return val("agentrelay_messages_retry_waiting") == 1
	})
	if v := val("agentrelay_messages_in_flight"); v != 0 {
		t.Errorf("in flight = %v while the only event waits out a retry delay, want 0", v)
	}
	testenv.Eventually(t, 5*time.Second, "oldest unacked age grows past 0.5s", func() bool {
		return val("agentrelay_oldest_unacked_age_seconds") >= 0.5
	})
	if v := val("agentrelay_oldest_unacked_age_seconds"); v > time.Since(beforeB).Seconds() {
		t.Errorf("oldest unacked age %vs is older than the event (%v)", v, time.Since(beforeB))
	}

	// A later event on the other filter: the age stays b's, the older one.
	h.publish("events.slow.a.1", `{"input":"second"}`, nil, "a-1")
	testenv.Eventually(t, 5*time.Second, "both wait out a retry delay", func() bool {
		return val("agentrelay_messages_retry_waiting") == 2 && val("agentrelay_consumer_ack_pending_messages") == 2
	})
	// Two fresh readings later the lag loop has read the age with both
	// events unacknowledged.
	for range 2 {
		prev := val("agentrelay_oldest_unacked_age_seconds")
		testenv.Eventually(t, 5*time.Second, "a fresh reading", func() bool { return val("agentrelay_oldest_unacked_age_seconds") != prev })
	}
	if v := val("agentrelay_oldest_unacked_age_seconds"); v < 0.5 {
		t.Errorf("oldest unacked age = %vs with two filters, want b's (at least 0.5s), not a's", v)
	}

	h.waitSettled(15*time.Second, "slow")
	testenv.Eventually(t, 5*time.Second, "nothing waiting, nothing unacked", func() bool {
		return val("agentrelay_messages_retry_waiting") == 0 && val("agentrelay_oldest_unacked_age_seconds") == 0
	})
	last := val("agentrelay_last_accepted_timestamp_seconds")
	if last < float64(start.UnixNano())/1e9 || last > float64(time.Now().UnixNano())/1e9 {
		t.Errorf("last accepted = %v, want between the start %v and now", last, float64(start.Unix()))
	}
	if v := val("agentrelay_replays_accepted_total"); v != 0 {
		t.Errorf("replays accepted = %v without a replay, want 0", v)
	}
}

// Accepted events that carry the headers `dlq replay` writes are counted
// as replays; with Options.LogAccepted each accepted event is logged at
// info level with its key, stream sequence, attempt and latency, a share
// of them when it is a fraction, and none when it is 0.
func TestReplaysCountedAndAcceptedLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_log", true))
	for _, tc := range []struct {
		name   string
		share  float64
		logged int
	}{{"all", 1, 4}, {"half", 0.5, 2}, {"none", 0, 0}} {
		var logs logRecorder
		rt := h.route(tc.name, "events.log."+tc.name+".>", h.agent("agtch_log"))
		r := h.startWith(func(o *consumer.Options) {
			o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			o.LogAccepted = tc.share
		}, rt)
		h.publish("events.log."+tc.name+".1", `{"input":"x"}`, nats.Header{deadletter.HeaderReplayPrefix + "Of": {"AGENTRELAY_DLQ:7:1"}}, tc.name+"-replayed")
		for i := range 3 {
			h.publish("events.log."+tc.name+".2", `{"input":"y"}`, nil, tc.name+"-"+string(rune('a'+i)))
		}
		h.waitSettled(10*time.Second, tc.name)
		if v := metricValue(t, r, "agentrelay_replays_accepted_total", tc.name); v != 1 {
			t.Errorf("%s: replays accepted = %v, want 1", tc.name, v)
		}
		r.stop(t)
		var lines []map[string]any
		for _, l := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "accepted" {
				lines = append(lines, rec)
			}
		}
		if len(lines) != tc.logged {
			t.Errorf("%s: %d accepted events logged, want %d:\n%s", tc.name, len(lines), tc.logged, logs.String())
		}
		for _, rec := range lines {
			for _, k := range []string{"route", "idempotency_key", "stream_seq", "attempt", "latency"} {
				if _, ok := rec[k]; !ok || rec["level"] != "INFO" {
					t.Errorf("%s: accepted log line without %s at info: %v", tc.name, k, rec)
				}
			}
			if !strings.HasPrefix(rec["idempotency_key"].(string), tc.name+"-") || rec["route"] != tc.name {
				t.Errorf("%s: accepted log line names another event: %v", tc.name, rec)
			}
		}
	}
}
