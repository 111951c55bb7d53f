package deadletter_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// A dead-letter subject is never long enough to break the connection it is
// published on, is always a literal subject, and is a pure function of the
// configuration and the original subject.
func TestDeadLetterSubjectIsBounded(t *testing.T) {
	t.Parallel()
	cfg := deadletter.Config{}.WithDefaults()
	if got := cfg.Subject("ev.ok.a"); got != "agentrelay.dlq.ev.ok.a" {
		t.Errorf("short subject: %s", got)
	}
	prefix := deadletter.DefaultSubjectPrefix + "."
	fits := "ev." + strings.Repeat("f", deadletter.MaxSubjectLen-len(prefix)-3)
	if got := cfg.Subject(fits); got != prefix+fits {
		t.Errorf("a subject that just fits was changed: %s", got)
	}

	long := "ev.ok." + strings.Repeat("b", 4034)
	cases := map[string]string{
		"4 KiB token":      long,
		"one byte over":    fits + "x",
		"many tokens":      strings.Repeat("t.", 2000) + "end",
		"wildcard token":   "ev.*.x",
		"full wildcard":    "ev.x.>",
		"empty token":      "ev..x",
		"trailing dot":     "ev.x.",
		"space":            "ev.a b",
		"long first token": strings.Repeat("z", 5000) + ".ev",
	}
	seen := map[string]string{}
	for name, orig := range cases {
		got := cfg.Subject(orig)
		if len(got) > deadletter.MaxSubjectLen {
			t.Errorf("%s: subject is %d bytes, limit %d", name, len(got), deadletter.MaxSubjectLen)
		}
		if !strings.HasPrefix(got, prefix) {
			t.Errorf("%s: %q lacks the prefix", name, got)
		}
		for tok := range strings.SplitSeq(got, ".") {
			if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
				t.Errorf("%s: %q is not a literal subject (token %q)", name, got, tok)
				break
			}
		}
		sum := sha256.Sum256([]byte(orig))
		if !strings.HasSuffix(got, "."+"sha256-"+hex.EncodeToString(sum[:])) {
			t.Errorf("%s: %q does not end in the digest of the original", name, got)
		}
		if again := cfg.Subject(orig); again != got {
			t.Errorf("%s: not deterministic: %q then %q", name, got, again)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("%s and %s share the dead-letter subject %q", name, other, got)
		}
		seen[got] = name
	}
	// Leading tokens are kept, so "<prefix>.ev.ok.>" still finds the letter.
	if got := cfg.Subject(long); !strings.HasPrefix(got, prefix+"ev.ok.sha256-") {
		t.Errorf("long subject: %q", got)
	}
	if got := cfg.Subject(cases["many tokens"]); !strings.HasPrefix(got, prefix+"t.t.t.t.") || len(got) < deadletter.MaxSubjectLen-100 {
		t.Errorf("many tokens: kept too few leading tokens: %q", got)
	}
	if got := cfg.Subject("ev.*.x"); !strings.HasPrefix(got, prefix+"ev.sha256-") {
		t.Errorf("wildcard: %q", got)
	}
	if got := (deadletter.Config{SubjectPrefix: "ops.dead"}).Subject(long); !strings.HasPrefix(got, "ops.dead.ev.ok.sha256-") {
		t.Errorf("custom prefix: %q", got)
	}
}

