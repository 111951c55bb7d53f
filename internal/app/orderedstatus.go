package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/buildinfo"
)

// An ordered route's blocked keys live in the memory of the replica that
// owns the route; NATS knows the owner (the consumer's pinned client) but
// not the keys. So each replica with an ordered route runs a NATS service
// (nats.go micro: `nats micro ls` lists the replicas, `nats micro info
// agentrelay` their endpoints) with one endpoint per ordered route, on
// OrderedStatusSubject, without a queue group: every replica hears a
// request, and the one that holds the route's pin answers with a bounded
// snapshot (consumer.OrderedStatus); the standbys stay silent. The answer
// carries the pin, so a reader can tell it from a replica that lost the
// pin without noticing yet.

// OrderedStatusService is the name of the worker's NATS service.
const OrderedStatusService = "agentrelay"

// DefaultOrderedStatusKeys is how many blocked keys an answer lists when
// the request does not say.
const DefaultOrderedStatusKeys = 10

// OrderedStatusSubject is the subject on which the owner of an ordered
// route answers: agentrelay.ordered.<stream>.<consumer>, a consumer's
// identity (two deployments may share route names, not consumers).
func OrderedStatusSubject(r consumer.Route) string {
	r = r.WithDefaults()
	return "agentrelay.ordered." + r.Stream + "." + r.Durable
}

// OrderedStatusRequest is the body of a request (optional: empty means the
// defaults).
type OrderedStatusRequest struct {
	// MaxKeys is how many blocked keys to list, longest waiting first
	// (at most consumer.MaxOrderedStatusKeys). Default
	// DefaultOrderedStatusKeys.
	MaxKeys int `json:"max_keys,omitempty"`
}

// serveOrderedStatus starts the service for the ordered routes, if any. It
// returns the function that stops it. A failure is logged, not fatal: the
// service shows state, it does not relay.
func serveOrderedStatus(nc *nats.Conn, relay *consumer.Relay, routes []consumer.Route, log *slog.Logger) (stop func()) {
	var ordered []consumer.Route
	for _, r := range routes {
		if r.WithDefaults().Ordering == consumer.OrderByConversationKey {
			ordered = append(ordered, r)
		}
	}
	if len(ordered) == 0 {
		return func() {}
	}
	bi := buildinfo.Get()
	cfg := micro.Config{
		Name:        OrderedStatusService,
		Version:     strings.TrimPrefix(bi.Version, "v"),
		Description: "agentrelay worker: the owner of an ordered route answers with its blocked conversation keys",
		Metadata:    map[string]string{"revision": bi.Revision},
	}
	svc, err := micro.AddService(nc, cfg)
	if errors.Is(err, micro.ErrConfigValidation) {
		cfg.Metadata["version"] = bi.Version // not semantic ("dev", a local build)
		cfg.Version = "0.0.0"
		svc, err = micro.AddService(nc, cfg)
	}
	if err != nil {
		log.Warn("cannot serve ordered routes' status (agentrelay status will not show blocked keys)", "err", err)
		return func() {}
	}
	for _, r := range ordered {
		name := r.Name
		err := svc.AddEndpoint("ordered-"+name, micro.HandlerFunc(func(req micro.Request) {
			answerOrderedStatus(req, relay, name)
		}), micro.WithEndpointSubject(OrderedStatusSubject(r)), micro.WithEndpointQueueGroupDisabled(),
			micro.WithEndpointMetadata(map[string]string{"route": name}))
		if err != nil {
			log.Warn("cannot serve an ordered route's status (agentrelay status will not show its blocked keys)", "route", name, "err", err)
		}
	}
	return func() {
		if err := svc.Stop(); err != nil {
			log.Debug("stopping the ordered status service", "err", err)
		}
	}
}

func answerOrderedStatus(req micro.Request, relay *consumer.Relay, route string) {
	var q OrderedStatusRequest
	if len(req.Data()) > 0 {
		if err := json.Unmarshal(req.Data(), &q); err != nil {
			_ = req.Error("400", "request body: want {\"max_keys\": n} or nothing", nil)
			return
		}
	}
	if q.MaxKeys <= 0 {
		q.MaxKeys = DefaultOrderedStatusKeys
	}
	st, ok := relay.OrderedStatus(route, q.MaxKeys)
	if !ok || st.PinID == "" {
		return // a standby: the owner answers
	}
	_ = req.RespondJSON(st)
}

// ErrNoOrderedStatus: the owner of an ordered route did not answer.
var ErrNoOrderedStatus = errors.New("the owner did not answer")

// AskOrderedStatus asks the owner of an ordered route, the replica holding
// pin (the consumer's pinned client id), what it holds. Answers from a
// replica with another pin (one that lost the route without noticing yet)
// are skipped. It waits until ctx ends for the owner.
func AskOrderedStatus(ctx context.Context, nc *nats.Conn, r consumer.Route, pin string, maxKeys int) (*consumer.OrderedStatus, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, err := json.Marshal(OrderedStatusRequest{MaxKeys: maxKeys})
	if err != nil {
		return nil, err
	}
	subject := OrderedStatusSubject(r)
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return nil, err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("%w: nothing serves %s (no worker runs, the workers are older than this command, or NATS permissions)", ErrNoOrderedStatus, subject)
		case err != nil:
			return nil, fmt.Errorf("%w on %s", ErrNoOrderedStatus, subject)
		}
		if m.Header.Get(micro.ErrorCodeHeader) != "" {
			return nil, fmt.Errorf("%w: %s %s", ErrNoOrderedStatus, m.Header.Get(micro.ErrorCodeHeader), m.Header.Get(micro.ErrorHeader))
		}
		var st consumer.OrderedStatus
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return nil, fmt.Errorf("%w: an answer on %s is not an ordered route's status: %w", ErrNoOrderedStatus, subject, err)
		}
		if st.PinID == pin {
			return &st, nil
		}
	}
}
