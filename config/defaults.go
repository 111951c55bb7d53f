package config

import "time"

// Defaults that belong to the configuration itself: where to connect and
// what to log. The relay's own settings (routes, retries, route health, the
// dead-letter stream, pulls) are left zero when the file does not set them:
// a zero value means the component's default, resolved once where the
// component is built (consumer.Route.WithDefaults and its kin). Mapping the
// file to the components' options is internal/app's work.
const (
	DefaultNATSURL        = "nats://127.0.0.1:4222"
	DefaultNATSName       = "agentrelay"
	DefaultConnectTimeout = 5 * time.Second
	DefaultReconnectWait  = 2 * time.Second
	DefaultAPIBaseURL     = "https://api.chatgpt.com"
	DefaultMetricsListen  = ":9090"
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "auto"

	// Managed streams: what `nats stream add` would choose.
	DefaultStreamRetention = "limits"
	DefaultStreamStorage   = "file"
	DefaultStreamReplicas  = 1
)

func setDuration(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

func setString(d *string, v string) {
	if *d == "" {
		*d = v
	}
}

// inherit sets *d to v when *d is zero.
func inherit[T comparable](d *T, v T) {
	var zero T
	if *d == zero {
		*d = v
	}
}

// ApplyDefaults fills in the configuration's own defaults (see the
// constants above) and lets every route inherit what it does not set from
// the defaults section. What neither sets stays zero.
func (c *Config) ApplyDefaults() {
	setString(&c.NATS.URL, DefaultNATSURL)
	setString(&c.NATS.Name, DefaultNATSName)
	setDuration(&c.NATS.ConnectTimeout, DefaultConnectTimeout)
	setDuration(&c.NATS.ReconnectWait, DefaultReconnectWait)
	setString(&c.API.BaseURL, DefaultAPIBaseURL)
	setString(&c.Log.Level, DefaultLogLevel)
	setString(&c.Log.Format, DefaultLogFormat)
	setString(&c.Metrics.Listen, DefaultMetricsListen)

	for i := range c.Streams {
		s := &c.Streams[i]
		setString(&s.Retention, DefaultStreamRetention)
		setString(&s.Storage, DefaultStreamStorage)
		inherit(&s.Replicas, DefaultStreamReplicas)
	}

	d := &c.Defaults
	for i := range c.Routes {
		r := &c.Routes[i]
		inherit(&r.MaxInputBytes, d.MaxInputBytes)
		inherit(&r.MaxInFlight, d.MaxInFlight)
		inherit(&r.MaxAckPending, d.MaxAckPending)
		inherit(&r.MaxRate, d.MaxRate)
		inherit(&r.AckWait, d.AckWait)
		inherit(&r.Retry.MaxAttempts, d.Retry.MaxAttempts)
		inherit(&r.Retry.MaxTimeouts, d.Retry.MaxTimeouts)
		inherit(&r.Retry.InitialBackoff, d.Retry.InitialBackoff)
		inherit(&r.Retry.MaxBackoff, d.Retry.MaxBackoff)
		inherit(&r.Retry.Multiplier, d.Retry.Multiplier)
		inherit(&r.Retry.MaxRetryAfter, d.Retry.MaxRetryAfter)
		inherit(&r.Breaker.FailureRatio, d.Breaker.FailureRatio)
		inherit(&r.Breaker.MinCalls, d.Breaker.MinCalls)
		inherit(&r.Breaker.Window, d.Breaker.Window)
		inherit(&r.Breaker.ProbeInterval, d.Breaker.ProbeInterval)
		inherit(&r.Breaker.MaxProbeInterval, d.Breaker.MaxProbeInterval)
		inherit(&r.Breaker.Disabled, d.Breaker.Disabled)
	}
}
