// Package config reads and checks agentrelay's YAML configuration.
//
// Load reads a file strictly (an unknown field is an error, so a misspelt
// key never silently falls back to a default), applies environment
// overrides for deploy-time values, fills in the configuration's own
// defaults, and validates the result, with the Rules of the components it
// configures when the caller gives them (internal/app.CheckConfig). It
// reports every problem of the file at once, each with the path of the
// field it concerns ("routes[2].trigger_id: ..."): the values that do not
// decode (unknown fields, bad durations, values of the wrong kind, with
// their line) and the problems of validation. The annotated example in
// config/example.yaml documents every field and its default.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentrelay/agentrelay/internal/redact"
)

// Environment variables that override the file.
const (
	EnvNATSURL       = "AGENTRELAY_NATS_URL"
	EnvAPIBaseURL    = "AGENTRELAY_API_BASE_URL"
	EnvLogLevel      = "AGENTRELAY_LOG_LEVEL"
	EnvLogFormat     = "AGENTRELAY_LOG_FORMAT"
	EnvMetricsListen = "AGENTRELAY_METRICS_LISTEN"
)

// Config is the whole configuration.
type Config struct {
	NATS       NATS         `yaml:"nats"`
	API        API          `yaml:"api"`
	DeadLetter DeadLetter   `yaml:"dead_letter"`
	Worker     Worker       `yaml:"worker"`
	Log        Log          `yaml:"log"`
	Metrics    Metrics      `yaml:"metrics"`
	Defaults   RouteDefault `yaml:"defaults"`
	Streams    []Stream     `yaml:"streams"`
	Routes     []Route      `yaml:"routes"`
}

// NATS is how to connect to NATS.
type NATS struct {
	URL             string   `yaml:"url"`              // comma-separated server URLs; default nats://127.0.0.1:4222
	Name            string   `yaml:"name"`             // connection name shown by the server; default agentrelay
	CredentialsFile string   `yaml:"credentials_file"` // .creds file (JWT + NKey seed)
	NKeySeedFile    string   `yaml:"nkey_seed_file"`   // NKey seed file
	User            string   `yaml:"user"`             // user name; the password comes from password_file
	PasswordFile    string   `yaml:"password_file"`
	TokenFile       string   `yaml:"token_file"` // NATS auth token file (not the agent token)
	TLS             TLS      `yaml:"tls"`
	ConnectTimeout  Duration `yaml:"connect_timeout"` // default 5s
	ReconnectWait   Duration `yaml:"reconnect_wait"`  // base wait between reconnect attempts, jittered; default 2s
}

// TLS is a TLS client configuration.
type TLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns certificate verification off. Only for
	// testing; agentrelay logs a warning at every start when it is set.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Enabled reports whether any TLS setting is present.
