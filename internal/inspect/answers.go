package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// Every replica answers for its routes on routestatus.Subject (see
// internal/app's status service). AskReplicas asks, for all routes at
// once, and at the same time asks the service's INFO verb which replicas
// serve which routes: once every replica that serves a route has answered
// for it, it stops waiting. Every answer is checked (validate) before it
// is believed: an answer is anyone's who may publish to the reply subject.

// DefaultStatusWait bounds how long the replicas' answers are waited for.
const DefaultStatusWait = 2 * time.Second

// infoQuiet is how long after the last INFO answer the set of replicas is
// taken as known. (With no replica at all, the server answers "no
// responders" at once.)
const infoQuiet = 300 * time.Millisecond

// Bounds of what is read of the answers.
const (
	maxAnswersPerRoute = 64
	maxReplicasSeen    = 256
	maxInfoBytes       = 64 * 1024
	maxRepliesQueued   = 256
)

// AskOptions are how AskReplicas asks.
type AskOptions struct {
	// Wait bounds the wait (zero: DefaultStatusWait).
	Wait time.Duration
	// MaxKeys is how many blocked keys of an ordered route to ask for
	// (zero: routestatus.DefaultKeys).
	MaxKeys int
}

// ReplicaAnswer is one replica's answer for a route: its status, or why it
// was refused (Refused: it broke a bound, and nothing of it but who sent it
// is shown), or the error it answered.
type ReplicaAnswer struct {
	Replica routestatus.Replica `json:"replica"`
	Status  *routestatus.Status `json:"status,omitempty"`
	Refused string              `json:"refused,omitempty"`
	Error   string              `json:"error,omitempty"`
}

// Gathered is what the replicas answered.
type Gathered struct {
	// Answers holds each route's answers, by route name.
	Answers map[string][]ReplicaAnswer `json:"answers"`
	// Serving lists, by route name, the replicas (service instance ids)
	// whose status service lists the route; Silent those of them that did
	// not answer in time.
	Serving map[string][]string `json:"serving"`
	Silent  map[string][]string `json:"silent,omitempty"`
	// Unserved lists the routes nothing answers for (no worker runs, the
	// workers are older than this command, or NATS permissions).
	Unserved []string      `json:"unserved,omitempty"`
	Took     time.Duration `json:"took_ns"`
}

// asking is one AskReplicas under way.
type asking struct {
	routes  []Route
	maxKeys int
	inbox   string
	g       *Gathered
	// The replicas are known once INFO had no responders, or once
	// infoQuiet passed after the last INFO answer.
	infoSeen, infoDone bool
	lastInfo           time.Time
	noReply            map[string]bool // routes with no responders
}

// AskReplicas asks every replica about routes, and returns what they
// answered within o.Wait. It does not fail: what could not be asked is
// said in Unserved.
func (s *Source) AskReplicas(ctx context.Context, routes []Route, o AskOptions) *Gathered {
	if o.Wait <= 0 {
		o.Wait = DefaultStatusWait
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = routestatus.DefaultKeys
	}
	a := &asking{routes: routes, maxKeys: o.MaxKeys, noReply: map[string]bool{},
		g: &Gathered{Answers: map[string][]ReplicaAnswer{}, Serving: map[string][]string{}, Silent: map[string][]string{}}}
	start := time.Now()
	defer func() { a.g.Took = time.Since(start) }()
	ctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	sub, replies, err := a.send(s.NC)
	if err != nil {
		a.unservedAll()
		return a.g
	}
	defer func() { _ = sub.Unsubscribe() }()
	a.collect(ctx, replies)
	a.finish()
	return a.g
}

// send subscribes to the replies and sends the requests. The replies
// come on a channel (not a synchronous subscription, which turns a "no
// responders" status into an error without its subject); a reply that
// finds the channel full is dropped by the client library, not kept.
func (a *asking) send(nc *nats.Conn) (*nats.Subscription, chan *nats.Msg, error) {
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, min(32+8*len(a.routes), maxRepliesQueued))
	sub, err := nc.ChanSubscribe(inbox+".>", replies)
	if err != nil {
		return nil, nil, err
	}
	body, _ := json.Marshal(routestatus.Request{MaxKeys: a.maxKeys})
	info, _ := micro.ControlSubject(micro.InfoVerb, routestatus.ServiceName, "")
	err = nc.PublishRequest(info, inbox+".info", nil)
	for i, r := range a.routes {
		err = errors.Join(err, nc.PublishRequest(routestatus.Subject(r.Stream, r.Durable), inbox+"."+strconv.Itoa(i), body))
	}
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, err
	}
	a.inbox = inbox
	return sub, replies, nil
}