// Ensure accepts an operator's stream whose subjects capture every
// dead-letter subject, however they are spelt, and refuses one that misses
// some.
func TestEnsureAcceptsAStreamThatCapturesTheDeadLetters(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	for i, tc := range []struct {
		subjects []string
		ok       bool
	}{
		{[]string{"agentrelay.dlq.>"}, true},
		{[]string{"agentrelay.>"}, true},
		{[]string{"agentrelay.*.>"}, true},
		{[]string{"ops.>", "agentrelay.*.>"}, true},
		{[]string{"other.>", "agentrelay.>"}, true},
		{[]string{"agentrelay.dlq.x.>"}, false},
		{[]string{"agentrelay.dlq.*"}, false},
		{[]string{"agentrelay.*"}, false},
		{[]string{"agentrelay.dlq"}, false},
		{[]string{"agentrelay.other.>"}, false},
	} {
		name := "OPS_DLQ_" + strconv.Itoa(i)
		n.CreateStream(t, jetstream.StreamConfig{Name: name, Subjects: tc.subjects, Storage: jetstream.MemoryStorage}) // subjects are the point; a file store only adds I/O
		err := deadletter.NewWriter(n.JS, deadletter.Config{Stream: name}).Ensure(ctxTimeout(t, 5*time.Second))
		if tc.ok && err != nil {
			t.Errorf("%v: refused: %v", tc.subjects, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "does not capture")) {
			t.Errorf("%v: got %v, want it refused", tc.subjects, err)
		}
		if err := n.JS.DeleteStream(ctxTimeout(t, 5*time.Second), name); err != nil {
			t.Fatal(err)
		}
	}
	long := deadletter.Config{SubjectPrefix: strings.Repeat("p", 300)}
	if err := deadletter.NewWriter(n.JS, long).Ensure(ctxTimeout(t, 5*time.Second)); err == nil {
		t.Error("a 300-byte subject prefix was accepted: it leaves no room for the original in a bounded subject")
	}
}

// dlEnv is a server with a work stream ORIG on "ev.>" for dead-letter tests.
type dlEnv struct{ n *testenv.NATS }

const origStream = "ORIG"

func newDLEnv(t *testing.T) *dlEnv {
	t.Helper()
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: origStream, Subjects: []string{"ev.>"}, Storage: jetstream.FileStorage})
	return &dlEnv{n: n}
}

// stored publishes m without a reply subject (a JetStream publish of a
// subject near the control-line limit would not fit its reply inbox) and
// returns it as a consumer delivers it.
func (e *dlEnv) stored(t *testing.T, m *nats.Msg) (jetstream.Msg, *jetstream.MsgMetadata) {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	s, err := e.n.JS.Stream(ctx, origStream)
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.n.NC.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	seq := before.State.LastSeq + 1
	testenv.Eventually(t, 5*time.Second, "original stored", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.LastSeq >= seq
	})
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq,
		AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("message %d not delivered: %v", seq, batch.Error())
	}
	md, err := msg.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return msg, md
}

