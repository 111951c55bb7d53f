package cli_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The SRE tools link none of the worker (issue 18): the command line, the
// dead-letter store and the telemetry package do not depend on consumer or
// on internal/app, which wires it, in the development build or the release
// build. cmd/agentrelay gives the command line the worker (cli.Worker).
func TestToolsLinkNoneOfTheWorker(t *testing.T) {
	t.Parallel()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command lists the packages' dependencies: %v", err)
	}
	const module = "github.com/agentrelay/agentrelay/"
	banned := []string{module + "consumer", module + "internal/app"}
	for _, pkg := range []string{"internal/cli", "internal/dlq", "internal/telemetry", "internal/inspect"} {
		for _, tags := range []string{"", "release"} {
			// Each dependency with its imports, to name the one that
			// pulls the worker in.
			out, err := exec.Command(goCmd, "list", "-deps", "-tags="+tags, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", pkg, err)
			}
			if !strings.Contains(string(out), module+pkg+" ") {
				t.Fatalf("go list -deps %s does not list %s itself: the listing is wrong", pkg, pkg)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				importer, imports, _ := strings.Cut(line, " ")
				for _, imp := range strings.Fields(imports) {
					for _, b := range banned {
						if imp == b {
							t.Errorf("%s (tags %q) depends on %s: %s imports it", pkg, tags, b, importer)
						}
					}
				}
			}
		}
	}
}
