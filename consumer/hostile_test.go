package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// A message cannot redirect the request. Whatever a producer puts in the
// message id, the Idempotency-Key header or the conversation key (path
// separators, dot segments, percent-encoding, CR/LF, NUL, look-alike
// letters, escape sequences, very long values), the message is either sent
// to exactly the route's trigger with the producer's key, or dead-lettered
// with a reason and never sent at all.
func TestMessageCannotRedirectTheRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_safe", true))
	r := h.route("safe", "events.safe.>", h.agent("agtch_safe"))
	text := h.route("safetext", "events.safetext.>", h.agent("agtch_safe"))
	text.Contract.Format = event.BodyText
	h.start(r, text)

	hostileKeys := []string{
		"../../v1/workspace_agents/agtch_other/trigger", "a/b", "/", "..", "a..b", "%2F", "a%2Fb", "%2e%2e",
		"a\r\nX-Injected: 1", "a\nb", "a\x00b", "ｅvil", "аpple" /* Cyrillic a */, "a b", "a?x=1", "a#f", "a\\b",
		"\x1b[2J", "\u202eevil", strings.Repeat("k", 256), strings.Repeat("k", 10_000),
	}
	want := map[string]deadletter.Reason{} // by subject
	for i, k := range hostileKeys {
		for j, hdr := range []string{"Nats-Msg-Id", "Idempotency-Key"} {
			subject := fmt.Sprintf("events.safe.hk-%d-%d", i, j)
			hd := nats.Header{hdr: {k}}
			if hdr == "Idempotency-Key" {
				hd["Nats-Msg-Id"] = []string{subject}
			}
			ack := h.nats.Publish(t, &nats.Msg{Subject: subject, Data: []byte(fmt.Sprintf(`{"input":"key %d %d"}`, i, j)), Header: hd})
			if !ack.Duplicate { // CR/LF reach NATS as spaces: "a\nb" is "a b" again
				want[subject] = deadletter.ReasonInvalidIdempotencyKey
			}
		}
	}
	// Conversation keys from a header (CR/LF cannot arrive that way: the
	// NATS client turns them into spaces, as net/http does) and from JSON.
	for i, ck := range []string{"a\x00b", "\x1b[2J", "a\x7fb", "a\u0085b", strings.Repeat("c", 1025)} {
		subject := fmt.Sprintf("events.safetext.ck-%d", i)
		h.publish(subject, fmt.Sprintf("conversation key %d", i), nats.Header{"Conversation-Key": {ck}}, fmt.Sprintf("ck-%d", i))
		want[subject] = deadletter.ReasonInvalidConversationKey
	}
	for i, ck := range []string{"a\r\nX-Injected: 1", "\x00", "\x1b]0;t\x07", strings.Repeat("c", 1025)} {
		subject := fmt.Sprintf("events.safe.cj-%d", i)
		body, err := json.Marshal(map[string]string{"input": fmt.Sprintf("json conversation key %d", i), "conversation_key": ck})
		if err != nil {
			t.Fatal(err)
		}
		h.publish(subject, string(body), nil, fmt.Sprintf("cj-%d", i))
		want[subject] = deadletter.ReasonInvalidConversationKey
	}
	// Hostile text in the input and an odd but valid conversation key are
	// data, not addressing: sent, escaped, to the right place.
	const sneaky = "../../admin\r\nHost: evil.example\r\n\r\n%2F\x00\u202e"
	body, err := json.Marshal(map[string]string{"input": sneaky, "conversation_key": "../ｏther/%2F"})
	if err != nil {
		t.Fatal(err)
	}
	h.publish("events.safe.ok", string(body), nil, "fine-1")

	h.waitSettled(20*time.Second, "safe", "safetext")
	reqs := h.emu.Requests()
	if len(reqs) != 1 {
		for _, q := range reqs {
			t.Logf("request to %s with key %q", q.Path, q.Header.Get("Idempotency-Key"))
		}
		t.Fatalf("%d requests reached the API, want only the valid message's", len(reqs))
	}
	if got := reqs[0]; got.Path != "/v1/workspace_agents/agtch_safe/trigger" || got.Header.Get("Idempotency-Key") != "fine-1" {
		t.Errorf("the valid message went to %s with key %q", got.Path, got.Header.Get("Idempotency-Key"))
	}
	if l := h.emu.Ledger(); len(l) != 1 || l[0].Input != sneaky || l[0].ConversationKey != "../ｏther/%2F" {
		t.Errorf("ledger %+v: the input and key were not carried as data", l)
	}
	dls := h.deadLetters()
	got := map[string]deadletter.Reason{}
	for _, m := range dls {
		subject := m.Header.Get(deadletter.HeaderSubject)
		got[subject] = deadletter.Reason(m.Header.Get(deadletter.HeaderReason))
		if e := m.Header.Get(deadletter.HeaderError); strings.ContainsAny(e, "\r\n\x00\x1b") || len(e) > 1024 {
			t.Errorf("%s: error header unbounded or with control bytes: %q", subject, e)
		}
	}
	for subject, reason := range want {
		if got[subject] != reason {
			t.Errorf("%s: dead-lettered as %q, want %q", subject, got[subject], reason)
		}
	}
	if len(dls) != len(want) {
		t.Errorf("%d dead letters, want %d", len(dls), len(want))
	}
}

