package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/natsheader"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// Limits that keep a typo from becoming an outage.
const (
	maxInFlight   = 100_000
	maxInputBytes = 64 << 20
	maxReplicas   = 5
)

// Validate checks what the file says and returns an *Error listing every
// problem, or nil. It checks the configuration's own rules: syntax, names,
// subjects, URLs, limits that keep a typo from becoming an outage. What a
// component decides about its own settings (relations between them, with
// its defaults) is checked by the Rules given to Read; see internal/app.
func (c *Config) Validate() error {
	var p problems
	c.validate(&p)
	return p.err()
}

func (c *Config) validate(p *problems) {
	c.validateNATS(p)
	c.validateAPI(p)
	c.validateDeadLetter(p)
	c.validateWorker(p)
	c.validateLogAndMetrics(p)
	c.validateStreams(p)
	c.validateRoutes(p)
}

func (c *Config) validateNATS(p *problems) {
	n := c.NATS
	for _, u := range strings.Split(n.URL, ",") {
		u = strings.TrimSpace(u)
		pu, err := url.Parse(u)
		switch {
		case u == "":
			p.add("nats.url", "empty server URL in %q", n.URL)
		case err != nil:
			p.add("nats.url", "%q is not a valid URL: %s", u, urlProblem(err))
		case pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss":
			p.add("nats.url", "%q: scheme must be nats, tls, ws or wss", u)
		case pu.Host == "":
			p.add("nats.url", "%q: missing host", u)
		case pu.User != nil:
			p.add("nats.url", "%q: credentials in the URL would end up in logs; use user/password_file, token_file, nkey_seed_file or credentials_file", u)
		}
	}
	methods := 0
	for _, set := range []bool{n.CredentialsFile != "", n.NKeySeedFile != "", n.User != "" || n.PasswordFile != "", n.TokenFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		p.add("nats", "choose one authentication method: credentials_file, nkey_seed_file, user with password_file, or token_file")
	}
	if (n.User == "") != (n.PasswordFile == "") {
		p.add("nats.user", "user and password_file go together")
	}
	validateTLS(p, "nats.tls", n.TLS)
	if n.ConnectTimeout < 0 {
		p.add("nats.connect_timeout", "must not be negative")
	}
	if n.ReconnectWait < 0 {
		p.add("nats.reconnect_wait", "must not be negative")
	}
}

// urlProblem says why url.Parse refused a URL, without the parts of the
// URL its error quotes ("invalid port \":pa\" after host" shows a piece of
// a password that holds a '/'). The URL itself is quoted by the caller, and
// redacted with every problem (see newError).
func urlProblem(err error) string {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return "cannot be parsed"
	}
	return strings.Join(strings.Fields(quoted.ReplaceAllString(ue.Err.Error(), "")), " ")
}

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

func validateTLS(p *problems, path string, t TLS) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.add(path, "cert_file and key_file go together")
	}
}

func (c *Config) validateAPI(p *problems) {
	if _, err := url.Parse(c.API.BaseURL); err != nil {
		p.add("api.base_url", "%q is not a valid URL: %s", c.API.BaseURL, urlProblem(err))
	} else if _, err := agentapi.CheckBaseURL(c.API.BaseURL, c.API.AllowInsecureHTTP); err != nil {
		p.add("api.base_url", "%v", strings.TrimPrefix(err.Error(), "agentapi: "))
	}
	if c.API.Timeout < 0 {
		p.add("api.timeout", "must not be negative")
	}
	validateTLS(p, "api.tls", c.API.TLS)
	if c.API.MaxConns < 0 {
		p.add("api.max_conns", "must not be negative")
	}
}

func (c *Config) validateDeadLetter(p *problems) {
	d := c.DeadLetter
	if d.Stream != "" {
		if err := checkName(d.Stream); err != nil {
			p.add("dead_letter.stream", "%v", err)
		}
	}
	if d.SubjectPrefix != "" {
		if err := checkSubject(d.SubjectPrefix, false); err != nil {
			p.add("dead_letter.subject_prefix", "%v", err)
		}
	}
	if d.Replicas < 0 || d.Replicas > maxReplicas {
		p.add("dead_letter.replicas", "must be between 1 and %d", maxReplicas)
	}
	if d.MaxBytes < 0 {
		p.add("dead_letter.max_bytes", "must not be negative")
	}
}

