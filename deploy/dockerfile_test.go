package deploy_test

import (
	"debug/elf"
	"fmt"
	"go/version"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/deploy/internal/dockerfile"
)

// buildinfoPkg is where `agentrelay version` reads its stamps from.
const buildinfoPkg = "github.com/agentrelay/agentrelay/internal/buildinfo"

// The image is built in a Go stage and shipped as a static binary on a
// minimal base, as an unprivileged user, with the binary as entrypoint.
func TestDockerfileShape(t *testing.T) {
	f := parseDockerfile(t)
	if len(f.Stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(f.Stages))
	}

	final := f.Final()
	if !strings.HasPrefix(final.Base, "gcr.io/distroless/static") && final.Base != "scratch" {
		t.Errorf("final stage is FROM %s, want gcr.io/distroless/static* or scratch", final.Base)
	}
	users := final.Find("USER")
	if len(users) == 0 {
		t.Error("the final stage sets no USER: the container would run as root")
	} else if u, _, _ := strings.Cut(users[len(users)-1].Args, ":"); u == "0" || u == "root" || !regexp.MustCompile(`^[0-9]+$`).MatchString(u) {
		t.Errorf("USER %s must be a numeric non-root user", users[len(users)-1].Args)
	}

	// The entrypoint is the binary the build stage produced.
	build, src := buildStage(t, f)
	if out := flagValue(goBuildCommand(t, build).args, "-o"); out != src {
		t.Errorf("the final stage copies %s from stage %s, but its go build writes %s", src, build.Name, out)
	}

	// The build stage's Go is at least what go.mod asks for.
	goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if v := f.GlobalArgs["GO_VERSION"]; version.Compare("go"+v, "go"+string(m[1])) < 0 {
		t.Errorf("ARG GO_VERSION=%s is older than go.mod's go %s", v, m[1])
	}
	if !strings.Contains(build.Base, "${GO_VERSION}") {
		t.Errorf("the build stage FROM %s does not use GO_VERSION", build.Base)
	}
}

// buildStage returns the stage that builds the image's entrypoint, and the
// path the final stage copies it from.
func buildStage(t *testing.T, f *dockerfile.File) (dockerfile.Stage, string) {
	t.Helper()
	entry := f.Final().Find("ENTRYPOINT")
	if len(entry) != 1 {
		t.Fatalf("want one ENTRYPOINT in the final stage, got %d", len(entry))
	}
	argv, ok := entry[0].ExecForm()
	if !ok || len(argv) != 1 {
		t.Fatalf("ENTRYPOINT %s: want the exec form with the binary alone, so that signals reach it", entry[0].Args)
	}
	for _, c := range f.Final().Find("COPY") {
		from, ok := c.Flag("from")
		words := strings.Fields(c.Args)
		if !ok || len(words) != 2 || words[1] != argv[0] {
			continue
		}
		build, ok := f.Stage(from)
		if !ok {
			t.Fatalf("COPY --from=%s: no such stage", from)
		}
		return build, words[0]
	}
	t.Fatalf("no COPY --from=<build stage> puts the binary at the ENTRYPOINT %s", argv[0])
	return dockerfile.Stage{}, ""
}

// goCommand is a go command line from a RUN instruction.
type goCommand struct {
	env  []string // VAR=value assignments before it
	args []string // after "go"
}

// goBuildCommand finds the stage's `go build` RUN instruction.
func goBuildCommand(t *testing.T, s dockerfile.Stage) goCommand {
	t.Helper()
	for _, run := range s.Find("RUN") {
		words, err := dockerfile.ShellWords(run.Args)
		if err != nil {
			t.Fatalf("line %d: %v", run.Line, err)
		}
		var cmd goCommand
		for len(words) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[0]) {
			cmd.env, words = append(cmd.env, words[0]), words[1:]
		}
		if len(words) >= 2 && words[0] == "go" && words[1] == "build" {
			cmd.args = words[1:]
			return cmd
		}
	}
	t.Fatalf("stage %s has no `go build` RUN instruction", s.Name)
	return goCommand{}
}

// buildLikeTheImage runs the Dockerfile's own go build command, with its
// build arguments set to version and revision, for this machine's platform,
// and returns the binary. The build flags are checked on the way: a static
// (CGO-free), trimmed build stamped with the version and revision.
func buildLikeTheImage(t *testing.T, ver, rev string) string {
	t.Helper()
	build, _ := buildStage(t, parseDockerfile(t))
	args := map[string]string{"VERSION": ver, "REVISION": rev, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	for _, a := range build.Find("ARG") {
		name, _, _ := strings.Cut(a.Args, "=")
		if _, ok := args[name]; !ok {
			t.Fatalf("build stage ARG %s: this test does not know what to set it to", name)
		}
	}
	raw := goBuildCommand(t, build)
	var cmd goCommand
	for _, e := range raw.env {
		cmd.env = append(cmd.env, dockerfile.Expand(e, args))
	}
	for _, a := range raw.args {
		cmd.args = append(cmd.args, dockerfile.Expand(a, args))
	}

	if !slices.Contains(cmd.env, "CGO_ENABLED=0") {
		t.Errorf("the build must set CGO_ENABLED=0 for a static binary (env %q)", cmd.env)
	}
	if !slices.Contains(cmd.args, "-trimpath") {
		t.Error("the build must use -trimpath")
	}
	ldflags := flagValue(cmd.args, "-ldflags")
	for _, want := range []string{"-X " + buildinfoPkg + ".version=" + ver, "-X " + buildinfoPkg + ".revision=" + rev} {
		if !strings.Contains(ldflags, want) {
			t.Errorf("-ldflags %q must stamp %q", ldflags, want)
		}
	}

	bin := filepath.Join(t.TempDir(), path.Base(flagValue(cmd.args, "-o")))
	for i, a := range cmd.args {
		if a == "-o" {
			cmd.args[i+1] = bin
		}
	}
	goCmd := exec.Command(goTool(t), cmd.args...)
	goCmd.Dir = repoRoot // the Docker build context
	goCmd.Env = append(os.Environ(), cmd.env...)
	if out, err := goCmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.args, " "), err, out)
	}
	return bin
}

// goTool is the go command running this test: `go test` puts its own
// GOROOT/bin first on the test's PATH.
func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The Dockerfile's build works, and the binary it makes is static and
// reports the version and revision it was stamped with.
func TestDockerfileBuildsAStampedStaticBinary(t *testing.T) {
	const ver, rev = "v9.8.7-dockerfile-test", "0123456789abcdef0123456789abcdef01234567"
	bin := buildLikeTheImage(t, ver, rev)

	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked (it has an ELF interpreter); distroless/static has no libc")
		}
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	want := fmt.Sprintf("agentrelay %s\nrevision %s\n", ver, rev)
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("`agentrelay version` printed\n%s\nwant it to start with\n%s", out, want)
	}
}
