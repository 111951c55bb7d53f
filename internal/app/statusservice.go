package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/buildinfo"
	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// A route's health is each replica's own, and an ordered route's blocked
// keys live in the memory of the replica that owns it: NATS knows neither.
// So every replica runs a NATS service (nats.go micro: `nats micro ls`
// lists the replicas, `nats micro info agentrelay` their endpoints) with
// one endpoint per route on routestatus.Subject, without a queue group:
// every replica hears a request and answers with what it knows of the route
// (routestatus.Answer: who it is, and its routestatus.Status). `agentrelay
// status` gathers the answers and shows them side by side. Package
// routestatus holds the service's vocabulary, which the status command
// shares without linking the worker.
//
// Who may answer: anyone who may subscribe to agentrelay.status.> (and
// agentrelay.ordered.>) in the account. The NATS permissions must give that
// to the worker's role only (deploy/nats/auth); `agentrelay status` checks
// every answer's fields and bounds, and says whose answer it shows, but it
// cannot tell a worker from an impostor the permissions let in.
//
// The service is bounded: it runs on its own NATS connection (a flood
// costs at most that one); a request over routestatus.MaxRequest bytes is
// answered with an error and never decoded; the endpoint's subscription
// holds at most statusPendingMsgs requests (statusPendingBytes), so a flood
// is dropped by the client library as it arrives rather than queued, and
// the warnings about it are logged at most once a statusWarnEvery.

// Bounds of an endpoint's subscription: requests waiting to be answered.
const (
	statusPendingMsgs  = 64
	statusPendingBytes = 64 * 1024
)

// statusWarnEvery is how often the service may warn about requests it
// dropped or refused.
const statusWarnEvery = time.Minute

// serveStatus starts the status service for routes. It returns the
// function that stops it. A failure is logged, not fatal: the service
// shows state, it does not relay.
func serveStatus(nc *nats.Conn, relay *consumer.Relay, routes []consumer.Route, log *slog.Logger) (stop func()) {
	if len(routes) == 0 {
		return func() {}
	}
	warn := &warnLimiter{log: log, every: statusWarnEvery}
	snc, closeConn := statusConn(nc, warn, log)
	svc, err := addStatusService(snc, warn)
	if err != nil {
		closeConn()
		log.Warn("cannot serve the routes' status (agentrelay status will not show why a route is stopped)", "err", err)
		return func() {}
	}
	s := &statusServer{relay: relay, svc: svc, nc: nc, warn: warn}
	s.host, _ = os.Hostname()
	for _, r := range routes {
		if err := s.addRoute(r.WithDefaults()); err != nil {
			log.Warn("cannot serve a route's status (agentrelay status will not show it)", "route", r.Name, "err", err)
		}
	}
	return func() {
		if err := svc.Stop(); err != nil {
			log.Debug("stopping the status service", "err", err)
		}
		closeConn()
	}
}

// statusConn opens the service's own connection, with the worker's
// options (servers, credentials, TLS) and its own handlers: a flood on the
// status subjects then costs at most this connection (the server cuts a
// slow consumer), never the one that carries deliveries and acks, and its
// warnings are rate-limited. If it cannot connect, the service shares the
// worker's connection, its errors quieted (quietServiceErrors).
func statusConn(nc *nats.Conn, warn *warnLimiter, log *slog.Logger) (*nats.Conn, func()) {
	o := nc.Opts
	o.Name = strings.TrimSpace(o.Name + " status")
	o.AsyncErrorCB = func(_ *nats.Conn, sub *nats.Subscription, err error) {
		warn.warn("the status service dropped requests (a flood, or requests over its limits)", "subject", subjectOf(sub), "err", err)
	}
	o.DisconnectedErrCB = func(_ *nats.Conn, err error) {
		if err != nil {
			warn.warn("the status service's connection to NATS was cut; reconnecting", "err", err)
		}
	}
	o.ConnectedCB, o.DisconnectedCB, o.ReconnectedCB, o.ClosedCB, o.DiscoveredServersCB, o.LameDuckModeHandler = nil, nil, nil, nil, nil, nil
	o.ReconnectBufSize = statusPendingBytes
	snc, err := o.Connect()
	if err != nil {
		log.Warn("the status service shares the worker's NATS connection (its own did not connect)", "err", err)
		return nc, quietServiceErrors(nc, warn)
	}
	return snc, snc.Close
}

func subjectOf(sub *nats.Subscription) string {
	if sub == nil {
		return ""
	}
	return sub.Subject
}

func addStatusService(nc *nats.Conn, warn *warnLimiter) (micro.Service, error) {
	bi := buildinfo.Get()
	cfg := micro.Config{
		Name:        routestatus.ServiceName,
		Version:     strings.TrimPrefix(bi.Version, "v"),
		Description: "agentrelay worker: every replica answers with what it knows of its routes (agentrelay status)",
		Metadata:    map[string]string{"revision": bi.Revision},
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			warn.warn("the status service dropped or refused requests (a flood, or requests over its limits)", "subject", err.Subject, "err", err.Description)
		},
	}
	svc, err := micro.AddService(nc, cfg)
	if errors.Is(err, micro.ErrConfigValidation) {
		cfg.Metadata["version"] = bi.Version // not semantic ("dev", a local build)
		cfg.Version = "0.0.0"
		svc, err = micro.AddService(nc, cfg)
	}
	return svc, err
}