// letter reads back the dead letter a publish stored.
func (e *dlEnv) letter(t *testing.T, dlStream string, st deadletter.Stored) *jetstream.RawStreamMsg {
	t.Helper()
	if st.Ack == nil {
		t.Fatal("no publish ack")
	}
	ctx := ctxTimeout(t, 10*time.Second)
	s, err := e.n.JS.Stream(ctx, dlStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, st.Ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// count is the number of messages in a stream.
func (e *dlEnv) count(t *testing.T, name string) uint64 {
	t.Helper()
	ctx := ctxTimeout(t, 5*time.Second)
	s, err := e.n.JS.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

var testLetter = deadletter.Facts{
	Reason:         string(deadletter.ReasonInvalidJSON),
	Class:          "poison",
	Error:          "body is not a JSON object",
	Route:          "hostile",
	TriggerID:      "agtch_hostile",
	IdempotencyKey: "evt-1",
	Attempts:       1,
}

// checkFacts checks that a dead letter says what it is a copy of and why,
// and carries the body's size and digest.
func checkFacts(t *testing.T, cfg deadletter.Config, m *jetstream.RawStreamMsg, orig jetstream.Msg, md *jetstream.MsgMetadata) {
	t.Helper()
	sum := sha256.Sum256(orig.Data())
	for k, want := range map[string]string{
		deadletter.HeaderReason:     testLetter.Reason,
		deadletter.HeaderRoute:      testLetter.Route,
		deadletter.HeaderTriggerID:  testLetter.TriggerID,
		event.HeaderIdempotencyKey:  testLetter.IdempotencyKey,
		deadletter.HeaderStream:     md.Stream,
		deadletter.HeaderSequence:   strconv.FormatUint(md.Sequence.Stream, 10),
		deadletter.HeaderSubject:    orig.Subject(),
		deadletter.HeaderBodySize:   strconv.Itoa(len(orig.Data())),
		deadletter.HeaderBodySHA256: hex.EncodeToString(sum[:]),
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("%s = %.80q, want %.80q", k, got, want)
		}
	}
	if m.Subject != cfg.Subject(orig.Subject()) {
		t.Errorf("letter subject %.80q, want Subject(original) %.80q", m.Subject, cfg.Subject(orig.Subject()))
	}
	if len(m.Subject) > deadletter.MaxSubjectLen {
		t.Errorf("letter subject is %d bytes", len(m.Subject))
	}
}

// A dead letter is stored on the first publish, whatever the original is
// like, and the connection stays up: a subject near the control-line limit,
// headers near JetStream's 64 KiB header limit, a body near max_payload, a
// header name nats.go will not send.
func TestDeadLetterIsAlwaysStorable(t *testing.T) {
	t.Parallel()
	e := newDLEnv(t)
	dl := deadletter.NewWriter(e.n.JS, deadletter.Config{})
	if err := dl.Ensure(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	maxPayload := int(e.n.NC.MaxPayload())
	small := nats.Header{"X-Small": {"s"}}

	t.Run("subject of 4040 bytes", func(t *testing.T) {
		orig, md := e.stored(t, &nats.Msg{Subject: "ev.ok." + strings.Repeat("b", 4034), Data: []byte("not json")})
		st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
		if err != nil {
			t.Fatal(err)
		}
		if !e.n.NC.IsConnected() {
			t.Fatal("the connection was closed")
		}
		m := e.letter(t, deadletter.DefaultStream, st)
		checkFacts(t, deadletter.Config{}.WithDefaults(), m, orig, md)
		if st.Form != deadletter.FormFull || m.Header.Get(deadletter.HeaderLetterForm) != "full" || string(m.Data) != "not json" {
			t.Errorf("form %s (header %q), body %q: want the full letter", st.Form, m.Header.Get(deadletter.HeaderLetterForm), m.Data)
		}
	})

	t.Run("headers of 65200 bytes", func(t *testing.T) {
		big := strings.Repeat("h", 65200-len("NATS/1.0\r\n\r\n")-len("X-Big: \r\n")-len("X-Small: s\r\n"))
		orig, md := e.stored(t, &nats.Msg{Subject: "ev.big", Data: []byte("not json"), Header: nats.Header{"X-Big": {big}, "X-Small": {"s"}}})
		st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
		if err != nil {
			t.Fatal(err)
		}
		if !e.n.NC.IsConnected() {
			t.Fatal("the connection was closed")
		}
		m := e.letter(t, deadletter.DefaultStream, st)
		checkFacts(t, deadletter.Config{}.WithDefaults(), m, orig, md)
		if st.Form != deadletter.FormTrimmed || st.DroppedHeaders != 1 || st.BodyOmitted {
			t.Errorf("stored %+v: want trimmed, one header dropped, the body kept", st)
		}
		if m.Header.Get(deadletter.HeaderDroppedHeaders) != "X-Big" || m.Header.Get("X-Big") != "" || m.Header.Get("X-Small") != "s" {
			t.Errorf("dropped %q, X-Big %d bytes, X-Small %q: want only X-Big dropped",
				m.Header.Get(deadletter.HeaderDroppedHeaders), len(m.Header.Get("X-Big")), m.Header.Get("X-Small"))
		}
		if string(m.Data) != "not json" || m.Header.Get(deadletter.HeaderBodyOmitted) != "" {
			t.Errorf("body %q, omitted %q", m.Data, m.Header.Get(deadletter.HeaderBodyOmitted))
		}
	})

	t.Run("body near max_payload", func(t *testing.T) {
		body := []byte(strings.Repeat("x", maxPayload-200))
		orig, md := e.stored(t, &nats.Msg{Subject: "ev.huge", Data: body, Header: small})
		st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
		if err != nil {
			t.Fatal(err)
		}
		if !e.n.NC.IsConnected() {
			t.Fatal("the connection was closed")
		}
		m := e.letter(t, deadletter.DefaultStream, st)
		checkFacts(t, deadletter.Config{}.WithDefaults(), m, orig, md)
		if st.Form != deadletter.FormTrimmed || !st.BodyOmitted || len(m.Data) != 0 || m.Header.Get(deadletter.HeaderBodyOmitted) != deadletter.BodyOmittedTooLarge {
			t.Errorf("stored %+v, body %d bytes, omitted %q: want the body left out as too large", st, len(m.Data), m.Header.Get(deadletter.HeaderBodyOmitted))
		}
		if m.Header.Get("X-Small") != "s" {
			t.Error("the original's small header was dropped with the body")
		}
	})

	t.Run("body that fits once a big header is dropped", func(t *testing.T) {
		body := []byte(strings.Repeat("y", maxPayload-40<<10))
		orig, md := e.stored(t, &nats.Msg{Subject: "ev.both", Data: body, Header: nats.Header{"X-Big": {strings.Repeat("h", 39<<10)}, "X-Small": {"s"}}})
		st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
		if err != nil {
			t.Fatal(err)
		}
		m := e.letter(t, deadletter.DefaultStream, st)
		checkFacts(t, deadletter.Config{}.WithDefaults(), m, orig, md)
		if st.BodyOmitted || len(m.Data) != len(body) || m.Header.Get("X-Big") != "" || m.Header.Get("X-Small") != "s" {
			t.Errorf("stored %+v, body %d bytes: want the body kept and only the big header dropped", st, len(m.Data))
		}
	})

	t.Run("header name nats.go refuses to send", func(t *testing.T) {
		orig, md := e.stored(t, &nats.Msg{Subject: "ev.badname", Data: []byte("not json"), Header: small})
		// Another client's header name, as a message may carry it.
		odd := withHeaders{orig, nats.Header{"Bad/Name": {"x"}, "X-Small": {"s"}}}
		st, err := dl.Publish(ctxTimeout(t, 5*time.Second), odd, md, testLetter)
		if err != nil {
			t.Fatal(err)
		}
		m := e.letter(t, deadletter.DefaultStream, st)
		checkFacts(t, deadletter.Config{}.WithDefaults(), m, orig, md)
		if st.Form != deadletter.FormTrimmed || m.Header.Get(deadletter.HeaderDroppedHeaders) != "Bad/Name" || m.Header.Get("X-Small") != "s" {
			t.Errorf("stored %+v, dropped %q", st, m.Header.Get(deadletter.HeaderDroppedHeaders))
		}
	})

	t.Run("huge error text and names", func(t *testing.T) {
		orig, md := e.stored(t, &nats.Msg{Subject: "ev.err", Data: []byte("not json")})
		l := testLetter
		l.Error = strings.Repeat("e\r\n", 100_000)
		l.Route = strings.Repeat("r", 100_000)
		st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, l)
		if err != nil {
			t.Fatal(err)
		}
		m := e.letter(t, deadletter.DefaultStream, st)
		if e := m.Header.Get(deadletter.HeaderError); len(e) > 1024 || strings.ContainsAny(e, "\r\n") {
			t.Errorf("error header of %d bytes", len(e))
		}
		if len(m.Header.Get(deadletter.HeaderRoute)) > 256 || !strings.Contains(m.Header.Get(deadletter.HeaderTruncatedHeaders), deadletter.HeaderRoute) {
			t.Errorf("route header of %d bytes, truncated %q", len(m.Header.Get(deadletter.HeaderRoute)), m.Header.Get(deadletter.HeaderTruncatedHeaders))
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id == "" || len(id) > 512 || id != deadletter.MsgID(l.Route, md.Stream, md.Sequence.Stream, md.Timestamp) {
			t.Errorf("message id of %d bytes, want MsgID's, bounded", len(id))
		}
	})
	if !e.n.NC.IsConnected() {
		t.Fatal("the connection was closed")
	}
}

// withHeaders is a delivered message with other headers.
type withHeaders struct {
	jetstream.Msg
	h nats.Header
}

func (m withHeaders) Headers() nats.Header { return m.h }

// When JetStream refuses the letter for good (here a MaxMsgSize the
// publisher did not know of), the reduced form is stored in the same call
// under the same message id: a repeat stores nothing twice.
func TestRefusedDeadLetterFallsBackToTheReducedForm(t *testing.T) {
	t.Parallel()
	e := newDLEnv(t)
	const name = "SMALL_DLQ"
	cfg := deadletter.Config{Stream: name, SubjectPrefix: "small.dlq"}
	// An operator's stream, and no Ensure: the limit is news to Publish.
	e.n.CreateStream(t, jetstream.StreamConfig{Name: name, Subjects: []string{"small.dlq.>"}, MaxMsgSize: 4096, Duplicates: time.Hour})
	dl := deadletter.NewWriter(e.n.JS, cfg)
	orig, md := e.stored(t, &nats.Msg{Subject: "ev.refused", Data: []byte(strings.Repeat("z", 8192)), Header: nats.Header{"X-Small": {"s"}}})

	st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *jetstream.APIError
	if st.Form != deadletter.FormReduced || !st.BodyOmitted || !errors.As(st.Refusal, &apiErr) {
		t.Errorf("stored %+v: want the reduced form after JetStream's refusal", st)
	}
	m := e.letter(t, name, st)
	checkFacts(t, cfg, m, orig, md)
	for k, want := range map[string]string{
		deadletter.HeaderLetterForm:     "reduced",
		deadletter.HeaderBodyOmitted:    deadletter.BodyOmittedRefused,
		deadletter.HeaderDroppedHeaders: "X-Small",
		"X-Small":                       "",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(m.Data) != 0 || !strings.Contains(m.Header.Get(deadletter.HeaderRefusal), "exceeds maximum") {
		t.Errorf("body %d bytes, refusal %q", len(m.Data), m.Header.Get(deadletter.HeaderRefusal))
	}

	// The runner's retry after a lost ack: the same letter, stored once.
	again, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Ack.Duplicate || e.count(t, name) != 1 {
		t.Errorf("repeat: duplicate %v, %d letters stored", again.Ack.Duplicate, e.count(t, name))
	}

	// Once Ensure has seen the limit, the letter is sized to it up front.
	if err := dl.Ensure(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	orig2, md2 := e.stored(t, &nats.Msg{Subject: "ev.refused2", Data: []byte(strings.Repeat("z", 8192))})
	st2, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig2, md2, testLetter)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Form != deadletter.FormTrimmed || !st2.BodyOmitted || st2.Refusal != nil {
		t.Errorf("after Ensure: %+v, want trimmed without a refusal", st2)
	}
	if !e.n.NC.IsConnected() {
		t.Fatal("the connection was closed")
	}
}

// A full dead-letter stream is not a reason to store a letter without its
// body: the error comes back and the caller keeps the original. So does
// unavailability.
func TestFullOrUnavailableDeadLetterStreamIsAnError(t *testing.T) {
	t.Parallel()
	e := newDLEnv(t)
	const name = "FULL_DLQ"
	cfg := deadletter.Config{Stream: name, SubjectPrefix: "full.dlq"}
	e.n.CreateStream(t, jetstream.StreamConfig{
		Name: name, Subjects: []string{"full.dlq.>"}, MaxBytes: 4096, Discard: jetstream.DiscardNew, Duplicates: time.Hour,
	})
	dl := deadletter.NewWriter(e.n.JS, cfg)
	if err := dl.Ensure(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	orig, md := e.stored(t, &nats.Msg{Subject: "ev.full", Data: []byte(strings.Repeat("f", 8192))})
	st, err := dl.Publish(ctxTimeout(t, 5*time.Second), orig, md, testLetter)
	if err == nil {
		t.Fatalf("stored %+v in a full stream", st)
	}
	if n := e.count(t, name); n != 0 {
		t.Errorf("%d letters stored: a reduced letter took the place of the refused one", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dl.Publish(ctx, orig, md, testLetter); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
	if n := e.count(t, name); n != 0 {
		t.Errorf("%d letters stored after a cancelled publish", n)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