// collect reads replies until every replica seen has answered for every
// route, or ctx ends.
func (a *asking) collect(ctx context.Context, replies <-chan *nats.Msg) {
	quiet := time.NewTimer(time.Hour)
	defer quiet.Stop()
	for !a.done() {
		if a.infoSeen && !a.infoDone {
			quiet.Reset(max(time.Until(a.lastInfo.Add(infoQuiet)), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-quiet.C:
			a.infoDone = true // quiet: every replica that serves has said so
		case m := <-replies:
			a.reply(strings.TrimPrefix(m.Subject, a.inbox+"."), m)
		}
	}
}

// reply files one reply: an INFO answer, or a route's.
func (a *asking) reply(which string, m *nats.Msg) {
	noResponders := m.Header.Get("Status") == "503" && len(m.Data) == 0
	if which == "info" {
		if noResponders {
			a.infoDone = true
			return
		}
		a.lastInfo, a.infoSeen = time.Now(), true
		a.addInfo(m.Data)
		return
	}
	i, err := strconv.Atoi(which)
	if err != nil || i < 0 || i >= len(a.routes) {
		return
	}
	r := a.routes[i]
	switch {
	case noResponders:
		a.noReply[r.Name] = true
	case len(a.g.Answers[r.Name]) < maxAnswersPerRoute:
		a.g.Answers[r.Name] = append(a.g.Answers[r.Name], readAnswer(m, r.Name, a.maxKeys, time.Now()))
	}
}

// addInfo files which routes one replica serves.
func (a *asking) addInfo(data []byte) {
	var info micro.Info
	if len(data) > maxInfoBytes || json.Unmarshal(data, &info) != nil || info.ID == "" || len(info.ID) > maxIDLen {
		return
	}
	for _, r := range a.routes {
		subject := routestatus.Subject(r.Stream, r.Durable)
		serving := a.g.Serving[r.Name]
		if len(serving) >= maxReplicasSeen || slices.Contains(serving, info.ID) {
			continue
		}
		if slices.ContainsFunc(info.Endpoints, func(e micro.EndpointInfo) bool { return e.Subject == subject }) {
			a.g.Serving[r.Name] = append(serving, info.ID)
		}
	}
}

// done: the replicas are known, and each that serves a route answered.
func (a *asking) done() bool {
	if !a.infoDone {
		return false
	}
	for _, r := range a.routes {
		if !a.noReply[r.Name] && len(a.g.Answers[r.Name]) < len(a.g.Serving[r.Name]) {
			return false
		}
	}
	return true
}

// finish lists who did not answer, and the routes nothing answers for.
func (a *asking) finish() {
	for _, r := range a.routes {
		answered := map[string]bool{}
		for _, ans := range a.g.Answers[r.Name] {
			answered[ans.Replica.ID] = true
		}
		for _, id := range a.g.Serving[r.Name] {
			if !answered[id] {
				a.g.Silent[r.Name] = append(a.g.Silent[r.Name], id)
			}
		}
		if len(a.g.Answers[r.Name]) == 0 && len(a.g.Serving[r.Name]) == 0 {
			a.g.Unserved = append(a.g.Unserved, r.Name)
		}
	}
}

func (a *asking) unservedAll() {
	for _, r := range a.routes {
		a.g.Unserved = append(a.g.Unserved, r.Name)
	}
}

// readAnswer decodes and checks one route's answer.
func readAnswer(m *nats.Msg, route string, maxKeys int, now time.Time) ReplicaAnswer {
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		return ReplicaAnswer{Error: bounded(code+" "+m.Header.Get(micro.ErrorHeader), maxErrorLen)}
	}
	if len(m.Data) > maxAnswerBytes(maxKeys) {
		// Read no more of it than who sent it (the client library bounds
		// a message to the server's max_payload, 1 MB by default).
		var who struct {
			Replica routestatus.Replica `json:"replica"`
		}
		_ = json.Unmarshal(m.Data, &who)
		if validReplica(&who.Replica) != nil {
			who.Replica = routestatus.Replica{}
		}
		return ReplicaAnswer{Replica: who.Replica, Refused: "the answer is " + strconv.Itoa(len(m.Data)) + " bytes, more than an answer listing " + strconv.Itoa(maxKeys) + " keys can be"}
	}
	var ans routestatus.Answer
	if err := json.Unmarshal(m.Data, &ans); err != nil {
		return ReplicaAnswer{Refused: "not a status answer: " + bounded(err.Error(), maxErrorLen)}
	}
	out := ReplicaAnswer{Replica: ans.Replica}
	if err := validReplica(&out.Replica); err != nil {
		return ReplicaAnswer{Refused: err.Error()}
	}
	if err := validStatus(&ans.Status, route, maxKeys, now); err != nil {
		out.Refused = err.Error()
		return out
	}
	out.Status = &ans.Status
	return out
}
