package cli

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/testenv"
)

// metricValue finds one series' value in a scrape ("" when absent).
func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// The worker exports the dead letters waiting by route and reason and the
// age of each route's oldest, read from the dead-letter stream every
// lag_interval: they rise as letters arrive and fall back when the letters
// are replayed.
func TestWorkerExportsTheDeadLetterBacklog(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	for i := range 2 {
		s.publish("work.locked.x", fmt.Sprintf(`{"input":"%d"}`, i), fmt.Sprintf("bl-%d", i))
	}
	s.publish("work.ok.x", `not json`, "bl-poison")
	s.settled("ok", "locked")

	url := "http://" + s.metrics + "/metrics"
	want := map[string]string{
		`agentrelay_dead_letters_waiting{reason="forbidden",route="locked"}`:    "2",
		`agentrelay_dead_letters_waiting{reason="invalid_json",route="ok"}`:     "1",
		`agentrelay_dead_letters_waiting{reason="forbidden",route="ok"}`:        "0",
		`agentrelay_dead_letters_waiting{reason="max_attempts",route="locked"}`: "0",
	}
	var body string
	testenv.Eventually(t, 10*time.Second, "the backlog in /metrics", func() bool {
		body = scrape(t, url)
		for series, v := range want {
			if metricValue(body, series) != v {
				return false
			}
		}
		return true
	})
	for _, route := range []string{"locked", "ok"} {
		age, err := strconv.ParseFloat(metricValue(body, fmt.Sprintf(`agentrelay_dead_letter_oldest_age_seconds{route=%q}`, route)), 64)
		if err != nil || age <= 0 || age > 60 {
			t.Errorf("oldest age of route %s: %v %v, want a few seconds", route, age, err)
		}
	}
	if regexp.MustCompile(`agentrelay_dead_letters_waiting\{[^}]*route="other"`).MatchString(body) {
		t.Error("a series for an unknown route without letters of one")
	}

	s.emu.AddToken(token, lockID)
	if code, out, errOut := s.cli("", "dlq", "replay", "--route", "locked"); code != 0 {
		t.Fatalf("replay: %d %s%s", code, out, errOut)
	}
	s.settled("locked")
	testenv.Eventually(t, 10*time.Second, "the backlog falls after the replay", func() bool {
		body = scrape(t, url)
		return metricValue(body, `agentrelay_dead_letters_waiting{reason="forbidden",route="locked"}`) == "0" &&
			metricValue(body, `agentrelay_dead_letter_oldest_age_seconds{route="locked"}`) == "0" &&
			metricValue(body, `agentrelay_dead_letters_waiting{reason="invalid_json",route="ok"}`) == "1"
	})
}