func (c *Config) validateWorker(p *problems) {
	if hb := c.Worker.PullHeartbeat; hb != 0 && hb.D().Milliseconds() < 100 {
		p.add("worker.pull_heartbeat", "must be at least 100ms")
	}
}

func (c *Config) validateLogAndMetrics(p *problems) {
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		p.add("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		p.add("log.format", "%q is not auto, text or json", c.Log.Format)
	}
	if c.Metrics.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			p.add("metrics.listen", "%q is not host:port (or \"off\")", c.Metrics.Listen)
		}
	}
}

func (c *Config) validateStreams(p *problems) {
	seen := map[string]bool{}
	for i, s := range c.Streams {
		path := fmt.Sprintf("streams[%d]", i)
		if err := checkName(s.Name); err != nil {
			p.add(path+".name", "%v", err)
		} else if seen[s.Name] {
			p.add(path+".name", "stream %q is listed twice", s.Name)
		}
		seen[s.Name] = true
		if len(s.Subjects) == 0 {
			p.add(path+".subjects", "at least one subject is required")
		}
		for j, subj := range s.Subjects {
			if err := checkSubject(subj, true); err != nil {
				p.add(fmt.Sprintf("%s.subjects[%d]", path, j), "%v", err)
			}
		}
		switch s.Retention {
		case "limits", "workqueue", "interest":
		default:
			p.add(path+".retention", "%q is not limits, workqueue or interest", s.Retention)
		}
		switch s.Storage {
		case "file", "memory":
		default:
			p.add(path+".storage", "%q is not file or memory", s.Storage)
		}
		if s.Replicas < 1 || s.Replicas > maxReplicas {
			p.add(path+".replicas", "must be between 1 and %d", maxReplicas)
		}
		if s.MaxAge < 0 || s.MaxBytes < 0 || s.DuplicateWindow < 0 {
			p.add(path, "max_age, max_bytes and duplicate_window must not be negative")
		}
		if s.MaxAge > 0 && s.DuplicateWindow > s.MaxAge {
			p.add(path+".duplicate_window", "%v is longer than max_age %v", s.DuplicateWindow, s.MaxAge)
		}
	}
}

func (c *Config) validateRoutes(p *problems) {
	if len(c.Routes) == 0 {
		p.add("routes", "at least one route is required")
	}
	for i, r := range c.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Name == "":
			p.add(path+".name", "is required")
		case !isRouteName(r.Name):
			p.add(path+".name", "%q: use letters, digits, '_' and '-' (at most 64)", r.Name)
		}
		if err := checkName(r.Stream); err != nil {
			p.add(path+".stream", "%v", err)
		}
		if r.Durable != "" {
			if err := checkName(r.Durable); err != nil {
				p.add(path+".durable", "%v", err)
			}
		}
		for j, subj := range r.Subjects {
			if err := checkSubject(subj, true); err != nil {
				p.add(fmt.Sprintf("%s.subjects[%d]", path, j), "%v", err)
			}
		}
		validateAgents(p, path, r)
		if r.ConversationKeyHeader != "" && !natsheader.ValidName(r.ConversationKeyHeader) {
			p.add(path+".conversation_key_header", "%q is not a valid header name", r.ConversationKeyHeader)
		}
		if r.MaxInputBytes > maxInputBytes {
			p.add(path+".max_input_bytes", "must be between 1 and %d", maxInputBytes)
		}
		if r.MaxInFlight > maxInFlight {
			p.add(path+".max_in_flight", "must be between 1 and %d", maxInFlight)
		}
		validateRetired(p, path+".breaker", r.Breaker)
	}
}

