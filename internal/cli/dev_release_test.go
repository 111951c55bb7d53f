//go:build release

package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/internal/app"
)

// In a release build, dev and emulator are not there, and say where they
// are instead of cobra's "unknown command" (run by make release-check).
func TestReleaseBuildPointsDevAtMakeRun(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"dev", "emulator"} {
		var stderr bytes.Buffer
		code := Main(context.Background(), app.Worker{}, []string{cmd, "--nats-port", "0"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
		if code != ExitConfig || !strings.Contains(stderr.String(), "not in release builds") || !strings.Contains(stderr.String(), "make run") {
			t.Errorf("%s: exit %d, stderr %q; want %d and a pointer to make run", cmd, code, stderr.String(), ExitConfig)
		}
	}
}