func (t TLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// API is the trigger API.
type API struct {
	BaseURL           string   `yaml:"base_url"`            // default https://api.chatgpt.com
	Timeout           Duration `yaml:"timeout"`             // per call; default 10s
	AllowInsecureHTTP bool     `yaml:"allow_insecure_http"` // allow plain http to a non-loopback host
	TLS               TLS      `yaml:"tls"`
	MaxConns          int      `yaml:"max_conns"` // connection pool size; default: sum of max_in_flight over routes
}

// DeadLetter is the dead-letter stream.
type DeadLetter struct {
	Stream          string   `yaml:"stream"`           // default AGENTRELAY_DLQ
	SubjectPrefix   string   `yaml:"subject_prefix"`   // default agentrelay.dlq
	MaxAge          Duration `yaml:"max_age"`          // default 14d
	MaxBytes        int64    `yaml:"max_bytes"`        // 0 = unlimited
	Replicas        int      `yaml:"replicas"`         // default 1
	DuplicateWindow Duration `yaml:"duplicate_window"` // default 1h
	PublishTimeout  Duration `yaml:"publish_timeout"`  // default 5s
}

// Worker tunes the relay.
type Worker struct {
	DrainGrace    Duration `yaml:"drain_grace"`    // default 20s
	PullExpiry    Duration `yaml:"pull_expiry"`    // default 5s
	PullHeartbeat Duration `yaml:"pull_heartbeat"` // default 1s
	LagInterval   Duration `yaml:"lag_interval"`   // default 10s
	// Consumers: manage (default) creates and updates the routes'
	// consumers; observe only uses them, for consumers an operator manages
	// (NACK, the nats CLI).
	Consumers string `yaml:"consumers"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error; default info
	Format string `yaml:"format"` // auto (colour text on a terminal, else JSON), text, json; default auto
	// Accepted logs accepted events at info level: true, false (default:
	// at debug only) or the share of them to log, 0 to 1.
	Accepted Share `yaml:"accepted"`
}

// Metrics configures the HTTP listener for /metrics, /healthz and /readyz.
type Metrics struct {
	Listen string `yaml:"listen"` // default :9090; "off" disables it
}

// Retry is a retry policy; zero fields inherit.
type Retry struct {
	MaxAttempts    int      `yaml:"max_attempts"`    // default 10
	MaxTimeouts    int      `yaml:"max_timeouts"`    // default 3 (at most max_attempts)
	InitialBackoff Duration `yaml:"initial_backoff"` // default 1s
	MaxBackoff     Duration `yaml:"max_backoff"`     // default 4s
	Multiplier     float64  `yaml:"multiplier"`      // default 2
	MaxRetryAfter  Duration `yaml:"max_retry_after"` // default 15m
}

// Breaker is route health: outage detection and probing; zero fields
// inherit.
type Breaker struct {
	FailureRatio     float64  `yaml:"failure_ratio"`      // default 0.5
	MinCalls         uint32   `yaml:"min_calls"`          // default 10
	Window           Duration `yaml:"window"`             // default 5s
	ProbeInterval    Duration `yaml:"probe_interval"`     // default 1s
	MaxProbeInterval Duration `yaml:"max_probe_interval"` // default 3s
	Disabled         *bool    `yaml:"disabled"`

	// Settings of the consecutive-failure breaker that route health
	// replaced: refused, with their replacement named.
	ConsecutiveFailures *uint32   `yaml:"consecutive_failures"`
	OpenTimeout         *Duration `yaml:"open_timeout"`
	HalfOpenProbes      *uint32   `yaml:"half_open_probes"`
}

// RouteDefault holds values every route inherits unless it sets its own.
type RouteDefault struct {
	MaxInFlight   int      `yaml:"max_in_flight"`   // default 64
	MaxAckPending int      `yaml:"max_ack_pending"` // default 16 × max_in_flight
	AckWait       Duration `yaml:"ack_wait"`        // default 4s
	MaxRate       float64  `yaml:"max_rate"`        // calls per second per replica; 0 = no cap
	MaxInputBytes int      `yaml:"max_input_bytes"` // default 256 KiB
	Retry         Retry    `yaml:"retry"`
	Breaker       Breaker  `yaml:"breaker"`
}

// Stream is a stream agentrelay creates when it is missing (and updates to
// match). Leave streams out when an operator manages them.
type Stream struct {
	Name            string   `yaml:"name"`
	Subjects        []string `yaml:"subjects"`
	Retention       string   `yaml:"retention"` // limits (default), workqueue, interest
	Storage         string   `yaml:"storage"`   // file (default), memory
	Replicas        int      `yaml:"replicas"`  // default 1
	MaxAge          Duration `yaml:"max_age"`   // 0 = unlimited
	MaxBytes        int64    `yaml:"max_bytes"` // 0 = unlimited
	DuplicateWindow Duration `yaml:"duplicate_window"`
}

// Token says where a route's agent access token comes from: exactly one of a
// file (re-read when it changes), an environment variable, or (on a route
// that maps its trigger id) a directory holding a file per trigger id,
// named by the id.
type Token struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
	Dir  string `yaml:"dir"`
}

// Map is a route's declarative mapping: CEL expressions over the event
// (see internal/mapping for the variables and what each must give). An
// empty field maps nothing.
type Map struct {
	Input           string `yaml:"input"`
	ConversationKey string `yaml:"conversation_key"`
	TriggerID       string `yaml:"trigger_id"`
}

// IsZero reports whether m maps nothing.
func (m Map) IsZero() bool { return m == Map{} }

// AgentToken gives the trigger ids its pattern matches a token: exactly
// one of a file or an environment variable.
type AgentToken struct {
	IDs  string `yaml:"ids"` // a pattern, as in allowed_trigger_ids
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

// Route connects subjects of a stream to one agent trigger.
type Route struct {
	Name                  string   `yaml:"name"`
	Stream                string   `yaml:"stream"`
	Subjects              []string `yaml:"subjects"` // filter; empty = every subject of the stream
	Durable               string   `yaml:"durable"`  // default agentrelay-<name>
	Deliver               string   `yaml:"deliver"`  // all (default) or new; only when the consumer is created
	TriggerID             string   `yaml:"trigger_id"`
	Token                 Token    `yaml:"token"`
	Body                  string   `yaml:"body"`                    // json (default), text or cloudevents
	ConversationKeyHeader string   `yaml:"conversation_key_header"` // text bodies; default Conversation-Key
	MaxInputBytes         int      `yaml:"max_input_bytes"`
	MaxInFlight           int      `yaml:"max_in_flight"`
	MaxAckPending         int      `yaml:"max_ack_pending"`
	AckWait               Duration `yaml:"ack_wait"`
	MaxRate               float64  `yaml:"max_rate"`
	Ordering              string   `yaml:"ordering"` // none (default) or conversation_key
	Retry                 Retry    `yaml:"retry"`
	Breaker               Breaker  `yaml:"breaker"`
	// Map maps the event to the call with CEL expressions.
	Map Map `yaml:"map"`
	// AllowedTriggerIDs are the patterns a mapped trigger id must match:
	// required with map.trigger_id.
	AllowedTriggerIDs []string `yaml:"allowed_trigger_ids"`
	// AgentTokens choose the token of a mapped trigger id before token:
	// the first whose ids match.
	AgentTokens []AgentToken `yaml:"agent_tokens"`
}

// MapsTriggerID reports whether the route takes its trigger id from its
// events: it serves many agents.
func (r Route) MapsTriggerID() bool { return r.Map.TriggerID != "" }

// MaxFileSize is the largest configuration file Read accepts. A larger file
// is an error, never read in part: a route or a setting past the cut would
// be dropped without a word.
const MaxFileSize = 4 << 20

// A Rule checks a configuration beyond what Validate checks and returns
// its problems, each starting with the path of the field it concerns
// ("routes[0].ack_wait: ..."). The components the file configures decide
// their own rules; internal/app.CheckConfig reports them in the file's
// terms.
type Rule func(*Config) []string

// Load reads, overrides from the environment, defaults and validates the
// configuration file at path, with rules besides Validate.
func Load(path string, rules ...Rule) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Read(f, os.LookupEnv, rules...)
}

// Read is Load from a reader, with lookupEnv for the environment.
func Read(r io.Reader, lookupEnv func(string) (string, bool), rules ...Rule) (*Config, error) {
	return read(r, lookupEnv, false, rules)
}

// Check is Read for `config check`, which must refuse what `run` refuses:
// besides validating, it reads every route's agent token as run does at
// start (see checkTokens), and lists those problems with the others.
func Check(r io.Reader, lookupEnv func(string) (string, bool), rules ...Rule) (*Config, error) {
	return read(r, lookupEnv, true, rules)
}

func read(r io.Reader, lookupEnv func(string) (string, bool), tokens bool, rules []Rule) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, newError(tooLarge(r))
	}
	c, decoding, err := parse(data)
	if err != nil {
		return nil, err
	}
	// Validation goes on after values that did not decode (they stay
	// zero), so that one run lists everything wrong with the file.
	c.ApplyEnv(lookupEnv)
	c.ApplyDefaults()
	var p problems
	c.validate(&p)
	for _, rule := range rules {
		p = append(p, rule(c)...)
	}
	if tokens {
		c.checkTokens(&p, lookupEnv)
	}
	all := make(problems, 0, len(decoding)+len(p))
	for _, d := range decoding {
		all = append(all, d.msg)
	}
	for _, q := range p {
		if !restated(q, decoding) {
			all = append(all, q)
		}
	}
	if err := all.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// restated reports whether the problem q only says again what one of the
// decoding problems says (see yamlProblem.restates).
func restated(q string, decoding []yamlProblem) bool {
	for _, d := range decoding {
		switch p := d.restates; {
		case p == nil:
		case *p == "":
			return true
		case strings.HasPrefix(q, *p) && len(q) > len(*p) && strings.ContainsRune(":.[", rune(q[len(*p)])):
			return true
		}
	}
	return false
}

// tooLarge says that the file r reads is over MaxFileSize, with its size
// when r can tell it.
func tooLarge(r io.Reader) string {
	if st, ok := r.(interface{ Stat() (fs.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil && fi.Mode().IsRegular() {
			return fmt.Sprintf("the file is %d bytes, over the limit of %d bytes (4 MiB)", fi.Size(), MaxFileSize)
		}
	}
	return fmt.Sprintf("the file is over the limit of %d bytes (4 MiB)", MaxFileSize)
}

// Parse decodes YAML strictly, without defaults or validation. Every value
// that does not fit its field is reported, each with its path and line: an
// unknown field with the field it most resembles, a value of the wrong
// kind, a key set twice.
func Parse(data []byte) (*Config, error) {
	c, decoding, err := parse(data)
	if err != nil {
		return nil, err
	}
	if len(decoding) > 0 {
		msgs := make([]string, len(decoding))
		for i, d := range decoding {
			msgs[i] = d.msg
		}
		return nil, newError(msgs...)
	}
	return c, nil
}

// parse is Parse that also returns what decoded when some values did not
// (the rest stay zero), with the problems of those that did not. Only YAML
// that cannot be read at all is an error.
func parse(data []byte) (*Config, []yamlProblem, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, newError(err.Error())
	}
	// Decoded from the parsed document, so that the file is parsed once,
	// and without the library's check for unknown fields: the walker
	// finds them and names them in the file's terms.
	var c Config
	var te yaml.TypeError
	if err := root.Decode(&c); err != nil {
		var e *yaml.TypeError
		if !errors.As(err, &e) {
			return nil, nil, newError(err.Error())
		}
		te = *e
	}
	problems := explainYAML(&root, te.Errors)
	if len(problems) == 0 {
		return &c, nil, nil
	}
	// The library drops a list's element that did not decode, so that
	// validation's routes[2] could be the file's routes[3]. Decode again,
	// from the document with what did not fit taken out.
	var fitting Config
	if err := root.Decode(&fitting); err != nil {
		return &c, problems, nil
	}
	return &fitting, problems, nil
}

// ApplyEnv applies the environment overrides.
func (c *Config) ApplyEnv(lookupEnv func(string) (string, bool)) {
	set := func(dst *string, name string) {
		if v, ok := lookupEnv(name); ok && strings.TrimSpace(v) != "" {
			*dst = strings.TrimSpace(v)
		}
	}
	set(&c.NATS.URL, EnvNATSURL)
	set(&c.API.BaseURL, EnvAPIBaseURL)
	set(&c.Log.Level, EnvLogLevel)
	set(&c.Log.Format, EnvLogFormat)
	set(&c.Metrics.Listen, EnvMetricsListen)
}

// Error lists every problem found in a configuration.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "config: " + e.Problems[0]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "config: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// newError returns an *Error with problems, with every URL in them
// redacted (see redact.URLs): problems quote values from the file
// and the environment, and a URL may carry a password or a token.
func newError(problems ...string) *Error {
	e := &Error{Problems: make([]string, len(problems))}
	for i, p := range problems {
		e.Problems[i] = redact.URLs(p)
	}
	return e
}

// problems collects validation problems with their paths.
type problems []string

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, path+": "+fmt.Sprintf(format, args...))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return newError(p...)
}
