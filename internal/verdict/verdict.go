// Package verdict names what happens to a message in the end, once, for
// the relay and for its metrics, traces and logs: one vocabulary, so that a
// log line, a span and a counter of one message agree.
package verdict

// Verdict is what happens to a message.
type Verdict uint8

// Verdicts.
const (
	Ack        Verdict = iota + 1 // the API accepted it: remove it from the stream
	Retry                         // hand it back (a nak, maybe delayed): redelivered later with the same key
	DeadLetter                    // copy it to the dead-letter stream, then terminate it
)

// String is the verdict as decided: "ack", "retry", "dead_letter".
func (v Verdict) String() string {
	switch v {
	case Ack:
		return "ack"
	case Retry:
		return "retry"
	case DeadLetter:
		return "dead_letter"
	}
	return "unknown"
}

// Outcome is the verdict as carried out, the word metrics, traces and
// logs use: "acked", "retried", "dead_lettered".
func (v Verdict) Outcome() string {
	switch v {
	case Ack:
		return "acked"
	case Retry:
		return "retried"
	case DeadLetter:
		return "dead_lettered"
	}
	return "unknown"
}

// All lists the verdicts, for metrics that export one series per outcome.
func All() []Verdict { return []Verdict{Ack, Retry, DeadLetter} }
