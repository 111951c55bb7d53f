package deadletter

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/fold"
	"github.com/agentrelay/agentrelay/internal/natsheader"
)

// Facts are what the worker knows of a message it gives up on: what it was,
// where it came from and why. Encode writes them into a letter's headers
// and Decode reads them back.
type Facts struct {
	Reason string // why it is a dead letter (a Reason)
	Class  string // the last attempt's class
	Status int    // the last HTTP status; 0 when there was none
	Error  string // what went wrong; "" when nothing did

	Route     string
	TriggerID string

	Stream      string    // the original's stream
	StreamSeq   uint64    // its sequence there
	OrigSubject string    // its subject: where a replay goes
	OrigStored  time.Time // when it was stored

	Attempts       int // delivery attempts made
	DeadLetteredAt time.Time

	// IdempotencyKey is the key used (or that would have been). Only a
	// valid key is carried as the letter's Idempotency-Key: a replay sends
	// it again. An invalid one is not, and the producer's header is kept
	// under HeaderOriginalPrefix instead.
	IdempotencyKey string

	// OrderedKey is the conversation key of an event of an ordered route;
	// NextSeq the stream sequence of the key's next event (released by
	// this letter), 0 when there is none.
	OrderedKey string
	NextSeq    uint64
}

// Target is the dead-letter stream a letter goes to: the letter's subject
// and size depend on it.
type Target struct {
	Stream        string // published with it as Nats-Expected-Stream
	SubjectPrefix string // the letter's subject is Subject(SubjectPrefix, original)
	// MaxPayload is the largest message (headers and body) the stream
	// takes through the connection: the connection's max_payload, or the
	// stream's MaxMsgSize when smaller.
	MaxPayload int
}

// Encoded is a dead letter ready to be published.
type Encoded struct {
	// Msg is the letter. Publish it with MsgID as its Nats-Msg-Id and
	// Target.Stream as the expected stream.
	Msg   *nats.Msg
	MsgID string
	Form  Form
	// BodyOmitted: the letter has no body (HeaderBodyOmitted says why).
	BodyOmitted bool
	// DroppedHeaders counts the original's headers left out.
	DroppedHeaders int
	// TruncatedHeaders names agentrelay's headers whose values were cut
	// to their bound (HeaderTruncatedHeaders).
	TruncatedHeaders []string

	base nats.Header // agentrelay's headers, which every form has
	all  []string    // every one of the original's headers, by name
}

// Size limits of one dead letter.
const (
	// MaxJetStreamHeaderBytes is the largest header block JetStream
	// stores: nats-server refuses len(hdr) > math.MaxUint16 with "header
	// size exceeds maximum allowed of 64k" (JSStreamHeaderExceedsMaximumErr,
	// server/stream.go), whatever max_payload is.
	MaxJetStreamHeaderBytes = math.MaxUint16

	// letterSlack is kept free below the limits, for headers the client
	// or a newer server version might add on the way.
	letterSlack = 256
)

// Bounds of the values agentrelay writes into a dead letter's headers: the
// letter must fit under MaxJetStreamHeaderBytes however hostile the
// original (its subject, error text, ...) is.
const (
	maxErrorHeader   = 1024     // HeaderError
	maxNameHeader    = 256      // route, trigger id, stream, reason, class, ordered key
	maxSubjectHeader = 16 << 10 // HeaderSubject; a default server allows < 4 KiB
	maxRefusalHeader = 512      // HeaderRefusal
	maxListHeader    = 1024     // HeaderDroppedHeaders, HeaderTruncatedHeaders
	maxListName      = 128      // one name in such a list
)

