// Package dlq reads, replays and purges agentrelay's dead-letter stream: the
// library behind `agentrelay status`, `dlq list`, `dlq show`, `dlq replay`
// and `dlq purge`.
//
// Scans use a short-lived ordered consumer (no acks, no durable state on the
// server, nothing that could disturb the worker's own consumers) and can ask
// for headers only when the body is not needed. Replay publishes each dead
// letter back to its original subject with its original Idempotency-Key and
// waits for the work stream's ack before deleting the dead letter, so an
// interrupted replay can simply be run again: a dead letter is only ever gone
// once its replay is stored, and a replay published twice carries the same
// message id (deduplicated by the work stream within its window) and the
// same Idempotency-Key (deduplicated by the API after that).
//
// A dead letter's headers are anyone's to write who may publish to the
// dead-letter subjects, and replay publishes with the operator's
// credentials. So replay trusts no header on its own: a letter goes back
// only to a subject its own route consumes, only if it sits on the
// dead-letter subject that subject maps to, never to a system subject, and
// a publish the work stream deduplicates counts only when the stored
// message is this letter's replay (see Check and Replay).
package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/streamscan"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// ErrNoStream is returned when the dead-letter stream does not exist.
var ErrNoStream = errors.New("dead-letter stream does not exist")

// ErrNoLetter is returned by Get for a sequence the stream does not hold.
var ErrNoLetter = errors.New("no dead letter")

// notFound reports whether err says a stream message does not exist. The
// server answers a missing sequence with a 404 API error (10037), which
// the client does not always map to jetstream.ErrMsgNotFound.
func notFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrMsgNotFound) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound)
}

// Letter is one dead letter: where it is stored, and what it says
// (deadletter.Letter, whose fields it carries: Reason, Route, Stream,
// StreamSeq, OrigSubject, IdempotencyKey, the replay history, ...).
type Letter struct {
	Seq     uint64    // sequence in the dead-letter stream
	Subject string    // its subject in the dead-letter stream
	Stored  time.Time // when the dead letter was stored
	Header  nats.Header
	Data    []byte // nil when scanned headers-only
	Size    int    // body size in bytes, known even headers-only

	// Corrected: Data is a corrected body given by the operator (WithBody),
	// not the one stored.
	Corrected bool

	// Letter is what its headers say. Of it, BodyOmitted says why the
	// letter holds no body (the original was too large to store beside the
	// headers, or JetStream refused the letter): Data is then not the
	// event, and replaying it would send an empty one.
	deadletter.Letter
}

// ID names the letter in the dead-letter stream called dlStream.
func (l Letter) ID(dlStream string) deadletter.LetterID {
	return deadletter.LetterID{Stream: dlStream, Seq: l.Seq, Stored: l.Stored}
}

// Poison reports whether the letter's reason says the message itself broke
// the contract: replayed unchanged it is dead-lettered again.
func (l Letter) Poison() bool { return slices.Contains(PoisonReasons, l.Reason) }

// WithBody returns l with a corrected body in place of the stored one (or
// of none, when the body was omitted). Its key and history stay.
func (l Letter) WithBody(body []byte) Letter {
	l.Data, l.Size, l.Corrected = body, len(body), true
	return l
}

// FromMsg reads a Letter from a dead-letter message.
func FromMsg(seq uint64, subject string, stored time.Time, h nats.Header, data []byte) Letter {
	l := Letter{Seq: seq, Subject: subject, Stored: stored, Header: h, Data: data, Size: len(data), Letter: deadletter.Decode(h)}
	if data == nil {
		if n, err := strconv.Atoi(h.Get("Nats-Msg-Size")); err == nil {
			l.Size = n
		}
	}
	return l
}

// Filter selects dead letters. The zero value selects all.
type Filter struct {
	Route   string    // exact route name
	Reason  string    // exact reason
	Status  int       // exact HTTP status
	Subject string    // original subject, NATS wildcards allowed
	Since   time.Time // stored at or after
	Until   time.Time // stored before
	Seqs    []uint64  // only these sequences
	FromSeq uint64    // start the scan at this sequence (before Since)
	Limit   int       // at most this many (0: no limit)
	// MaxSeq, when set, ends the scan at this sequence. Replay and purge
	// set it to the stream's last sequence when they start: a replayed
	// event that fails again is dead-lettered anew, and without the bound
	// the scan would reach the new letter and replay it again, for ever
	// (and purge would delete letters nobody has seen).
	MaxSeq uint64
}

// Match reports whether l passes the filter (Limit aside).
func (f Filter) Match(l Letter) bool {
	switch {
	case f.Route != "" && l.Route != f.Route:
		return false
	case f.Reason != "" && l.Reason != f.Reason:
		return false
	case f.Status != 0 && l.Status != f.Status:
		return false
	case f.Subject != "" && !subject.Matches(f.Subject, l.OrigSubject):
		return false
	case !f.Since.IsZero() && l.Stored.Before(f.Since):
		return false
	case !f.Until.IsZero() && !l.Stored.Before(f.Until):
		return false
	}
	if (f.MaxSeq > 0 && l.Seq > f.MaxSeq) || l.Seq < f.FromSeq {
		return false
	}
	if len(f.Seqs) > 0 {
		for _, s := range f.Seqs {
			if s == l.Seq {
				return true
			}
		}
		return false
	}
	return true
}

// Store is the dead-letter stream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    deadletter.Config
}

// Open looks up the dead-letter stream.
func Open(ctx context.Context, js jetstream.JetStream, cfg deadletter.Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	s, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %s (nothing has been dead-lettered yet, or dead_letter.stream names another stream)", ErrNoStream, cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up dead-letter stream %s: %w", cfg.Stream, err)
	}
	return &Store{js: js, stream: s, cfg: cfg}, nil
}

