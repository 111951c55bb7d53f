package inspect

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/internal/routestatus"
)

// An answer is believed only within these bounds: anything outside them is
// a forgery or a bug, and the whole answer is refused (saying why) rather
// than shown in part. Descriptive strings within their bounds (who the
// replica is, an error) are sanitised (control characters, escape
// sequences and bidi controls escaped) before anything else sees them;
// keys are data a reader may need exactly (to find an event by its key),
// so they are only bounded, and are escaped where printed
// (the CLI's one sanitiser, and JSON's \u escapes).
const (
	maxIDLen       = 128
	maxNameLen     = 256
	maxErrorLen    = 512
	maxKeyLen      = 1024 // a conversation key or an Idempotency-Key
	maxCount       = 10_000_000
	maxFailures    = 1_000_000
	maxClockSkew   = 5 * time.Minute
	maxNextProbeIn = 30 * 24 * time.Hour
	maxAge         = 10 * 365 * 24 * time.Hour
	// answerOverhead is an answer's size without its blocked keys: the
	// route's own fields, and at most routestatus.MaxAgentsListed stopped
	// agents (each a trigger id, a probe key and an error, JSON-escaped).
	answerOverhead = 16*1024 + routestatus.MaxAgentsListed*(6*(maxIDLen+maxKeyLen+maxErrorLen)+256)
	// keyAnswerBytes is the most one blocked key takes in an answer
	// (a key of maxKeyLen bytes, JSON-escaped, and its numbers).
	keyAnswerBytes = 6*maxKeyLen + 256
)

// token is what a condition, a class or a paused-by value looks like.
var token = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

func maxAnswerBytes(maxKeys int) int { return answerOverhead + maxKeys*keyAnswerBytes }