// Invalid UTF-8 is dead-lettered as it came: the dead letter's body is the
// original bytes, not a "repaired" copy with U+FFFD in it.
func TestInvalidUTF8IsDeadLetteredUnmangled(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_u", true))
	j := h.route("uj", "events.uj.>", h.agent("agtch_u"))
	tx := h.route("ut", "events.ut.>", h.agent("agtch_u"))
	tx.Contract.Format = event.BodyText
	h.start(j, tx)
	bodies := map[string][]byte{
		"uj-1": []byte("{\"input\":\"caf\xe9\"}"),
		"uj-2": []byte("{\"input\":\"ok\",\"conversation_key\":\"\xff\xfe\"}"),
		"ut-1": []byte("caf\xe9 \xc0\x80 \xed\xa0\x80"), // Latin-1, overlong NUL, a UTF-16 surrogate
	}
	for id, b := range bodies {
		h.publish("events."+id[:2]+"."+id, string(b), nil, id)
	}
	h.waitSettled(15*time.Second, "uj", "ut")
	if n := h.emu.Stats().Requests; n != 0 {
		t.Errorf("%d requests reached the API", n)
	}
	for id, b := range bodies {
		dl := h.deadLetterBy(id)
		if dl == nil {
			t.Errorf("%s: not dead-lettered", id)
			continue
		}
		if dl.Header.Get(deadletter.HeaderReason) != string(deadletter.ReasonInvalidUTF8) {
			t.Errorf("%s: reason %q", id, dl.Header.Get(deadletter.HeaderReason))
		}
		if !bytes.Equal(dl.Data, b) {
			t.Errorf("%s: dead letter body %q, want the original %q", id, dl.Data, b)
		}
	}
}

// An oversized body or header is refused before any parsing, without
// allocating in proportion to it: size is checked first.
//
// Not parallel: it reads the process's allocation counter, which the
// parallel tests would add to.
func TestOversizedInputIsRefusedCheaply(t *testing.T) {
	c := event.Contract{MaxInputBytes: 1024}.WithDefaults()
	huge := []byte(`{"input":"` + strings.Repeat("x", 900<<10) + `"}`)
	for name, tc := range map[string]struct {
		c    event.Contract
		body []byte
		h    nats.Header
		want deadletter.Reason
	}{
		"JSON body":              {c, huge, nil, deadletter.ReasonInputTooLarge},
		"text body":              {event.Contract{Format: event.BodyText, MaxInputBytes: 1024}.WithDefaults(), huge, nil, deadletter.ReasonInputTooLarge},
		"conversation key":       {event.Contract{Format: event.BodyText}.WithDefaults(), []byte("x"), nats.Header{"Conversation-Key": {strings.Repeat("k", 900<<10)}}, deadletter.ReasonInvalidConversationKey},
		"JSON input over limit":  {c, []byte(`{"input":"` + strings.Repeat("x", 2048) + `"}`), nil, deadletter.ReasonInputTooLarge},
		"invalid UTF-8, too big": {c, append(bytes.Repeat([]byte{0xff}, 900<<10), '}'), nil, deadletter.ReasonInputTooLarge},
	} {
		before := allocated()
		_, reason, _ := tc.c.Decode(tc.body, tc.h)
		grew := allocated() - before
		if reason != tc.want {
			t.Errorf("%s: reason %q, want %q", name, reason, tc.want)
		}
		if name != "JSON input over limit" && grew > 64<<10 {
			t.Errorf("%s: refusing %d bytes allocated %d", name, len(tc.body), grew)
		}
	}
	// A hostile key of any length is refused by its length first.
	h := nats.Header{"Nats-Msg-Id": {strings.Repeat("k", 900<<10)}}
	before := allocated()
	if _, err := event.IdempotencyKey(h, &jetstream.MsgMetadata{Stream: "S", Sequence: jetstream.SequencePair{Stream: 1}, Timestamp: time.Unix(1, 0)}); err == nil {
		t.Error("a 900 KiB key accepted")
	}
	if grew := allocated() - before; grew > 64<<10 {
		t.Errorf("refusing a 900 KiB key allocated %d bytes", grew)
	}
}

