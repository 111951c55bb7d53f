package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/natstrace"
	"github.com/agentrelay/agentrelay/internal/subject"
)

type publishFlags struct {
	server          string
	input           string
	conversationKey string
	msgID           string
	raw             bool
	headers         []string
	count           int
	timeout         time.Duration
	trace           bool
}

func newPublishCmd(e *env, g *globalFlags) *cobra.Command {
	f := &publishFlags{}
	cmd := &cobra.Command{
		Use:   "publish SUBJECT",
		Short: "Publish an event the way a producer should",
		Long: `Publish an event to a JetStream subject and wait for the stream's ack.

By default the body is the API's JSON, built from --input and
--conversation-key. With --raw the input is sent as the body as it is (for
routes with body: text, or to test poison messages). --input - reads stdin.
--msg-id sets Nats-Msg-Id, which becomes the Idempotency-Key; with --count N
the id gets a -1..-N suffix.

--trace starts a trace: each message gets a producer span and carries its
W3C traceparent, so the worker's span of its delivery, the trigger call and
the API join it; the trace id is printed. The span is exported when the
OTEL_* environment configures an exporter (see docs/operating.md, Tracing), and is
sampled whatever OTEL_TRACES_SAMPLER says. A traceparent given with --header
becomes the span's parent.

Connects with the configuration file's NATS settings when --config is given,
else to --server. With a configuration, a subject that no route captures (a
typo, a route not deployed yet) is published all the same, with a warning on
stderr: nothing will trigger an agent for it.`,
		Example: `  agentrelay publish agents.complaints.new --input "Summarise ticket 42" --msg-id ticket-42
  agentrelay publish agents.complaints.new --raw --input 'not json'   # a poison message`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPublish(cmd.Context(), e, g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.server, "server", "s", config.DefaultNATSURL, "NATS server URL(s), when no --config is given")
	fl.StringVarP(&f.input, "input", "i", "", "the event's input (- reads stdin)")
	fl.StringVarP(&f.conversationKey, "conversation-key", "k", "", "conversation key")
	fl.StringVar(&f.msgID, "msg-id", "", "Nats-Msg-Id (becomes the Idempotency-Key)")
	fl.BoolVar(&f.raw, "raw", false, "send --input as the body as it is")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "extra header Name:Value (repeatable)")
	fl.IntVarP(&f.count, "count", "n", 1, "publish this many copies")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for each publish ack")
	fl.BoolVar(&f.trace, "trace", false, "start a trace: write a traceparent into each message and print its trace id")
	return cmd
}

func runPublish(ctx context.Context, e *env, g *globalFlags, f *publishFlags, subject string) error {
	if err := checkFlags(
		intIn("count", f.count, 1, maxPublishCount, ""),
		durationIn("timeout", f.timeout, minPublishTimeout, maxPublishTimeout, ""),
	); err != nil {
		return err
	}
	body, hdr, err := f.message(e)
	if err != nil {
		return err
	}
	var tp trace.TracerProvider
	if f.trace {
		var stop func()
		if tp, stop, err = toolTracer(ctx, e, g, true); err != nil {
			return err
		}
		defer stop()
	}
	nc, cfg, err := connectForTool(ctx, e, g, f.server)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for i := 1; i <= f.count; i++ {
		ack, traceID, err := f.publishOne(ctx, js, tp, &nats.Msg{Subject: subject, Data: body, Header: hdr}, i)
		if err != nil {
			return fmt.Errorf("publishing to %s: %w", subject, err)
		}
		dup := ""
		if ack.Duplicate {
			dup = " (duplicate: the stream already had this message id)"
		}
		traced := ""
		if traceID != "" {
			traced = ", trace " + traceID
		}
		printf(e.stdout, "published to %s: stream %s sequence %d%s%s\n", subject, ack.Stream, ack.Sequence, traced, dup)
		if i == 1 && cfg != nil {
			if w := uncapturedWarning(cfg, ack.Stream, subject); w != "" {
				printf(e.stderr, "%s\n", w)
			}
		}
	}
	return nil
}

// message is the body and headers the flags ask for.
func (f *publishFlags) message(e *env) ([]byte, nats.Header, error) {
	input := f.input
	if input == "-" {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<20))
		if err != nil {
			return nil, nil, err
		}
		input = string(b)
	}
	body := []byte(input)
	if !f.raw {
		ev := map[string]string{"input": input}
		if f.conversationKey != "" {
			ev["conversation_key"] = f.conversationKey
		}
		body, _ = json.Marshal(ev)
	}
	hdr := nats.Header{}
	if f.raw && f.conversationKey != "" {
		hdr.Set(event.HeaderConversationKey, f.conversationKey)
	}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, nil, usageError{fmt.Errorf("--header %q: want Name:Value", h)}
		}
		hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return body, hdr, nil
}

