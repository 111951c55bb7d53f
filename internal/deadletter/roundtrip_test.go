package deadletter

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/fold"
)

const (
	dlStream = "AGENTRELAY_DLQ"
	dlPrefix = "agentrelay.dlq"
	mib      = 1 << 20
)

var (
	storedAt = time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	letterAt = storedAt.Add(3 * time.Second)
)

// facts is a first dead letter's facts: a forbidden event of route
// complaints, stream S seq 41, one attempt.
func facts() Facts {
	return Facts{
		Reason: "forbidden", Class: "forbidden", Status: 403, Error: "403 Forbidden: agent is disabled",
		Route: "complaints", TriggerID: "agtch_c",
		Stream: "S", StreamSeq: 41, OrigSubject: "agents.complaints.new", OrigStored: storedAt,
		Attempts: 1, DeadLetteredAt: letterAt, IdempotencyKey: "evt-1",
	}
}

// roundTrip is one row of the format's specification: a message the worker
// gives up on, and what its dead letter, read back, and the replay built
// from it must say.
type roundTrip struct {
	name   string
	facts  Facts
	header nats.Header // the original's
	body   []byte
	// maxPayload is what the dead-letter stream takes (0: 1 MiB).
	maxPayload int
	// refused: JetStream refused the sized letter for good, so the
	// reduced form is what is stored.
	refused bool

	form      Form
	omitted   string // HeaderBodyOmitted; "" when the body is kept
	dropped   string // HeaderDroppedHeaders
	truncated string // HeaderTruncatedHeaders
	// facts, when the letter cannot hold them as they are (bounded
	// values); nil: every fact survives unchanged.
	want func(*Facts)
	// carried are the original's headers the letter carries as they were,
	// and that a replay sends again; renamed those kept under
	// HeaderOriginalPrefix.
	carried, renamed nats.Header
	// history is what the letter says of the event's earlier replays.
	history History
	// replayKey is the Idempotency-Key a replay sends; "" for none (the
	// worker then keys it by the replay's message id).
	replayKey string
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	body := []byte(`{"input":"my parcel never came"}`)
	ordered, last := facts(), facts()
	ordered.OrderedKey, ordered.NextSeq = "customer-7", 45
	last.OrderedKey = "customer-7"
	badKey := facts()
	badKey.Reason, badKey.Class, badKey.Status, badKey.Error = "invalid_idempotency_key", "poison", 0, "Idempotency-Key header: invalid"
	badKey.IdempotencyKey = "bad/key"
	hostile := facts()
	hostile.Error = strings.Repeat("e\r\n", 1000)
	hostile.Route = strings.Repeat("r", 1000)
	longSubject := facts()
	longSubject.OrigSubject = "agents.complaints." + strings.Repeat("b", 4000)
	replayed := facts()
	replayed.Stream, replayed.StreamSeq, replayed.Attempts = "S", 90, 2

	for _, tc := range []roundTrip{
		{
			name:  "first dead letter: producer headers carried, JetStream's renamed, the key that was used",
			facts: facts(),
			header: nats.Header{
				"X-Trace": {"t-1"}, "Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				"Nats-Msg-Id": {"evt-1"}, "Nats-Expected-Stream": {"S"}, "Idempotency-Key": {"evt-1"},
			},
			body: body, form: FormFull,
			carried:   nats.Header{"X-Trace": {"t-1"}, "Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
			renamed:   nats.Header{"Nats-Msg-Id": {"evt-1"}, "Nats-Expected-Stream": {"S"}},
			replayKey: "evt-1",
		},
		{
			name:  "ordered route: the key and the next event it released",
			facts: ordered, body: body, form: FormFull, replayKey: "evt-1",
		},
		{
			name:  "ordered route, the key's last event: no next",
			facts: last, body: body, form: FormFull, replayKey: "evt-1",
		},
		{
			name:  "a replay that failed again: its history is carried on, never reset",
			facts: replayed,
			header: nats.Header{
				HeaderReplayOf: {"AGENTRELAY_DLQ:7:1795867200000000000"}, HeaderReplayOrigin: {"S:41"},
				HeaderReplayCount: {"1"}, HeaderReplayAttempts: {"1"}, HeaderReplayBody: {"corrected"},
				"Idempotency-Key": {"evt-1"}, "X-Trace": {"t-1"},
				// stale from the first dead-lettering
				HeaderReason: {"max_attempts"}, HeaderSequence: {"41"},
			},
			body: body, form: FormFull,
			carried: nats.Header{"X-Trace": {"t-1"}},
			history: History{
				ReplayOf: "AGENTRELAY_DLQ:7:1795867200000000000", Replays: 1,
				OriginStream: "S", OriginSeq: 41, PriorAttempts: 1, ReplayBody: ReplayBodyCorrected,
			},
			replayKey: "evt-1",
		},
		{
			name:  "forged agentrelay headers from a producer are not carried",
			facts: facts(),
			header: nats.Header{
				"Agentrelay-Route": {"refunds"}, "agentrelay-subject": {"$JS.API.STREAM.DELETE.S"},
				"AGENTRELAY-TRIGGER-ID": {"agtch_evil"}, HeaderOriginalPrefix + "Nats-Msg-Id": {"forged"},
				"X-Ok": {"1"},
			},
			body: body, form: FormFull,
			carried: nats.Header{"X-Ok": {"1"}}, replayKey: "evt-1",
		},
		{
			name:  "a key that cannot be used is kept apart, and a replay does not send it",
			facts: badKey, header: nats.Header{"Idempotency-Key": {"bad/key"}}, body: body, form: FormFull,
			want:    func(f *Facts) { f.IdempotencyKey = "" },
			renamed: nats.Header{"Idempotency-Key": {"bad/key"}},
		},
		{
			name:  "hostile error text and names are bounded, one line, and said to be cut",
			facts: hostile, body: body, form: FormFull,
			truncated: HeaderError + ", " + HeaderRoute,
			want: func(f *Facts) {
				f.Error = strings.Repeat("e  ", 1000)[:maxErrorHeader]
				f.Route = strings.Repeat("r", maxNameHeader)
			},
			replayKey: "evt-1",
		},
		{
			name:  "a 4 KiB subject: a shortened letter subject, the original kept whole",
			facts: longSubject, body: body, form: FormFull, replayKey: "evt-1",
		},
		{
			name:  "oversize body: trimmed, the body left out, its size and digest kept",
			facts: facts(), header: nats.Header{"X-Small": {"s"}},
			body: []byte(strings.Repeat("x", 8192)), maxPayload: 4096,
			form: FormTrimmed, omitted: BodyOmittedTooLarge,
			carried: nats.Header{"X-Small": {"s"}}, replayKey: "evt-1",
		},
		{
			name:  "oversize header: trimmed, the big header named and left out",
			facts: facts(), header: nats.Header{"X-Big": {strings.Repeat("h", 70_000)}, "X-Small": {"s"}},
			body: body, form: FormTrimmed, dropped: "X-Big",
			carried: nats.Header{"X-Small": {"s"}}, replayKey: "evt-1",
		},
		{
			name:  "header names nats.go will not send are named, not carried",
			facts: facts(), header: nats.Header{"Bad/Name": {"x"}, "X-Small": {"s"}},
			body: body, form: FormTrimmed, dropped: "Bad/Name",
			carried: nats.Header{"X-Small": {"s"}}, replayKey: "evt-1",
		},
		{
			name:  "refused by JetStream: the reduced form holds the facts only",
			facts: facts(), header: nats.Header{"X-Small": {"s"}, "Nats-Msg-Id": {"evt-1"}},
			body: body, refused: true,
			form: FormReduced, omitted: BodyOmittedRefused, dropped: "Nats-Msg-Id, X-Small",
			replayKey: "evt-1",
		},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t) })
	}
}

