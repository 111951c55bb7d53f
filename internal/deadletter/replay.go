package deadletter

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/agentapi"
)

// History is what a replayed message says of its event's replays: the
// HeaderReplayPrefix headers. A dead letter of a replay carries them on
// (Encode), so Decode reads the event's history from the letter.
type History struct {
	ReplayOf      string // the dead letter replayed (LetterID.String); "" for an event never replayed
	Replays       int    // replays of the event, the last one included
	OriginStream  string // where the event was first published, before any replay
	OriginSeq     uint64
	PriorAttempts int    // delivery attempts before the last replay, over every earlier letter
	ReplayBody    string // ReplayBodyCorrected when the last replay's body was the operator's
}

func decodeHistory(h nats.Header) History {
	r := History{ReplayOf: h.Get(HeaderReplayOf), ReplayBody: h.Get(HeaderReplayBody)}
	r.Replays, _ = strconv.Atoi(h.Get(HeaderReplayCount))
	r.PriorAttempts, _ = strconv.Atoi(h.Get(HeaderReplayAttempts))
	r.OriginStream, r.OriginSeq = ParseOrigin(h.Get(HeaderReplayOrigin))
	// Headers are anyone's who may publish: keep the sums sane.
	r.Replays, r.PriorAttempts = min(max(r.Replays, 0), maxHistory), min(max(r.PriorAttempts, 0), maxHistory)
	return r
}

// encode sets h's headers on m.
func (h History) encode(m nats.Header) {
	m.Set(HeaderReplayOf, h.ReplayOf)
	if h.OriginStream != "" && h.OriginSeq != 0 {
		m.Set(HeaderReplayOrigin, h.OriginStream+":"+strconv.FormatUint(h.OriginSeq, 10))
	}
	m.Set(HeaderReplayCount, strconv.Itoa(h.Replays))
	m.Set(HeaderReplayAttempts, strconv.Itoa(h.PriorAttempts))
	if h.ReplayBody != "" {
		m.Set(HeaderReplayBody, h.ReplayBody)
	}
}

// ParseOrigin reads a HeaderReplayOrigin value, "stream:sequence"; it
// returns "", 0 for anything else.
func ParseOrigin(v string) (string, uint64) {
	i := strings.LastIndexByte(v, ':')
	if i <= 0 {
		return "", 0
	}
	seq, err := strconv.ParseUint(v[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0
	}
	return v[:i], seq
}

// LetterID names one stored dead letter: its stream, its sequence there,
// and when it was stored. A re-created dead-letter stream numbers its
// letters from 1 again, and a new letter 1 is not the old one: the stored
// time tells them apart.
type LetterID struct {
	Stream string
	Seq    uint64
	Stored time.Time
}

// String is "stream:sequence:stored-unix-nanos", HeaderReplayOf's value.
func (id LetterID) String() string {
	return id.Stream + ":" + strconv.FormatUint(id.Seq, 10) + ":" + strconv.FormatInt(id.Stored.UnixNano(), 10)
}

// ReplayMsgID is the Nats-Msg-Id the replay of the letter is published
// with: the same on every run, so a replay that was published but whose
// letter was not yet deleted (an interrupted run) is deduplicated by the
// work stream when the run is repeated.
//
// The worker keys a replay that carries no usable Idempotency-Key by this
// id, so it is always a valid key: a stream name with characters a key may
// not hold, or long enough to make the id longer than a key may be, stands
// as "sha256-<hex of the name>".
func (id LetterID) ReplayMsgID() string {
	name := id.Stream
	for i := 0; i < len(name); i++ {
		if !agentapi.IsIdempotencyKeyByte(name[i]) || name[i] == '.' {
			name = ""
			break
		}
	}
	msgID := "agentrelay-replay:" + LetterID{name, id.Seq, id.Stored}.String()
	if name == "" || len(msgID) > agentapi.MaxIdempotencyKeyLen {
		sum := sha256.Sum256([]byte(id.Stream))
		msgID = "agentrelay-replay:" + LetterID{"sha256-" + hex.EncodeToString(sum[:]), id.Seq, id.Stored}.String()
	}
	return msgID
}

// Next is the history of a replay of l, stored as id: one replay more, l's
// attempts added to the earlier ones, and the event's origin (l's original,
// when l is the event's first dead letter). corrected says the replay's body
// is the operator's, not the letter's.
func (l Letter) Next(id LetterID, corrected bool) History {
	h := History{ReplayOf: id.String(), Replays: l.Replays + 1, PriorAttempts: l.TotalAttempts()}
	h.OriginStream, h.OriginSeq = l.Origin()
	if corrected {
		h.ReplayBody = ReplayBodyCorrected
	}
	return h
}

// ReplayHeader returns the headers of a replay of the dead letter whose
// headers are letter: the producer's own headers it carries (see
// Letter.Carried: none of JetStream's, none of agentrelay's bookkeeping),
// key as the Idempotency-Key, and the event's history h.
//
// A key that is not valid (a dead letter written before agentrelay kept
// such keys apart) is left out: the worker then keys the replay by its
// message id (LetterID.ReplayMsgID), which is valid and the same on every
// replay.
func ReplayHeader(letter nats.Header, key string, h History) nats.Header {
	out := nats.Header{}
	for k, v := range letter {
		if producers(k) {
			out[k] = v
		}
	}
	if keyUsed(key) {
		out.Set(HeaderIdempotencyKey, key)
	}
	h.encode(out)
	return out
}
