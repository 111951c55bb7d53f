package deploy_test

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"

	"github.com/agentrelay/agentrelay/deploy/internal/promcheck"
)

// scrapeInterval is the ServiceMonitor's; rules are evaluated as often.
const scrapeInterval = 30 * time.Second

// replica is the target labels of one replica's series.
const replica = `{namespace="agentrelay", pod="agentrelay-0", job="agentrelay"}`

// timeline is one replica's scrapes, one value per scrape interval for each
// series: a number, "_" for no sample, or "stale" for the staleness marker
// Prometheus writes when a series disappears (a failed scrape).
type timeline map[string][]string

// repeat returns v n times.
func repeat(v string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// wantFires checks that r fires on tl within the given time of its start,
// or, for a negative within, never.
func wantFires(t *testing.T, r monitoringv1.Rule, tl timeline, within time.Duration) {
	t.Helper()
	at := firesAt(t, r, tl)
	switch {
	case within < 0 && at >= 0:
		t.Errorf("fires at %v", at)
	case within >= 0 && at < 0:
		t.Errorf("never fires, want within %v", within)
	case within >= 0 && at > within:
		t.Errorf("fires at %v, want within %v", at, within)
	}
}

// firesAt returns when r first fires on tl (its for duration included), or
// -1 if it never does.
func firesAt(t *testing.T, r monitoringv1.Rule, tl timeline) time.Duration {
	t.Helper()
	for i, firing := range evaluate(t, r, tl) {
		if len(firing) > 0 {
			return time.Duration(i) * scrapeInterval
		}
	}
	return -1
}

// evaluate evaluates the rule the way Prometheus does, once per scrape
// interval over the timeline, and returns the alerts firing after each
// evaluation, with their annotations expanded.
func evaluate(t *testing.T, r monitoringv1.Rule, tl timeline) [][]*rules.Alert {
	t.Helper()
	var load strings.Builder
	load.WriteString("load 30s\n")
	steps := 0
	for name, vals := range tl {
		load.WriteString("  " + withReplica(name) + " " + strings.Join(vals, " ") + "\n")
		steps = max(steps, len(vals))
	}
	storage := promqltest.LoadedStorage(t, load.String())
	t.Cleanup(func() { _ = storage.Close() })
	expr, err := promcheck.Parse(r.Expr.String())
	if err != nil {
		t.Fatal(err)
	}
	var hold time.Duration
	if r.For != nil {
		d, err := model.ParseDuration(string(*r.For))
		if err != nil {
			t.Fatal(err)
		}
		hold = time.Duration(d)
	}
	rule := rules.NewAlertingRule(r.Alert, expr, hold, 0, labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false, slog.New(slog.DiscardHandler))
	query := rules.EngineQueryFunc(promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery), storage)
	out := make([][]*rules.Alert, steps)
	for i := range steps {
		at := time.Duration(i) * scrapeInterval
		if _, err := rule.Eval(context.Background(), 0, time.Unix(0, 0).Add(at), query, nil, 0); err != nil {
			t.Fatalf("evaluating %s at %v: %v", r.Alert, at, err)
		}
		for _, a := range rule.ActiveAlerts() {
			if a.State == rules.StateFiring {
				out[i] = append(out[i], a)
			}
		}
	}
	return out
}

// withReplica adds the replica's target labels to a series name, which may
// carry labels of its own: `metric` or `metric{route="a"}`.
func withReplica(series string) string {
	if name, own, ok := strings.Cut(series, "{"); ok {
		return name + strings.TrimSuffix(replica, "}") + ", " + own
	}
	return series + replica
}

func alertRule(t *testing.T, name string) monitoringv1.Rule {
	t.Helper()
	for _, r := range alertRules(t, renderExample(t)) {
		if r.Alert == name {
			return r
		}
	}
	t.Fatalf("no alert %s", name)
	return monitoringv1.Rule{}
}

