package faultsuite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/natsembed"
)

// profile is one configuration of the suite: how many events, how many
// replicas, which faults and how often.
type profile struct {
	name    string
	events  int // published, paused of them for the not-runnable agent
	paused  int
	workers int
	// startWorkers, when set, is how many replicas run at first; the
	// others are started at scaleUpAt (a fraction of publishFor) while the
	// events flow: a scale-up, e.g. from 1 to 3.
	startWorkers int
	scaleUpAt    float64
	// killOwnerAt, when set, SIGKILLs the ordered route's owner then (a
	// fraction of publishFor): its conversations' takeover is judged.
	killOwnerAt float64
	// publishFor spreads the publishing over this long, so that faults
	// hit a stream of events rather than a backlog.
	publishFor time.Duration
	cluster    bool // a three-node cluster with R3 streams instead of one server

	apiFaults  emulator.Faults // steady probabilistic faults and latency
	replyDelay time.Duration   // a 202 is held back up to this long after the event was enqueued

	killEvery  [2]time.Duration // SIGKILL a replica mid-call every [min, max); zero: never
	downFor    [2]time.Duration // how long a killed replica stays down
	restarts   int              // single server: stopped abruptly and restarted on its store
	leaderKill int              // cluster: the stream leader's node killed, later restarted
	downtime   time.Duration    // how long the server or node stays down
	outages    int              // API outages: every call 503
	outageFor  time.Duration
	rotations  int           // token rotations, each with a window of 401s
	window401  time.Duration // how long the 401s last once they started
	runnableAt float64       // when (fraction of publishFor) the paused agent becomes runnable

	// phases, if any, replace the steady API faults with a schedule of
	// fault phases, each followed by calm (chaos profiles).
	phases []apiPhase
	calm   time.Duration

	// poison, when set, replaces the manifest with the poison mix (see
	// poison_test.go) and judges its targets.
	poison *poisonMix
	// agents, when set, replaces the manifest with events for the 50
	// agents of the agents route, three of them failing (see
	// agents_test.go), and judges its targets.
	agents *agentMix
	// stalls SIGSTOPs the ordered route's owner that many times, for
	// stallFor each, then SIGCONTs it: a long GC pause or a starved VM.
	stalls   int
	stallFor time.Duration

	inFlight, ackPending int // route settings; 0 for the defaults
	drainTimeout         time.Duration
	targets              targets
}

// apiPhase is a span of time with one kind of API fault.
type apiPhase struct {
	name   string
	faults emulator.Faults
	dur    time.Duration
	excuse bool // delivery may stop during it by design (a full outage)
	unauth bool // a window of 401s (the token revoked) instead of faults
}

// run is one execution of a profile.
type run struct {
	t    *testing.T
	p    profile
	seed uint64     // the profile's
	base uint64     // AGENTRELAY_FAULT_SEED
	rng  *rand.Rand // the schedule's; used by one goroutine at a time

	single  *natsembed.Server
	cluster *natsembed.Cluster
	natsURL string
	nc      *nats.Conn
	js      jetstream.JetStream

	api        *apiServer
	fleet      *fleet
	tokenFiles []string
	tokens     []string // every token used, current last

	events   []planned
	natsDown atomic.Bool // no worker is (re)started while the broker is down
	killMu   sync.Mutex  // one SIGKILL and restart at a time

	mu           sync.Mutex
	errs         []error
	fig          figures
	windows      []faultWindow
	kills        []killRecord
	publishStart time.Time
	faultsEnd    time.Time
	// agentRunnable and agentRecovered are when the agents route's
	// not-runnable agent became runnable and its hanging agent recovered.
	agentRunnable, agentRecovered time.Time
}

// faultSpan records a fault's span of time.
func (r *run) faultSpan(name string, from time.Time, excused bool) {
	r.mu.Lock()
	r.windows = append(r.windows, faultWindow{name: name, from: from, to: time.Now(), excused: excused})
	r.mu.Unlock()
}

