package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// A subject no route captures is stored all the same, but nothing will
// ever trigger an agent for it: with a configuration at hand, publish says
// so on stderr, naming the routes that read the stream.
func TestPublishWarnsOfASubjectNoRouteCaptures(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker() // creates the stream WORK (work.>)

	code, out, errOut := s.cli("", "publish", "work.ok.x", "--input", "fine")
	if code != 0 || !strings.Contains(out, "stream WORK sequence 1") || errOut != "" {
		t.Fatalf("captured subject: %d %q %q", code, out, errOut)
	}

	code, out, errOut = s.cli("", "publish", "work.okk.x", "--input", "typo", "-n", "2")
	if code != 0 || !strings.Contains(out, "sequence 3") {
		t.Fatalf("uncaptured subject is still published: %d %q %q", code, out, errOut)
	}
	for _, want := range []string{
		"warning: no route of the configuration captures work.okk.x",
		"routes on stream WORK: ok [work.ok.>], locked [work.locked.>]",
		"no agent will be triggered",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not say %q", errOut, want)
		}
	}
	if n := strings.Count(errOut, "warning:"); n != 1 {
		t.Errorf("%d warnings for one command, want 1: %q", n, errOut)
	}

	// What the warning repeats comes from the command line: it is
	// sanitised like everything the CLI prints.
	_, _, errOut = s.cli("", "publish", "work.\x1b]0;pwned\x07", "--input", "x")
	if !strings.Contains(errOut, "warning: no route") || strings.ContainsAny(errOut, "\x1b\x07") {
		t.Errorf("hostile subject: stderr %q", errOut)
	}

	// Without a configuration there is nothing to compare with: no warning.
	code, _, errOut = runCLI(t, "", "publish", "-s", s.nats.Server.ClientURL(), "work.okk.y", "--input", "x")
	if code != 0 || errOut != "" {
		t.Errorf("without a configuration: %d %q", code, errOut)
	}
}

// status lists the subjects of a route's stream that hold messages no
// route's filter captures, in text and JSON, and goes by the filter the
// consumer really has.
func TestStatusListsSubjectsNoRouteCaptures(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.startWorker()
	s.publish("work.ok.x", `{"input":"fine"}`, "uc-ok")
	s.publish("work.okk.x", `{"input":"typo"}`, "uc-typo-1")
	s.publish("work.okk.x", `{"input":"typo"}`, "uc-typo-2")
	s.publish("work.other", `{"input":"nobody"}`, "uc-other")
	s.settled("ok", "locked")

	code, out, errOut := s.cli("", "status", "--no-dead-letters")
	if code != 0 {
		t.Fatalf("status: %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"stream WORK: 3 messages on subjects no route captures",
		"  work.okk.x  2\n  work.other  1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "work.ok.x") {
		t.Errorf("status lists a captured subject:\n%s", out)
	}

	_, out, _ = s.cli("", "status", "--json", "--no-dead-letters")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	want := []inspect.UncapturedStream{{Stream: stream, Messages: 3, SubjectsInStream: 3, Subjects: []inspect.SubjectCount{{Subject: "work.okk.x", Messages: 2}, {Subject: "work.other", Messages: 1}}}}
	if !reflect.DeepEqual(rep.Uncaptured, want) {
		t.Errorf("uncaptured %+v, want %+v", rep.Uncaptured, want)
	}

	// An operator widened the ok route's consumer: its messages are
	// delivered now, whatever the file says.
	c, err := s.nats.JS.Consumer(context.Background(), stream, "agentrelay-ok")
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	cfg.FilterSubject, cfg.FilterSubjects = "", []string{"work.ok.>", "work.okk.>"}
	if _, err := s.nats.JS.UpdateConsumer(context.Background(), stream, cfg); err != nil {
		t.Fatal(err)
	}
	_, out, _ = s.cli("", "status", "--no-dead-letters")
	if !strings.Contains(out, "stream WORK: 1 message on subjects no route captures") || strings.Contains(out, "work.okk.x") {
		t.Errorf("status ignores the consumer's own filter:\n%s", out)
	}
}

// The subjects read are bounded: a stream with more than the cap is
// reported as not checked, and a route that takes the whole stream needs
// no read at all.
func TestStatusUncapturedIsBounded(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: "B", Subjects: []string{"b.>"}})
	for i := range 5 {
		n.Publish(t, &nats.Msg{Subject: fmt.Sprintf("b.%d", i), Data: []byte("x")})
	}
	ctx := context.Background()
	u, err := inspect.Uncaptured(ctx, n.JS, "B", [][]string{{"b.0"}}, 4)
	if err != nil || u == nil || !u.Capped || u.SubjectsInStream != 5 || len(u.Subjects) != 0 {
		t.Errorf("over the cap: %+v %v", u, err)
	}
	var text bytes.Buffer
	printStatus(&text, &inspect.StatusReport{Uncaptured: []inspect.UncapturedStream{*u}}, false)
	if !strings.Contains(text.String(), "stream B: 5 subjects hold messages, more than the 10000 status reads: not checked") {
		t.Errorf("capped text:\n%s", text.String())
	}
	if u, err = inspect.Uncaptured(ctx, n.JS, "B", [][]string{{"b.0"}}, 5); err != nil || u == nil || u.Capped || len(u.Subjects) != 4 {
		t.Errorf("at the cap: %+v %v", u, err)
	}
	if u, err = inspect.Uncaptured(ctx, n.JS, "B", [][]string{{"b.0"}, nil}, 0); err != nil || u != nil {
		t.Errorf("a route on the whole stream: %+v %v", u, err)
	}
}
