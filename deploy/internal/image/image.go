// Package image builds agentrelay's container image without a container
// engine, as ko does: a static Go binary on a minimal base assembled from
// files (no shell, no package manager), written as an OCI image layout that
// any registry client can push. The build is reproducible: the same binary,
// metadata and creation time give the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The image's fixed shape. The Deployment's securityContext (runAsUser,
// runAsGroup) and the container's args name the same user and command.
const (
	// UID and GID of the unprivileged user the image runs as (distroless's
	// "nonroot").
	UID, GID = 65532, 65532
	// BinaryPath is where the binary sits, and the entrypoint.
	BinaryPath = "/agentrelay"
	// CABundlePath is where Go's crypto/x509 looks first on Linux.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// MetricsPort serves /metrics, /healthz and /readyz.
	MetricsPort = "9090/tcp"
)

// User is the image config's user, as UID:GID.
var User = strconv.Itoa(UID) + ":" + strconv.Itoa(GID)

// Cmd is the image's default command, after the entrypoint.
var Cmd = []string{"run", "--config", "/etc/agentrelay/agentrelay.yaml"}

// ErrNoBinary is returned when the binary to package cannot be read.
var ErrNoBinary = errors.New("no binary to package")

// Meta is what the image says about itself in its labels.
type Meta struct {
	Version  string // the release, e.g. v1.2.3 (org.opencontainers.image.version)
	Revision string // the git commit (org.opencontainers.image.revision)
	Source   string // the repository URL (org.opencontainers.image.source)
	// Created is the build time; reproducible builds pass the commit's time
	// (SOURCE_DATE_EPOCH). Zero means the Unix epoch.
	Created time.Time
}

// Labels returns the OCI annotations the image config carries.
func (m Meta) Labels() map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "agentrelay",
		"org.opencontainers.image.description": "NATS JetStream to Workspace Agents trigger relay",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     m.Version,
		"org.opencontainers.image.revision":    m.Revision,
		"org.opencontainers.image.created":     m.created().Format(time.RFC3339),
	}
	if m.Source != "" {
		l["org.opencontainers.image.source"] = m.Source
	}
	return l
}

func (m Meta) created() time.Time {
	if m.Created.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return m.Created.UTC().Truncate(time.Second)
}

// file is one entry of a layer.
type file struct {
	name     string // without a leading slash
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

// passwd and group name root and the unprivileged user, with no login
// shell (there is none in the image).
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// CABundle returns the Mozilla NSS root certificates Go's x509roots module
// pins, as PEM. Roots that NSS trusts only with a distrust-after date are
// left out: a PEM file cannot carry that constraint.
func CABundle() []byte {
	var b bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return b.Bytes()
}

// baseFiles are the base layer: users, CA certificates, the user's home
// and a world-writable /tmp, and nothing that runs.
func baseFiles() []file {
	return []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: path.Clean(CABundlePath)[1:], mode: 0o644, data: CABundle()},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: UID, gid: GID, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
}

// layer returns a layer of the files, every entry stamped with the same
// time so that the layer's digest depends on its content alone.
func layer(files []file, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: mtime, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// Image returns the image of one platform: the base layer, then a layer with
// the binary read from binPath (a static build for that platform).
func Image(binPath string, platform v1.Platform, m Meta) (v1.Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoBinary, err)
	}
	created := m.created()
	base, err := layer(baseFiles(), created)
	if err != nil {
		return nil, err
	}
	app, err := layer([]file{{name: BinaryPath[1:], mode: 0o755, data: bin}}, created)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "agentrelay base: /etc/passwd, /etc/group, CA certificates, /home/nonroot, /tmp", Comment: "no shell"}},
		mutate.Addendum{Layer: app, MediaType: types.OCILayer, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "agentrelay " + m.Version + ": " + BinaryPath}},
	)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = platform.OS, platform.Architecture, platform.Variant
	cfg.Created = v1.Time{Time: created}
	cfg.Author = "agentrelay"
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{BinaryPath}
	cfg.Config.Cmd = Cmd
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=" + CABundlePath}
	cfg.Config.ExposedPorts = map[string]struct{}{MetricsPort: {}}
	cfg.Config.Labels = m.Labels()
	return mutate.ConfigFile(img, cfg)
}

// Platform is one target of the build.
type Platform struct {
	v1.Platform
	Binary string // the static binary built for it
}

// Index returns the multi-platform image index of the platforms' images,
// annotated with the version and revision.
func Index(platforms []Platform, m Meta) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := Image(p.Binary, p.Platform, m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Platform, err)
		}
		plat := p.Platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	}
	return mutate.Annotations(idx, m.Labels()).(v1.ImageIndex), nil
}

// WriteLayout writes the index as an OCI image layout in dir (created, or
// replaced when it holds one), tagged with the version.
func WriteLayout(dir string, idx v1.ImageIndex, version string) (layout.Path, error) {
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	return p, p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": version}))
}

// buildinfoPkg is where `agentrelay version` reads its stamp from.
const buildinfoPkg = "github.com/agentrelay/agentrelay/internal/buildinfo"

// GoBuild describes the build of the binary: static (CGO off), trimmed of
// local paths, without debug symbols, and stamped with the version and
// revision that `agentrelay version` and agentrelay_build_info show.
type GoBuild struct {
	Go       string // the go command; "go" when empty
	RepoRoot string // the directory of agentrelay's go.mod
	Version  string
	Revision string
}

// Command returns the go build command that writes the binary for platform
// to out.
func (b GoBuild) Command(ctx context.Context, platform v1.Platform, out string) *exec.Cmd {
	goCmd := b.Go
	if goCmd == "" {
		goCmd = "go"
	}
	ldflags := "-s -w -X " + buildinfoPkg + ".version=" + b.Version + " -X " + buildinfoPkg + ".revision=" + b.Revision
	// The release build: -tags release leaves the dev command's embedded
	// nats-server and API emulator out of the image's binary.
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false", "-tags", "release", "-ldflags", ldflags, "-o", out, "./cmd/agentrelay")
	cmd.Dir = b.RepoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+platform.OS, "GOARCH="+platform.Architecture)
	if platform.Architecture == "arm" && platform.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(platform.Variant, "v"))
	}
	return cmd
}

// Run builds the binary for platform into out.
func (b GoBuild) Run(ctx context.Context, platform v1.Platform, out string) error {
	if output, err := b.Command(ctx, platform, out).CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", platform, err, output)
	}
	return nil
}