func (tc roundTrip) check(t *testing.T) {
	maxPayload := tc.maxPayload
	if maxPayload == 0 {
		maxPayload = mib
	}
	e := Encode(tc.facts, tc.header, tc.body, Target{Stream: dlStream, SubjectPrefix: dlPrefix, MaxPayload: maxPayload})
	refusal := errors.New("nats: API error: code=400 err_code=10054 description=message size exceeds maximum allowed")
	if tc.refused {
		e = e.Reduced(refusal)
	}
	m := e.Msg

	// Where and how it is stored.
	if m.Subject != Subject(dlPrefix, tc.facts.OrigSubject) || len(m.Subject) > MaxSubjectLen {
		t.Errorf("letter subject %.80q, want Subject(original)", m.Subject)
	}
	if e.MsgID != MsgID(tc.facts.Route, tc.facts.Stream, tc.facts.StreamSeq, tc.facts.OrigStored) {
		t.Errorf("message id %q is not MsgID's", e.MsgID)
	}
	if size := headerBlockSize(m.Header) + len(m.Data); size > maxPayload || headerBlockSize(m.Header) > MaxJetStreamHeaderBytes {
		t.Errorf("letter of %d bytes (headers %d): over the stream's %d", size, headerBlockSize(m.Header), maxPayload)
	}
	for k := range m.Header {
		if fold.HasPrefix(k, "Nats-") {
			t.Errorf("the letter carries %s, which JetStream would act on", k)
		}
	}

	// Read back.
	l := Decode(m.Header)
	want := tc.facts
	if tc.want != nil {
		tc.want(&want)
	}
	if !reflect.DeepEqual(l.Facts, want) {
		t.Errorf("facts:\n got %+v\nwant %+v", l.Facts, want)
	}
	if l.History != tc.history {
		t.Errorf("history %+v, want %+v", l.History, tc.history)
	}
	sum := sha256.Sum256(tc.body)
	if l.Form != tc.form || l.Form != e.Form || l.BodyOmitted != tc.omitted || l.DroppedHeaders != tc.dropped || l.TruncatedHeaders != tc.truncated {
		t.Errorf("form %q (encoded %q), omitted %q, dropped %q, truncated %q; want %q, %q, %q, %q",
			l.Form, e.Form, l.BodyOmitted, l.DroppedHeaders, l.TruncatedHeaders, tc.form, tc.omitted, tc.dropped, tc.truncated)
	}
	if l.BodySize != len(tc.body) || l.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("body size %d, sha256 %s: not the original's", l.BodySize, l.BodySHA256)
	}
	if tc.omitted == "" && string(m.Data) != string(tc.body) {
		t.Errorf("body %.40q, want the original's", m.Data)
	}
	if tc.omitted != "" && (len(m.Data) != 0 || !e.BodyOmitted) {
		t.Errorf("body of %d bytes (omitted %v), want none", len(m.Data), e.BodyOmitted)
	}
	if tc.refused != (l.Refusal != "") || (tc.refused && l.Refusal != refusal.Error()) {
		t.Errorf("refusal %q", l.Refusal)
	}
	if !equalHeaders(l.Carried, tc.carried) || !equalHeaders(l.Renamed, tc.renamed) {
		t.Errorf("carried %v, renamed %v; want %v, %v", l.Carried, l.Renamed, tc.carried, tc.renamed)
	}

	// Replayed: the producer's headers, the key, the history one replay
	// on; nothing of JetStream's or of the letter's bookkeeping.
	id := LetterID{Stream: dlStream, Seq: 7, Stored: letterAt}
	r := ReplayHeader(m.Header, l.IdempotencyKey, l.Next(id, false))
	wantReplay := maps.Clone(tc.carried)
	if wantReplay == nil {
		wantReplay = nats.Header{}
	}
	if tc.replayKey != "" {
		wantReplay.Set(HeaderIdempotencyKey, tc.replayKey)
	}
	origin := "S:41"
	wantReplay.Set(HeaderReplayOf, "AGENTRELAY_DLQ:7:"+itoa(letterAt.UnixNano()))
	wantReplay.Set(HeaderReplayOrigin, origin)
	wantReplay.Set(HeaderReplayCount, itoa(int64(tc.history.Replays+1)))
	wantReplay.Set(HeaderReplayAttempts, itoa(int64(tc.facts.Attempts+tc.history.PriorAttempts)))
	if !equalHeaders(r, wantReplay) {
		t.Errorf("replay headers:\n got %v\nwant %v", r, wantReplay)
	}

	// And dead-lettered again: the history adds up.
	again := tc.facts
	again.StreamSeq, again.Attempts = 500, 3
	l2 := Decode(Encode(again, r, tc.body, Target{Stream: dlStream, SubjectPrefix: dlPrefix, MaxPayload: mib}).Msg.Header)
	if st, seq := l2.Origin(); st != "S" || seq != 41 || l2.Replays != tc.history.Replays+1 || l2.ReplayOf != id.String() ||
		l2.TotalAttempts() != 3+tc.facts.Attempts+tc.history.PriorAttempts {
		t.Errorf("dead-lettered again: origin %s:%d, replays %d, of %q, total attempts %d", st, seq, l2.Replays, l2.ReplayOf, l2.TotalAttempts())
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// equalHeaders compares headers, nil and empty alike.
func equalHeaders(a, b nats.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !reflect.DeepEqual(v, b[k]) {
			return false
		}
	}
	return true
}

