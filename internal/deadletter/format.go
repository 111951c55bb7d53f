// Package deadletter is agentrelay's dead-letter format, in one place: the
// headers a dead letter carries, the subject it is stored on, how a letter
// is built from the message it stands for (Encode), read back (Decode), and
// turned into a replay (ReplayHeader, LetterID). The worker writes letters
// with it (consumer.DeadLetter); `agentrelay dlq`, `agentrelay events` and
// the backlog metrics read them with it (internal/dlq). Neither side spells
// a header name of its own, so the writer and the readers cannot drift
// apart.
//
// It does no I/O: it works on headers, bodies, names and sizes. Publishing
// a letter (and falling back to its reduced form when JetStream refuses it)
// is the consumer's business, reading and replaying letters internal/dlq's.
//
// A dead letter's headers are anyone's to write who may publish to the
// dead-letter subjects: Decode bounds what it reads, and replay checks a
// letter before trusting it (internal/dlq).
package deadletter

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// Headers agentrelay sets on a dead letter. Together with the original body
// and the original's own headers they say what the message was, where it came
// from and why it was given up on.
const (
	HeaderReason         = "Agentrelay-Reason"           // the reason (deadletter.Reason)
	HeaderClass          = "Agentrelay-Class"            // the last attempt's class
	HeaderStatus         = "Agentrelay-Status"           // the last HTTP status; absent when there was none
	HeaderError          = "Agentrelay-Error"            // what went wrong, one line, bounded
	HeaderRoute          = "Agentrelay-Route"            // route name
	HeaderTriggerID      = "Agentrelay-Trigger-Id"       // the route's trigger id
	HeaderStream         = "Agentrelay-Stream"           // original stream
	HeaderSequence       = "Agentrelay-Sequence"         // original stream sequence
	HeaderSubject        = "Agentrelay-Subject"          // original subject (where replay publishes to)
	HeaderStoredAt       = "Agentrelay-Stored-At"        // when the original was stored, RFC 3339
	HeaderAttempts       = "Agentrelay-Attempts"         // delivery attempts made
	HeaderDeadLetteredAt = "Agentrelay-Dead-Lettered-At" // RFC 3339
	HeaderOrderedKey     = "Agentrelay-Ordered-Key"      // the conversation key of an event of an ordered route
	HeaderNextSequence   = "Agentrelay-Next-Sequence"    // the stream sequence of the key's next event (released by this letter)

	// What a dead letter holds of the original (see Form).
	HeaderLetterForm       = "Agentrelay-Letter-Form"       // a Form
	HeaderBodySize         = "Agentrelay-Body-Size"         // the original body's size in bytes
	HeaderBodySHA256       = "Agentrelay-Body-Sha256"       // hex SHA-256 of the original body
	HeaderBodyOmitted      = "Agentrelay-Body-Omitted"      // why the letter has no body; absent when it has
	HeaderDroppedHeaders   = "Agentrelay-Dropped-Headers"   // the original's headers left out, by name, bounded
	HeaderTruncatedHeaders = "Agentrelay-Truncated-Headers" // agentrelay headers whose values were cut to their bound
	HeaderRefusal          = "Agentrelay-Refusal"           // why JetStream refused the letter (FormReduced)

	// HeaderOriginalPrefix keeps the values of the original's Nats-*
	// headers, which cannot be copied as they are: JetStream acts on them
	// (a copied Nats-Expected-Stream makes the publish fail, a copied
	// Nats-Msg-Id would deduplicate against the wrong message). A
	// producer's Idempotency-Key that could not be used is kept under it
	// too.
	HeaderOriginalPrefix = "Agentrelay-Original-"

	// HeaderPrefix starts every header agentrelay writes. The original's
	// headers under it are cleared before a copy is made, so a message
	// that is dead-lettered a second time (after a replay) does not carry
	// stale reasons from the first, and a producer cannot forge them.
	HeaderPrefix = "Agentrelay-"

	// HeaderReplayPrefix starts the headers a replay carries (see
	// History). Unlike the rest of HeaderPrefix they are kept when the
	// replay is dead-lettered again: they are the event's history, not
	// stale reasons, and without them a replay that fails again would look
	// like a new event.
	HeaderReplayPrefix = HeaderPrefix + "Replay-"
)

// Headers of a replayed message: the event's History.
const (
	// HeaderReplayOf names the dead letter a replayed message came from
	// (LetterID.String: stream, sequence, stored time).
	HeaderReplayOf = HeaderReplayPrefix + "Of"
	// HeaderReplayOrigin is where the event was first published,
	// "stream:sequence", before any replay.
	HeaderReplayOrigin = HeaderReplayPrefix + "Origin"
	// HeaderReplayCount counts the replays of the event, this one included.
	HeaderReplayCount = HeaderReplayPrefix + "Count"
	// HeaderReplayAttempts counts the delivery attempts the event had
	// before this replay, over every earlier dead letter.
	HeaderReplayAttempts = HeaderReplayPrefix + "Attempts"
	// HeaderReplayBody is ReplayBodyCorrected when the replay's body was
	// given by the operator instead of the dead letter's.
	HeaderReplayBody = HeaderReplayPrefix + "Body"
)

// ReplayBodyCorrected is HeaderReplayBody's value on a replay whose body was
// corrected.
const ReplayBodyCorrected = "corrected"

// HeaderIdempotencyKey is the message header that carries an event's
// Idempotency-Key. A dead letter carries the key that was used under it, and
// a replay sends it again. (event.HeaderIdempotencyKey is this header;
// it is declared here because the format cannot import the consumer.)
const HeaderIdempotencyKey = "Idempotency-Key"

