package config

import "github.com/agentrelay/agentrelay/consumer"

// Consumer is the route as the consumer package runs it, calling agent.
// The deploy tests compare the NATS definitions against it, so keep this the
// only place a configured route becomes a consumer.Route.
func (rc Route) Consumer(agent consumer.Agent) consumer.Route {
	return consumer.Route{
		Name:     rc.Name,
		Stream:   rc.Stream,
		Subjects: rc.Subjects,
		Durable:  rc.Durable,
		Deliver:  consumer.DeliverPolicy(rc.Deliver),
		Agent:    agent,
		Contract: consumer.Contract{
			Format:                consumer.BodyFormat(rc.Body),
			ConversationKeyHeader: rc.ConversationKeyHeader,
			MaxInputBytes:         rc.MaxInputBytes,
		},
		MaxInFlight:   rc.MaxInFlight,
		MaxAckPending: rc.MaxAckPending,
		AckWait:       rc.AckWait.D(),
		MaxRate:       rc.MaxRate,
		Retry: consumer.RetryPolicy{
			MaxAttempts:    rc.Retry.MaxAttempts,
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

// Consumer is the dead-letter section as the consumer package uses it.
func (d DeadLetter) Consumer() consumer.DeadLetterConfig {
	return consumer.DeadLetterConfig{
		Stream:          d.Stream,
		SubjectPrefix:   d.SubjectPrefix,
		MaxAge:          d.MaxAge.D(),
		MaxBytes:        d.MaxBytes,
		Replicas:        d.Replicas,
		DuplicateWindow: d.DuplicateWindow.D(),
		PublishTimeout:  d.PublishTimeout.D(),
	}
}
