package config

import (
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/consumer"
)

// Defaults that belong to the configuration rather than to a package.
const (
	DefaultNATSURL        = "nats://127.0.0.1:4222"
	DefaultNATSName       = "agentrelay"
	DefaultConnectTimeout = 5 * time.Second
	DefaultReconnectWait  = 2 * time.Second
	DefaultAPIBaseURL     = "https://api.chatgpt.com"
	DefaultMetricsListen  = ":9090"
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "auto"
)

func setDuration(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

func setInt[T int | int64 | uint32](d *T, v T) {
	if *d == 0 {
		*d = v
	}
}

func setString(d *string, v string) {
	if *d == "" {
		*d = v
	}
}

// ApplyDefaults fills every unset field: routes inherit from defaults,
// defaults from the built-in values.
func (c *Config) ApplyDefaults() {
	setString(&c.NATS.URL, DefaultNATSURL)
	setString(&c.NATS.Name, DefaultNATSName)
	setDuration(&c.NATS.ConnectTimeout, DefaultConnectTimeout)
	setDuration(&c.NATS.ReconnectWait, DefaultReconnectWait)

	setString(&c.API.BaseURL, DefaultAPIBaseURL)
	setDuration(&c.API.Timeout, agentapi.DefaultTimeout)

	dl := consumer.DeadLetterConfig{}.WithDefaults()
	setString(&c.DeadLetter.Stream, dl.Stream)
	setString(&c.DeadLetter.SubjectPrefix, dl.SubjectPrefix)
	setDuration(&c.DeadLetter.MaxAge, dl.MaxAge)
	setInt(&c.DeadLetter.Replicas, dl.Replicas)
	setDuration(&c.DeadLetter.DuplicateWindow, dl.DuplicateWindow)
	setDuration(&c.DeadLetter.PublishTimeout, dl.PublishTimeout)

	setDuration(&c.Worker.DrainGrace, consumer.DefaultDrainGrace)
	setDuration(&c.Worker.PullExpiry, consumer.DefaultPullExpiry)
	setDuration(&c.Worker.PullHeartbeat, consumer.DefaultPullHeartbeat)
	setDuration(&c.Worker.LagInterval, consumer.DefaultLagInterval)

	setString(&c.Log.Level, DefaultLogLevel)
	setString(&c.Log.Format, DefaultLogFormat)
	setString(&c.Metrics.Listen, DefaultMetricsListen)

	d := &c.Defaults
	setInt(&d.MaxInFlight, consumer.DefaultMaxInFlight)
	setDuration(&d.AckWait, consumer.DefaultAckWait)
	setInt(&d.MaxInputBytes, consumer.DefaultMaxInputBytes)
	setInt(&d.Retry.MaxAttempts, consumer.DefaultMaxAttempts)
	setDuration(&d.Retry.InitialBackoff, consumer.DefaultInitialBackoff)
	setDuration(&d.Retry.MaxBackoff, consumer.DefaultMaxBackoff)
	if d.Retry.Multiplier == 0 {
		d.Retry.Multiplier = consumer.DefaultMultiplier
	}
	setDuration(&d.Retry.MaxRetryAfter, consumer.DefaultMaxRetryAfter)
	if d.Breaker.FailureRatio == 0 {
		d.Breaker.FailureRatio = consumer.DefaultFailureRatio
	}
	setInt(&d.Breaker.MinCalls, consumer.DefaultMinCalls)
	setDuration(&d.Breaker.Window, consumer.DefaultBreakerWindow)
	setDuration(&d.Breaker.ProbeInterval, consumer.DefaultProbeInterval)
	setDuration(&d.Breaker.MaxProbeInterval, consumer.DefaultMaxProbeInterval)
	if d.Breaker.Disabled == nil {
		off := false
		d.Breaker.Disabled = &off
	}

	for i := range c.Streams {
		s := &c.Streams[i]
		setString(&s.Retention, "limits")
		setString(&s.Storage, "file")
		setInt(&s.Replicas, 1)
	}

	total := 0
	for i := range c.Routes {
		r := &c.Routes[i]
		setString(&r.Durable, "agentrelay-"+r.Name)
		setString(&r.Deliver, string(consumer.DeliverAll))
		setString(&r.Body, string(consumer.BodyJSON))
		setString(&r.ConversationKeyHeader, consumer.HeaderConversationKey)
		setInt(&r.MaxInputBytes, d.MaxInputBytes)
		setInt(&r.MaxInFlight, d.MaxInFlight)
		if r.MaxAckPending == 0 {
			r.MaxAckPending = d.MaxAckPending
		}
		if r.MaxAckPending == 0 {
			r.MaxAckPending = max(consumer.DefaultAckPendingFactor*r.MaxInFlight, r.MaxInFlight)
		}
		if r.MaxRate == 0 {
			r.MaxRate = d.MaxRate
		}
		setDuration(&r.AckWait, d.AckWait.D())
		setInt(&r.Retry.MaxAttempts, d.Retry.MaxAttempts)
		setDuration(&r.Retry.InitialBackoff, d.Retry.InitialBackoff.D())
		setDuration(&r.Retry.MaxBackoff, d.Retry.MaxBackoff.D())
		if r.Retry.Multiplier == 0 {
			r.Retry.Multiplier = d.Retry.Multiplier
		}
		setDuration(&r.Retry.MaxRetryAfter, d.Retry.MaxRetryAfter.D())
		if r.Breaker.FailureRatio == 0 {
			r.Breaker.FailureRatio = d.Breaker.FailureRatio
		}
		setInt(&r.Breaker.MinCalls, d.Breaker.MinCalls)
		setDuration(&r.Breaker.Window, d.Breaker.Window.D())
		setDuration(&r.Breaker.ProbeInterval, d.Breaker.ProbeInterval.D())
		setDuration(&r.Breaker.MaxProbeInterval, d.Breaker.MaxProbeInterval.D())
		if r.Breaker.Disabled == nil {
			r.Breaker.Disabled = d.Breaker.Disabled
		}
		if r.MaxInFlight > 0 {
			total += r.MaxInFlight
		}
	}
	setInt(&c.API.MaxConns, max(total, 1))
}
