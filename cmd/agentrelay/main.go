// Command agentrelay relays NATS JetStream messages to Workspace Agents
// triggers. See `agentrelay --help` and the README. It wires the worker
// (internal/app) into the command line (internal/cli), which links none of
// it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/cli"
)

func main() {
	// SIGTERM (Kubernetes) and SIGINT (Ctrl-C) start a graceful drain; a
	// second signal kills the process the default way.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(cli.Main(ctx, app.Worker{}, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
