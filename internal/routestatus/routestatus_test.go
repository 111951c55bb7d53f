package routestatus

import (
	"testing"
	"time"
)

// A pause route health sets ends a little after the moment asked, and its
// sub-second part says it is route health's and which condition it is for:
// replicas of other versions read the same marks, so they are fixed.
func TestHealthPauseMarks(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 500_000_000, time.UTC)
	for code := range 10 {
		until := HealthPauseUntil(at, code)
		got, ok := HealthPauseCode(until)
		if !ok || got != code || !until.After(at) || until.Sub(at) > 2*time.Second {
			t.Errorf("code %d: until %v, read back as %d, %v", code, until, got, ok)
		}
	}
	if want := time.Date(2026, 1, 1, 12, 0, 1, 424_242_433, time.UTC); !HealthPauseUntil(at, 3).Equal(want) {
		t.Errorf("the mark of code 3 is %v, want %v (the wire format changed)", HealthPauseUntil(at, 3), want)
	}
	for _, op := range []time.Time{
		time.Date(2026, 1, 1, 12, 30, 0, 0, time.UTC),           // nats consumer pause, agentrelay pause: whole seconds
		time.Date(2026, 1, 1, 12, 30, 0, 424_242_429, time.UTC), // one off the marks
		time.Date(2026, 1, 1, 12, 30, 0, 424_242_440, time.UTC),
	} {
		if IsHealthPause(op) {
			t.Errorf("%v read as route health's pause", op)
		}
	}
	if code, ok := HealthPauseCode(time.Date(2026, 1, 1, 12, 30, 0, 424_242_424, time.UTC)); !ok || code != -1 {
		t.Errorf("an earlier version's mark: code %d, %v; want -1, true", code, ok)
	}
}

// The subjects replicas answer on and the default consumer name are how
// workers and status commands of different versions find each other.
func TestNamesOnTheWire(t *testing.T) {
	if got := Subject("WORK", "agentrelay-ok"); got != "agentrelay.status.WORK.agentrelay-ok" {
		t.Errorf("Subject = %s", got)
	}
	if got := OrderedSubject("WORK", "agentrelay-ok"); got != "agentrelay.ordered.WORK.agentrelay-ok" {
		t.Errorf("OrderedSubject = %s", got)
	}
	if got := DefaultDurable("ok"); got != "agentrelay-ok" {
		t.Errorf("DefaultDurable = %s", got)
	}
}