// bounded sanitises s and cuts it to n bytes.
func bounded(s string, n int) string {
	s = agentapi.SanitizeText([]byte(s))
	if len(s) > n {
		cut := n
		for cut > 0 && s[cut]&0xc0 == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// text checks that a string field is within n bytes, and sanitises it.
func text(field string, s *string, n int) error {
	if len(*s) > n {
		return fmt.Errorf("%s is %d bytes, more than %d", field, len(*s), n)
	}
	*s = agentapi.SanitizeText([]byte(*s))
	return nil
}

// exact checks that a key is within n bytes (JSON decoding has already
// made it UTF-8).
func exact(field, s string, n int) error {
	if len(s) > n {
		return fmt.Errorf("%s is %d bytes, more than %d", field, len(s), n)
	}
	return nil
}

func count(field string, n, hi int) error {
	if n < 0 || n > hi {
		return fmt.Errorf("%s %d is not from 0 to %d", field, n, hi)
	}
	return nil
}

// instant checks a time: zero, or not absurdly old, nor later than
// latest.
func instant(field string, t time.Time, now time.Time, latest time.Duration) error {
	if t.IsZero() {
		return nil
	}
	if t.Before(now.Add(-maxAge)) || t.After(now.Add(latest)) {
		return fmt.Errorf("%s %s is not a time this answer can hold", field, t.UTC().Format(time.RFC3339))
	}
	return nil
}

func validReplica(r *routestatus.Replica) error {
	if r.ID == "" {
		return errors.New("the answer does not say which replica sent it")
	}
	return errors.Join(text("replica id", &r.ID, maxIDLen), text("replica name", &r.Name, maxNameLen),
		text("replica host", &r.Host, maxNameLen), text("replica version", &r.Version, maxNameLen))
}

// validStatus checks every field of a route's status, as answered for
// route with at most maxKeys blocked keys.
func validStatus(st *routestatus.Status, route string, maxKeys int, now time.Time) error {
	if st.Route != route {
		return fmt.Errorf("the answer is for route %q, not %q", bounded(st.Route, maxNameLen), route)
	}
	errs := []error{
		tokenField("health", st.Health, false),
		tokenField("paused_by", st.PausedBy, true),
		instant("since", st.Since, now, maxClockSkew),
		instant("next_probe", st.NextProbe, now, maxNextProbeIn),
		exact("probe_key", st.ProbeKey, maxKeyLen),
		count("in_flight", st.InFlight, maxCount),
		count("limit", st.Limit, maxCount),
	}
	errs = append(errs, validCause(st.Cause))
	if st.Ordered != nil {
		errs = append(errs, validOrdered(st.Ordered, route, maxKeys, now))
	}
	errs = append(errs, validAgents(st, now))
	return errors.Join(errs...)
}

func validCause(c *routestatus.StopCause) error {
	if c == nil {
		return nil
	}
	errs := []error{tokenField("cause class", c.Class, false), text("cause error", &c.Error, maxErrorLen)}
	if c.Status != 0 && (c.Status < 100 || c.Status > 599) {
		errs = append(errs, fmt.Errorf("cause status %d is not an HTTP status", c.Status))
	}
	return errors.Join(errs...)
}

// validAgents checks the stopped agents of a route that serves many.
func validAgents(st *routestatus.Status, now time.Time) error {
	if len(st.Agents) > routestatus.MaxAgentsListed {
		return fmt.Errorf("it lists %s, more than %d", Count(len(st.Agents), "stopped agent", "stopped agents"), routestatus.MaxAgentsListed)
	}
	errs := []error{count("agents_stopped", st.AgentsStopped, maxCount)}
	if st.AgentsStopped < len(st.Agents) {
		errs = append(errs, fmt.Errorf("agents_stopped %d is fewer than the %s listed", st.AgentsStopped, Count(len(st.Agents), "agent", "agents")))
	}
	for i := range st.Agents {
		a := &st.Agents[i]
		errs = append(errs,
			text("agent trigger_id", &a.TriggerID, maxIDLen),
			tokenField("agent health", a.Health, false),
			validCause(a.Cause),
			instant("agent since", a.Since, now, maxClockSkew),
			instant("agent next_probe", a.NextProbe, now, maxNextProbeIn),
			exact("agent probe_key", a.ProbeKey, maxKeyLen))
		if a.TriggerID == "" {
			errs = append(errs, errors.New("a stopped agent with no trigger_id"))
		}
	}
	return errors.Join(errs...)
}

func tokenField(field, v string, emptyOK bool) error {
	if (v == "" && emptyOK) || token.MatchString(v) {
		return nil
	}
	return fmt.Errorf("%s %q is not a name this answer can hold", field, bounded(v, 64))
}

func validOrdered(o *routestatus.Ordered, route string, maxKeys int, now time.Time) error {
	if o.Route != route {
		return fmt.Errorf("its ordered part is for route %q, not %q", bounded(o.Route, maxNameLen), route)
	}
	if len(o.Blocked) > maxKeys {
		return fmt.Errorf("it lists %s, and %d were asked for", Count(len(o.Blocked), "blocked key", "blocked keys"), maxKeys)
	}
	errs := []error{
		exact("pin_id", o.PinID, maxIDLen),
		count("holding", o.Holding, maxCount),
		count("running", o.Running, maxCount),
		count("blocked_keys", o.BlockedKeys, maxCount),
	}
	if o.BlockedKeys < len(o.Blocked) {
		errs = append(errs, fmt.Errorf("blocked_keys %d is fewer than the %s listed", o.BlockedKeys, Count(len(o.Blocked), "key", "keys")))
	}
	for i := range o.Blocked {
		errs = append(errs, validBlocked(&o.Blocked[i], now))
	}
	return errors.Join(errs...)
}

func validBlocked(b *routestatus.BlockedKey, now time.Time) error {
	errs := []error{
		exact("blocked key", b.Key, maxKeyLen),
		count("waiting", b.Waiting, maxCount),
		count("behind_failures", b.BehindFailures, maxFailures),
		instant("since", b.Since, now, maxClockSkew),
	}
	if b.Waiting == 0 || b.OldestSeq == 0 {
		errs = append(errs, errors.New("a blocked key with no waiting event"))
	}
	if !(b.WaitingSeconds >= 0 && b.WaitingSeconds <= maxAge.Seconds()) { // NaN fails too
		errs = append(errs, fmt.Errorf("waiting_seconds %v is not from 0 to %v", b.WaitingSeconds, maxAge.Seconds()))
	}
	return errors.Join(errs...)
}

// stopped reports whether a replica holds its route stopped.
func stopped(st *routestatus.Status) bool {
	return (st.Health != "" && st.Health != healthyLabel) || st.PausedBy != ""
}

// healthyLabel is RouteStatus.Health of a route without a condition.
const healthyLabel = "healthy"

// AgentConditionText says, in one line, why an agent is stopped on a
// replica: "legal: not_runnable since 10:00:00Z (not_runnable, 409: ...),
// probing with key K, next probe 10:00:05Z".
func AgentConditionText(a *routestatus.Agent) string {
	return a.TriggerID + ": " + ConditionText(&routestatus.Status{
		Health: a.Health, Cause: a.Cause, Since: a.Since, NextProbe: a.NextProbe, ProbeKey: a.ProbeKey,
	})
}

// ConditionText says a replica's condition of a route in one line:
// "outage since 10:00:00Z (transient, 503: ...), probing with key K, next
// probe 10:00:05Z, paused by route health".
func ConditionText(st *routestatus.Status) string {
	if st == nil {
		return "unknown"
	}
	out := st.Health
	if st.Health == healthyLabel && st.PausedBy != "" {
		out = "" // the pause says it all
	}
	if !st.Since.IsZero() {
		out += " since " + st.Since.UTC().Format(time.RFC3339)
	}
	if c := st.Cause; c != nil {
		cause := c.Class
		if c.Status != 0 {
			cause += fmt.Sprintf(", %d", c.Status)
		}
		if c.Error != "" {
			cause += ": " + c.Error
		}
		out += " (" + cause + ")"
	}
	if st.ProbeKey != "" {
		out += ", probing with key " + st.ProbeKey
	}
	if !st.NextProbe.IsZero() {
		out += ", next probe " + st.NextProbe.UTC().Format(time.RFC3339)
	}
	pause := ""
	switch st.PausedBy {
	case routestatus.PausedByRouteHealth:
		pause = "paused by route health"
	case routestatus.PausedByOperator:
		pause = "paused by an operator"
	case "":
	default:
		pause = "paused by " + st.PausedBy
	}
	if out == "" {
		return pause
	}
	if pause != "" {
		out += ", " + pause
	}
	return out
}
