package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/config"
)

func read(t *testing.T, yaml string, env map[string]string) (*config.Config, error) {
	t.Helper()
	return config.Read(strings.NewReader(yaml), func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
}

const minimal = `
routes:
  - name: complaints
    stream: EVENTS
    trigger_id: agtch_complaints_123
    token: {file: /run/secrets/token}
`

// The configuration fills in only its own defaults (where to connect, what
// to log); the relay's settings stay zero, meaning the component's default
// (see internal/app, which maps them).
func TestMinimalConfigGetsItsOwnDefaultsOnly(t *testing.T) {
	c, err := read(t, minimal, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL != "nats://127.0.0.1:4222" || c.NATS.ConnectTimeout.D() != 5*time.Second || c.API.BaseURL != "https://api.chatgpt.com" ||
		c.Metrics.Listen != ":9090" || c.Log.Level != "info" || c.Log.Format != "auto" {
		t.Errorf("configuration defaults not applied: nats=%+v api=%+v metrics=%+v log=%+v", c.NATS, c.API, c.Metrics, c.Log)
	}
	r := c.Routes[0]
	if r.Durable != "" || r.MaxInFlight != 0 || r.AckWait != 0 || r.Retry != (config.Retry{}) || c.DeadLetter != (config.DeadLetter{}) || c.Worker != (config.Worker{}) {
		t.Errorf("the configuration resolved a component's default: route %+v dead_letter %+v worker %+v", r, c.DeadLetter, c.Worker)
	}
}

func TestRoutesInheritDefaultsSection(t *testing.T) {
	c, err := read(t, `
defaults:
  max_in_flight: 10
  ack_wait: 2m
  retry: {max_attempts: 3}
  breaker: {disabled: true}
`+minimal+`
  - name: other
    stream: EVENTS
    trigger_id: agtch_other
    token: {env: OTHER_TOKEN}
    max_in_flight: 7
    retry: {max_attempts: 99}
    breaker: {disabled: false}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Routes[0], c.Routes[1]
	if a.MaxInFlight != 10 || a.AckWait.D() != 2*time.Minute || a.Retry.MaxAttempts != 3 || !*a.Breaker.Disabled {
		t.Errorf("first route did not inherit: %+v", a)
	}
	if b.MaxInFlight != 7 || b.AckWait.D() != 2*time.Minute || b.Retry.MaxAttempts != 99 || *b.Breaker.Disabled {
		t.Errorf("second route's own values lost: %+v", b)
	}
}

func TestEnvironmentOverridesDeployTimeValues(t *testing.T) {
	c, err := read(t, "nats: {url: nats://file:4222}\nlog: {level: warn}\n"+minimal, map[string]string{
		config.EnvNATSURL:       "nats://env-a:4222,nats://env-b:4222",
		config.EnvAPIBaseURL:    "http://127.0.0.1:8080",
		config.EnvLogLevel:      "debug",
		config.EnvMetricsListen: "127.0.0.1:9999",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL != "nats://env-a:4222,nats://env-b:4222" || c.API.BaseURL != "http://127.0.0.1:8080" ||
		c.Log.Level != "debug" || c.Metrics.Listen != "127.0.0.1:9999" {
		t.Errorf("overrides not applied: %+v %+v %+v %+v", c.NATS, c.API, c.Log, c.Metrics)
	}
}

// A broken file gets one answer listing everything wrong with it, each
// problem under the path of its field, in the order Validate checks them. These are
// the configuration's own rules; internal/app's
// TestCheckListsEveryProblemWithItsPath covers the rest of the file's
// sections and adds the components' rules to the same list.
func TestValidationListsEveryProblemWithItsPath(t *testing.T) {
	_, err := read(t, `
worker:
  pull_heartbeat: 10ms
routes:
  - name: "bad name"
    stream: EVENTS
    trigger_id: agtch_ok
    token: {file: /t}
  - name: dup
    stream: "EV.ENTS"
    trigger_id: "agtch_../../admin"
    token: {}
    durable: "a.b"
    conversation_key_header: "a b"
    max_in_flight: 1000000
    max_input_bytes: 1000000000
    breaker: {open_timeout: 1s, half_open_probes: 2}
  - name: dup
    stream: AGENTRELAY_DLQ
    trigger_id: agtch_x
    token: {file: /a, env: B}
    subjects: ["a.>.b"]
`, nil)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	want := []string{
		"worker.pull_heartbeat: must be at least 100ms",
		`routes[0].name: "bad name": use letters`,
		`routes[1].stream: "EV.ENTS": names cannot contain`,
		`routes[1].durable: "a.b": names cannot contain`,
		"routes[1].trigger_id: invalid trigger id",
		"routes[1].token: set file (re-read when it changes) or env",
		`routes[1].conversation_key_header: "a b" is not a valid header name`,
		"routes[1].max_input_bytes: must be between 1 and",
		"routes[1].max_in_flight: must be between 1 and 100000",
		"routes[1].breaker.open_timeout: no longer used",
		"routes[1].breaker.half_open_probes: no longer used",
		`routes[2].subjects[0]: "a.>.b": '>' must be the last token`,
		"routes[2].token: set one of file, env or dir",
	}
	if len(ce.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(ce.Problems), len(want), err)
	}
	for i, w := range want {
		if i < len(ce.Problems) && !strings.HasPrefix(ce.Problems[i], w) {
			t.Errorf("problem %d = %q, want %q", i, ce.Problems[i], w)
		}
	}
}

func TestRulesAddTheirProblems(t *testing.T) {
	rule := func(c *config.Config) []string { return []string{"routes[0].ack_wait: from a rule"} }
	_, err := config.Read(strings.NewReader("log: {level: loud}\n"+minimal), func(string) (string, bool) { return "", false }, rule)
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 || ce.Problems[1] != "routes[0].ack_wait: from a rule" {
		t.Fatalf("got %v, want the configuration's problem and the rule's", err)
	}
}

func TestUnknownFieldsAreErrorsWithLineNumbers(t *testing.T) {
	_, err := read(t, minimal+"    max_inflight: 5\n    tokn: {}\n", nil)
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want two problems, got %v", err)
	}
	for i, field := range []string{"max_inflight", "tokn"} {
		if !strings.Contains(ce.Problems[i], "line ") || !strings.Contains(ce.Problems[i], field) {
			t.Errorf("problem %d = %q, want the line and field %q", i, ce.Problems[i], field)
		}
	}
}

func TestBadDurationIsAnError(t *testing.T) {
	_, err := read(t, "api: {timeout: soon}\n"+minimal, nil)
	if err == nil || !strings.Contains(err.Error(), `invalid duration "soon"`) {
		t.Fatalf("got %v", err)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30s": 30 * time.Second, "1m30s": 90 * time.Second, "14d": 14 * 24 * time.Hour,
		"0.5d": 12 * time.Hour, "5": 5 * time.Second, "": 0,
	} {
		got, err := config.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1d", "1x", "d", "-3", "1e12"} {
		if _, err := config.ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

func TestNoRoutesIsAnError(t *testing.T) {
	_, err := read(t, "log: {level: info}\n", nil)
	if err == nil || !strings.Contains(err.Error(), "routes: at least one route is required") {
		t.Fatalf("got %v", err)
	}
}

// log.accepted takes true, false or a share from 0 to 1, and is off when
// left out.
func TestLogAcceptedIsABoolOrAShare(t *testing.T) {
	for in, want := range map[string]config.Share{"": 0, "false": 0, "true": 1, "0.25": 0.25, "1": 1, "0": 0} {
		y := minimal
		if in != "" {
			y = "log: {accepted: " + in + "}\n" + minimal
		}
		c, err := read(t, y, nil)
		if err != nil || c.Log.Accepted != want {
			t.Errorf("log.accepted %q = %v, %v; want %v", in, c.Log.Accepted, err, want)
		}
	}
	for _, bad := range []string{"1.5", "-0.1", "sometimes", ".nan", "[1]"} {
		_, err := read(t, "log: {accepted: "+bad+"}\n"+minimal, nil)
		if err == nil || !strings.Contains(err.Error(), "share from 0 to 1") {
			t.Errorf("log.accepted %q: got %v, want an error", bad, err)
		}
	}
}
