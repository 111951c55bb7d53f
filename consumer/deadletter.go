package consumer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/fold"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// Headers agentrelay sets on a dead letter. Together with the original body
// and the original's own headers they say what the message was, where it came
// from and why it was given up on.
const (
	HeaderReason         = "Agentrelay-Reason"           // a Reason
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

	// What a dead letter holds of the original (see LetterForm).
	HeaderLetterForm       = "Agentrelay-Letter-Form"       // a LetterForm
	HeaderBodySize         = "Agentrelay-Body-Size"         // the original body's size in bytes
	HeaderBodySHA256       = "Agentrelay-Body-Sha256"       // hex SHA-256 of the original body
	HeaderBodyOmitted      = "Agentrelay-Body-Omitted"      // why the letter has no body; absent when it has
	HeaderDroppedHeaders   = "Agentrelay-Dropped-Headers"   // the original's headers left out, by name, bounded
	HeaderTruncatedHeaders = "Agentrelay-Truncated-Headers" // agentrelay headers whose values were cut to their bound
	HeaderRefusal          = "Agentrelay-Refusal"           // why JetStream refused the letter (FormReduced)

	// HeaderOriginalPrefix keeps the values of the original's Nats-*
	// headers, which cannot be copied as they are: JetStream acts on them
	// (a copied Nats-Expected-Stream makes the publish fail, a copied
	// Nats-Msg-Id would deduplicate against the wrong message).
	HeaderOriginalPrefix = "Agentrelay-Original-"

	// agentrelayHeaderPrefix is cleared from the original before a copy is
	// made, so a message that is dead-lettered a second time (after a
	// replay) does not carry stale reasons from the first.
	agentrelayHeaderPrefix = "Agentrelay-"

	// HeaderReplayPrefix starts the headers `dlq replay` puts on a replayed
	// message (which dead letter it came from, the original event, the
	// replays and attempts so far). Unlike the rest of agentrelayHeaderPrefix
	// they are kept when the replay is dead-lettered again: they are the
	// event's history, not stale reasons, and without them a replay that
	// fails again would look like a new event.
	HeaderReplayPrefix = "Agentrelay-Replay-"
)

// DeadLetterConfig describes the dead-letter stream. The zero value of each
// field means its default.
type DeadLetterConfig struct {
	// Stream name. Default "AGENTRELAY_DLQ".
	Stream string
	// SubjectPrefix: a dead letter of subject S is published to
	// "<SubjectPrefix>.S". Default "agentrelay.dlq".
	SubjectPrefix string
	// MaxAge of a dead letter before JetStream expires it. Default 14 days.
	MaxAge time.Duration
	// MaxBytes of the stream; <= 0 means unlimited. When full, new dead
	// letters are refused (and their originals kept and retried), never
	// older ones dropped.
	MaxBytes int64
	// Replicas of the stream. Default 1; use 3 in a cluster.
	Replicas int
	// DuplicateWindow during which a repeated dead letter of the same
	// message (after a crash between publishing and terminating) is
	// recognised and stored once. Default 1h.
	DuplicateWindow time.Duration
	// PublishTimeout bounds waiting for JetStream's publish ack. Default 5s.
	PublishTimeout time.Duration
}

// Dead-letter defaults.
const (
	DefaultDeadLetterStream   = "AGENTRELAY_DLQ"
	DefaultDeadLetterPrefix   = "agentrelay.dlq"
	DefaultDeadLetterMaxAge   = 14 * 24 * time.Hour
	DefaultDuplicateWindow    = time.Hour
	DefaultDeadLetterTimeout  = 5 * time.Second
	defaultDeadLetterReplicas = 1
)