// validateAgents checks who a route calls: one trigger id with its token,
// or (map.trigger_id) the ids its events name, limited by
// allowed_trigger_ids, with their tokens.
func validateAgents(p *problems, path string, r Route) {
	sources := 0
	for _, set := range []bool{r.Token.File != "", r.Token.Env != "", r.Token.Dir != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		p.add(path+".token", "set one of file, env or dir")
	}
	if !r.MapsTriggerID() {
		if err := agentapi.ValidateTriggerID(r.TriggerID); err != nil {
			p.add(path+".trigger_id", "%v (or take it from the events with map.trigger_id)", strings.TrimPrefix(err.Error(), "agentapi: "))
		}
		switch {
		case sources == 0:
			p.add(path+".token", "set file (re-read when it changes) or env")
		case r.Token.Dir != "":
			p.add(path+".token.dir", "a token per trigger id is for a route that takes its trigger id from its events (map.trigger_id); set file or env")
		}
		if len(r.AllowedTriggerIDs) > 0 {
			p.add(path+".allowed_trigger_ids", "only with map.trigger_id: this route calls %s", r.TriggerID)
		}
		if len(r.AgentTokens) > 0 {
			p.add(path+".agent_tokens", "only with map.trigger_id: this route calls one agent; use token")
		}
		return
	}
	if r.TriggerID != "" {
		p.add(path+".trigger_id", "set trigger_id or map.trigger_id, not both")
	}
	if len(r.AllowedTriggerIDs) == 0 {
		p.add(path+".allowed_trigger_ids", "required with map.trigger_id: the patterns of the trigger ids the events may name (\"agtch_*\" allows every one)")
	}
	for i, pat := range r.AllowedTriggerIDs {
		if err := triggerglob.Check(pat); err != nil {
			p.add(fmt.Sprintf("%s.allowed_trigger_ids[%d]", path, i), "%s", strings.TrimPrefix(err.Error(), triggerglob.ErrPattern.Error()+" "))
		}
	}
	if sources == 0 && len(r.AgentTokens) == 0 {
		p.add(path+".token", "set file, env or dir (a file per trigger id), or agent_tokens")
	}
	for i, at := range r.AgentTokens {
		ap := fmt.Sprintf("%s.agent_tokens[%d]", path, i)
		if err := triggerglob.Check(at.IDs); err != nil {
			p.add(ap+".ids", "%s", strings.TrimPrefix(err.Error(), triggerglob.ErrPattern.Error()+" "))
		}
		switch {
		case at.File == "" && at.Env == "":
			p.add(ap, "set file or env")
		case at.File != "" && at.Env != "":
			p.add(ap, "set file or env, not both")
		}
	}
}

// validateRetired refuses the settings of the consecutive-failure breaker
// that route health replaced, naming their replacement.
func validateRetired(p *problems, path string, b Breaker) {
	retired := "no longer used: route health trips on failure_ratio of the calls in window (at least min_calls) and probes every probe_interval, doubling up to max_probe_interval; remove it"
	if b.ConsecutiveFailures != nil {
		p.add(path+".consecutive_failures", "%s", retired)
	}
	if b.OpenTimeout != nil {
		p.add(path+".open_timeout", "%s", retired)
	}
	if b.HalfOpenProbes != nil {
		p.add(path+".half_open_probes", "%s", retired)
	}
}

func isRouteName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkName applies NATS's rules for stream and consumer names.
func checkName(s string) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	if len(s) > 255 {
		return fmt.Errorf("longer than 255 bytes")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '.' || r == '*' || r == '>' || r == '/' || r == '\\' {
			return fmt.Errorf("%q: names cannot contain whitespace, '.', '*', '>', '/', '\\' or control characters", s)
		}
	}
	return nil
}

// checkSubject validates a subject; wildcards only when allowed, and '>'
// only as the last token.
func checkSubject(s string, wildcards bool) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return fmt.Errorf("%q has an empty token", s)
		case strings.ContainsAny(t, " \t\r\n\x00"):
			return fmt.Errorf("%q contains whitespace", s)
		case t == "*" || t == ">":
			if !wildcards {
				return fmt.Errorf("%q: wildcards are not allowed here", s)
			}
			if t == ">" && i != len(tokens)-1 {
				return fmt.Errorf("%q: '>' must be the last token", s)
			}
		case strings.ContainsAny(t, "*>"):
			return fmt.Errorf("%q: wildcards must be whole tokens", s)
		}
	}
	return nil
}
