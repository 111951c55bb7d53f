// Package telemetry defines agentrelay's Prometheus metrics and its log
// set-up. Metrics follow Prometheus conventions (base units, _total
// counters, _seconds durations) and carry only bounded labels: route,
// outcome, class, reason, status code, error kind. Never message ids,
// subjects or keys.
//
// Some gauges describe a consumer or a stream, which every replica reads
// alike (consumer lag, the oldest unacknowledged event, the dead-letter
// backlog): aggregate them with max across replicas, never sum. The rest
// are this replica's own (in flight, retry waiting, route health, last
// acceptance) and counters, which sum.
package telemetry

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentrelay/agentrelay/internal/buildinfo"
	"github.com/agentrelay/agentrelay/internal/observe"
	"github.com/agentrelay/agentrelay/internal/verdict"
)

const namespace = "agentrelay"

// outcomes are the outcome label values of agentrelay_messages_finished_total
// and its histograms, by verdict carried out: index outcomeIndex.
var outcomes = [3]string{"acked", "retried", "dead_lettered"}

// Metrics are the worker's metrics, registered once per process. They are
// the relay's observe.Observer.
type Metrics struct {
	received        *prometheus.CounterVec
	finished        *prometheus.CounterVec
	requests        *prometheus.CounterVec
	triggerSeconds  *prometheus.HistogramVec
	processSeconds  *prometheus.HistogramVec
	attempts        *prometheus.HistogramVec
	inFlight        *prometheus.GaugeVec
	inFlightLimit   *prometheus.GaugeVec
	health          *prometheus.GaugeVec
	healthChanges   *prometheus.CounterVec
	deadLetters     *prometheus.CounterVec
	deadLetterFails *prometheus.CounterVec
	dlFailedEvents  *prometheus.CounterVec
	settleFails     *prometheus.CounterVec
	pending         *prometheus.GaugeVec
	ackPending      *prometheus.GaugeVec
	redelivered     *prometheus.GaugeVec
	waiting         *prometheus.GaugeVec
	paused          *prometheus.GaugeVec
	ready           prometheus.Gauge
	natsConnected   prometheus.Gauge
	natsReconnects  prometheus.Counter
	pullErrors      *prometheus.CounterVec
	dlBacklog       *deadLetterBacklog
	orderedBlocked  *prometheus.GaugeVec
	orderedOldest   *prometheus.GaugeVec
	oldestUnacked   *prometheus.GaugeVec
	retryWaiting    *prometheus.GaugeVec
	lastAccepted    *prometheus.GaugeVec
	tokenReloads    *prometheus.CounterVec
	replays         *prometheus.CounterVec
	agents          agentMetrics
}

