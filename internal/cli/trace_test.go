package cli

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var tracedLine = regexp.MustCompile(`sequence (\d+), trace ([0-9a-f]{32})\n`)

// publish --trace starts a trace: the stored message carries a valid,
// sampled traceparent in the printed trace. With an exporter configured
// by the environment the producer span is exported before the command
// exits; without one it is not, but the trace id still holds.
func TestPublishTraceWritesATraceparent(t *testing.T) {
	s := newStack(t)
	s.nats.CreateStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"work.>"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.nats.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	traceparent := regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)

	for _, exporter := range []string{"", "console"} {
		t.Setenv("OTEL_TRACES_EXPORTER", exporter)
		code, out, errOut := s.cli("", "publish", "work.ok.x", "--input", "hi", "--msg-id", "traced-"+exporter+"1", "--trace")
		if code != 0 {
			t.Fatalf("exporter %q: exit %d: %s %s", exporter, code, out, errOut)
		}
		m := tracedLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("exporter %q: no trace id in %q", exporter, out)
		}
		var seq uint64
		for _, c := range m[1] {
			seq = seq*10 + uint64(c-'0')
		}
		msg, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		tp := traceparent.FindStringSubmatch(msg.Header.Get("traceparent"))
		if tp == nil || tp[1] != m[2] || tp[1] == strings.Repeat("0", 32) {
			t.Fatalf("exporter %q: stored traceparent %q, want a sampled one in trace %s", exporter, msg.Header.Get("traceparent"), m[2])
		}
		exported := strings.Contains(errOut, `"SpanID":"`+tp[2]+`"`) && strings.Contains(errOut, `"Name":"send work.ok.x"`)
		if exported != (exporter == "console") {
			t.Errorf("exporter %q: span exported = %v; stderr %q", exporter, exported, errOut)
		}
	}

	// Without --trace nothing is added.
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	code, out, _ := s.cli("", "publish", "work.ok.x", "--input", "hi", "--msg-id", "untraced")
	if code != 0 || strings.Contains(out, "trace") {
		t.Fatalf("untraced publish: %d %q", code, out)
	}
	msg, err := st.GetLastMsgForSubject(ctx, "work.ok.x")
	if err != nil {
		t.Fatal(err)
	}
	if v := msg.Header.Get("traceparent"); v != "" {
		t.Errorf("untraced publish wrote traceparent %q", v)
	}
}