// A replica whose NATS connection is closed for good must page, whether the
// process stays up with it (the issue: agentrelay_ready stayed 1, only
// agentrelay_nats_connected said 0) or exits and is restarted into the same
// failure again and again; a short disconnect or a single restart must not.
func TestReplicaWithAClosedConnectionTripsAnAlert(t *testing.T) {
	r := alertRule(t, "AgentrelayReplicaNotReady")
	const minutes = 2 // samples per minute
	up, ready, connected := repeat("1", 40), repeat("1", 40), repeat("1", 40)

	// Closed at minute 2, the process left up, agentrelay_ready still 1.
	zombie := timeline{"up": up, "agentrelay_ready": ready,
		"agentrelay_nats_connected": append(repeat("1", 2*minutes), repeat("0", 36)...)}

	// Closed at minute 2; the worker exits; the kubelet restarts it after a
	// growing back-off, and each new process hits the same failure: scrapes
	// mostly fail, and one that succeeds finds it starting up.
	var crashUp, crashReady, crashConnected []string
	crashUp = append(crashUp, repeat("1", 2*minutes)...)
	crashReady = append(crashReady, repeat("1", 2*minutes)...)
	crashConnected = append(crashConnected, repeat("1", 2*minutes)...)
	for _, down := range []int{1, 2, 4, 8, 12} {
		crashUp = append(append(crashUp, repeat("0", down)...), "1")
		crashReady = append(append(append(crashReady, "stale"), repeat("_", down-1)...), "0")
		crashConnected = append(append(append(crashConnected, "stale"), repeat("_", down-1)...), "1")
	}
	crashLoop := timeline{"up": crashUp, "agentrelay_ready": crashReady, "agentrelay_nats_connected": crashConnected}

	// A broker restart: disconnected for a minute, then back.
	blip := timeline{"up": up, "agentrelay_ready": ready,
		"agentrelay_nats_connected": append(append(repeat("1", 4), repeat("0", 2)...), repeat("1", 34)...)}

	// Closed once; the worker exits, restarts within a minute and is fine.
	restarted := timeline{
		"up":                        append(append(repeat("1", 4), repeat("0", 2)...), repeat("1", 34)...),
		"agentrelay_ready":          append(append(repeat("1", 4), "stale", "_", "0"), repeat("1", 33)...),
		"agentrelay_nats_connected": append(append(repeat("1", 4), "stale", "_"), repeat("1", 34)...),
	}

	for _, c := range []struct {
		name   string
		tl     timeline
		within time.Duration // -1: must not fire
	}{
		{"closed, process left up", zombie, 10 * time.Minute},
		{"closed, process restarting into the same failure", crashLoop, 15 * time.Minute},
		{"healthy", timeline{"up": up, "agentrelay_ready": ready, "agentrelay_nats_connected": connected}, -1},
		{"disconnected for a minute", blip, -1},
		{"closed once, restarted, recovered", restarted, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantFires(t, r, c.tl, c.within)
		})
	}
}

// Dead letters must be seen well before the dead-letter stream expires them
// (max_age, 14 days by default): the alert fires once the oldest has waited
// 7 days, and not for younger letters or ones replayed in time.
func TestDeadLettersAgingAlertsLongBeforeExpiry(t *testing.T) {
	r := alertRule(t, "AgentrelayDeadLettersAging")
	const week = 7 * 24 * 3600
	// ages scrapes 30 s apart from start seconds, each 30 s older, with
	// the letters replayed (age 0) from scrape gone on, if gone > 0.
	ages := func(start, gone int) []string {
		out := make([]string, 120)
		for i := range out {
			age := start + 30*i
			if gone > 0 && i >= gone {
				age = 0
			}
			out[i] = strconv.Itoa(age)
		}
		return out
	}
	const metric = "agentrelay_dead_letter_oldest_age_seconds"
	for _, c := range []struct {
		name   string
		tl     timeline
		within time.Duration // -1: must not fire
	}{
		{"crosses 7 days after 10 minutes", timeline{metric: ages(week-600, 0)}, 45 * time.Minute},
		{"6 days old", timeline{metric: ages(week-24*3600, 0)}, -1},
		{"replayed 20 minutes after crossing", timeline{metric: ages(week-600, 60)}, -1},
		{"nothing waiting", timeline{metric: repeat("0", 120)}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantFires(t, r, c.tl, c.within)
		})
	}
}