// Name is the stream's name.
func (s *Store) Name() string { return s.cfg.Stream }

// Bounded returns f ending at the stream's current last sequence, so that a
// scan that writes to the stream (replay, purge) only sees what was there
// when it started.
func (s *Store) Bounded(ctx context.Context, f Filter) (Filter, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return f, err
	}
	f.MaxSeq = max(info.State.LastSeq, 1)
	return f, nil
}

// Info returns the stream's current info.
func (s *Store) Info(ctx context.Context) (*jetstream.StreamInfo, error) { return s.stream.Info(ctx) }

// Scan calls fn for each dead letter matching f, oldest first, until fn
// returns false or an error. With headersOnly the bodies are not
// transferred (Letter.Data is nil, Letter.Size still set).
func (s *Store) Scan(ctx context.Context, f Filter, headersOnly bool, fn func(Letter) (bool, error)) error {
	if len(f.Seqs) > 0 {
		return s.scanSeqs(ctx, f, fn)
	}
	r := streamscan.Range{HeadersOnly: headersOnly, FromSeq: f.FromSeq, ToSeq: f.MaxSeq, ToTime: f.Until}
	if f.FromSeq == 0 {
		r.FromTime = f.Since
	}
	if f.Subject != "" {
		// Broad enough for letters whose subject was shortened (see
		// deadletter.SubjectFilter); Match then checks the original
		// subject each letter names.
		r.Subjects = []string{deadletter.SubjectFilter(s.cfg.SubjectPrefix, f.Subject)}
	}
	v := &visitor{f: f, fn: fn}
	_, err := streamscan.Scan(ctx, s.stream, r, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		var data []byte
		if !headersOnly {
			data = m.Data()
		}
		return v.offer(FromMsg(md.Sequence.Stream, m.Subject(), md.Timestamp, m.Headers(), data))
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading %s: %w", s.cfg.Stream, err)
	}
	return err
}

func (s *Store) scanSeqs(ctx context.Context, f Filter, fn func(Letter) (bool, error)) error {
	v := &visitor{f: f, fn: fn}
	for _, seq := range f.Seqs {
		l, err := s.Get(ctx, seq)
		if errors.Is(err, ErrNoLetter) {
			continue
		}
		if err != nil {
			return err
		}
		if more, err := v.offer(l); err != nil || !more {
			return err
		}
	}
	return nil
}

// visitor applies a scan's filter and limit to the letters it is offered,
// so both ways of scanning (the whole stream, or given sequences) select
// exactly alike.
type visitor struct {
	f       Filter
	fn      func(Letter) (bool, error)
	matched int
}

// offer passes l to fn if it matches, and reports whether the scan goes on.
func (v *visitor) offer(l Letter) (bool, error) {
	if !v.f.Match(l) {
		return true, nil
	}
	v.matched++
	more, err := v.fn(l)
	if err != nil || !more {
		return false, err
	}
	return v.f.Limit == 0 || v.matched < v.f.Limit, nil
}

// Get returns one dead letter by sequence.
func (s *Store) Get(ctx context.Context, seq uint64) (Letter, error) {
	m, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		if notFound(err) {
			return Letter{}, fmt.Errorf("%w %d in stream %s", ErrNoLetter, seq, s.cfg.Stream)
		}
		return Letter{}, err
	}
	if !strings.HasPrefix(m.Subject, s.cfg.SubjectPrefix+".") {
		return Letter{}, fmt.Errorf("message %d of %s is not a dead letter (subject %s)", seq, s.cfg.Stream, m.Subject)
	}
	if m.Data == nil {
		m.Data = []byte{}
	}
	return FromMsg(m.Sequence, m.Subject, m.Time, m.Header, m.Data), nil
}

// Counts are dead letters by route and reason.
type Counts map[string]map[string]int

// Count counts the dead letters matching f by route and reason, reading
// headers only.
func (s *Store) Count(ctx context.Context, f Filter) (Counts, error) {
	c := Counts{}
	err := s.Scan(ctx, f, true, func(l Letter) (bool, error) {
		if c[l.Route] == nil {
			c[l.Route] = map[string]int{}
		}
		c[l.Route][l.Reason]++
		return true, nil
	})
	return c, err
}

// Matching counts the dead letters f selects (Limit included), reading
// headers only.
func (s *Store) Matching(ctx context.Context, f Filter) (int, error) {
	n := 0
	err := s.Scan(ctx, f, true, func(Letter) (bool, error) { n++; return true, nil })
	return n, err
}

// Delete removes one dead letter.
func (s *Store) Delete(ctx context.Context, seq uint64) error {
	return s.stream.DeleteMsg(ctx, seq)
}

// PoisonReasons are the reasons that blame the message itself: replaying
// it unchanged only dead-letters it again. mapping_failed and
// trigger_not_allowed are not among them: a corrected mapping or
// allowed_trigger_ids can make the same event pass, so replaying those
// after the fix is what an operator should do.
var PoisonReasons = []string{
	string(deadletter.ReasonInvalidJSON), string(deadletter.ReasonMissingInput), string(deadletter.ReasonInputTooLarge),
	string(deadletter.ReasonInvalidUTF8), string(deadletter.ReasonInvalidIdempotencyKey), string(deadletter.ReasonInvalidConversationKey),
	string(deadletter.ReasonInvalidCloudEvent),
}

// Reasons are the reasons this version of agentrelay dead-letters with
// (deadletter.Reasons), as the letters' headers spell them. Older or newer
// workers may write others.
func Reasons() []string {
	rs := deadletter.Reasons()
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}