// NewMetrics creates the metrics and registers them, with the Go and process
// collectors and agentrelay_build_info, on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	route := []string{"route"}
	m := &Metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "messages_received_total",
			Help: "Messages taken off the stream, including redeliveries.",
		}, route),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "messages_finished_total",
			Help: "Messages settled, by outcome (acked, retried, dead_lettered) and the class of the attempt's result.",
		}, []string{"route", "outcome", "class"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "trigger_requests_total",
			Help: "Trigger API calls: code is the HTTP status (\"\" when there was no answer), error the kind of failure without an answer (timeout, network, canceled; \"\" when there was an answer).",
		}, []string{"route", "code", "error"}),
		triggerSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "trigger_duration_seconds",
			Help:    "Trigger API call latency.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, route),
		processSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "message_processing_seconds",
			Help:    "Time from receiving a message to settling it (ack, nak or term).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "outcome"}),
		attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "message_delivery_attempt",
			Help:    "Delivery attempt number of a message when it was settled.",
			Buckets: []float64{1, 2, 3, 5, 8, 13, 21, 50},
		}, []string{"route", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "messages_in_flight",
			Help: "Messages being processed by this replica: calls really in flight (or held by route health), not those waiting out a retry delay.",
		}, route),
		retryWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "messages_retry_waiting",
			Help: "Messages this replica handed back with a retry delay that has not run out yet (they count in consumer_ack_pending_messages, not in messages_in_flight).",
		}, route),
		oldestUnacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "oldest_unacked_age_seconds",
			Help: "Age of the route's oldest unacknowledged event (its time in the stream), 0 when none; read every lag_interval. The consumer's state: the same on every replica, combine with max.",
		}, route),
		lastAccepted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "last_accepted_timestamp_seconds",
			Help: "Unix time of this replica's last event the API accepted on the route (0 until the first); combine with max.",
		}, route),
		tokenReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "token_reloads_total",
			Help: "Times the route's token file was re-read and held a different token (a rotation picked up).",
		}, route),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "replays_accepted_total",
			Help: "Accepted events that were dead-letter replays (carry the headers `dlq replay` writes).",
		}, route),
		inFlightLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "messages_in_flight_limit",
			Help: "Most messages this replica processes at once for the route.",
		}, route),
		orderedBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ordered_keys_blocked",
			Help: "Ordered routes: conversation keys whose next event waits on this replica (behind a running or retrying event of the key, or an earlier event held elsewhere).",
		}, route),
		orderedOldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ordered_oldest_blocked_seconds",
			Help: "Ordered routes: how long the oldest waiting event has waited on this replica (0 when none).",
		}, route),
		health: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "route_health",
			Help: "Route health on this replica, one series per state (healthy, outage, unauthorized, not_runnable, rate_limited); the current state is 1. Any state but healthy stops the route's deliveries and probes.",
		}, []string{"route", "state"}),
		healthChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "route_health_transitions_total",
			Help: "Route health transitions on this replica: tripped (a route-wide condition began), probe_failed, resumed.",
		}, []string{"route", "transition", "condition"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dead_letters_total",
			Help: "Messages stored in the dead-letter stream, by reason.",
		}, []string{"route", "reason"}),
		deadLetterFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dead_letter_publish_failures_total",
			Help: "Dead-letter publishes JetStream did not acknowledge; the original was kept and retried.",
		}, route),
		dlFailedEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dead_letter_publish_failed_events_total",
			Help: "Events whose dead letter JetStream did not acknowledge, each counted once per replica (however often its letter is tried again).",
		}, route),
		settleFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "settle_failures_total",
			Help: "Failed ack, nak, term or in-progress signals, by operation.",
		}, []string{"route", "op"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consumer_pending_messages",
			Help: "Messages in the stream not yet delivered to the route's consumer (JetStream num_pending).",
		}, route),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consumer_ack_pending_messages",
			Help: "Messages delivered and not yet settled, including those waiting out a retry delay (num_ack_pending).",
		}, route),
		redelivered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consumer_redelivered_messages",
			Help: "Messages delivered more than once and not yet settled (num_redelivered).",
		}, route),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consumer_waiting_pulls",
			Help: "Pull requests waiting at the server for the route's consumer (num_waiting).",
		}, route),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consumer_paused",
			Help: "1 when the route's consumer is paused on the server.",
		}, route),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "ready",
			Help: "1 when connected to NATS with every route's consumer bound and not draining.",
		}),
		natsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "nats_connected",
			Help: "1 while connected to NATS.",
		}),
		natsReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "nats_reconnects_total",
			Help: "Reconnections to NATS.",
		}),
		pullErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "pull_errors_total",
			Help: "Pull requests that ended in an error (missing heartbeats, leadership changes, disconnects).",
		}, route),
		dlBacklog: newDeadLetterBacklog(),
		agents:    newAgentMetrics(),
	}
	bi := buildinfo.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "revision", "goversion"})
	build.WithLabelValues(bi.Version, bi.Revision, bi.GoVersion).Set(1)

	reg.MustRegister(m.received, m.finished, m.requests, m.triggerSeconds, m.processSeconds,
		m.attempts, m.inFlight, m.inFlightLimit, m.health, m.healthChanges, m.orderedBlocked, m.orderedOldest,
		m.deadLetters, m.deadLetterFails, m.dlFailedEvents, m.settleFails, m.pending, m.ackPending,
		m.redelivered, m.waiting, m.paused, m.ready, m.natsConnected, m.natsReconnects,
		m.pullErrors, m.dlBacklog, m.oldestUnacked, m.retryWaiting, m.lastAccepted, m.tokenReloads, m.replays, build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(m.agents.collectors()...)
	return m
}

var _ observe.Observer = (*Metrics)(nil)

// SetReady sets agentrelay_ready.
func (m *Metrics) SetReady(ready bool) { m.ready.Set(b2f(ready)) }

// SetNATSConnected sets agentrelay_nats_connected.
func (m *Metrics) SetNATSConnected(up bool) { m.natsConnected.Set(b2f(up)) }