// Decode bounds what a forged letter claims of its history, and reads
// nonsense as nothing.
func TestDecodeBoundsForgedNumbers(t *testing.T) {
	t.Parallel()
	l := Decode(nats.Header{
		HeaderReplayCount: {"-5"}, HeaderReplayAttempts: {"99999999999"}, HeaderReplayOrigin: {"S:0"},
		HeaderStatus: {"x"}, HeaderSequence: {"-1"}, HeaderBodySize: {"-3"}, HeaderStoredAt: {"yesterday"},
	})
	if l.Replays != 0 || l.PriorAttempts != maxHistory || l.OriginStream != "" || l.Status != 0 || l.StreamSeq != 0 || l.BodySize != 0 || !l.OrigStored.IsZero() {
		t.Errorf("%+v", l)
	}
}

func TestParseOrigin(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]string{"S:41": "S:41", "A:B:3": "A:B:3", "S:": ":0", ":4": ":0", "S:x": ":0", "S:0": ":0", "": ":0"} {
		st, seq := ParseOrigin(v)
		if got := st + ":" + itoa(int64(seq)); got != want {
			t.Errorf("ParseOrigin(%q) = %s, want %s", v, got, want)
		}
	}
}

// The worker keys a replay without a usable key by the replay's message
// id: whatever the dead-letter stream is called, that id is a valid key,
// the same for one letter, and different for another letter.
func TestReplayMsgIDIsAlwaysAValidKey(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"AGENTRELAY_DLQ", "dlq#1", "dead$letters", "dlq-ü", "a/b", "a..b", strings.Repeat("N", 255), strings.Repeat("ü", 127)} {
		id := LetterID{Stream: name, Seq: 18446744073709551615, Stored: letterAt}
		k := id.ReplayMsgID()
		if err := agentapi.ValidateIdempotencyKey(k); err != nil {
			t.Errorf("stream %q: %q: %v", name, k, err)
		}
		if k != id.ReplayMsgID() {
			t.Errorf("stream %q: the id of one letter changes", name)
		}
		other := id
		other.Stored = other.Stored.Add(time.Hour)
		if k == other.ReplayMsgID() {
			t.Errorf("stream %q: a later letter with the same sequence has the same id", name)
		}
	}
	// A name a key may hold keeps the id earlier versions gave, so an
	// interrupted replay run is still deduplicated after an upgrade.
	if got := (LetterID{Stream: "AGENTRELAY_DLQ", Seq: 7, Stored: letterAt}).ReplayMsgID(); got != "agentrelay-replay:AGENTRELAY_DLQ:7:"+itoa(letterAt.UnixNano()) {
		t.Errorf("plain name: %q", got)
	}
}
