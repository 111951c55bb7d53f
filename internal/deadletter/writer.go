package deadletter

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/subject"
)

// Config describes the dead-letter stream. The zero value of each
// field means its default.
type Config struct {
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
	DefaultStream          = "AGENTRELAY_DLQ"
	DefaultSubjectPrefix   = "agentrelay.dlq"
	DefaultMaxAge          = 14 * 24 * time.Hour
	DefaultDuplicateWindow = time.Hour
	DefaultPublishTimeout  = 5 * time.Second
	defaultReplicas        = 1
)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Replicas <= 0 {
		c.Replicas = defaultReplicas
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.DuplicateWindow > c.MaxAge {
		c.DuplicateWindow = c.MaxAge
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	return c
}

// StreamConfig is the JetStream configuration of the dead-letter stream.
func (c Config) StreamConfig() jetstream.StreamConfig {
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

// Subject returns the dead-letter subject for an original subject (see
// Subject): "<SubjectPrefix>.<original>", shortened with a
// digest when that is too long or the original is not a literal subject.
// c is resolved (Config.WithDefaults), as NewWriter resolves
// its own.
func (c Config) Subject(original string) string {
	return Subject(c.SubjectPrefix, original)
}

// Stored is what Publish stored.
type Stored struct {
	Ack     *jetstream.PubAck
	Subject string // the dead letter's subject, Subject(original)
	Form    Form
	// BodyOmitted: the letter has no body (HeaderBodyOmitted
	// says why).
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

// Writer stores dead letters in the dead-letter stream.
type Writer struct {
	js  jetstream.JetStream
	cfg Config
	now func() time.Time
	// streamMaxMsg is the dead-letter stream's MaxMsgSize as Ensure saw
	// it; <= 0 when unlimited or not known.
	streamMaxMsg atomic.Int64
	// weak is what Ensure found less durable in an existing stream (see
	// weaknesses).
	weak []string
}

// NewWriter returns a DeadLetter publishing through js.
func NewWriter(js jetstream.JetStream, cfg Config) *Writer {
	return &Writer{js: js, cfg: cfg.WithDefaults(), now: time.Now}
}

// maxPrefixLen bounds SubjectPrefix, so that a shortened
// dead-letter subject still has room for leading tokens of the original.
const maxPrefixLen = 256

// Ensure creates the dead-letter stream if it does not exist. An existing
// stream is left as it is (an operator may manage it), but one of its
// subjects must capture all the dead-letter subjects ("<prefix>.>"), as
// "agentrelay.>" or ">" do. It asks the server for the stream once, and
// keeps what it learnt: the stream's message size limit, and its
// weaknesses.
func (d *Writer) Ensure(ctx context.Context) error {
	if len(d.cfg.SubjectPrefix) > maxPrefixLen {
		return fmt.Errorf("dead-letter subject prefix is %d bytes, limit %d", len(d.cfg.SubjectPrefix), maxPrefixLen)
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
		d.weak = nil
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
	d.weak = weaknesses(have)
	return nil
}

// Weaknesses returns what Ensure found that makes an existing dead-letter
// stream less durable than the one agentrelay would create: an operator
// may have reasons, so they are warnings, not errors.
func (d *Writer) Weaknesses() []string { return d.weak }

// weaknesses lists what makes a dead-letter stream of this configuration
// less durable than the one agentrelay would create.
func weaknesses(have jetstream.StreamConfig) []string {
	var w []string
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
	return w
}

// defaultMaxPayload is nats-server's default max_payload, used when the
// connection does not say (not connected yet).
const defaultMaxPayload = 1 << 20

// Original is the message a dead letter copies: its subject, headers and
// body. Every jetstream.Msg is one.
type Original interface {
	Subject() string
	Headers() nats.Header
	Data() []byte
}

// Publish stores a dead-letter copy of msg, with the facts f, and returns
// once JetStream has acknowledged it, with what was stored. Only then may
// the caller terminate the original. f's fields about the original
// (Stream, StreamSeq, OrigSubject, OrigStored) and DeadLetteredAt are
// filled in from msg and md.
//
// The letter (Encode) is always storable: it is sized to the
// connection's max_payload, the dead-letter stream's MaxMsgSize and
// JetStream's header limit. Should JetStream still refuse it for good (any
// JetStream error but a full stream), the reduced form
// (FormReduced) is published at once under the same Nats-Msg-Id,
// so that a retry never stores two letters.
//
// An error means nothing new was stored: the dead-letter stream was
// unavailable (timeout, no responders, connection closed, ctx done), full,
// or refused even the reduced form. The caller keeps the original and
// retries.
func (d *Writer) Publish(ctx context.Context, msg Original, md *jetstream.MsgMetadata, f Facts) (Stored, error) {
	f.Stream, f.StreamSeq, f.OrigSubject, f.OrigStored = md.Stream, md.Sequence.Stream, msg.Subject(), md.Timestamp
	f.DeadLetteredAt = d.now()
	e := Encode(f, msg.Headers(), msg.Data(), Target{
		Stream: d.cfg.Stream, SubjectPrefix: d.cfg.SubjectPrefix, MaxPayload: d.maxPayload(),
	})
	ack, err := d.publish(ctx, e.Msg, e.MsgID)
	if err == nil {
		return stored(ack, e, nil), nil
	}
	if !refused(err) {
		return Stored{}, err
	}
	// JetStream refused this letter for good: store the reduced form,
	// which is small and holds nothing of the original's but its facts.
	red := e.Reduced(err)
	ack, rerr := d.publish(ctx, red.Msg, red.MsgID)
	if rerr != nil {
		return Stored{}, fmt.Errorf("dead letter refused (%w), and its reduced form too: %w", err, rerr)
	}
	return stored(ack, red, err), nil
}

func stored(ack *jetstream.PubAck, e Encoded, refusal error) Stored {
	return Stored{
		Ack: ack, Subject: e.Msg.Subject, Form: e.Form, BodyOmitted: e.BodyOmitted,
		DroppedHeaders: e.DroppedHeaders, TruncatedHeaders: e.TruncatedHeaders, Refusal: refusal,
	}
}

func (d *Writer) publish(ctx context.Context, m *nats.Msg, id string) (*jetstream.PubAck, error) {
	return d.js.PublishMsg(ctx, m, jetstream.WithMsgID(id), jetstream.WithExpectStream(d.cfg.Stream))
}

// maxPayload is the largest message (headers and body) the dead-letter
// stream takes through this connection.
func (d *Writer) maxPayload() int {
	p := int64(defaultMaxPayload)
	if nc := d.js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		p = nc.MaxPayload()
	}
	if s := d.streamMaxMsg.Load(); s > 0 && s < p {
		p = s
	}
	return int(p)
}

// refused reports whether err is JetStream, or the client before sending,
// refusing this dead letter as it is, for good: any JetStream API error but
// a full stream, or a message the client will not send. Anything else
// (timeout, no responders, connection closed, ctx done) is unavailability
// and a full stream is a full stream: the original is kept and retried, as
// Config.MaxBytes promises, rather than stored without its body.
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