// NATSReconnected counts a reconnection.
func (m *Metrics) NATSReconnected() { m.natsReconnects.Inc() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ObserveRoute is Route, for the relay.
func (m *Metrics) ObserveRoute(name string) observe.RouteObserver { return m.Route(name) }

// Route returns the metrics of one route with the route (and, for the
// histograms, the outcome) bound once.
func (m *Metrics) Route(name string) *RouteMetrics {
	r := &RouteMetrics{
		m:              m,
		name:           name,
		received:       m.received.WithLabelValues(name),
		triggerSeconds: m.triggerSeconds.WithLabelValues(name),
		inFlight:       m.inFlight.WithLabelValues(name),
		inFlightLimit:  m.inFlightLimit.WithLabelValues(name),
		dlFails:        m.deadLetterFails.WithLabelValues(name),
		dlFailedEvents: m.dlFailedEvents.WithLabelValues(name),
		pending:        m.pending.WithLabelValues(name),
		ackPending:     m.ackPending.WithLabelValues(name),
		redelivered:    m.redelivered.WithLabelValues(name),
		waiting:        m.waiting.WithLabelValues(name),
		paused:         m.paused.WithLabelValues(name),
		pullErrors:     m.pullErrors.WithLabelValues(name),
		orderedBlocked: m.orderedBlocked.WithLabelValues(name),
		orderedOldest:  m.orderedOldest.WithLabelValues(name),
		oldestUnacked:  m.oldestUnacked.WithLabelValues(name),
		retryWaiting:   m.retryWaiting.WithLabelValues(name),
		lastAccepted:   m.lastAccepted.WithLabelValues(name),
		tokenReloads:   m.tokenReloads.WithLabelValues(name),
		replays:        m.replays.WithLabelValues(name),
	}
	for i, o := range outcomes {
		r.processSeconds[i] = m.processSeconds.WithLabelValues(name, o)
		r.attempts[i] = m.attempts.WithLabelValues(name, o)
	}
	return r
}

// RouteMetrics are one route's metrics.
type RouteMetrics struct {
	m              *Metrics
	name           string
	received       prometheus.Counter
	triggerSeconds prometheus.Observer
	processSeconds [3]prometheus.Observer
	attempts       [3]prometheus.Observer
	inFlight       prometheus.Gauge
	inFlightLimit  prometheus.Gauge
	dlFails        prometheus.Counter
	dlFailedEvents prometheus.Counter
	pending        prometheus.Gauge
	ackPending     prometheus.Gauge
	redelivered    prometheus.Gauge
	waiting        prometheus.Gauge
	paused         prometheus.Gauge
	pullErrors     prometheus.Counter
	orderedBlocked prometheus.Gauge
	orderedOldest  prometheus.Gauge
	oldestUnacked  prometheus.Gauge
	retryWaiting   prometheus.Gauge
	lastAccepted   prometheus.Gauge
	tokenReloads   prometheus.Counter
	replays        prometheus.Counter
	ids            triggerIDLabels // the trigger_id label values of the per-agent metrics
	// The vectors with more labels than the route and the outcome
	// (finished, requests, dead letters, settle failures) are looked up
	// with WithLabelValues on every call. A cache of their children saved
	// about 0.2 µs per message, 0.2 % of a message's CPU: not worth its
	// code (BENCHMARKS.md, 2026-11-30).
}

func outcomeIndex(v verdict.Verdict) int {
	switch v {
	case verdict.Ack:
		return 0
	case verdict.Retry:
		return 1
	default:
		return 2
	}
}

// Received counts a message taken off the stream.
func (r *RouteMetrics) Received() { r.received.Inc() }

// InFlight adds delta to the in-flight gauge.
func (r *RouteMetrics) InFlight(delta int) { r.inFlight.Add(float64(delta)) }

// SetInFlightLimit sets the in-flight limit gauge.
func (r *RouteMetrics) SetInFlightLimit(n int) { r.inFlightLimit.Set(float64(n)) }

// Trigger records one trigger call: its status code, or when there was
// none the kind of error ("timeout", "network", "canceled"), and latency.
// The two go to separate labels, so that a query on status codes never
// meets an error kind.
func (r *RouteMetrics) Trigger(status int, noAnswer string, seconds float64) {
	code, errKind := "", noAnswer
	if status != 0 {
		code, errKind = statusText(status), ""
	}
	r.request(code, errKind).Inc()
	r.triggerSeconds.Observe(seconds)
}

// request is the trigger call counter for an HTTP status code, or for an
// error kind when there was no answer (the other one empty).
func (r *RouteMetrics) request(code, errKind string) prometheus.Counter {
	return r.m.requests.WithLabelValues(r.name, code, errKind)
}

// RetryWaiting adds delta to the messages waiting out a retry delay.
func (r *RouteMetrics) RetryWaiting(delta int) { r.retryWaiting.Add(float64(delta)) }

// SetOldestUnacked sets the age of the route's oldest unacknowledged event.
func (r *RouteMetrics) SetOldestUnacked(seconds float64) { r.oldestUnacked.Set(seconds) }

// Accepted records an event the API accepted at unix time now (seconds),
// and whether it was a dead-letter replay.
func (r *RouteMetrics) Accepted(now float64, replay bool) {
	r.lastAccepted.Set(now)
	if replay {
		r.replays.Inc()
	}
}

// TokenReloaded counts a changed token picked up from the route's token
// file.
func (r *RouteMetrics) TokenReloaded() { r.tokenReloads.Inc() }

// Finished records a message settled by verdict v.
func (r *RouteMetrics) Finished(v verdict.Verdict, class string, attempt int, seconds float64) {
	i := outcomeIndex(v)
	r.finished(v, class).Inc()
	r.processSeconds[i].Observe(seconds)
	r.attempts[i].Observe(float64(attempt))
}

func (r *RouteMetrics) finished(v verdict.Verdict, class string) prometheus.Counter {
	return r.m.finished.WithLabelValues(r.name, outcomes[outcomeIndex(v)], class)
}

// DeadLettered counts a stored dead letter.
func (r *RouteMetrics) DeadLettered(reason string) { r.deadLetters(reason).Inc() }

func (r *RouteMetrics) deadLetters(reason string) prometheus.Counter {
	return r.m.deadLetters.WithLabelValues(r.name, reason)
}

// DeadLetterFailed counts a dead-letter publish that was not acknowledged,
// and the event too on its first.
func (r *RouteMetrics) DeadLetterFailed(first bool) {
	r.dlFails.Inc()
	if first {
		r.dlFailedEvents.Inc()
	}
}

// SettleFailed counts a failed ack, nak, term or in_progress.
func (r *RouteMetrics) SettleFailed(op string) { r.settleFails(op).Inc() }

func (r *RouteMetrics) settleFails(op string) prometheus.Counter {
	return r.m.settleFails.WithLabelValues(r.name, op)
}

// PullFailed counts a pull request that ended in an error.
func (r *RouteMetrics) PullFailed() { r.pullErrors.Inc() }

// Prime creates every known labelled counter of the route at zero.
// Prometheus only exports a labelled series once it has been touched, and
// increase() cannot see a series go from absent to 1: without this the
// first dead letter of a reason (or the first breaker opening) would never
// fire an alert built on increase() or rate().
func (r *RouteMetrics) Prime(k observe.KnownLabels) {
	for _, f := range k.Finished {
		r.finished(f.Verdict, f.Class)
	}
	for _, reason := range k.Reasons {
		r.deadLetters(reason)
	}
	for _, code := range k.Codes {
		r.request(code, "")
	}
	for _, e := range k.Errors {
		r.request("", e)
	}
	for _, op := range k.SettleOps {
		r.settleFails(op)
	}
	for _, t := range k.Transitions {
		r.m.healthChanges.WithLabelValues(r.name, t[0], t[1])
	}
	if len(k.States) > 0 {
		r.SetHealth(k.States[0], k.States)
	}
}

// SetHealth sets the route's health state: state to 1, every other of
// states to 0.
func (r *RouteMetrics) SetHealth(state string, states []string) {
	for _, s := range states {
		v := 0.0
		if s == state {
			v = 1
		}
		r.m.health.WithLabelValues(r.name, s).Set(v)
	}
}

// HealthTransition counts a route health transition.
func (r *RouteMetrics) HealthTransition(transition, condition string) {
	r.m.healthChanges.WithLabelValues(r.name, transition, condition).Inc()
}

// ConsumerState sets the consumer lag gauges from JetStream consumer info.
func (r *RouteMetrics) ConsumerState(pending uint64, ackPending, redelivered, waiting int, paused bool) {
	r.pending.Set(float64(pending))
	r.ackPending.Set(float64(ackPending))
	r.redelivered.Set(float64(redelivered))
	r.waiting.Set(float64(waiting))
	r.paused.Set(b2f(paused))
}

// statusText avoids an allocation for the common codes.
func statusText(code int) string {
	switch code {
	case 202:
		return "202"
	case 400:
		return "400"
	case 401:
		return "401"
	case 403:
		return "403"
	case 404:
		return "404"
	case 409:
		return "409"
	case 429:
		return "429"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}

// OrderedBlocked sets an ordered route's waiting keys and the age of its
// oldest waiting event.
func (r *RouteMetrics) OrderedBlocked(keys int, oldestSeconds float64) {
	r.orderedBlocked.Set(float64(keys))
	r.orderedOldest.Set(oldestSeconds)
}
