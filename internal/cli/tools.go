package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/inspect"
	"github.com/agentrelay/agentrelay/internal/natsconn"
	"github.com/agentrelay/agentrelay/internal/redact"
)

// toolConn is what the SRE subcommands share: the worker's configuration
// and a connection made with the worker's own NATS options.
type toolConn struct {
	cfg *config.Config
	nc  *nats.Conn
	js  jetstream.JetStream
}

func (t *toolConn) Close() { t.nc.Close() }

// source is what internal/inspect reads through this connection.
func (t *toolConn) source() *inspect.Source {
	return &inspect.Source{Config: t.cfg, NC: t.nc, JS: t.js}
}

// connectTool loads the configuration and connects like the worker does.
func connectTool(ctx context.Context, e *env, g *globalFlags) (*toolConn, error) {
	cfg, err := g.loadConfig(e)
	if err != nil {
		return nil, err
	}
	nc, err := dialNATS(ctx, cfg.NATS, g.connectTimeout)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &toolConn{cfg: cfg, nc: nc, js: js}, nil
}

// ErrNATSUnreachable: a one-shot command could not connect to NATS within
// --connect-timeout.
var ErrNATSUnreachable = errors.New("cannot reach NATS")

// dialNATS connects a one-shot command. Unlike the worker, which waits for
// NATS as long as it takes, it gives up after timeout (the connection's own
// connect timeout included), with the servers named (credentials
// redacted) and what to check.
func dialNATS(ctx context.Context, c config.NATS, timeout time.Duration) (*nats.Conn, error) {
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	if c.ConnectTimeout.D() <= 0 || c.ConnectTimeout.D() > timeout {
		c.ConnectTimeout = config.Duration(timeout)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	// The SRE role's own inbox prefix: the permissions let it read replies
	// there only (deploy/nats/auth).
	nc, err := natsconn.Connect(cctx, c, nil, natsconn.Hooks{}, nats.CustomInboxPrefix(natsconn.SREInboxPrefix))
	if err == nil {
		return nc, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w at %s after %v: %s\nhint: is NATS running there, and reachable from here? The servers come from nats.url in the configuration, $%s, or publish --server; --connect-timeout waits longer",
		ErrNATSUnreachable, redact.URLs(c.URL), time.Since(start).Round(100*time.Millisecond), redact.URLs(err.Error()), config.EnvNATSURL)
}

// connectForRoute connects and finds the named route, with its defaults.
func connectForRoute(ctx context.Context, e *env, g *globalFlags, name string) (*toolConn, inspect.Route, error) {
	t, err := connectTool(ctx, e, g)
	if err != nil {
		return nil, inspect.Route{}, err
	}
	r, err := t.route(name)
	if err != nil {
		t.Close()
		return nil, inspect.Route{}, err
	}
	return t, r, nil
}

// route finds a route of the configuration by name, with its defaults.
func (t *toolConn) route(name string) (inspect.Route, error) {
	var names []string
	for _, r := range t.cfg.Routes {
		if r.Name == name {
			return inspect.RouteOf(r), nil
		}
		names = append(names, r.Name)
	}
	hint := suggestion(name, names)
	if !strings.HasPrefix(hint, " (known") {
		hint += " (routes: " + strings.Join(names, ", ") + ")"
	}
	return inspect.Route{}, usageError{fmt.Errorf("no route %q in the configuration%s", name, hint)}
}

// parseTime reads an absolute time (RFC 3339, or "2006-01-02 15:04:05" in
// UTC) or a duration before now ("2h", "3d").
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, ok := parseAbsolute(s); ok {
		return t, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither a time (RFC 3339) nor a duration like 2h or 3d", s)
	}
	return now.Add(-d), nil
}

func parseAbsolute(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
