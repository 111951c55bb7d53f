// Command build-image builds agentrelay's container image without a
// container engine: it cross-compiles the static binary for each platform,
// puts it on a minimal base (users, CA certificates, no shell), writes the
// multi-platform image as an OCI image layout, writes a CycloneDX SBOM of
// the binary, and optionally pushes the image to a registry. Run it from
// deploy/ (`make image` does):
//
//	go run ./cmd/build-image -version v1.2.3 -revision $(git rev-parse HEAD) \
//	    -out ../dist/image -sbom ../dist/agentrelay.cdx.json [-push REGISTRY/agentrelay:v1.2.3]
//
// The build is reproducible: the creation time comes from -created or
// SOURCE_DATE_EPOCH (the commit time), never the clock.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/agentrelay/agentrelay/deploy/internal/image"
	"github.com/agentrelay/agentrelay/deploy/internal/sbom"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-image:", err)
		os.Exit(1)
	}
}

// errUsage marks a bad command line.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build-image", flag.ContinueOnError)
	version := fs.String("version", "dev", "the release version (image label, `agentrelay version`)")
	revision := fs.String("revision", "unknown", "the git commit")
	source := fs.String("source", "", "the repository URL (org.opencontainers.image.source)")
	created := fs.String("created", "", "the build time, RFC 3339 or Unix seconds (default $SOURCE_DATE_EPOCH, else the Unix epoch)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH[/VARIANT] to build for")
	out := fs.String("out", "../dist/image", "the OCI image layout to write (replaced)")
	sbomPath := fs.String("sbom", "../dist/agentrelay.cdx.json", "where to write the CycloneDX SBOM (empty: none)")
	digestFile := fs.String("digest-file", "", "write the image index's digest (sha256:...) to this file")
	push := fs.String("push", "", "push the image to this reference (REGISTRY/REPO:TAG), with the credentials of ~/.docker/config.json")
	repoRoot := fs.String("repo", "..", "the directory of agentrelay's go.mod")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	when, err := creationTime(*created, os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	meta := image.Meta{Version: *version, Revision: *revision, Source: *source, Created: when}

	binDir, err := os.MkdirTemp("", "agentrelay-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	build := image.GoBuild{RepoRoot: *repoRoot, Version: *version, Revision: *revision}
	var targets []image.Platform
	for _, s := range strings.Split(*platforms, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%w: -platforms %q: %w", errUsage, s, err)
		}
		bin := filepath.Join(binDir, "agentrelay-"+strings.ReplaceAll(p.String(), "/", "-"))
		if err := build.Run(ctx, *p, bin); err != nil {
			return err
		}
		targets = append(targets, image.Platform{Platform: *p, Binary: bin})
	}

	idx, err := image.Index(targets, meta)
	if err != nil {
		return err
	}
	if _, err := image.WriteLayout(*out, idx, *version); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("image %s written to %s\n", digest, *out)
	if *digestFile != "" {
		if err := os.WriteFile(*digestFile, []byte(digest.String()+"\n"), 0o644); err != nil {
			return err
		}
	}

	if *sbomPath != "" {
		b, err := sbom.FromBinary(targets[0].Binary, *version, meta.Created)
		if err != nil {
			return err
		}
		data, err := b.JSON()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(*sbomPath), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*sbomPath, data, 0o644); err != nil {
			return err
		}
		fmt.Printf("SBOM (CycloneDX %s, %d components) written to %s\n", sbom.SpecVersion, len(b.Components), *sbomPath)
	}

	if *push != "" {
		ref, err := name.ParseReference(*push)
		if err != nil {
			return fmt.Errorf("%w: -push %q: %w", errUsage, *push, err)
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		fmt.Printf("pushed %s@%s\n", ref.Context(), digest)
	}
	return nil
}

// creationTime reads -created, else SOURCE_DATE_EPOCH, else the epoch.
func creationTime(flagValue, env string) (time.Time, error) {
	v := flagValue
	if v == "" {
		v = env
	}
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(secs, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: creation time %q: want RFC 3339 or Unix seconds", errUsage, v)
	}
	return t, nil
}
