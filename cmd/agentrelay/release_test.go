package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// devOnly are what `agentrelay dev` and `agentrelay emulator` need and a
// worker never runs.
var devOnly = []string{
	"github.com/nats-io/nats-server/v2/server",
	"github.com/agentrelay/agentrelay/agentapi/emulator",
	"github.com/agentrelay/agentrelay/internal/natsembed",
}

// The release build (-tags release: make build, the image) links neither
// nats-server nor the API emulator; the development build (make run, go
// run) does, so the tag is what makes the difference. (make release-check
// checks the built binary itself with go version -m and go tool nm.)
func TestReleaseBuildLinksNoDevServers(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the build's packages: %v", err)
	}
	deps := func(tags string) []string {
		out, err := exec.Command(goCmd, "list", "-deps", "-tags="+tags, ".").Output()
		if err != nil {
			t.Fatalf("go list -deps -tags=%s: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	release, dev := deps("release"), deps("")
	if !slices.Contains(release, "github.com/agentrelay/agentrelay/internal/cli") {
		t.Fatal("the release build does not even link the command line: the listing is wrong")
	}
	for _, p := range devOnly {
		if slices.Contains(release, p) {
			t.Errorf("the release build links %s", p)
		}
		if !slices.Contains(dev, p) {
			t.Errorf("the development build does not link %s: `agentrelay dev` would not work", p)
		}
	}
	for _, p := range release {
		if strings.HasPrefix(p, "google.golang.org/grpc") {
			t.Errorf("the release build links %s (tracing exports over OTLP/HTTP only)", p)
			break
		}
	}
}
