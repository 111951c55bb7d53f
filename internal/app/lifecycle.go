package app

import (
	"context"
	"log/slog"
	"time"
)

// component is a part of the worker that Run starts and stops.
type component struct {
	name string
	// start starts the component, or says why it cannot. It returns ctx's
	// error when ctx ends before the component has started. Nil: nothing
	// to start.
	start func(ctx context.Context) error
	// stop stops the started component and returns once it has stopped.
	// Nil: nothing to stop.
	stop func()
}

// lifecycle starts components in the order given and stops the started
// ones in the reverse order: a component may use those started before it
// (the relay the NATS connection, every part the listener that reports the
// worker's health), so it stops before them. The zero value, with a
// logger, is ready.
type lifecycle struct {
	log     *slog.Logger
	started []component
	// failed names the component whose start failed, if one did.
	failed string
}

// start starts cs in order, and stops at the first whose start fails or
// when ctx ends, returning that error; the components started until then
// stay started, for stop.
func (l *lifecycle) start(ctx context.Context, cs ...component) error {
	for _, c := range cs {
		if err := ctx.Err(); err != nil {
			l.failed = c.name
			return err
		}
		began := time.Now()
		if c.start != nil {
			if err := c.start(ctx); err != nil {
				l.failed = c.name
				return err
			}
		}
		l.started = append(l.started, c)
		l.log.Debug("started", "component", c.name, "took", time.Since(began))
	}
	return nil
}

// stop stops the started components, the last started first.
func (l *lifecycle) stop() {
	for len(l.started) > 0 {
		c := l.started[len(l.started)-1]
		l.started = l.started[:len(l.started)-1]
		began := time.Now()
		if c.stop != nil {
			c.stop()
		}
		l.log.Debug("stopped", "component", c.name, "took", time.Since(began))
	}
}