// Encode builds the dead letter of a message (its headers and body) from
// what the worker knows of it.
//
// The letter is sized to t.MaxPayload and JetStream's header limit.
// agentrelay's own headers (bounded values) always go in; the body goes in
// when it fits beside them; then as many of the original's headers as fit,
// smallest first (the others are named in HeaderDroppedHeaders). The
// original's headers are carried as they are, except: its Nats-* headers,
// and an Idempotency-Key that is not the key used, are renamed under
// HeaderOriginalPrefix; its Agentrelay-* headers are left out (stale from an
// earlier dead-lettering, or forged), except the replay history
// (HeaderReplayPrefix), which is carried on.
func Encode(f Facts, header nats.Header, body []byte, t Target) Encoded {
	id := MsgID(f.Route, f.Stream, f.StreamSeq, f.OrigStored)
	base, truncated := letterHeaders(f, body)
	cands, unusable := originalHeaders(header, keyUsed(f.IdempotencyKey))
	e := Encoded{MsgID: id, TruncatedHeaders: truncated, base: base, all: slices.Clone(unusable)}
	for _, c := range cands {
		e.all = append(e.all, c.original)
	}

	// Everything below is counted as nats.go encodes it (an upper bound:
	// it trims values), with room for the bookkeeping headers set after
	// the choice and those the publish adds.
	payCap := t.MaxPayload - letterSlack
	hdrCap := min(MaxJetStreamHeaderBytes, t.MaxPayload) - letterSlack
	used := headerBlockSize(base) +
		headerLineSize(jetstream.MsgIDHeader, id) + headerLineSize(jetstream.ExpectedStreamHeader, t.Stream) +
		headerLineSize(HeaderLetterForm, string(FormTrimmed)) +
		headerLineSize(HeaderBodyOmitted, BodyOmittedTooLarge) +
		len(HeaderDroppedHeaders) + maxListHeader + len(": \r\n")
	keepBody := used <= hdrCap && used+len(body) <= payCap
	kept := 0
	for _, c := range cands {
		if used+c.size > hdrCap || (keepBody && used+c.size+len(body) > payCap) {
			break
		}
		used += c.size
		kept++
	}

	out := &nats.Msg{Subject: Subject(t.SubjectPrefix, f.OrigSubject), Header: maps.Clone(base)}
	for _, c := range cands[:kept] {
		out.Header[c.key] = c.values
	}
	dropped := slices.Clone(unusable)
	for _, c := range cands[kept:] {
		dropped = append(dropped, c.original)
	}
	e.Form, e.DroppedHeaders, e.BodyOmitted = FormFull, len(dropped), !keepBody
	if keepBody {
		out.Data = body
	} else {
		out.Header.Set(HeaderBodyOmitted, BodyOmittedTooLarge)
	}
	if len(dropped) > 0 {
		out.Header.Set(HeaderDroppedHeaders, nameList(dropped))
	}
	if len(dropped) > 0 || !keepBody {
		e.Form = FormTrimmed
	}
	out.Header.Set(HeaderLetterForm, string(e.Form))
	e.Msg = out
	return e
}

// Reduced is e's reduced form (FormReduced), to publish under the same
// MsgID when JetStream refused e.Msg for good: small, holding nothing of
// the original's but its facts (agentrelay's headers, with the body's size
// and digest), and why, in HeaderRefusal.
func (e Encoded) Reduced(refusal error) Encoded {
	red := &nats.Msg{Subject: e.Msg.Subject, Header: maps.Clone(e.base)}
	if len(e.all) > 0 {
		red.Header.Set(HeaderDroppedHeaders, nameList(e.all))
	}
	red.Header.Set(HeaderBodyOmitted, BodyOmittedRefused)
	red.Header.Set(HeaderRefusal, OneLine(refusal.Error(), maxRefusalHeader))
	red.Header.Set(HeaderLetterForm, string(FormReduced))
	e.Msg, e.Form, e.BodyOmitted, e.DroppedHeaders = red, FormReduced, true, len(e.all)
	return e
}