// An event left unacknowledged for half an hour is seen, whatever holds it
// (a stopped route, failing retries, replicas behind); a backlog that keeps
// moving, or one event that was held long but then settled, is not.
func TestOldestEventWaitingAlert(t *testing.T) {
	r := alertRule(t, "AgentrelayOldestEventWaiting")
	const metric = "agentrelay_oldest_unacked_age_seconds"
	// ages: 120 scrapes 30 s apart from start seconds, each 30 s older,
	// 0 from scrape settled on (settled > 0).
	ages := func(start, settled int) []string {
		out := make([]string, 120)
		for i := range out {
			age := start + 30*i
			if settled > 0 && i >= settled {
				age = 0
			}
			out[i] = strconv.Itoa(age)
		}
		return out
	}
	// moving: the oldest event settles every 5 minutes, the next one is
	// as old as a busy backlog makes it.
	moving := make([]string, 120)
	for i := range moving {
		moving[i] = strconv.Itoa(60 + 30*(i%10))
	}
	for _, c := range []struct {
		name   string
		tl     timeline
		within time.Duration // -1: must not fire
	}{
		{"stuck since 25 minutes", timeline{metric: ages(25*60, 0)}, 20 * time.Minute},
		{"settled after 35 minutes", timeline{metric: ages(25*60, 20)}, -1},
		{"a moving backlog", timeline{metric: moving}, -1},
		{"nothing unacknowledged", timeline{metric: repeat("0", 120)}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantFires(t, r, c.tl, c.within)
		})
	}
}

// decimal is a number with a fractional part, as increase() extrapolates
// a count ("2.504 messages").
var decimal = regexp.MustCompile(`\d\.\d`)

// Two events dead-lettered half a minute apart, replayed five minutes later:
// the alert counts 2 dead letters, a whole number (increase() over the
// window would say 2.1 or so), and clears within a minute of the
// dead-letter stream being emptied, not when the window has passed.
func TestDeadLettersRisingCountsEventsAndClearsOnReplay(t *testing.T) {
	r := alertRule(t, "AgentrelayDeadLettersRising")
	const (
		total   = `agentrelay_dead_letters_total{route="complaints", reason="forbidden"}`
		waiting = `agentrelay_dead_letters_waiting{route="complaints", reason="forbidden"}`
	)
	// Scrapes 30 s apart: the letters arrive at scrapes 20 and 21 and are
	// replayed at scrape 31.
	tl := timeline{
		total:   slices.Concat(repeat("0", 20), []string{"1"}, repeat("2", 39)),
		waiting: slices.Concat(repeat("0", 20), []string{"1"}, repeat("2", 10), repeat("0", 29)),
	}
	steps := evaluate(t, r, tl)
	if len(steps[19]) > 0 {
		t.Errorf("fires before any dead letter")
	}
	firing := steps[25]
	if len(firing) != 1 {
		t.Fatalf("%d alerts firing at 12.5 minutes, want 1", len(firing))
	}
	for _, name := range []string{"summary", "description"} {
		text := firing[0].Annotations.Get(name)
		if decimal.MatchString(text) || !strings.Contains(text, "2 dead letters") {
			t.Errorf("%s %q: want the count of events as a whole number, \"2 dead letters\"", name, text)
		}
	}
	for i := 33; i < len(steps); i++ {
		if len(steps[i]) > 0 {
			t.Errorf("still firing %v after the dead-letter stream was emptied by replay", time.Duration(i-31)*scrapeInterval)
			break
		}
	}
}

// Counts in every alert's annotations are whole numbers, whatever the
// expression's value: no alert prints a count with humanize (which writes
// 2.504) or an extrapolated increase().
func TestAlertAnnotationsPrintNoFractionalCounts(t *testing.T) {
	for _, r := range alertRules(t, renderExample(t)) {
		for name, text := range r.Annotations {
			if strings.Contains(text, "$value | humanize }}") || strings.Contains(text, "$value | humanize}}") {
				t.Errorf("alert %s: annotation %s prints $value with humanize: print a count with printf \"%%.0f\"", r.Alert, name)
			}
			if strings.Contains(text, "increase(") || strings.Contains(text, "rate(") {
				t.Errorf("alert %s: annotation %s queries a rate or an extrapolated increase", r.Alert, name)
			}
		}
	}
}
