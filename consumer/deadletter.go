package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

	// HeaderOriginalPrefix keeps the values of the original's Nats-*
	// headers, which cannot be copied as they are: JetStream acts on them
	// (a copied Nats-Expected-Stream makes the publish fail, a copied
	// Nats-Msg-Id would deduplicate against the wrong message).
	HeaderOriginalPrefix = "Agentrelay-Original-"

	// agentrelayHeaderPrefix is cleared from the original before a copy is
	// made, so a message that is dead-lettered a second time (after a
	// replay) does not carry stale reasons from the first.
	agentrelayHeaderPrefix = "Agentrelay-"
)

// maxErrorHeader bounds the error text in a dead letter.
const maxErrorHeader = 1024

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

// Subject returns the dead-letter subject for an original subject.
func (c DeadLetterConfig) Subject(original string) string {
	return c.WithDefaults().SubjectPrefix + "." + original
}

// Letter is what a dead letter says about why it is one.
type Letter struct {
	Reason    Reason
	Outcome   Outcome
	Route     string
	TriggerID string
	Key       string // the Idempotency-Key used (or that would have been)
	Attempts  int
}

// DeadLetter publishes dead letters to the dead-letter stream.
type DeadLetter struct {
	js  jetstream.JetStream
	cfg DeadLetterConfig
	now func() time.Time
}

// NewDeadLetter returns a DeadLetter publishing through js.
func NewDeadLetter(js jetstream.JetStream, cfg DeadLetterConfig) *DeadLetter {
	return &DeadLetter{js: js, cfg: cfg.WithDefaults(), now: time.Now}
}

// Config returns the effective configuration.
func (d *DeadLetter) Config() DeadLetterConfig { return d.cfg }

// Ensure creates the dead-letter stream if it does not exist. An existing
// stream is left as it is (an operator may manage it), but it must capture
// the dead-letter subjects.
func (d *DeadLetter) Ensure(ctx context.Context) error {
	want := d.cfg.StreamConfig()
	s, err := d.js.Stream(ctx, d.cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := d.js.CreateStream(ctx, want); err != nil {
			return fmt.Errorf("creating dead-letter stream %s: %w", d.cfg.Stream, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("looking up dead-letter stream %s: %w", d.cfg.Stream, err)
	}
	have := s.CachedInfo().Config
	captured := false
	for _, subj := range have.Subjects {
		captured = captured || subj == want.Subjects[0]
	}
	if !captured {
		return fmt.Errorf("dead-letter stream %s exists but does not capture %s (its subjects: %v)",
			d.cfg.Stream, want.Subjects[0], have.Subjects)
	}
	return nil
}

// Weaknesses lists what makes an existing dead-letter stream less durable
// than the one agentrelay would create: an operator may have reasons, so
// they are warnings, not errors.
func (d *DeadLetter) Weaknesses(ctx context.Context) ([]string, error) {
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
	return w, nil
}

// MsgID is the Nats-Msg-Id of the dead letter of one stored message on one
// route. Publishing the same dead letter twice (a crash after the publish
// ack, before the original was terminated) stores it once.
func MsgID(route string, md *jetstream.MsgMetadata) string {
	return "agentrelay:" + route + ":" + md.Stream + ":" +
		strconv.FormatUint(md.Sequence.Stream, 10) + ":" + strconv.FormatInt(md.Timestamp.UnixNano(), 10)
}

// Publish stores a dead-letter copy of msg and returns once JetStream has
// acknowledged it. Only then may the caller terminate the original.
func (d *DeadLetter) Publish(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, l Letter) (*jetstream.PubAck, error) {
	out := &nats.Msg{
		Subject: d.cfg.Subject(msg.Subject()),
		Data:    msg.Data(),
		Header:  make(nats.Header, len(msg.Headers())+14),
	}
	for k, v := range msg.Headers() {
		switch {
		case hasPrefixFold(k, "Nats-"):
			out.Header[HeaderOriginalPrefix+k] = v
		case hasPrefixFold(k, agentrelayHeaderPrefix):
			// stale from an earlier dead-lettering; replaced below
		case strings.EqualFold(k, HeaderIdempotencyKey):
			// The dead letter's Idempotency-Key is the key that was
			// used (set below). A producer's key that could not be used
			// is kept under another name: carried as the key, a replay
			// would send it and be dead-lettered again.
			if l.Key == "" {
				out.Header[HeaderOriginalPrefix+k] = v
			}
		default:
			out.Header[k] = v
		}
	}
	h := out.Header
	h.Set(HeaderReason, string(l.Reason))
	h.Set(HeaderClass, string(l.Outcome.Class))
	if l.Outcome.Status != 0 {
		h.Set(HeaderStatus, strconv.Itoa(l.Outcome.Status))
	}
	if l.Outcome.Err != nil {
		h.Set(HeaderError, headerText(l.Outcome.Err.Error(), maxErrorHeader))
	}
	h.Set(HeaderRoute, l.Route)
	h.Set(HeaderTriggerID, l.TriggerID)
	h.Set(HeaderStream, md.Stream)
	h.Set(HeaderSequence, strconv.FormatUint(md.Sequence.Stream, 10))
	h.Set(HeaderSubject, msg.Subject())
	h.Set(HeaderStoredAt, md.Timestamp.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderAttempts, strconv.Itoa(l.Attempts))
	h.Set(HeaderDeadLetteredAt, d.now().UTC().Format(time.RFC3339Nano))
	if l.Key != "" {
		// Replay republishes with this header, so the API sees the same
		// key and does not run an event it had in fact accepted twice.
		h.Set(HeaderIdempotencyKey, l.Key)
	}
	return d.js.PublishMsg(ctx, out,
		jetstream.WithMsgID(MsgID(l.Route, md)),
		jetstream.WithExpectStream(d.cfg.Stream))
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

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