// natsPrefix starts the headers JetStream acts on.
const natsPrefix = "Nats-"

// Form says how much of the original a stored dead letter holds.
type Form string

// Letter forms, from most to least complete.
const (
	// FormFull: the original's body and all of its headers.
	FormFull Form = "full"
	// FormTrimmed: sized to the server's limits before publishing. Some
	// of the original's headers (named in HeaderDroppedHeaders) or its
	// body (HeaderBodyOmitted) were left out.
	FormTrimmed Form = "trimmed"
	// FormReduced: JetStream refused the letter as sized (HeaderRefusal
	// says why). Stored instead: agentrelay's headers only, no body, with
	// the body's size and digest and the original's stream and sequence.
	FormReduced Form = "reduced"
)

// Values of HeaderBodyOmitted.
const (
	// BodyOmittedTooLarge: the body did not fit in one message beside the
	// dead letter's headers.
	BodyOmittedTooLarge = "too_large"
	// BodyOmittedRefused: the letter is in FormReduced.
	BodyOmittedRefused = "refused"
)

// MaxSubjectLen bounds every subject a dead letter is published to. The
// server closes a connection whose protocol line ("HPUB <subject> <reply>
// <header size> <total size>") is longer than its max_control_line, 4096
// bytes by default, and nats.go does not reconnect after that: one message
// with a long subject would cut every worker off for good. 1024 bytes leaves
// the reply inbox and the sizes a wide margin.
const MaxSubjectLen = 1024

// subjectHashPrefix starts the last token of a shortened dead-letter subject.
const subjectHashPrefix = "sha256-"

// subjectHashLen is the length of that last token.
const subjectHashLen = len(subjectHashPrefix) + 2*sha256.Size

// Subject returns the dead-letter subject for an original subject:
// "<prefix>.<original>". When that would be longer than MaxSubjectLen, or
// the original is not a literal subject (empty tokens, wildcard tokens,
// white space), it is shortened to "<prefix>.<leading tokens that
// fit>.sha256-<hex of the original>": filters on the leading tokens still
// find it, and the full original stays in the HeaderSubject header. Subject
// is a pure function of the prefix and the original, so a tool can check a
// letter's subject against its header.
func Subject(prefix, original string) string {
	if s := prefix + "." + original; len(s) <= MaxSubjectLen && isLiteralSubject(original) {
		return s
	}
	sum := sha256.Sum256([]byte(original))
	tail := subjectHashPrefix + hex.EncodeToString(sum[:])
	b := make([]byte, 0, MaxSubjectLen)
	b = append(b, prefix...)
	budget := MaxSubjectLen - len(tail) - 1
	for t := range strings.SplitSeq(original, ".") {
		if !isLiteralToken(t) || len(b)+1+len(t) > budget {
			break
		}
		b = append(b, '.')
		b = append(b, t...)
	}
	b = append(b, '.')
	b = append(b, tail...)
	return string(b)
}

// SubjectFilter returns a subject filter on the dead-letter stream that
// holds every letter whose original subject pattern matches, whatever
// Subject made of it: the exact dead-letter subject for a literal pattern;
// for a pattern with wildcards, "<prefix>.<its leading literal tokens>.>"
// (or "<prefix>.>"), since a shortened subject keeps only leading tokens and
// a wildcard token may stand for a long one. The filter may hold other
// letters too: the caller matches the pattern against each letter's
// HeaderSubject.
func SubjectFilter(prefix, pattern string) string {
	if !hasWildcard(pattern) {
		// One original subject: one dead-letter subject.
		return Subject(prefix, pattern)
	}
	b := []byte(prefix)
	budget := MaxSubjectLen - subjectHashLen - 1
	for t := range strings.SplitSeq(pattern, ".") {
		if !isLiteralToken(t) || len(b)+1+len(t) > budget {
			break
		}
		b = append(b, '.')
		b = append(b, t...)
	}
	return string(b) + ".>"
}

// hasWildcard reports whether a subject has a "*" or ">" token.
func hasWildcard(s string) bool {
	for t := range strings.SplitSeq(s, ".") {
		if t == "*" || t == ">" {
			return true
		}
	}
	return false
}

// isLiteralSubject reports whether s is a subject one can publish to and
// subscribe to exactly: tokens that are not empty, not wildcards, and
// without white space.
func isLiteralSubject(s string) bool {
	for t := range strings.SplitSeq(s, ".") {
		if !isLiteralToken(t) {
			return false
		}
	}
	return true
}

func isLiteralToken(t string) bool {
	if t == "" || t == "*" || t == ">" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] == 0x7f {
			return false
		}
	}
	return true
}

// maxMsgID bounds a dead letter's Nats-Msg-Id, a header like any other.
const maxMsgID = 512

// MsgID is the Nats-Msg-Id of the dead letter of one stored message on one
// route (the original's stream, sequence and stored time). Publishing the
// same dead letter twice (a crash after the publish ack, before the
// original was terminated) stores it once. An id that would be longer than
// 512 bytes (a route or stream name that long) is
// "agentrelay:sha256-<hex of that id>" instead.
func MsgID(route, stream string, seq uint64, stored time.Time) string {
	id := "agentrelay:" + route + ":" + stream + ":" +
		strconv.FormatUint(seq, 10) + ":" + strconv.FormatInt(stored.UnixNano(), 10)
	if len(id) > maxMsgID {
		sum := sha256.Sum256([]byte(id))
		id = "agentrelay:sha256-" + hex.EncodeToString(sum[:])
	}
	return id
}
