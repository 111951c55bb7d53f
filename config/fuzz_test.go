package config_test

import (
	"bytes"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/config"
)

// The seed corpora run as ordinary tests in `make test`; run a fuzzer with
// e.g. go test -run='^$' -fuzz=FuzzRead -fuzztime=60s ./config

func configSeeds(f *testing.F) {
	f.Helper()
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(example), minimal, "", "{}", "null", "routes: []", "routes: 7", "routes: [{name: x}]",
		"api: {timeout: NaN}\n" + minimal, "api: {timeout: -1s}\n" + minimal, "api: {timeout: 14d}\n" + minimal,
		"defaults: {ack_wait: 1e9}\n" + minimal, "worker: {pull_heartbeat: 1ns}\n" + minimal,
		"nats: {url: 'nats://u:p@h'}\n" + minimal, "bogus: 1\n" + minimal, "routes:\n  - &r {name: a}\n  - *r\n",
		"api: {base_url: 'http://[::1'}\n" + minimal, "%YAML 1.2\n---\n" + minimal, minimal + "---\nsecond: doc\n",
		"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
		"routes:\n  - name: a\n    stream: S\n    trigger_id: agtch_a\n    token: {file: t}\n    breaker: {disabled: yes}\n",
		"\xff\xfe", "routes:\n\t- bad tab", "routes: !!binary aGVsbG8=", "? [a]\n: b\n",
		"defaults: {max_in_flit: 3}\n" + minimal, minimal + "    retry: {max_attemps: 1, <<: {multiplyer: 2}}\n",
		"routes:\n  - &r {name: a, max_in_flit: 1}\n  - {<<: *r, name: b}\n  - {<<: [*r, *r], \"x y\": 1}\n",
		"nats: {url: 'nats://u:p%zz@h,,tls://v:w@h2?x=y'}\n" + minimal, "api: {base_url: 'https://u:p/w@h?t=1'}\n" + minimal,
		"1: x\n" + minimal, "[a]: x\n", "~: x\n",
	} {
		f.Add([]byte(s))
	}
}

// Parse never panics, whatever the bytes, and every error it returns is a
// *config.Error listing the problems.
func FuzzParse(f *testing.F) {
	configSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := config.Parse(data)
		var ce *config.Error
		if err != nil && (!errors.As(err, &ce) || len(ce.Problems) == 0) {
			t.Errorf("Parse(%q): error %T %v is not a *config.Error with problems", data, err, err)
		}
	})
}

// Read (parse, environment, defaults, validation) never panics; it fails
// with a *config.Error, or returns a configuration that validates again
// and keeps the rules the worker relies on.
func FuzzRead(f *testing.F) {
	configSeeds(f)
	env := map[string]string{"AGENTRELAY_LOG_LEVEL": "debug"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		c, err := config.Read(bytes.NewReader(data), lookup)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Read took %v on %d bytes", d, len(data))
		}
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Errorf("Read(%q): error %T %v is not a *config.Error with problems", data, err, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a loaded configuration does not validate again: %v", err)
		}
		if c.NATS.ConnectTimeout <= 0 || c.NATS.ReconnectWait <= 0 || c.API.Timeout < 0 || c.DeadLetter.DuplicateWindow < 0 {
			t.Errorf("non-positive timing accepted: nats %+v api %v dl %+v", c.NATS, c.API.Timeout, c.DeadLetter)
		}
		if len(c.Routes) == 0 {
			t.Error("a configuration without routes loaded")
		}
		for i, r := range c.Routes {
			if r.MaxInFlight < 0 || r.MaxInFlight > 100_000 || r.AckWait < 0 || r.Durable != "" && strings.ContainsAny(r.Durable, ".*> ") {
				t.Errorf("routes[%d] breaks a rule the worker relies on: %+v", i, r)
			}
			if strings.ContainsAny(r.TriggerID, "/%?#. \r\n\x00") {
				t.Errorf("routes[%d]: trigger id %q could redirect a request", i, r.TriggerID)
			}
		}
	})
}

// A duration is a non-negative time.Duration or an error, as the day and
// seconds forms already are: a negative or NaN value is not a duration
// any field can use.
func FuzzParseDuration(f *testing.F) {
	// testdata/fuzz/FuzzParseDuration holds the inputs that failed.
	for _, s := range []string{"30s", "1m30s", "14d", "0.5d", "90", "1.5", "", " 5m ", "-1", "-1d",
		"Inf", "+Inf", "infd", "1e9", "1e10", "36500d", "36501d", "9223372036854775807ns", "1_000", "0x10", "1d2h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := config.ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Errorf("ParseDuration(%q) = %v: a negative duration without an error", s, d)
		}
		trimmed := strings.TrimSpace(s)
		n, ferr := strconv.ParseFloat(strings.TrimSuffix(trimmed, "d"), 64)
		if _, gerr := time.ParseDuration(trimmed); trimmed != "" && gerr != nil && (ferr != nil || math.IsNaN(n) || math.IsInf(n, 0)) {
			t.Errorf("ParseDuration(%q) = %v: accepted something that is no duration", s, d)
		}
	})
}
