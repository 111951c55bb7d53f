package app

import (
	"fmt"
	"strings"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/appconfig"
)

// This file is where the configuration file meets the relay: it maps YAML
// values to the relay's option types and reports the relay's own rules in
// the file's terms (internal/appconfig does the same for what is not the
// relay). A zero value in the
// file stays zero here and means the component's default, resolved where
// the component is built (consumer.New, agentapi.NewClient).

// Route is the configured route rc as the consumer package runs it, calling
// agent (nil when the route is only checked or looked at). Its contract
// has no mapping: appconfig.Contract compiles it.
func Route(rc config.Route, agent consumer.Agent) consumer.Route {
	return consumer.Route{
		Name:          rc.Name,
		Stream:        rc.Stream,
		Subjects:      rc.Subjects,
		Durable:       rc.Durable,
		Deliver:       consumer.DeliverPolicy(rc.Deliver),
		Agent:         agent,
		Contract:      appconfig.BaseContract(rc),
		MaxInFlight:   rc.MaxInFlight,
		MaxAckPending: rc.MaxAckPending,
		AckWait:       rc.AckWait.D(),
		MaxRate:       rc.MaxRate,
		Ordering:      consumer.Ordering(rc.Ordering),
		Retry: consumer.RetryPolicy{
			MaxAttempts:    rc.Retry.MaxAttempts,
			MaxTimeouts:    rc.Retry.MaxTimeouts,
			InitialBackoff: rc.Retry.InitialBackoff.D(),
			MaxBackoff:     rc.Retry.MaxBackoff.D(),
			Multiplier:     rc.Retry.Multiplier,
			MaxRetryAfter:  rc.Retry.MaxRetryAfter.D(),
		},
		Breaker: consumer.BreakerSettings{
			FailureRatio:     rc.Breaker.FailureRatio,
			MinCalls:         rc.Breaker.MinCalls,
			Window:           rc.Breaker.Window.D(),
			ProbeInterval:    rc.Breaker.ProbeInterval.D(),
			MaxProbeInterval: rc.Breaker.MaxProbeInterval.D(),
			Disabled:         rc.Breaker.Disabled != nil && *rc.Breaker.Disabled,
		},
	}
}

// relayOptions are the relay's options from cfg, without the logger and
// metrics, which Run adds.
func relayOptions(cfg *config.Config) consumer.Options {
	return consumer.Options{
		DeadLetter:    appconfig.DeadLetter(cfg.DeadLetter),
		DrainGrace:    cfg.Worker.DrainGrace.D(),
		PullExpiry:    cfg.Worker.PullExpiry.D(),
		PullHeartbeat: cfg.Worker.PullHeartbeat.D(),
		LagInterval:   cfg.Worker.LagInterval.D(),
		LogAccepted:   float64(cfg.Log.Accepted),
		Consumers:     consumer.ConsumerMode(cfg.Worker.Consumers),
	}
}

// ClientOptions are the trigger client's options from cfg, without TLS and
// the user agent. The connection pool defaults to the sum of the routes'
// max_in_flight: every call in flight may hold a connection.
func ClientOptions(cfg *config.Config) agentapi.ClientOptions {
	maxConns := cfg.API.MaxConns
	if maxConns == 0 {
		for _, rc := range cfg.Routes {
			maxConns += Route(rc, nil).WithDefaults().MaxInFlight
		}
	}
	return agentapi.ClientOptions{
		Timeout:           cfg.API.Timeout.D(),
		MaxConns:          maxConns,
		AllowInsecureHTTP: cfg.API.AllowInsecureHTTP,
	}
}

// CheckConfig is the config.Rule of the components cfg configures: it
// reports what consumer.Check refuses, under the path of the field that
// set the value, and what appconfig.Problems finds (the dead-letter stream
// read by a stream or route, mappings that do not compile).
func CheckConfig(cfg *config.Config) []string {
	var out []string
	routes := make([]consumer.Route, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		routes[i] = Route(rc, nil)
	}
	for _, p := range consumer.Check(routes, relayOptions(cfg)) {
		path := "worker." + yamlPath(p.Field)
		if p.Field == "LogAccepted" {
			path = "log.accepted"
		}
		if dl, ok := strings.CutPrefix(p.Field, "DeadLetter."); ok {
			path = "dead_letter." + yamlPath(dl)
		}
		if p.Route >= 0 {
			path = fmt.Sprintf("routes[%d].%s", p.Route, yamlPath(p.Field))
		}
		out = append(out, path+": "+p.Message)
	}

	return append(out, appconfig.Problems(cfg)...)
}

// yamlPath is the configuration file's name for a field of consumer.Route,
// consumer.Options or deadletter.Config, as consumer.Problem names
// it.
func yamlPath(field string) string {
	if p, ok := yamlPaths[field]; ok {
		return p
	}
	// Go's CamelCase as the file's snake_case: every field the file sets
	// is named so; the table above holds the exceptions.
	var b strings.Builder
	for i, r := range field {
		switch {
		case r == '.':
		case 'A' <= r && r <= 'Z':
			if i > 0 && field[i-1] != '.' {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// yamlPaths are the fields whose file names do not follow from their Go
// names.
var yamlPaths = map[string]string{
	"Contract.Format":                "body",
	"Contract.ConversationKeyHeader": "conversation_key_header",
	"Contract.MaxInputBytes":         "max_input_bytes",
}
