package dockerfile_test

import (
	"slices"
	"testing"

	"github.com/agentrelay/agentrelay/deploy/internal/dockerfile"
)

const src = `# syntax=docker/dockerfile:1
ARG GO_VERSION=1.26.8
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG VERSION=dev
# a comment between instructions
RUN --mount=type=cache,target=/go/pkg/mod \
    CGO_ENABLED=0 go build -ldflags "-X main.v=${VERSION}" \
      -o /out/app ./cmd/app

FROM scratch
COPY --from=build /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
`

func TestParse(t *testing.T) {
	f, err := dockerfile.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	if f.GlobalArgs["GO_VERSION"] != "1.26.8" {
		t.Errorf("global args %v", f.GlobalArgs)
	}
	build, ok := f.Stage("build")
	if !ok || build.Base != "golang:${GO_VERSION}" || build.Platform != "$BUILDPLATFORM" {
		t.Fatalf("build stage %+v", build)
	}
	run := build.Find("RUN")
	if len(run) != 1 || run[0].Line != 6 {
		t.Fatalf("RUN %+v", run)
	}
	if v, _ := run[0].Flag("mount"); v != "type=cache,target=/go/pkg/mod" {
		t.Errorf("--mount %q", v)
	}
	words, err := dockerfile.ShellWords(dockerfile.Expand(run[0].Args, map[string]string{"VERSION": "v1"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CGO_ENABLED=0", "go", "build", "-ldflags", "-X main.v=v1", "-o", "/out/app", "./cmd/app"}
	if !slices.Equal(words, want) {
		t.Errorf("words %q, want %q", words, want)
	}
	final := f.Final()
	if final.Base != "scratch" || final.Find("USER")[0].Args != "65532:65532" {
		t.Errorf("final stage %+v", final)
	}
	if argv, ok := final.Find("ENTRYPOINT")[0].ExecForm(); !ok || !slices.Equal(argv, []string{"/app"}) {
		t.Errorf("ENTRYPOINT %q", argv)
	}
}

func TestShellWords(t *testing.T) {
	for in, want := range map[string][]string{
		`a "b c" 'd e' f\ g`: {"a", "b c", "d e", "f g"},
		`x="1 2"y`:           {"x=1 2y"},
		`"esc \" \$ \\ \n"`:  {`esc " $ \ \n`},
		"  spaced\tout  ":    {"spaced", "out"},
	} {
		got, err := dockerfile.ShellWords(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ShellWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := dockerfile.ShellWords(`"open`); err == nil {
		t.Error("an unterminated quote must be an error")
	}
}