// A Retry-After years away is capped by max_retry_after: the event is
// retried soon, not parked for a year; a negative one is ignored.
func TestBogusRetryAfterIsCappedEndToEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t, emulator.WithTrigger("agtch_ra", true))
	h.emu.Script(
		emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "31536000"},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 503, RetryAfter: "Fri, 31 Dec 9999 23:59:59 GMT"},
		emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "-5"},
		emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "soon"},
	)
	r := h.route("ra", "events.ra.>", h.agent("agtch_ra"))
	r.Retry.MaxRetryAfter = 200 * time.Millisecond
	h.start(r)
	start := time.Now()
	h.publish("events.ra.1", `{"input":"x"}`, nil, "ra-1")
	testenv.Eventually(t, 10*time.Second, "accepted after four refusals", func() bool { return h.emu.Accepted("agtch_ra", "ra-1") == 1 })
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v: a bogus Retry-After was trusted", took)
	}
	if n := h.requestsFor("agtch_ra"); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}
}

func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// A JetStream API answer lost on the way (in a cluster: replicas starting
// together and racing to create the dead-letter stream, a replica starting
// just after a stream leader's node died; the fault suite saw both) costs
// set-up one short attempt and a retry, not its whole deadline. A proxy in
// front of the JetStream API loses the first answer and relays the rest.
func TestSetupRetriesAJetStreamRequestWhoseAnswerWasLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	nc := h.nats.NC
	var lost atomic.Int32
	sub, err := nc.Subscribe("LOSSY.API.>", func(m *nats.Msg) {
		if lost.CompareAndSwap(0, 1) {
			return // the answer is lost
		}
		req := nats.NewMsg("$JS.API." + strings.TrimPrefix(m.Subject, "LOSSY.API."))
		req.Data, req.Header = m.Data, m.Header
		resp, err := nc.RequestMsg(req, 5*time.Second)
		if err == nil {
			_ = m.RespondMsg(&nats.Msg{Data: resp.Data, Header: resp.Header})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	js, err := jetstream.NewWithAPIPrefix(nc, "LOSSY.API")
	if err != nil {
		t.Fatal(err)
	}
	relay, err := consumer.New(js, []consumer.Route{h.route("lossy", "events.lossy.>", h.agent("agtch_lossy"))}, consumer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	if err := relay.Setup(ctx); err != nil {
		t.Fatalf("Setup failed after %v because one JetStream answer was lost: %v", time.Since(start).Round(time.Second), err)
	}
	if lost.Load() != 1 {
		t.Fatal("the proxy lost no answer: the test proves nothing")
	}
}

// A producer's message with an empty body and a header named Status (what
// server status messages look like) is still a message: it is handled and
// dead-lettered, not mistaken for a status and left unsettled for ever.
func TestAnEmptyMessageWithAStatusHeaderIsStillAMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.route("st", "events.st.>", h.agent("agtch_st"))
	r.AckWait = 3 * time.Second
	h.start(r)
	h.publish("events.st.1", "", nats.Header{"Status": {"409"}, "Description": {"Leadership Change"}}, "status-1")
	h.waitSettled(10*time.Second, "st")
	if dl := h.deadLetterBy("status-1"); dl == nil || dl.Header.Get(deadletter.HeaderReason) != string(deadletter.ReasonInvalidJSON) {
		t.Errorf("dead letter: %v", dl)
	}
	if d := h.consumerInfo("agentrelay-st").Delivered.Consumer; d != 1 {
		t.Errorf("%d deliveries, want 1", d)
	}
}

// A producer's Idempotency-Key that cannot be used is kept in the dead
// letter under Agentrelay-Original-Idempotency-Key, not as the letter's key:
// a replay must not send it again.
func TestUnusableKeyIsKeptApartInTheDeadLetter(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start(h.route("bk", "events.bk.>", h.agent("agtch_bk")))
	h.publish("events.bk.1", `{"input":"x"}`, nats.Header{"Idempotency-Key": {"bad/key"}}, "bk-1")
	h.waitSettled(10*time.Second, "bk")
	dls := h.deadLetters()
	if len(dls) != 1 {
		t.Fatalf("%d dead letters", len(dls))
	}
	hd := dls[0].Header
	if hd.Get(deadletter.HeaderReason) != string(deadletter.ReasonInvalidIdempotencyKey) ||
		hd.Get(event.HeaderIdempotencyKey) != "" ||
		hd.Get(deadletter.HeaderOriginalPrefix+"Idempotency-Key") != "bad/key" {
		t.Errorf("headers %v", hd)
	}
}