// publishOne publishes the i-th message, traced when tp is set, and
// returns its ack and trace id.
func (f *publishFlags) publishOne(ctx context.Context, js jetstream.JetStream, tp trace.TracerProvider, msg *nats.Msg, i int) (*jetstream.PubAck, string, error) {
	var opts []jetstream.PublishOpt
	id := ""
	if f.msgID != "" {
		id = f.msgID
		if f.count > 1 {
			id = fmt.Sprintf("%s-%d", f.msgID, i)
		}
		opts = append(opts, jetstream.WithMsgID(id))
	}
	pctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var span trace.Span
	if tp != nil {
		msg.Header = maps.Clone(msg.Header)
		pctx, span = startPublishSpan(pctx, tp, msg, id)
	}
	ack, err := js.PublishMsg(pctx, msg, opts...)
	if span == nil {
		return ack, "", err
	}
	endPublishSpan(span, ack, err)
	return ack, span.SpanContext().TraceID().String(), err
}

// startPublishSpan starts the producer span of one publish (a child of a
// traceparent the message already has) and writes its context into the
// message's headers.
func startPublishSpan(ctx context.Context, tp trace.TracerProvider, msg *nats.Msg, msgID string) (context.Context, trace.Span) {
	prop := propagation.TraceContext{}
	parent := prop.Extract(ctx, natstrace.TraceCarrier(msg.Header))
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(msg.Subject),
		semconv.MessagingMessageBodySize(len(msg.Data)),
	}
	if msgID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(msgID))
	}
	ctx, span := tp.Tracer("github.com/agentrelay/agentrelay/internal/cli").Start(parent, "send "+msg.Subject,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	prop.Inject(ctx, natstrace.TraceCarrier(msg.Header))
	return ctx, span
}

func endPublishSpan(span trace.Span, ack *jetstream.PubAck, err error) {
	if ack != nil {
		span.SetAttributes(natstrace.AttrStream.String(ack.Stream), natstrace.AttrStreamSequence.Int64(int64(ack.Sequence)))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
	}
	span.End()
}

// uncapturedWarning says, when no route of cfg captures subj in stream,
// that the stored message will trigger nothing, and which filters the
// routes on that stream have; "" when a route captures it. A typo in a
// subject is otherwise found out only when the event never arrives.
func uncapturedWarning(cfg *config.Config, stream, subj string) string {
	var onStream []string
	for _, rc := range cfg.Routes {
		if rc.Stream != stream {
			continue
		}
		if routeCaptures(rc, subj) {
			return ""
		}
		onStream = append(onStream, fmt.Sprintf("%s [%s]", rc.Name, strings.Join(rc.Subjects, " ")))
	}
	where := fmt.Sprintf("no route reads stream %s", stream)
	if len(onStream) > 0 {
		const maxListed = 5
		if len(onStream) > maxListed {
			onStream = append(onStream[:maxListed], fmt.Sprintf("and %d more", len(onStream)-maxListed))
		}
		where = fmt.Sprintf("routes on stream %s: %s", stream, strings.Join(onStream, ", "))
	}
	return fmt.Sprintf("warning: no route of the configuration captures %s (%s): the message is stored, but no agent will be triggered for it", subj, where)
}

// routeCaptures reports whether route rc's consumer delivers subj (a
// literal subject of rc's stream): a route without subjects takes the
// whole stream.
func routeCaptures(rc config.Route, subj string) bool {
	if len(rc.Subjects) == 0 {
		return true
	}
	for _, f := range rc.Subjects {
		if subject.Matches(f, subj) {
			return true
		}
	}
	return false
}

// connectForTool connects a one-shot command: with the configuration's NATS
// settings when a configuration was given (returned too), else to server
// (and the configuration is nil).
func connectForTool(ctx context.Context, e *env, g *globalFlags, server string) (*nats.Conn, *config.Config, error) {
	nc := config.NATS{URL: server}
	var cfg *config.Config
	if g.configPath != "" || e.getenv("AGENTRELAY_CONFIG") != "" {
		c, err := g.loadConfig(e)
		if err != nil {
			return nil, nil, err
		}
		nc, cfg = c.NATS, c
	} else {
		var c config.Config
		c.NATS = nc
		c.ApplyEnv(e.lookupEnv)
		c.ApplyDefaults()
		nc = c.NATS
		if server != config.DefaultNATSURL {
			nc.URL = server
		}
	}
	conn, err := dialNATS(ctx, nc, g.connectTimeout)
	return conn, cfg, err
}
