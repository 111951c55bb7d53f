// Command relayprof is agentrelay's release binary (build it with -tags
// release) plus a heap profile on SIGUSR1 into $RELAYPROF_DIR (see package
// heapdump): `make bench-profile` uses it to compare what agentrelay holds,
// at idle and per message in flight, with the bare loop. Its main is
// cmd/agentrelay's, so that nothing else differs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/bench/heapdump"
	"github.com/agentrelay/agentrelay/internal/cli"
)

func main() {
	heapdump.Listen(os.Getenv("RELAYPROF_DIR"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(cli.Main(ctx, app.Worker{}, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
