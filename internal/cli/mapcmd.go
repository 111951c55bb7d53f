package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// maxEventFile bounds what `map` reads of an event file: more than any
// route takes (a body is at most 6 × max_input_bytes + 16 KiB, and
// max_input_bytes at most 64 MiB).
const maxEventFile = 400 << 20

func newMapCmd(e *env, g *globalFlags) *cobra.Command {
	var route, file, subject string
	var headers []string
	cmd := &cobra.Command{
		Use:   "map --route ROUTE --file EVENT",
		Short: "Show the call a route would make for an event, without making it",
		Long: `Read an event from a file as the route reads a message (its body format,
CloudEvents, its mapping, allowed_trigger_ids) and print the exact call the
worker would make: the URL with the trigger id, the headers (the token
redacted), the Idempotency-Key and the JSON body. An event the worker would
dead-letter prints its reason and error instead, and exits 1. Nothing is
called and NATS is not needed: use it to test a mapping, in CI or before a
producer ships.

The subject is the route's own when it has a single subject without
wildcards; otherwise give --subject. Headers are given as Name:Value or
Name=Value (repeatable), e.g. the ce- headers of a binary-mode CloudEvent.
An event without an Idempotency-Key, a Nats-Msg-Id or a CloudEvent id is
sent with a key derived from where the stream stores it, shown as such.`,
		Example: `  agentrelay map --route crm-tickets --file ticket.json
  agentrelay map --route agents --subject agents.agtch_support_eu.events --file event.json
  agentrelay map --route ce --file data.json -H ce-specversion=1.0 -H ce-id=1 -H ce-source=/crm -H ce-type=t -H Content-Type=application/json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig(e)
			if err != nil {
				return err
			}
			rc, err := findRoute(cfg, route)
			if err != nil {
				return err
			}
			data, err := readEventFile(e, file)
			if err != nil {
				return err
			}
			h, err := parseHeaderFlags(headers)
			if err != nil {
				return err
			}
			if subject == "" {
				if len(rc.Subjects) != 1 || strings.ContainsAny(rc.Subjects[0], "*>") {
					return usageError{fmt.Errorf("route %s listens on %s: give the event's --subject", rc.Name, subjectsText(rc.Subjects))}
				}
				subject = rc.Subjects[0]
			}
			call, err := mapEvent(cmd.Context(), cfg, rc, event.Message{Subject: subject, Data: data, Header: h})
			if err != nil {
				return err
			}
			call.print(e.stdout)
			if call.reason != "" {
				return fmt.Errorf("the worker would dead-letter this event (%s)", call.reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&route, "route", "r", "", "the route to map for (may be left out when there is one)")
	f.StringVarP(&file, "file", "f", "", `the event's body ("-" for standard input)`)
	f.StringVarP(&subject, "subject", "s", "", "the subject the event is published to")
	f.StringArrayVarP(&headers, "header", "H", nil, "a message header Name:Value or Name=Value (repeatable)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func findRoute(cfg *config.Config, name string) (config.Route, error) {
	var names []string
	for _, rc := range cfg.Routes {
		if rc.Name == name || name == "" && len(cfg.Routes) == 1 {
			return rc, nil
		}
		names = append(names, rc.Name)
	}
	if name == "" {
		return config.Route{}, usageError{fmt.Errorf("give --route: %s", strings.Join(names, ", "))}
	}
	return config.Route{}, usageError{fmt.Errorf("no route %q (routes: %s)", name, strings.Join(names, ", "))}
}

func readEventFile(e *env, file string) ([]byte, error) {
	var r io.Reader
	if file == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, usageError{err}
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxEventFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxEventFile {
		return nil, usageError{fmt.Errorf("%s is larger than %d bytes", file, maxEventFile)}
	}
	return data, nil
}

// parseHeaderFlags reads Name:Value or Name=Value, split at whichever comes
// first (a header name holds neither).
func parseHeaderFlags(flags []string) (nats.Header, error) {
	h := nats.Header{}
	for _, f := range flags {
		i := strings.IndexAny(f, ":=")
		if i <= 0 || strings.TrimSpace(f[:i]) == "" {
			return nil, usageError{fmt.Errorf("--header %q: want Name:Value or Name=Value", f)}
		}
		h.Add(strings.TrimSpace(f[:i]), strings.TrimSpace(f[i+1:]))
	}
	return h, nil
}

func subjectsText(s []string) string {
	if len(s) == 0 {
		return "every subject of its stream"
	}
	return strings.Join(s, ", ")
}

// mappedCall is what a route makes of one message: the call, or the
// dead-letter reason.
type mappedCall struct {
	route   string
	url     string
	tokenOf string // where the token comes from, never the token
	key     string
	keyNote string
	body    []byte
	reason  string
	errText string
	input   string
	convKey string
	trigger string
}

// mapEvent reads m as route rc's contract does and builds the call the
// worker would make, without making it.
func mapEvent(ctx context.Context, cfg *config.Config, rc config.Route, m event.Message) (mappedCall, error) {
	call := mappedCall{route: rc.Name}
	contract, err := appconfig.Contract(rc)
	if err != nil {
		return call, err
	}
	d := contract.WithDefaults().Read(ctx, m)
	call.key = d.Event.IdempotencyKey
	if call.key == "" && d.KeyErr == nil {
		call.keyNote = fmt.Sprintf("derived when the stream stores it: %s:<sequence>:<stored-time-ns>", rc.Stream)
	}
	switch {
	case ctx.Err() != nil:
		return call, ctx.Err()
	case d.KeyErr != nil:
		call.reason, call.errText = "invalid_idempotency_key", d.KeyErr.Error()
		return call, nil
	case d.Reason != "":
		call.reason, call.errText = string(d.Reason), d.Err.Error()
		return call, nil
	}
	id := d.TriggerID
	if id.IsZero() {
		if id, err = agentapi.ParseTriggerID(rc.TriggerID); err != nil {
			return call, err
		}
	}
	// The client only names the call's URL here: it never connects.
	client, err := agentapi.NewClient(cfg.API.BaseURL, agentapi.ClientOptions{Timeout: cfg.API.Timeout.D(), AllowInsecureHTTP: cfg.API.AllowInsecureHTTP})
	if err != nil {
		return call, err
	}
	defer client.CloseIdleConnections()
	agent, err := client.Agent(id, agentapi.StaticToken(agentapi.NewSecret("unused")))
	if err != nil {
		return call, err
	}
	body, err := d.Event.Body()
	if err != nil {
		return call, err
	}
	call.url, call.body, call.trigger = agent.URL(), body, id.String()
	call.input, call.convKey = d.Event.Input, d.Event.ConversationKey
	call.tokenOf = tokenOrigin(rc, id.String())
	return call, nil
}

// print writes the call (or the dead letter) to w, every value through
// the terminal sanitiser: the event is anyone's.
func (c mappedCall) print(w io.Writer) {
	key := c.key
	if key == "" {
		key = "(" + c.keyNote + ")"
	}
	if c.reason != "" {
		printf(w, "route %s: not sent: dead-lettered as %s\n", c.route, c.reason)
		printf(w, "error: %s\n", c.errText)
		if c.key != "" || c.keyNote != "" {
			printf(w, "Idempotency-Key: %s\n", key)
		}
		return
	}
	printf(w, "POST %s\n", c.url)
	printf(w, "Authorization: Bearer REDACTED (%s)\n", c.tokenOf)
	printf(w, "Content-Type: application/json\nAccept: application/json\n")
	printf(w, "Idempotency-Key: %s\n\n", key)
	printf(w, "%s\n", string(c.body))
}

// tokenOrigin says where the worker takes id's token from on route rc,
// in agentset's order; never the token itself.
func tokenOrigin(rc config.Route, id string) string {
	source := func(file, env string) string {
		if file != "" {
			return "the token in " + file
		}
		return "the token in $" + env
	}
	if !rc.MapsTriggerID() {
		return source(rc.Token.File, rc.Token.Env)
	}
	for i, at := range rc.AgentTokens {
		if triggerglob.MustCompile(at.IDs).Match(id) {
			return fmt.Sprintf("%s, agent_tokens[%d]", source(at.File, at.Env), i)
		}
	}
	if rc.Token.Dir != "" {
		s := "the token in " + rc.Token.Dir + "/" + id
		if rc.Token.File != "" || rc.Token.Env != "" {
			s += ", else " + source(rc.Token.File, rc.Token.Env)
		}
		return s
	}
	if rc.Token.File != "" || rc.Token.Env != "" {
		return source(rc.Token.File, rc.Token.Env)
	}
	return "no token: agent_tokens match none, and the route has no token"
}

// printMapped is events show's hook: for each event still in its stream,
// and each of its routes whose contract maps or reads CloudEvents, what
// the route makes of the stored message (the input it sends, or why it
// dead-letters it). Nothing for other routes.
func printMapped(ctx context.Context, w io.Writer, t *toolConn, events []inspect.EventStory) {
	for _, s := range events {
		if !s.InStream {
			continue
		}
		var routes []config.Route
		for _, r := range s.Routes {
			for _, rc := range t.cfg.Routes {
				if rc.Name == r.Route && (!rc.Map.IsZero() || rc.Body == string(event.BodyCloudEvents)) {
					routes = append(routes, rc)
				}
			}
		}
		if len(routes) == 0 {
			continue
		}
		st, err := t.js.Stream(ctx, s.Stream)
		if err != nil {
			continue
		}
		m, err := st.GetMsg(ctx, s.Seq)
		if err != nil {
			continue
		}
		md := &jetstream.MsgMetadata{Stream: s.Stream, Sequence: jetstream.SequencePair{Stream: s.Seq}, Timestamp: m.Time}
		for _, rc := range routes {
			call, err := mapEvent(ctx, t.cfg, rc, event.Message{Subject: m.Subject, Data: m.Data, Header: m.Header, Meta: md})
			where := fmt.Sprintf("%s, route %s", s.Ref, rc.Name)
			switch {
			case errors.Is(err, context.Canceled):
				return
			case err != nil:
				printf(w, "mapped (%s): %v\n", where, err)
			case call.reason != "":
				printf(w, "mapped (%s): dead-lettered as %s: %s\n", where, call.reason, call.errText)
			default:
				printf(w, "mapped (%s): trigger %s, input %s", where, call.trigger, quoteInput(call.input))
				if call.convKey != "" {
					printf(w, ", conversation key %q", call.convKey)
				}
				printf(w, "\n")
			}
		}
	}
}

// quoteInput quotes an input for one line, cut at 200 bytes.
func quoteInput(s string) string {
	const max = 200
	if len(s) > max {
		return fmt.Sprintf("%q... (%d bytes)", strings.ToValidUTF8(s[:max], ""), len(s))
	}
	return fmt.Sprintf("%q", s)
}