// WithDefaults returns c with zero fields set to their defaults.
func (c DeadLetterConfig) WithDefaults() DeadLetterConfig {
	if c.Stream == "" {
		c.Stream = DefaultDeadLetterStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultDeadLetterPrefix
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultDeadLetterMaxAge
	}
	if c.Replicas <= 0 {
		c.Replicas = defaultDeadLetterReplicas
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.DuplicateWindow > c.MaxAge {
		c.DuplicateWindow = c.MaxAge
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultDeadLetterTimeout
	}
	return c
}

// StreamConfig is the JetStream configuration of the dead-letter stream.
func (c DeadLetterConfig) StreamConfig() jetstream.StreamConfig {
	c = c.WithDefaults()
	maxBytes := c.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "agentrelay dead letters: messages the agent API refused or that failed every attempt",
		Subjects:    []string{c.SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      c.MaxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		Discard:     jetstream.DiscardNew,
		Duplicates:  c.DuplicateWindow,
	}
}

// MaxDeadLetterSubjectLen bounds every subject agentrelay publishes a dead
// letter to. The server closes a connection whose protocol line ("HPUB
// <subject> <reply> <header size> <total size>") is longer than its
// max_control_line, 4096 bytes by default, and nats.go does not reconnect
// after that: one message with a long subject would cut every worker off
// for good. 1024 bytes leaves the reply inbox and the sizes a wide margin.
const MaxDeadLetterSubjectLen = 1024

// subjectHashPrefix starts the last token of a shortened dead-letter subject.
const subjectHashPrefix = "sha256-"

// Subject returns the dead-letter subject for an original subject:
// "<SubjectPrefix>.<original>". When that would be longer than
// MaxDeadLetterSubjectLen, or the original is not a literal subject (empty
// tokens, wildcard tokens, white space), it is shortened to
// "<SubjectPrefix>.<leading tokens that fit>.sha256-<hex of the original>":
// filters on the leading tokens still find it, and the full original stays
// in the HeaderSubject header. Subject is a pure function of the
// configuration and the original, so a tool can check a letter's subject
// against its header. c is resolved (DeadLetterConfig.WithDefaults), as
// NewDeadLetter resolves its own.
func (c DeadLetterConfig) Subject(original string) string {
	prefix := c.SubjectPrefix
	if s := prefix + "." + original; len(s) <= MaxDeadLetterSubjectLen && isLiteralSubject(original) {
		return s
	}
	sum := sha256.Sum256([]byte(original))
	tail := subjectHashPrefix + hex.EncodeToString(sum[:])
	b := make([]byte, 0, MaxDeadLetterSubjectLen)
	b = append(b, prefix...)
	budget := MaxDeadLetterSubjectLen - len(tail) - 1
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

// Letter is what a dead letter says about why it is one.
type Letter struct {
	Reason    Reason
	Outcome   Outcome
	Route     string
	TriggerID string
	Key       string // the Idempotency-Key used (or that would have been)
	Attempts  int
	// Ordered is the conversation key of an event of an ordered route;
	// Next the stream sequence of the key's next event, when HasNext.
	Ordered string
	Next    uint64
	HasNext bool
}

// LetterForm says how much of the original a stored dead letter holds.
type LetterForm string

// Letter forms, from most to least complete.
const (
	// FormFull: the original's body and all of its headers.
	FormFull LetterForm = "full"
	// FormTrimmed: sized to the server's limits before publishing. Some
	// of the original's headers (named in HeaderDroppedHeaders) or its
	// body (HeaderBodyOmitted) were left out.
	FormTrimmed LetterForm = "trimmed"
	// FormReduced: JetStream refused the letter as sized (HeaderRefusal
	// says why). Stored instead: agentrelay's headers only, no body, with
	// the body's size and digest and the original's stream and sequence.
	FormReduced LetterForm = "reduced"
)

// Values of HeaderBodyOmitted.
const (
	// BodyOmittedTooLarge: the body did not fit in one message beside the
	// dead letter's headers.
	BodyOmittedTooLarge = "too_large"
	// BodyOmittedRefused: the letter is in FormReduced.
	BodyOmittedRefused = "refused"
)

// Stored is what Publish stored.
type Stored struct {
	Ack     *jetstream.PubAck
	Subject string // the dead letter's subject, Subject(original)
	Form    LetterForm
	// BodyOmitted: the letter has no body (HeaderBodyOmitted says why).
	BodyOmitted bool
	// DroppedHeaders counts the original's headers left out.
	DroppedHeaders int
	// TruncatedHeaders names agentrelay's headers whose values were cut
	// to their bound (HeaderTruncatedHeaders).
	TruncatedHeaders []string
	// Refusal is why JetStream refused the letter as sized, when Form is
	// FormReduced.
	Refusal error
}

// DeadLetter publishes dead letters to the dead-letter stream.
type DeadLetter struct {
	js  jetstream.JetStream
	cfg DeadLetterConfig
	now func() time.Time
	// streamMaxMsg is the dead-letter stream's MaxMsgSize as Ensure saw
	// it; <= 0 when unlimited or not known.
	streamMaxMsg atomic.Int64
}

// NewDeadLetter returns a DeadLetter publishing through js.
func NewDeadLetter(js jetstream.JetStream, cfg DeadLetterConfig) *DeadLetter {
	return &DeadLetter{js: js, cfg: cfg.WithDefaults(), now: time.Now}
}

// maxDeadLetterPrefixLen bounds SubjectPrefix, so that a shortened
// dead-letter subject still has room for leading tokens of the original.
const maxDeadLetterPrefixLen = 256

// Ensure creates the dead-letter stream if it does not exist. An existing
// stream is left as it is (an operator may manage it), but one of its
// subjects must capture all the dead-letter subjects ("<prefix>.>"), as
// "agentrelay.>" or ">" do.
func (d *DeadLetter) Ensure(ctx context.Context) error {
	if len(d.cfg.SubjectPrefix) > maxDeadLetterPrefixLen {
		return fmt.Errorf("dead-letter subject prefix is %d bytes, limit %d", len(d.cfg.SubjectPrefix), maxDeadLetterPrefixLen)
	}
	want := d.cfg.StreamConfig()
	s, err := d.js.Stream(ctx, d.cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err := d.js.CreateStream(ctx, want)
		if err != nil {
			return fmt.Errorf("creating dead-letter stream %s: %w", d.cfg.Stream, err)
		}
		d.streamMaxMsg.Store(int64(s.CachedInfo().Config.MaxMsgSize))
		return nil
	case err != nil:
		return fmt.Errorf("looking up dead-letter stream %s: %w", d.cfg.Stream, err)
	}
	have := s.CachedInfo().Config
	captured := false
	for _, subj := range have.Subjects {
		captured = captured || subject.Covers(subj, want.Subjects[0])
	}
	if !captured {
		return fmt.Errorf("dead-letter stream %s exists but does not capture %s (its subjects: %v)",
			d.cfg.Stream, want.Subjects[0], have.Subjects)
	}
	d.streamMaxMsg.Store(int64(have.MaxMsgSize))
	return nil
}

// weaknesses lists what makes an existing dead-letter stream less durable
// than the one agentrelay would create: an operator may have reasons, so
// they are warnings, not errors.
func (d *DeadLetter) weaknesses(ctx context.Context) ([]string, error) {
	s, err := d.js.Stream(ctx, d.cfg.Stream)
	if err != nil {
		return nil, err
	}
	var w []string
	have := s.CachedInfo().Config
	if have.Storage == jetstream.MemoryStorage {
		w = append(w, "memory storage: dead letters are lost when the server restarts")
	}
	if have.Discard == jetstream.DiscardOld && (have.MaxBytes > 0 || have.MaxMsgs > 0) {
		w = append(w, "discard old: when full, the oldest dead letters are dropped silently instead of new ones being refused (and retried)")
	}
	if have.Duplicates < time.Minute {
		w = append(w, fmt.Sprintf("duplicate window %v: a dead letter republished after a crash may be stored twice", have.Duplicates))
	}
	if have.MaxMsgSize > 0 {
		w = append(w, fmt.Sprintf("max message size %d bytes: larger dead letters are stored without their body", have.MaxMsgSize))
	}
	return w, nil
}

// maxMsgID bounds a dead letter's Nats-Msg-Id, a header like any other.
const maxMsgID = 512

// MsgID is the Nats-Msg-Id of the dead letter of one stored message on one
// route. Publishing the same dead letter twice (a crash after the publish
// ack, before the original was terminated) stores it once. An id that would
// be longer than 512 bytes (a route or stream name that long) is
// "agentrelay:sha256-<hex of that id>" instead.
func MsgID(route string, md *jetstream.MsgMetadata) string {
	id := "agentrelay:" + route + ":" + md.Stream + ":" +
		strconv.FormatUint(md.Sequence.Stream, 10) + ":" + strconv.FormatInt(md.Timestamp.UnixNano(), 10)
	if len(id) > maxMsgID {
		sum := sha256.Sum256([]byte(id))
		id = "agentrelay:sha256-" + hex.EncodeToString(sum[:])
	}
	return id
}

// Size limits of one dead letter.
const (
	// MaxJetStreamHeaderBytes is the largest header block JetStream
	// stores: nats-server refuses len(hdr) > math.MaxUint16 with "header
	// size exceeds maximum allowed of 64k" (JSStreamHeaderExceedsMaximumErr,
	// server/stream.go), whatever max_payload is.
	MaxJetStreamHeaderBytes = math.MaxUint16

	// defaultMaxPayload is nats-server's default max_payload, used when
	// the connection does not say (not connected yet).
	defaultMaxPayload = 1 << 20

	// letterSlack is kept free below the limits, for headers the client
	// or a newer server version might add on the way.
	letterSlack = 256
)

// Bounds of the values agentrelay writes into a dead letter's headers: the
// letter must fit under MaxJetStreamHeaderBytes however hostile the
// original (its subject, error text, ...) is.
const (
	maxErrorHeader   = 1024     // HeaderError
	maxNameHeader    = 256      // route, trigger id, stream, reason, class
	maxSubjectHeader = 16 << 10 // HeaderSubject; a default server allows < 4 KiB
	maxRefusalHeader = 512      // HeaderRefusal
	maxListHeader    = 1024     // HeaderDroppedHeaders, HeaderTruncatedHeaders
	maxListName      = 128      // one name in such a list
)

// Original is the message a dead letter copies: its subject, headers and
// body. Every jetstream.Msg is one.
type Original interface {
	Subject() string
	Headers() nats.Header
	Data() []byte
}

// Publish stores a dead-letter copy of msg and returns once JetStream has
// acknowledged it. Only then may the caller terminate the original. It is
// PublishLetter, returning only the publish ack.
func (d *DeadLetter) Publish(ctx context.Context, msg Original, md *jetstream.MsgMetadata, l Letter) (*jetstream.PubAck, error) {
	st, err := d.PublishLetter(ctx, msg, md, l)
	return st.Ack, err
}

// PublishLetter stores a dead-letter copy of msg and returns once JetStream
// has acknowledged it, with what was stored. Only then may the caller
// terminate the original.
//
// The letter is always storable: it is sized to the connection's
// max_payload, the dead-letter stream's MaxMsgSize and JetStream's header
// limit. agentrelay's own headers (bounded values) always go in; the body
// goes in when it fits beside them; then as many of the original's headers
// as fit, smallest first (the others are named in HeaderDroppedHeaders).
// Should JetStream still refuse that letter for good (any JetStream error
// but a full stream), the reduced form (FormReduced) is published at once
// under the same Nats-Msg-Id, so that a retry never stores two letters.
//
// An error means nothing new was stored: the dead-letter stream was
// unavailable (timeout, no responders, connection closed, ctx done), full,
// or refused even the reduced form. The caller keeps the original and
// retries.
func (d *DeadLetter) PublishLetter(ctx context.Context, msg Original, md *jetstream.MsgMetadata, l Letter) (Stored, error) {
	id := MsgID(l.Route, md)
	data := msg.Data()
	base, truncated := d.letterHeaders(msg.Subject(), md, l, data)
	cands, unusable := originalHeaders(msg.Headers(), keyUsed(l))
	st := Stored{Subject: d.cfg.Subject(msg.Subject()), TruncatedHeaders: truncated}

	// Size the letter. Everything below is counted as nats.go encodes it
	// (an upper bound: it trims values), with room for the bookkeeping
	// headers set after the choice.
	maxPayload := d.maxPayload()
	payCap := maxPayload - letterSlack
	hdrCap := min(MaxJetStreamHeaderBytes, maxPayload) - letterSlack
	used := headerBlockSize(base) +
		headerLineSize(jetstream.MsgIDHeader, id) + headerLineSize(jetstream.ExpectedStreamHeader, d.cfg.Stream) +
		headerLineSize(HeaderLetterForm, string(FormTrimmed)) +
		headerLineSize(HeaderBodyOmitted, BodyOmittedTooLarge) +
		len(HeaderDroppedHeaders) + maxListHeader + len(": \r\n")
	keepBody := used <= hdrCap && used+len(data) <= payCap
	kept := 0
	for _, c := range cands {
		if used+c.size > hdrCap || (keepBody && used+c.size+len(data) > payCap) {
			break
		}
		used += c.size
		kept++
	}

	out := &nats.Msg{Subject: st.Subject, Header: maps.Clone(base)}
	for _, c := range cands[:kept] {
		out.Header[c.key] = c.values
	}
	dropped := slices.Clone(unusable)
	for _, c := range cands[kept:] {
		dropped = append(dropped, c.original)
	}
	st.Form, st.DroppedHeaders, st.BodyOmitted = FormFull, len(dropped), !keepBody
	if keepBody {
		out.Data = data
	} else {
		out.Header.Set(HeaderBodyOmitted, BodyOmittedTooLarge)
	}
	if len(dropped) > 0 {
		out.Header.Set(HeaderDroppedHeaders, nameList(dropped))
	}
	if len(dropped) > 0 || !keepBody {
		st.Form = FormTrimmed
	}
	out.Header.Set(HeaderLetterForm, string(st.Form))
	ack, err := d.publish(ctx, out, id)
	if err == nil {
		st.Ack = ack
		return st, nil
	}
	if !refused(err) {
		return Stored{}, err
	}

	// JetStream refused this letter for good: store the reduced form,
	// which is small and holds nothing of the original's but its facts.
	red := &nats.Msg{Subject: st.Subject, Header: maps.Clone(base)}
	all := slices.Clone(unusable)
	for _, c := range cands {
		all = append(all, c.original)
	}
	if len(all) > 0 {
		red.Header.Set(HeaderDroppedHeaders, nameList(all))
	}
	red.Header.Set(HeaderBodyOmitted, BodyOmittedRefused)
	red.Header.Set(HeaderRefusal, headerText(err.Error(), maxRefusalHeader))
	red.Header.Set(HeaderLetterForm, string(FormReduced))
	ack, rerr := d.publish(ctx, red, id)
	if rerr != nil {
		return Stored{}, fmt.Errorf("dead letter refused (%w), and its reduced form too: %w", err, rerr)
	}
	st.Ack, st.Form, st.BodyOmitted, st.DroppedHeaders, st.Refusal = ack, FormReduced, true, len(all), err
	return st, nil
}

func (d *DeadLetter) publish(ctx context.Context, m *nats.Msg, id string) (*jetstream.PubAck, error) {
	return d.js.PublishMsg(ctx, m, jetstream.WithMsgID(id), jetstream.WithExpectStream(d.cfg.Stream))
}

// maxPayload is the largest message (headers and body) the dead-letter
// stream takes through this connection.
func (d *DeadLetter) maxPayload() int {
	p := int64(defaultMaxPayload)
	if nc := d.js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		p = nc.MaxPayload()
	}
	if s := d.streamMaxMsg.Load(); s > 0 && s < p {
		p = s
	}
	return int(p)
}

// letterHeaders are the headers every form of a dead letter has, with
// bounded values, and the names of those whose values were cut.
func (d *DeadLetter) letterHeaders(subject string, md *jetstream.MsgMetadata, l Letter, data []byte) (nats.Header, []string) {
	h := make(nats.Header, 24)
	var truncated []string
	set := func(name, value string, n int) {
		v := headerText(value, n)
		if len(v) < len(value) {
			truncated = append(truncated, name)
		}
		h.Set(name, v)
	}
	// The subject is carried byte for byte (replay publishes to it), only
	// cut when it is beyond any sensible server's control line.
	setSubject := func(value string) {
		if len(value) > maxSubjectHeader {
			truncated = append(truncated, HeaderSubject)
			value = value[:maxSubjectHeader]
		}
		h.Set(HeaderSubject, value)
	}
	set(HeaderReason, string(l.Reason), maxNameHeader)
	set(HeaderClass, string(l.Outcome.Class), maxNameHeader)
	if l.Outcome.Status != 0 {
		h.Set(HeaderStatus, strconv.Itoa(l.Outcome.Status))
	}
	if l.Outcome.Err != nil {
		set(HeaderError, l.Outcome.Err.Error(), maxErrorHeader)
	}
	set(HeaderRoute, l.Route, maxNameHeader)
	set(HeaderTriggerID, l.TriggerID, maxNameHeader)
	set(HeaderStream, md.Stream, maxNameHeader)
	h.Set(HeaderSequence, strconv.FormatUint(md.Sequence.Stream, 10))
	// Replay publishes to this subject. Cut, it no longer matches the
	// letter's subject (a digest of the whole one), which a replay can
	// check.
	setSubject(subject)
	h.Set(HeaderStoredAt, md.Timestamp.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderAttempts, strconv.Itoa(l.Attempts))
	h.Set(HeaderDeadLetteredAt, d.now().UTC().Format(time.RFC3339Nano))
	if l.Ordered != "" {
		set(HeaderOrderedKey, l.Ordered, maxNameHeader)
		if l.HasNext {
			h.Set(HeaderNextSequence, strconv.FormatUint(l.Next, 10))
		}
	}
	sum := sha256.Sum256(data)
	h.Set(HeaderBodySize, strconv.Itoa(len(data)))
	h.Set(HeaderBodySHA256, hex.EncodeToString(sum[:]))
	if keyUsed(l) {
		// Replay republishes with this header, so the API sees the same
		// key and does not run an event it had in fact accepted twice.
		h.Set(HeaderIdempotencyKey, l.Key)
	}
	if len(truncated) > 0 {
		h.Set(HeaderTruncatedHeaders, nameList(truncated))
	}
	return h, truncated
}

// keyUsed reports whether the letter carries l.Key as its Idempotency-Key.
// The runner passes only valid keys; an invalid one is not carried, so the
// producer's header is kept under HeaderOriginalPrefix instead.
func keyUsed(l Letter) bool {
	return l.Key != "" && agentapi.ValidateIdempotencyKey(l.Key) == nil
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
		case fold.HasPrefix(k, "Nats-"):
			key = HeaderOriginalPrefix + k
		case fold.HasPrefix(k, HeaderReplayPrefix):
			// the replay's history: carried on
		case fold.HasPrefix(k, agentrelayHeaderPrefix):
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
		if !isHeaderName(key) {
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

// isHeaderName reports whether nats.go sends a header of this name: printable
// ASCII without the separators it forbids (it refuses the whole message
// otherwise).
func isHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
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
		n = headerText(n, maxListName)
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

// refused reports whether err is JetStream, or the client before sending,
// refusing this dead letter as it is, for good: any JetStream API error but
// a full stream, or a message the client will not send. Anything else
// (timeout, no responders, connection closed, ctx done) is unavailability
// and a full stream is a full stream: the original is kept and retried, as
// DeadLetterConfig.MaxBytes promises, rather than stored without its body.
func refused(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadHeaderMsg) || errors.Is(err, nats.ErrBadSubject) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsErrStreamStoreFailed, jsErrInsufficientResources:
		return false
	}
	return true
}

// JetStream error codes (nats-server server/jetstream_errors_generated.go)
// that mean the dead-letter stream is full, not that the letter is wrong.
const (
	jsErrInsufficientResources jetstream.ErrorCode = 10023 // storage
	jsErrStreamStoreFailed     jetstream.ErrorCode = 10077 // max bytes, max messages (per subject)
)

// headerText makes s safe as a one-line header value of at most n bytes.
func headerText(s string, n int) string {
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
