package config_test

import (
	"os"
	"testing"

	"github.com/agentrelay/agentrelay/config"
)

// The annotated example is the configuration reference: it must load as it
// is, and it must state the defaults, not something else.
func TestExampleLoadsAndStatesTheDefaults(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(data)
	if err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("example does not validate: %v", err)
	}

	var empty config.Config
	empty.Routes = c.Routes
	empty.Streams = c.Streams
	empty.ApplyDefaults()
	// Fields the example sets to non-default values on purpose are those
	// of the route and stream themselves; everything else must match.
	if got, want := c.NATS, empty.NATS; got != want {
		t.Errorf("example nats section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.API, empty.API; got != want {
		t.Errorf("example api section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.DeadLetter, empty.DeadLetter; got != want {
		t.Errorf("example dead_letter section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.Worker, empty.Worker; got != want {
		t.Errorf("example worker section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.Log, empty.Log; got != want {
		t.Errorf("example log section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if got, want := c.Metrics, empty.Metrics; got != want {
		t.Errorf("example metrics section differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	gd, wd := c.Defaults, empty.Defaults
	if gd.MaxInFlight != wd.MaxInFlight || gd.AckWait != wd.AckWait || gd.MaxInputBytes != wd.MaxInputBytes ||
		gd.MaxAckPending != wd.MaxAckPending || gd.Retry != wd.Retry || gd.Breaker.FailureRatio != wd.Breaker.FailureRatio ||
		gd.Breaker.MinCalls != wd.Breaker.MinCalls || gd.Breaker.Window != wd.Breaker.Window ||
		gd.Breaker.ProbeInterval != wd.Breaker.ProbeInterval || gd.Breaker.MaxProbeInterval != wd.Breaker.MaxProbeInterval ||
		*gd.Breaker.Disabled != *wd.Breaker.Disabled {
		t.Errorf("example defaults section differs from the built-in defaults:\n got %+v\nwant %+v", gd, wd)
	}
}
