package cli

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/inspect"
)

func openStoreT(t *testing.T, tc *toolConn) *dlq.Store {
	t.Helper()
	s, err := dlq.Open(context.Background(), tc.js, appconfig.DeadLetter(tc.cfg.DeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func firstLetter(t *testing.T, s *dlq.Store) dlq.Letter {
	t.Helper()
	var l dlq.Letter
	err := s.Scan(context.Background(), dlq.Filter{Limit: 1}, false, func(x dlq.Letter) (bool, error) { l = x; return false, nil })
	if err != nil || l.Seq == 0 {
		t.Fatalf("no dead letter: %v", err)
	}
	return l
}

func replayID(l dlq.Letter) string { return l.ID(dlqName).ReplayMsgID() }

// toolConn connects as the commands do, with the stack's configuration.
func (s *stack) toolConn() *toolConn {
	s.t.Helper()
	tc, err := connectTool(context.Background(), &env{stdout: io.Discard, stderr: io.Discard, getenv: os.Getenv, lookupEnv: os.LookupEnv, worker: app.Worker{}}, &globalFlags{configPath: s.cfgPath})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(tc.Close)
	return tc
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// statusReport is what `status --json` prints.
type statusReport = inspect.StatusReport