// statusServer answers for the routes of one replica.
type statusServer struct {
	relay *consumer.Relay
	svc   micro.Service
	nc    *nats.Conn
	host  string
	warn  *warnLimiter
}

func (s *statusServer) addRoute(r consumer.Route) error {
	name := r.Name
	limits := micro.WithEndpointPendingLimits(statusPendingMsgs, statusPendingBytes)
	err := s.svc.AddEndpoint("status-"+name, micro.HandlerFunc(func(req micro.Request) { s.answer(req, name) }),
		micro.WithEndpointSubject(routestatus.Subject(r.Stream, r.Durable)), micro.WithEndpointQueueGroupDisabled(), limits,
		micro.WithEndpointMetadata(map[string]string{"route": name}))
	if err != nil || r.Ordering != consumer.OrderByConversationKey {
		return err
	}
	return s.svc.AddEndpoint("ordered-"+name, micro.HandlerFunc(func(req micro.Request) { s.answerOrdered(req, name) }),
		micro.WithEndpointSubject(routestatus.OrderedSubject(r.Stream, r.Durable)), micro.WithEndpointQueueGroupDisabled(), limits,
		micro.WithEndpointMetadata(map[string]string{"route": name, "deprecated": "use " + routestatus.Subject(r.Stream, r.Durable)}))
}

// request reads a request's body, answering an error to one over
// routestatus.MaxRequest bytes or not of routestatus.Request's form.
func (s *statusServer) request(req micro.Request) (routestatus.Request, bool) {
	var q routestatus.Request
	switch data := req.Data(); {
	case len(data) > routestatus.MaxRequest:
		s.warn.warn("the status service refused requests over its size limit", "subject", req.Subject(), "bytes", len(data), "limit", routestatus.MaxRequest)
		_ = req.Error(routestatus.ErrTooLarge, fmt.Sprintf("request body over %d bytes", routestatus.MaxRequest), nil)
		return q, false
	case len(data) == 0:
	case json.Unmarshal(data, &q) != nil || q.MaxKeys < 0:
		_ = req.Error(routestatus.ErrBadRequest, `request body: want {"max_keys": n} or nothing`, nil)
		return q, false
	}
	if q.MaxKeys == 0 {
		q.MaxKeys = routestatus.DefaultKeys
	}
	q.MaxKeys = min(q.MaxKeys, routestatus.MaxBlockedKeys)
	return q, true
}

func (s *statusServer) answer(req micro.Request, route string) {
	q, ok := s.request(req)
	if !ok {
		return
	}
	st, ok := s.relay.RouteStatus(route, q.MaxKeys)
	if !ok {
		_ = req.Error(routestatus.ErrNoRoute, "this replica does not run the route", nil)
		return
	}
	_ = req.RespondJSON(routestatus.Answer{Replica: s.replica(), Status: st})
}

// answerOrdered answers on the first version's subject: the owner only,
// with what it holds.
func (s *statusServer) answerOrdered(req micro.Request, route string) {
	q, ok := s.request(req)
	if !ok {
		return
	}
	st, ok := s.relay.OrderedStatus(route, q.MaxKeys)
	if !ok || st.PinID == "" {
		return // a standby: the owner answers
	}
	_ = req.RespondJSON(st)
}

func (s *statusServer) replica() routestatus.Replica {
	return routestatus.Replica{ID: s.svc.Info().ID, Name: s.nc.Opts.Name, Host: s.host, ClientID: clientID(s.nc), Version: buildinfo.Get().Version}
}

func clientID(nc *nats.Conn) uint64 {
	id, err := nc.GetClientID()
	if err != nil {
		return 0
	}
	return id
}

// quietServiceErrors routes the connection's asynchronous errors on the
// status service's subscriptions (a slow consumer under a flood) to warn,
// rate-limited, instead of the connection's own handler, which logs each
// one. Other errors pass on. It returns the function that puts the
// connection's handler back.
func quietServiceErrors(nc *nats.Conn, warn *warnLimiter) (restore func()) {
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil && isServiceSubject(sub.Subject) {
			warn.warn("the status service dropped requests (a flood, or requests over its limits)", "subject", subjectOf(sub), "err", err)
			return
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
	return func() { nc.SetErrorHandler(prev) }
}

func isServiceSubject(s string) bool {
	return strings.HasPrefix(s, "agentrelay.status.") || strings.HasPrefix(s, "agentrelay.ordered.") || strings.HasPrefix(s, "$SRV.")
}

// warnLimiter logs a warning at most once every interval, counting the
// ones it held back.
type warnLimiter struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	last   time.Time
	held   int
	inited bool
}

func (w *warnLimiter) warn(msg string, args ...any) {
	w.mu.Lock()
	now := time.Now()
	if w.inited && now.Sub(w.last) < w.every {
		w.held++
		w.mu.Unlock()
		return
	}
	held := w.held
	w.last, w.held, w.inited = now, 0, true
	w.mu.Unlock()
	w.log.Warn(msg, append(args, "held_back", held, "at_most_every", w.every)...)
}
