package deadletter

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/internal/fold"
)

// Letter is what a dead letter's headers say, read back by Decode.
type Letter struct {
	// Facts are the worker's account of the message: what it was, where
	// it came from, why it was given up on.
	Facts
	// History is the event's replays before this letter (zero for a first
	// dead letter).
	History

	Form        Form   // "" for a letter that does not say
	BodySize    int    // the original body's size; 0 when the letter does not say
	BodySHA256  string // hex SHA-256 of the original body
	BodyOmitted string // why the letter holds no body (BodyOmittedTooLarge, BodyOmittedRefused); "" when it holds it
	// DroppedHeaders names the original's headers the letter left out,
	// TruncatedHeaders agentrelay's headers whose values were cut; Refusal
	// says why JetStream refused the letter in its first form.
	DroppedHeaders, TruncatedHeaders, Refusal string

	// Carried are the original's headers the letter carries as they were:
	// all but JetStream's (Nats-*), agentrelay's (Agentrelay-*) and the
	// Idempotency-Key. A replay sends them again.
	Carried nats.Header
	// Renamed are the original's headers the letter keeps under
	// HeaderOriginalPrefix, by their own names (Nats-Msg-Id, ...).
	Renamed nats.Header
}

// maxHistory bounds the replay counts a letter's headers may claim.
const maxHistory = 1 << 30

// Decode reads a dead letter's headers. What is missing or malformed reads
// as zero: the headers are anyone's who may publish to the dead-letter
// subjects, so the numbers are bounded and nothing is trusted for being
// there (replay checks a letter before it uses it, see internal/dlq).
func Decode(h nats.Header) Letter {
	l := Letter{
		Facts: Facts{
			Reason:         h.Get(HeaderReason),
			Class:          h.Get(HeaderClass),
			Error:          h.Get(HeaderError),
			Route:          h.Get(HeaderRoute),
			TriggerID:      h.Get(HeaderTriggerID),
			Stream:         h.Get(HeaderStream),
			OrigSubject:    h.Get(HeaderSubject),
			IdempotencyKey: h.Get(HeaderIdempotencyKey),
			OrderedKey:     h.Get(HeaderOrderedKey),
		},
		History:          decodeHistory(h),
		Form:             Form(h.Get(HeaderLetterForm)),
		BodySHA256:       h.Get(HeaderBodySHA256),
		BodyOmitted:      h.Get(HeaderBodyOmitted),
		DroppedHeaders:   h.Get(HeaderDroppedHeaders),
		TruncatedHeaders: h.Get(HeaderTruncatedHeaders),
		Refusal:          h.Get(HeaderRefusal),
	}
	l.Status, _ = strconv.Atoi(h.Get(HeaderStatus))
	l.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderSequence), 10, 64)
	l.Attempts, _ = strconv.Atoi(h.Get(HeaderAttempts))
	l.NextSeq, _ = strconv.ParseUint(h.Get(HeaderNextSequence), 10, 64)
	l.OrigStored = parseTime(h.Get(HeaderStoredAt))
	l.DeadLetteredAt = parseTime(h.Get(HeaderDeadLetteredAt))
	if n, err := strconv.Atoi(h.Get(HeaderBodySize)); err == nil && n >= 0 {
		l.BodySize = n
	}
	for k, v := range h {
		switch {
		case fold.HasPrefix(k, HeaderOriginalPrefix):
			if l.Renamed == nil {
				l.Renamed = nats.Header{}
			}
			l.Renamed[k[len(HeaderOriginalPrefix):]] = v
		case producers(k):
			if l.Carried == nil {
				l.Carried = nats.Header{}
			}
			l.Carried[k] = v
		}
	}
	return l
}

// producers reports whether a header of a dead letter is one of the
// producer's own, which a replay sends again: not JetStream's, not
// agentrelay's bookkeeping, not the key (a replay sets its own).
func producers(k string) bool {
	return !fold.HasPrefix(k, natsPrefix) && !fold.HasPrefix(k, HeaderPrefix) && !strings.EqualFold(k, HeaderIdempotencyKey)
}

func parseTime(v string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// OriginalMsgID is the original's Nats-Msg-Id, "" when it had none.
func (l Letter) OriginalMsgID() string { return l.Renamed.Get("Nats-Msg-Id") }

// TotalAttempts is every delivery attempt of the event, over every replay.
func (l Letter) TotalAttempts() int { return l.Attempts + l.PriorAttempts }

// Origin is where the event was first published: the original of the first
// dead letter, before any replay.
func (l Letter) Origin() (string, uint64) {
	if l.OriginStream != "" {
		return l.OriginStream, l.OriginSeq
	}
	return l.Stream, l.StreamSeq
}
