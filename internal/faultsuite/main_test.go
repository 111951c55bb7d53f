package faultsuite

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binary is the worker binary, built once per test run on first use and
// removed when the run ends. It is the package's only shared state: every
// suite runs the same build.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		_ = os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

// workerBinary builds ./cmd/agentrelay (with -race when this test binary
// has it, so the worker processes are checked for data races too) and
// returns its path.
func workerBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "agentrelay-faultsuite-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "agentrelay")
		args := []string{"build", "-o", binary.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/agentrelay/agentrelay/cmd/agentrelay")
		cmd := exec.Command(goTool(), args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go %v: %v\n%s", args, err, out)
		}
	})
	if binary.err != nil {
		t.Fatalf("building the worker: %v", binary.err)
	}
	return binary.path
}

// goTool finds the go command on PATH. `go test` puts the bin directory of
// the toolchain that runs it first on the test's PATH, so that is the one
// found.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // running it then fails with an error that says so
}
