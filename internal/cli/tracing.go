package cli

import (
	"context"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/tracing"
)

// toolTracer is the tracer provider of a one-shot command: the one the
// OTEL_* environment asks for (see tracing.Start; console spans go to
// stderr, beside the command's messages), or none. With always, the
// command's spans are sampled whatever OTEL_TRACES_SAMPLER says, and when
// the environment configures no exporter they still get ids, so that the
// trace context the command writes into a message starts a trace the
// worker continues. The returned stop flushes the spans; call it before
// exiting.
func toolTracer(ctx context.Context, e *env, g *globalFlags, always bool) (trace.TracerProvider, func(), error) {
	log, err := logger(e, config.Log{Level: "warn", Format: g.logConfig().Format})
	if err != nil {
		return nil, nil, err
	}
	var extra []sdktrace.TracerProviderOption
	if always {
		extra = append(extra, sdktrace.WithSampler(sdktrace.AlwaysSample()))
	}
	tr, err := tracing.Start(ctx, tracing.CLIServiceName, e.getenv, e.stderr, log, extra...)
	if err != nil {
		return nil, nil, usageError{err}
	}
	if !tr.Config.On && always {
		tp := sdktrace.NewTracerProvider(extra...)
		return tp, func() { _ = tp.Shutdown(context.Background()) }, nil
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), tracing.ShutdownTimeout)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			log.Warn("tracing: flushing spans", "err", tr.Scrubbed(err))
		}
	}
	return tr.Provider, stop, nil
}
