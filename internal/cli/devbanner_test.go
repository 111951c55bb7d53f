//go:build !release

package cli

import (
	"bytes"
	"strings"
	"testing"
)

// The banner names a path that stays: the binary make run builds, or an
// installed one; from `go run`, whose binary lives in a temporary folder
// or the go command's cache, it names `go run` with the module path.
func TestBannerNamesAStablePathOrGoRun(t *testing.T) {
	t.Parallel()
	for path, goRun := range map[string]bool{
		"/tmp/go-build552109839/b001/exe/agentrelay":                            true,
		"/root/.cache/go-build/90/90216cab23d976c91a20dc48c2ebea8-d/agentrelay": true,
		"/home/sre/agentrelay/bin/agentrelay-dev":                               false,
		"/usr/local/bin/agentrelay":                                             false,
		"/tmp/go-build123/b001/cli.test":                                        false,
	} {
		if got := builtByGoRun(path); got != goRun {
			t.Errorf("builtByGoRun(%q) = %v, want %v", path, got, goRun)
		}
	}

	var stderr bytes.Buffer
	printDevBanner(&env{stderr: &stderr}, devBanner{natsURL: "nats://127.0.0.1:4222", apiURL: "http://127.0.0.1:8089",
		metricsAddr: "127.0.0.1:9090", configFile: "/data/agentrelay.yaml", executable: goRunCommand})
	banner := stderr.String()
	if !strings.Contains(banner, "\n  "+goRunCommand+" status --config /data/agentrelay.yaml\n") {
		t.Errorf("from go run, the banner's commands are not `%s ...`, unquoted:\n%s", goRunCommand, banner)
	}
	if !strings.Contains(banner, "make run") {
		t.Errorf("from go run, the banner does not point at make run:\n%s", banner)
	}
}
