package cli

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/internal/tracing"
)

// A command's spans carry its own service.name, agentrelay-cli, not the
// worker's, so that a trace view tells a replay or a publish from the
// worker's attempts; OTEL_SERVICE_NAME still wins.
func TestCommandSpansHaveTheirOwnServiceName(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	for _, svc := range []string{"", "relay-tools-eu"} {
		t.Setenv("OTEL_SERVICE_NAME", svc)
		var stderr bytes.Buffer
		e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: os.Getenv, lookupEnv: os.LookupEnv}
		tp, stop, err := toolTracer(context.Background(), e, &globalFlags{}, true)
		if err != nil {
			t.Fatal(err)
		}
		_, span := tp.Tracer("t").Start(context.Background(), "replay complaints")
		span.End()
		stop()
		want := tracing.CLIServiceName
		if svc != "" {
			want = svc
		}
		out := stderr.String()
		if !strings.Contains(out, `"Name":"replay complaints"`) || !strings.Contains(out, `"Key":"service.name","Value":{"Type":"STRING","Value":"`+want+`"}`) {
			t.Errorf("OTEL_SERVICE_NAME=%q: want the span under service.name %s:\n%s", svc, want, out)
		}
	}
	if tracing.CLIServiceName == tracing.WorkerServiceName {
		t.Error("the commands and the worker share a service name")
	}
}