// letterHeaders are the headers every form of a dead letter has, with
// bounded values, and the names of those whose values were cut.
func letterHeaders(f Facts, body []byte) (nats.Header, []string) {
	h := make(nats.Header, 24)
	var truncated []string
	set := func(name, value string, n int) {
		v := OneLine(value, n)
		if len(v) < len(value) {
			truncated = append(truncated, name)
		}
		h.Set(name, v)
	}
	set(HeaderReason, f.Reason, maxNameHeader)
	set(HeaderClass, f.Class, maxNameHeader)
	if f.Status != 0 {
		h.Set(HeaderStatus, strconv.Itoa(f.Status))
	}
	if f.Error != "" {
		set(HeaderError, f.Error, maxErrorHeader)
	}
	set(HeaderRoute, f.Route, maxNameHeader)
	set(HeaderTriggerID, f.TriggerID, maxNameHeader)
	set(HeaderStream, f.Stream, maxNameHeader)
	h.Set(HeaderSequence, strconv.FormatUint(f.StreamSeq, 10))
	// Replay publishes to this subject, so it is carried byte for byte,
	// only cut when it is beyond any sensible server's control line. Cut,
	// it no longer matches the letter's subject (a digest of the whole
	// one), which a replay checks.
	subject := f.OrigSubject
	if len(subject) > maxSubjectHeader {
		truncated = append(truncated, HeaderSubject)
		subject = subject[:maxSubjectHeader]
	}
	h.Set(HeaderSubject, subject)
	h.Set(HeaderStoredAt, f.OrigStored.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderAttempts, strconv.Itoa(f.Attempts))
	h.Set(HeaderDeadLetteredAt, f.DeadLetteredAt.UTC().Format(time.RFC3339Nano))
	if f.OrderedKey != "" {
		set(HeaderOrderedKey, f.OrderedKey, maxNameHeader)
		if f.NextSeq != 0 {
			h.Set(HeaderNextSequence, strconv.FormatUint(f.NextSeq, 10))
		}
	}
	sum := sha256.Sum256(body)
	h.Set(HeaderBodySize, strconv.Itoa(len(body)))
	h.Set(HeaderBodySHA256, hex.EncodeToString(sum[:]))
	if keyUsed(f.IdempotencyKey) {
		// Replay republishes with this header, so the API sees the same
		// key and does not run an event it had in fact accepted twice.
		h.Set(HeaderIdempotencyKey, f.IdempotencyKey)
	}
	if len(truncated) > 0 {
		h.Set(HeaderTruncatedHeaders, nameList(truncated))
	}
	return h, truncated
}

// keyUsed reports whether a letter carries key as its Idempotency-Key. The
// worker passes only valid keys; an invalid one is not carried, so the
// producer's header is kept under HeaderOriginalPrefix instead.
func keyUsed(key string) bool {
	return key != "" && agentapi.ValidateIdempotencyKey(key) == nil
}

// header is one of the original's headers as a dead letter carries it.
type header struct {
	original, key string
	values        []string
	size          int // encoded
}

// originalHeaders returns the original's headers as a dead letter would
// carry them, smallest first, and the names of those it cannot carry (names
// nats.go refuses to send: a message from another client may have them).
// keyUsed says the letter carries the Idempotency-Key that was used.
func originalHeaders(h nats.Header, keyUsed bool) (cands []header, unusable []string) {
	for k, v := range h {
		key := k
		switch {
		case fold.HasPrefix(k, natsPrefix):
			key = HeaderOriginalPrefix + k
		case fold.HasPrefix(k, HeaderReplayPrefix):
			// the replay's history: carried on
		case fold.HasPrefix(k, HeaderPrefix):
			continue // stale from an earlier dead-lettering; replaced
		case strings.EqualFold(k, HeaderIdempotencyKey):
			// The dead letter's Idempotency-Key is the key that was
			// used. A producer's key that could not be used is kept
			// under another name: carried as the key, a replay would
			// send it and be dead-lettered again.
			if keyUsed {
				continue
			}
			key = HeaderOriginalPrefix + k
		}
		if len(v) == 0 {
			continue
		}
		if !natsheader.ValidName(key) {
			unusable = append(unusable, k)
			continue
		}
		size := 0
		for _, s := range v {
			size += headerLineSize(key, s)
		}
		cands = append(cands, header{original: k, key: key, values: v, size: size})
	}
	slices.SortFunc(cands, func(a, b header) int {
		if c := cmp.Compare(a.size, b.size); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return cands, unusable
}

// headerLineSize is the encoded size of one header value: "k: v\r\n".
func headerLineSize(k, v string) int { return len(k) + len(v) + 4 }

// headerBlockSize is the encoded size of h: "NATS/1.0\r\n", the lines, "\r\n".
func headerBlockSize(h nats.Header) int {
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += headerLineSize(k, v)
		}
	}
	return n
}

// nameList joins header names for HeaderDroppedHeaders, sorted, each and
// the whole bounded.
func nameList(names []string) string {
	names = slices.Clone(names)
	slices.Sort(names)
	var b strings.Builder
	for i, n := range names {
		n = OneLine(n, maxListName)
		more := fmt.Sprintf(" and %d more", len(names)-i)
		if b.Len()+len(n)+2+len(more) > maxListHeader {
			b.WriteString(more)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}

// headerText makes s safe as a one-line header value of at most n bytes.
func OneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
		// do not cut a UTF-8 sequence in half
		for len(s) > 0 && s[len(s)-1]&0xc0 == 0x80 {
			s = s[:len(s)-1]
		}
		if len(s) > 0 && s[len(s)-1] >= 0xc0 {
			s = s[:len(s)-1]
		}
	}
	return s
}
