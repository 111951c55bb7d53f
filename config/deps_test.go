package config_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The configuration is plain data: reading YAML links none of the worker.
// internal/app maps it to the components' options.
func TestConfigLinksNoneOfTheWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"nats-io", "gobreaker", "prometheus", "agentrelay/agentrelay/consumer"} {
			if strings.Contains(dep, banned) {
				t.Errorf("config depends on %s", dep)
			}
		}
	}
}
