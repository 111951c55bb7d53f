package app

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// readChecked reads a configuration as the commands do: with the
// components' rules besides config's own.
func readChecked(t *testing.T, yaml string) (*config.Config, error) {
	t.Helper()
	return config.Read(strings.NewReader(yaml), func(string) (string, bool) { return "", false }, CheckConfig)
}

const minimal = `
routes:
  - name: complaints
    stream: EVENTS
    trigger_id: agtch_complaints_123
    token: {file: /run/secrets/token}
`

// What the file leaves out, the components' defaults fill in where they are
// built: a route is mapped with zeros, and WithDefaults gives the values
// the relay runs with.
func TestMinimalRouteRunsWithTheConsumerDefaults(t *testing.T) {
	t.Parallel()
	c, err := readChecked(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	r := Route(c.Routes[0], nil)
	if r.Durable != "" || r.MaxInFlight != 0 || r.AckWait != 0 {
		t.Errorf("the mapping resolved defaults itself: %+v", r)
	}
	r = r.WithDefaults()
	if r.Durable != "agentrelay-complaints" || r.Deliver != consumer.DeliverAll || r.Contract.Format != event.BodyJSON ||
		r.MaxInFlight != 64 || r.MaxAckPending != 1024 || r.AckWait != 4*time.Second ||
		r.Retry.MaxAttempts != 10 || r.Retry.MaxBackoff != 4*time.Second || r.Breaker.MinCalls != 10 ||
		r.Breaker.FailureRatio != 0.5 || r.Breaker.MaxProbeInterval != 3*time.Second || r.Breaker.Disabled || r.Ordering != consumer.OrderNone {
		t.Errorf("route defaults not applied: %+v", r)
	}
	if dl := appconfig.DeadLetter(c.DeadLetter).WithDefaults(); dl.Stream != "AGENTRELAY_DLQ" || dl.SubjectPrefix != "agentrelay.dlq" {
		t.Errorf("dead-letter defaults not applied: %+v", dl)
	}
	if co := ClientOptions(c); co.MaxConns != 64 {
		t.Errorf("api max_conns = %d, want the route's max_in_flight 64", co.MaxConns)
	}
}

// Defaults that follow from other values (max_ack_pending from
// max_in_flight, the connection pool from all routes) follow the values
// the file sets, inherited or not.
func TestDerivedDefaultsFollowTheFile(t *testing.T) {
	t.Parallel()
	c, err := readChecked(t, "defaults: {max_in_flight: 10}\n"+minimal+`
  - name: other
    stream: EVENTS
    trigger_id: agtch_other
    token: {env: OTHER_TOKEN}
    max_in_flight: 7
`)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := Route(c.Routes[0], nil).WithDefaults(), Route(c.Routes[1], nil).WithDefaults(); a.MaxAckPending != 160 || b.MaxAckPending != 112 {
		t.Errorf("max_ack_pending %d and %d, want 16 × max_in_flight: 160 and 112", a.MaxAckPending, b.MaxAckPending)
	}
	if co := ClientOptions(c); co.MaxConns != 17 {
		t.Errorf("api max_conns = %d, want the sum of max_in_flight 17", co.MaxConns)
	}
}

// A broken file gets one answer listing everything wrong with it, each
// problem under the path of its field, whether the configuration's own
// rules or a component's refuse it.
func TestCheckListsEveryProblemWithItsPath(t *testing.T) {
	t.Parallel()
	_, err := readChecked(t, `
nats:
  url: http://user:hunter2@nats:4222
  user: relay
api:
  base_url: http://api.example.com
  timeout: 30s
dead_letter:
  subject_prefix: "dlq.*"
  replicas: 9
worker:
  pull_heartbeat: 3s
  consumers: own
log: {level: loud, format: xml}
metrics: {listen: "9090"}
routes:
  - name: "bad name"
    stream: EVENTS
    trigger_id: agtch_ok
    token: {file: /t}
  - name: dup
    stream: "EV.ENTS"
    trigger_id: "agtch_../../admin"
    token: {}
    body: yaml
    max_in_flight: -3
    ack_wait: 10ms
    retry: {max_attempts: -1, initial_backoff: 10s, max_backoff: 1s}
    breaker: {consecutive_failures: 5, failure_ratio: 2}
  - name: dup
    stream: AGENTRELAY_DLQ
    trigger_id: agtch_x
    token: {file: /a, env: B}
    max_in_flight: 100
    max_ack_pending: 10
    subjects: ["a.>.b"]
`)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	want := []string{
		`nats.url: "http://REDACTED@nats:4222": scheme must be nats`,
		"nats.user: user and password_file go together",
		"api.base_url: base URL must use https",
		`dead_letter.subject_prefix: "dlq.*": wildcards are not allowed here`,
		"dead_letter.replicas: must be between 1 and 5",
		"worker.pull_expiry: 5s is under twice the pull heartbeat 3s plus 1s",
		`worker.consumers: "own" is not "manage" or "observe"`,
		`log.level: "loud" is not debug`,
		`log.format: "xml" is not auto`,
		`metrics.listen: "9090" is not host:port`,
		`routes[0].name: "bad name": use letters`,
		`routes[1].stream: "EV.ENTS": names cannot contain`,
		"routes[1].trigger_id: invalid trigger id",
		"routes[1].token: set file (re-read when it changes) or env",
		`routes[1].body: "yaml" is not "json", "text" or "cloudevents"`,
		"routes[1].max_in_flight: must not be negative",
		"routes[1].ack_wait: 10ms is under 1s",
		"routes[1].breaker.consecutive_failures: no longer used",
		"routes[1].breaker.failure_ratio: must be above 0 and at most 1",
		"routes[1].retry.max_attempts: must not be negative",
		"routes[1].retry.max_backoff: 1s is below the initial backoff 10s",
		`routes[2].name: "dup" is also the name of route 1`,
		`routes[2].stream: "AGENTRELAY_DLQ" is the dead-letter stream`,
		"routes[2].token: set one of file, env or dir",
		"routes[2].max_ack_pending: 10 is below the maximum in flight 100",
		`routes[2].subjects[0]: "a.>.b": '>' must be the last token`,
	}
	for _, w := range want {
		found := false
		for _, p := range ce.Problems {
			if strings.Contains(p, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing problem %q", w)
		}
	}
	if len(ce.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(ce.Problems), len(want), err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("the error repeats a password from the NATS URL")
	}
}

func TestDeadLetterSubjectsMustNotOverlapManagedStreams(t *testing.T) {
	t.Parallel()
	_, err := readChecked(t, `
streams:
  - name: EVENTS
    subjects: [">"]
  - name: AGENTRELAY_DLQ
    subjects: ["dlq.>"]
`+minimal)
	for _, want := range []string{
		`streams[0].subjects[0]: ">" overlaps the dead-letter subjects agentrelay.dlq.>`,
		`streams[1].name: "AGENTRELAY_DLQ" is the dead-letter stream`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	// Against the dead-letter stream the file names, not the default.
	if _, err := readChecked(t, "dead_letter: {stream: DL, subject_prefix: dl}\n"+`
streams:
  - name: AGENTRELAY_DLQ
    subjects: ["agentrelay.dlq.>"]
`+minimal); err != nil {
		t.Errorf("a stream named like the default dead-letter stream refused: %v", err)
	}
}

// What a configuration sets, the relay runs with: a configuration that
// passes the check builds a relay.
func TestCheckedConfigurationBuildsARelay(t *testing.T) {
	t.Parallel()
	c, err := readChecked(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	id, err := agentapi.ParseTriggerID(c.Routes[0].TriggerID)
	if err != nil {
		t.Fatal(err)
	}
	client, err := agentapi.NewClient("https://api.example.com", ClientOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	agent, err := client.Agent(id, agentapi.StaticToken(agentapi.NewSecret("t")))
	if err != nil {
		t.Fatal(err)
	}
	_, js := testenv.StartNATS(t).Connect(t)
	if _, err := consumer.New(js, []consumer.Route{Route(c.Routes[0], agent)}, relayOptions(c)); err != nil {
		t.Fatalf("consumer.New refuses what the check passed: %v", err)
	}
}

// The annotated example is the configuration reference: it must load as it
// is, and it must state the defaults, not something else. The relay's
// defaults live in the consumer package (and the client's in agentapi), so
// that is what the example is compared with.
func TestExampleLoadsAndStatesTheDefaults(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := config.Read(f, func(string) (string, bool) { return "", false }, CheckConfig)
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}

	var empty config.Config
	empty.Routes = c.Routes
	empty.Streams = c.Streams
	empty.ApplyDefaults()
	if got, want := c.NATS, empty.NATS; got != want {
		t.Errorf("example nats section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.Log, empty.Log; got != want {
		t.Errorf("example log section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.Metrics, empty.Metrics; got != want {
		t.Errorf("example metrics section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if c.API.BaseURL != config.DefaultAPIBaseURL || c.API.Timeout.D() != agentapi.DefaultTimeout || c.API.MaxConns != 0 {
		t.Errorf("example api section differs from the defaults: %+v", c.API)
	}
	if got, want := appconfig.DeadLetter(c.DeadLetter), (deadletter.Config{}).WithDefaults(); got != want {
		t.Errorf("example dead_letter section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	o := relayOptions(c)
	if o.DrainGrace != consumer.DefaultDrainGrace || o.PullExpiry != consumer.DefaultPullExpiry ||
		o.PullHeartbeat != consumer.DefaultPullHeartbeat || o.LagInterval != consumer.DefaultLagInterval ||
		o.Consumers != consumer.ManageConsumers {
		t.Errorf("example worker section differs from the defaults: %+v", c.Worker)
	}
	// The example's route sets none of the tunables: it shows the defaults
	// section's values, which must be the consumer's defaults.
	got := Route(c.Routes[0], nil)
	want := consumer.Route{Name: got.Name, Stream: got.Stream, Subjects: got.Subjects}.WithDefaults()
	want.MaxAckPending = 0 // the example leaves it to its fallback, 16 × max_in_flight
	want.Ordering = ""     // per route; the example route leaves it to its default, none
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example route and defaults section differ from the consumer's defaults:\n got %+v\nwant %+v", got, want)
	}
}

// log.accepted reaches the relay as the share of accepted events logged at
// info; left out it is 0 (debug only). What the relay refuses is reported
// under log.accepted.
func TestLogAcceptedReachesTheRelay(t *testing.T) {
	t.Parallel()
	for yaml, want := range map[string]float64{"": 0, "log: {accepted: true}\n": 1, "log: {accepted: 0.1}\n": 0.1} {
		c, err := readChecked(t, yaml+minimal)
		if err != nil {
			t.Fatal(err)
		}
		if got := relayOptions(c).LogAccepted; got != want {
			t.Errorf("%q: LogAccepted = %v, want %v", yaml, got, want)
		}
	}
	c, err := readChecked(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	c.Log.Accepted = 2 // past config's own check, as a caller might set it
	if got := strings.Join(CheckConfig(c), "\n"); !strings.Contains(got, "log.accepted: 2 is not a share between 0 and 1") {
		t.Errorf("CheckConfig = %q", got)
	}
}