// figures are what a run prints.
type figures struct {
	published, publishRetries, publishDuplicates int
	kills, killsMidCall, killsHoldingAccepted    int
	stalls                                       int
	restarts, leaderKills, outages, rotations    int
	scaleUps, ownerKills                         int
	breakerOpens                                 int
	agentStops                                   int // agents stopped on a route that serves many, all replicas
	falseSettles                                 int // polls where the consumers owed nothing but events had no outcome
	ownAbandonedCalls                            int // ordered calls that came while their worker's abandoned call was still in the API
	stored                                       uint64
	emu                                          emulator.Stats
	settle, total                                time.Duration
	report                                       Report
	recovery                                     recovery
}

func (r *run) fail(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *run) count(f func(*figures)) {
	r.mu.Lock()
	f(&r.fig)
	r.mu.Unlock()
}

// runProfile executes one profile and checks every invariant. The profile's
// own seed derives from base (AGENTRELAY_FAULT_SEED) and its name.
func runProfile(t *testing.T, p profile, base uint64) {
	seed := profileSeed(base, p.name)
	r := &run{t: t, p: p, seed: seed, base: base, rng: rand.New(rand.NewPCG(seed, 0xfa17))}
	t.Logf("%s: seed %d (replay with AGENTRELAY_FAULT_SEED=%d)", p.name, seed, base)
	bin := workerBinary(t)
	start := time.Now()

	r.startNATS()
	r.startAPI()
	cfgPath := r.writeConfig()
	r.fleet = newFleet(t, bin, cfgPath, r.api, p.workers)
	first := p.workers
	if p.startWorkers > 0 {
		first = p.startWorkers
		r.fleet.activate(first)
	}
	for slot := range first {
		if _, err := r.fleet.start(slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.fleet.waitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}

	var pauses *pauseWatch
	switch {
	case p.poison != nil:
		r.events = makePoisonManifest(r.rng, p.events, *p.poison)
		pauses = r.watchPauses("orders", "convo")
	case p.agents != nil:
		r.events = makeAgentManifest(r.rng, p.events)
		pauses = r.watchPauses("agents")
	default:
		r.events = makeManifest(r.rng, p.events, p.paused)
	}
	published := make(chan struct{})
	r.publishStart = time.Now()
	go func() { defer close(published); r.publish() }()
	chaosDone := r.chaos(published)
	<-published
	<-chaosDone
	r.mu.Lock()
	r.faultsEnd = time.Now()
	r.mu.Unlock()
	r.waitSettled()
	r.fig.settle = time.Since(r.faultsEnd)
	var seenPauses []string
	if pauses != nil {
		seenPauses = pauses.end()
	}

	r.finish()
	r.fig.total = time.Since(start)
	r.fig.recovery = r.measureRecovery()
	t.Logf("%s: figures\n%s%s", p.name, r.fig.String(p, base), r.fig.recovery.String())
	if p.poison != nil {
		pf := r.measurePoison(seenPauses)
		t.Logf("%s: poison-mix figures\n%s", p.name, pf.String())
		if missed := pf.check(p.poison.targets); len(missed) > 0 {
			t.Errorf("poison-mix targets missed (AGENTRELAY_FAULT_SEED=%d):\n%s", base, strings.Join(missed, "\n"))
		}
	}
	if p.agents != nil {
		af := r.measureAgents(seenPauses)
		t.Logf("%s: many-agents figures\n%s", p.name, af.String())
		if missed := af.check(p.agents.targets); len(missed) > 0 {
			t.Errorf("many-agents targets missed (AGENTRELAY_FAULT_SEED=%d):\n%s", base, strings.Join(missed, "\n"))
		}
	}
	for _, err := range r.errs {
		t.Error(err)
	}
	if p.killOwnerAt > 0 && (r.fig.recovery.ownerKills == 0 || r.fig.recovery.convoWaits == 0) {
		t.Errorf("the ordered route's owner was killed, but no conversation's takeover was judged (excused by a fault nearby, or nothing outstanding)")
	}
	if missed := r.fig.recovery.check(p.targets); len(missed) > 0 {
		t.Errorf("recovery targets missed (AGENTRELAY_FAULT_SEED=%d):\n%s", base, strings.Join(missed, "\n"))
	}
	if !r.fig.report.OK() {
		probs := r.fig.report.Problems()
		t.Errorf("%d invariants broken (AGENTRELAY_FAULT_SEED=%d):\n%s", len(probs), base, strings.Join(probs[:min(len(probs), 50)], "\n"))
	}
	if t.Failed() {
		t.Logf("replay with AGENTRELAY_FAULT_SEED=%d; worker logs were in %s", base, r.fleet.logDir)
	}
}

func (r *run) startNATS() {
	t := r.t
	if r.p.cluster {
		c, err := natsembed.StartCluster(3, t.TempDir(), natsembed.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Shutdown)
		r.cluster, r.natsURL = c, c.ClientURLs()
	} else {
		s, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		r.single, r.natsURL = s, s.ClientURL()
	}
	nc, err := nats.Connect(r.natsURL, nats.Name("faultsuite"),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.nc = nc
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	replicas := 1
	if r.p.cluster {
		replicas = 3
	}
	// The work stream is the operator's; the workers create the
	// dead-letter stream themselves, racing each other (R3 in the cluster,
	// from dead_letter.replicas).
	work := jetstream.StreamConfig{
		Name: workStream, Subjects: []string{"events.>"}, Storage: jetstream.FileStorage,
		Replicas: replicas, Duplicates: time.Hour,
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := r.js.CreateStream(ctx, work)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("creating stream %s: %v", workStream, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.waitWhole(false, workStream); err != nil {
		t.Fatal(err)
	}
}

// grants are the agents the token may call: all but agtch_locked and the
// agents route's agentForbidden.
func grants() []string {
	ids := []string{triggerOrders, triggerNotes, triggerPaused, triggerGhost, triggerConvo}
	for _, id := range agentTriggers() {
		if id != agentForbidden {
			ids = append(ids, id)
		}
	}
	return ids
}

func (r *run) startAPI() {
	f := r.p.apiFaults
	f.Seed = int64(r.rng.Uint64() >> 1)
	f.HangFor = 10 * time.Second
	// Only the poison mix's and the hanging agent's events carry the
	// markers.
	f.ByInput = append(poisonFaults(), agentHangFault)
	tok := r.newToken()
	opts := []emulator.Option{
		emulator.WithToken(tok, grants()...),
		emulator.WithTrigger(triggerOrders, true),
		emulator.WithTrigger(triggerNotes, true),
		emulator.WithTrigger(triggerPaused, false),
		emulator.WithTrigger(triggerConvo, true),
		emulator.WithTrigger(triggerLocked, true),
		emulator.WithFaults(f),
		emulator.WithRequestLog(0), // the recorder keeps what the suite needs
	}
	for _, id := range agentTriggers() {
		opts = append(opts, emulator.WithTrigger(id, id != agentNotRunnable))
	}
	emu := emulator.New(opts...)
	// Each kind of fault at least once, whatever the dice say: the first
	// calls of the orders route hang, lose their answer after the accept,
	// get a 503 with a Retry-After and a 429 with a bogus one.
	emu.Script(
		emulator.Fault{Kind: emulator.FaultHang, TriggerID: triggerOrders},
		emulator.Fault{Kind: emulator.FaultDropAfterAccept, TriggerID: triggerOrders},
		emulator.Fault{Kind: emulator.FaultServerError, Status: 502, RetryAfter: "2", TriggerID: triggerOrders},
		emulator.Fault{Kind: emulator.FaultRateLimit, RetryAfter: "-5", TriggerID: triggerOrders},
		emulator.Fault{Kind: emulator.FaultDropAfterAccept, TriggerID: triggerNotes},
	)
	r.api = startAPI(r.t, emu, r.p.replyDelay, r.rng.Uint64())
}

// newToken makes a fresh token and remembers it for the leak check.
func (r *run) newToken() string {
	tok := fmt.Sprintf("fs-secret-%016x", r.rng.Uint64())
	r.tokens = append(r.tokens, tok)
	return tok
}

// writeConfig writes the workers' configuration and their token files.
func (r *run) writeConfig() string {
	t := r.t
	dir := t.TempDir()
	// Each route takes events.<name>.>; the agents route, events for its
	// agents on events.agents.<trigger id>, calls the agent its subject
	// names, with the route's token.
	routes := []struct {
		name, trigger, extra string
	}{
		{"orders", triggerOrders, fmt.Sprintf("max_input_bytes: %d", maxInputBytes)},
		{"notes", triggerNotes, fmt.Sprintf("max_input_bytes: %d\n    body: text", maxInputBytes)},
		{"paused", triggerPaused, ""},
		{"locked", triggerLocked, ""},
		{"ghost", triggerGhost, ""},
		{"convo", triggerConvo, "ordering: conversation_key"},
		{"agents", "", fmt.Sprintf("map: {trigger_id: 'tokens[2]'}\n    allowed_trigger_ids: [%q]", agentPattern)},
	}
	var b strings.Builder
	replicas := 1
	if r.p.cluster {
		replicas = 3
	}
	// The retry, breaker and ack_wait timings are the defaults: users
	// run them. What is set is the topology, a 2 s call timeout (the
	// chaos run's; the hang fault outlasts it), and faster metrics.
	fmt.Fprintf(&b, `nats:
  url: %q
  name: faultsuite-worker
  connect_timeout: 2s
  reconnect_wait: 100ms
api:
  base_url: %q
  timeout: 2s
dead_letter:
  replicas: %d
worker:
  drain_grace: 3s
  lag_interval: 1s
log:
  level: info
  format: json
metrics:
  listen: "off"
`, r.natsURL, r.api.URL, replicas)
	if r.p.inFlight > 0 || r.p.ackPending > 0 {
		b.WriteString("defaults:\n")
		if r.p.inFlight > 0 {
			fmt.Fprintf(&b, "  max_in_flight: %d\n", r.p.inFlight)
		}
		if r.p.ackPending > 0 {
			fmt.Fprintf(&b, "  max_ack_pending: %d\n", r.p.ackPending)
		}
	}
	b.WriteString("routes:\n")
	tok := r.tokens[len(r.tokens)-1]
	for _, rt := range routes {
		path := filepath.Join(dir, rt.name+"-token")
		writeAtomic(t, path, tok+"\n")
		r.tokenFiles = append(r.tokenFiles, path)
		fmt.Fprintf(&b, "  - name: %s\n    stream: %s\n    subjects: [\"events.%s.>\"]\n    token: {file: %q}\n",
			rt.name, workStream, rt.name, path)
		if rt.trigger != "" {
			fmt.Fprintf(&b, "    trigger_id: %s\n", rt.trigger)
		}
		if rt.extra != "" {
			fmt.Fprintf(&b, "    %s\n", rt.extra)
		}
	}
	cfgPath := filepath.Join(dir, "agentrelay.yaml")
	writeAtomic(t, cfgPath, b.String())
	return cfgPath
}

// writeAtomic replaces a file the way a Kubernetes Secret is rotated: the
// reader sees the old content or the new, never a mix.
func writeAtomic(t testing.TB, path, content string) {
	t.Helper()
	if err := writeFileAtomic(path, content); err != nil {
		t.Fatal(err)
	}
}

func writeFileAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// publish publishes the manifest at an even pace over publishFor, each
// event with its Nats-Msg-Id, retrying (with the same id) until the stream
// acknowledges it.
func (r *run) publish() {
	start := time.Now()
	for i := range r.events {
		e := &r.events[i]
		if d := time.Until(start.Add(r.p.publishFor * time.Duration(i) / time.Duration(len(r.events)))); d > 0 {
			time.Sleep(d) // pacing, not synchronisation
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			msg := &nats.Msg{Subject: e.subject, Data: e.body, Header: nats.Header{}}
			for k, v := range e.header {
				msg.Header[k] = v
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ack, err := r.js.PublishMsg(ctx, msg, jetstream.WithMsgID(e.MsgID), jetstream.WithExpectStream(workStream))
			cancel()
			if err == nil {
				e.stored, e.published = true, time.Now()
				r.count(func(f *figures) {
					f.published++
					if ack.Duplicate {
						f.publishDuplicates++
					}
				})
				break
			}
			r.count(func(f *figures) { f.publishRetries++ })
			if time.Now().After(deadline) {
				r.fail(fmt.Errorf("publishing %s: %v", e.MsgID, err))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// durables are the consumers of the routes.
func durables() []string {
	return []string{"agentrelay-orders", "agentrelay-notes", "agentrelay-paused", "agentrelay-locked", "agentrelay-ghost", "agentrelay-convo", "agentrelay-agents"}
}

// consumerStates reads what each route's consumer still owes.
func (r *run) consumerStates() ([]ConsumerState, error) {
	var out []ConsumerState
	for _, name := range durables() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := r.js.Consumer(ctx, workStream, name)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("consumer %s: %w", name, err)
		}
		info, err := c.Info(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("consumer %s: %w", name, err)
		}
		out = append(out, ConsumerState{Name: name, Pending: info.NumPending, AckPending: info.NumAckPending})
	}
	return out, nil
}

// waitSettled waits until every event has an outcome (as many accepted
// events and dead letters as the manifest calls for), no consumer owes
// anything and every replica is relaying, all seen twice in a row. The
// consumers' own figures alone are not enough: a consumer whose leader was
// just elected on a replica still catching up reports nothing pending for
// messages its stream copy has not got yet. On timeout the run goes on to
// the checker, which names what is missing.
func (r *run) waitSettled() {
	var wantAccepted, wantDead, wantEither int
	for i := range r.events {
		if !r.events[i].stored {
			continue
		}
		switch r.events[i].Kind {
		case KindDeadLetter:
			wantDead++
		case KindAcceptOrDeadLetter:
			wantEither++
		default:
			wantAccepted++
		}
	}
	deadline := time.Now().Add(r.p.drainTimeout)
	var why string
	for streak := 0; streak < 2; time.Sleep(250 * time.Millisecond) {
		if err := r.fleet.unexpectedExits(); err != nil {
			r.fail(err)
			return
		}
		if time.Now().After(deadline) {
			r.fail(fmt.Errorf("not settled %v after the faults ended: %s", r.p.drainTimeout, why))
			return
		}
		streak++
		switch accepted, dead, states, err := r.api.emu.LedgerLen(), r.deadLetterCount(), []ConsumerState(nil), error(nil); {
		case accepted < wantAccepted || dead < wantDead || accepted+dead < wantAccepted+wantDead+wantEither:
			why = fmt.Sprintf("%d of %d accepted, %d of %d dead-lettered, %d either way", accepted, wantAccepted, dead, wantDead, wantEither)
			streak = 0
			if states, err = r.consumerStates(); err == nil && owesNothing(states) && r.fleet.allRelaying() {
				// Settled by the consumers' own account, yet events
				// have no outcome: the consumers cannot be trusted
				// alone to say a run is over.
				r.fig.falseSettles++
			}
		case !r.fleet.allRelaying():
			why = "a replica is not relaying"
			streak = 0
		default:
			states, err = r.consumerStates()
			if err != nil {
				why, streak = err.Error(), 0
			}
			if !owesNothing(states) {
				why, streak = fmt.Sprintf("consumers owe messages: %+v", states), 0
			}
		}
	}
}

func owesNothing(states []ConsumerState) bool {
	for _, s := range states {
		if s.Pending != 0 || s.AckPending != 0 {
			return false
		}
	}
	return true
}

// deadLetterCount is the number of messages in the dead-letter stream (0
// while it cannot be read).
func (r *run) deadLetterCount() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, deadletter.DefaultStream)
	if err != nil {
		return 0
	}
	return int(s.CachedInfo().State.Msgs)
}

// finish scrapes a replica's metrics, stops every replica with SIGTERM,
// gathers what the API, the dead-letter stream and the consumers say, and
// runs the checker and the leak checks.
func (r *run) finish() {
	t := r.t
	metrics, err := r.fleet.scrapeMetrics()
	if err != nil {
		r.fail(fmt.Errorf("scraping /metrics: %w", err))
	}
	if err := r.fleet.stopAll(30 * time.Second); err != nil {
		r.fail(err)
	}
	r.fail(r.fleet.unexpectedExits())

	consumers, err := r.consumerStates()
	if err != nil {
		t.Fatal(err)
	}
	dls, dlHeaders := r.deadLetters()
	obs := Observed{DeadLetters: dls, Consumers: consumers, KeyOverlaps: r.api.rec.keyOverlaps()}
	r.fig.ownAbandonedCalls = r.api.rec.afterOwnAbandoned()
	for _, e := range r.api.emu.Ledger() {
		obs.Ledger = append(obs.Ledger, Accepted{TriggerID: e.TriggerID, Key: e.IdempotencyKey, Input: e.Input})
	}
	for _, q := range r.api.rec.requests() {
		obs.Requests = append(obs.Requests, q.Request)
	}
	var manifest []Event
	for _, e := range r.events {
		if e.stored {
			manifest = append(manifest, e.Event)
		}
	}
	r.fig.report = Check(manifest, obs, Options{})
	r.fig.emu = r.api.emu.Stats()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s, err := r.js.Stream(ctx, workStream); err == nil {
		r.fig.stored = s.CachedInfo().State.Msgs
	}

	// The token never leaves the token file and the Authorization header:
	// not in any log line of any replica, not in /metrics, not in a dead
	// letter (whose error header quotes the API's errors).
	places := map[string]string{"/metrics": metrics, "dead-letter headers": dlHeaders}
	for _, path := range r.fleet.logs() {
		b, err := os.ReadFile(path)
		if err != nil {
			r.fail(err)
			continue
		}
		places[filepath.Base(path)] = string(b)
		r.fig.breakerOpens += strings.Count(string(b), `"msg":"route stopped:`)
		r.fig.agentStops += strings.Count(string(b), `"msg":"agent stopped:`)
		if strings.Contains(string(b), "WARNING: DATA RACE") {
			r.fail(fmt.Errorf("data race in a worker, see %s:\n%s", path, tail(path, 60)))
		}
	}
	for where, text := range places {
		for _, tok := range r.tokens {
			if strings.Contains(text, tok) {
				r.fail(fmt.Errorf("the agent token appears in %s", where))
			}
		}
	}
	if len(r.fleet.logs()) == 0 || !strings.Contains(metrics, "agentrelay_trigger_requests_total") {
		r.fail(errors.New("no worker logs or metrics to search for the token: the leak check would prove nothing"))
	}
	r.checkFaultsTookEffect()
}

// deadLetters reads the whole dead-letter stream, and all its headers as
// one text for the leak check.
func (r *run) deadLetters() ([]DeadLetter, string) {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, deadletter.DefaultStream)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []DeadLetter
	var all strings.Builder
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		out = append(out, DeadLetter{
			OriginalMsgID: m.Header.Get(deadletter.HeaderOriginalPrefix + "Nats-Msg-Id"),
			Key:           m.Header.Get(event.HeaderIdempotencyKey),
			Reason:        m.Header.Get(deadletter.HeaderReason),
			Status:        m.Header.Get(deadletter.HeaderStatus),
			Class:         m.Header.Get(deadletter.HeaderClass),
		})
		for k, vs := range m.Header {
			fmt.Fprintf(&all, "%s: %s\n", k, strings.Join(vs, ", "))
		}
	}
	return out, all.String()
}

// checkFaultsTookEffect fails a run whose faults did not happen: a suite
// that injected nothing would prove nothing.
func (r *run) checkFaultsTookEffect() {
	f, p := &r.fig, r.p
	var missing []string
	check := func(ok bool, what string) {
		if !ok {
			missing = append(missing, what)
		}
	}
	check(p.killEvery[0] == 0 || f.kills > 0, "no replica was killed")
	check(f.restarts == p.restarts, fmt.Sprintf("%d of %d broker restarts", f.restarts, p.restarts))
	check(f.leaderKills == p.leaderKill, fmt.Sprintf("%d of %d leader kills", f.leaderKills, p.leaderKill))
	check(p.outages == 0 || f.breakerOpens > 0, "the API outage stopped no route")
	check(p.rotations == 0 || f.report.RequestsByStatus[401] > 0, "the token rotation caused no 401")
	check(p.apiFaults.DropRate == 0 || f.emu.Dropped > 0, "no accepted call's answer was dropped")
	check(p.apiFaults.DropRate == 0 && p.killEvery[0] == 0 || f.emu.Replays > 0, "no retry of an accepted event: no replay 202")
	check(p.apiFaults.HangRate == 0 || f.emu.Hangs > 0, "no call hung past the timeout")
	check(p.apiFaults.RateLimitRate == 0 || f.report.RequestsByStatus[429] > 0, "no 429")
	check(p.paused == 0 || f.report.RequestsByStatus[409] > 0, "no 409")
	check(p.scaleUpAt == 0 || f.scaleUps == 1, "no scale-up")
	check(p.killOwnerAt == 0 || f.ownerKills > 0, "the ordered route's owner was not killed")
	check(f.stalls == p.stalls, fmt.Sprintf("%d of %d stalls of the ordered route's owner", f.stalls, p.stalls))
	if p.agents != nil {
		rec := r.api.rec
		check(rec.countTriggerStatus(agentNotRunnable, 409) > 0, "the not-runnable agent answered no 409")
		check(rec.countTriggerStatus(agentForbidden, 403) > 0, "the forbidden agent answered no 403")
		check(rec.countTriggerStatus(agentHang, 0) > 0, "no call of the hanging agent hung")
		check(!r.agentRunnable.IsZero(), "the not-runnable agent was not made runnable")
		check(!r.agentRecovered.IsZero(), "the hanging agent did not recover")
	}
	if len(missing) > 0 {
		r.fail(fmt.Errorf("faults that did not take effect: %s", strings.Join(missing, "; ")))
	}
}

// String prints the figures of a run.
func (f *figures) String(p profile, base uint64) string {
	var b strings.Builder
	topology := "1 nats-server"
	if p.cluster {
		topology = "3-node cluster, R3 streams"
	}
	fmt.Fprintf(&b, "profile:           %s (%s, %d worker processes), AGENTRELAY_FAULT_SEED=%d\n", p.name, topology, p.workers, base)
	b.WriteString(f.report.String())
	fmt.Fprintf(&b, "published:         %d (stored %d; %d publish retries, %d deduplicated)\n", f.published, f.stored, f.publishRetries, f.publishDuplicates)
	fmt.Fprintf(&b, "faults injected:   %d worker SIGKILLs (%d mid-call, %d with an accepted event's answer in flight), %d broker restarts, %d leader kills, %d API outages, %d token rotations, %d scale-ups, %d owner stalls\n",
		f.kills, f.killsMidCall, f.killsHoldingAccepted, f.restarts, f.leaderKills, f.outages, f.rotations, f.scaleUps, f.stalls)
	fmt.Fprintf(&b, "API faults:        %s; %d answers dropped after accept, %d hangs\n", countsString(toInts(f.emu.Faults)), f.emu.Dropped, f.emu.Hangs)
	fmt.Fprintf(&b, "replays (202 for a key already accepted): %d\n", f.emu.Replays)
	fmt.Fprintf(&b, "routes stopped:    %d (route-wide conditions detected, all replicas)\n", f.breakerOpens)
	if f.agentStops > 0 {
		fmt.Fprintf(&b, "agents stopped:    %d (one agent's condition on a route that serves many, all replicas)\n", f.agentStops)
	}
	fmt.Fprintf(&b, "time to drain:     %v after the last fault (run %v)\n", f.settle.Round(time.Millisecond), f.total.Round(time.Millisecond))
	if f.ownAbandonedCalls > 0 {
		fmt.Fprintf(&b, "ordered calls made while the API still held the same worker's call it had given up (timeout; not overlaps): %d\n", f.ownAbandonedCalls)
	}
	if f.falseSettles > 0 {
		fmt.Fprintf(&b, "consumers owed nothing while events still had no outcome: %d polls\n", f.falseSettles)
	}
	return b.String()
}

// toInts converts the emulator's counts for countsString.
func toInts[K comparable](m map[K]uint64) map[K]int {
	out := make(map[K]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}
