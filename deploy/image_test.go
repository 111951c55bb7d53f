package deploy_test

import (
	"archive/tar"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/agentrelay/agentrelay/deploy/internal/image"
	"github.com/agentrelay/agentrelay/deploy/internal/sbom"
)

// hostPlatform is the platform the tests build for, so that the binary in
// the image can run here.
var hostPlatform = v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}

// buildBinary builds agentrelay the way the image build does (static,
// trimmed, stamped) for this machine, and returns its path.
func buildBinary(t *testing.T, ver, rev string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentrelay")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b := image.GoBuild{Go: goTool(t), RepoRoot: repoRoot, Version: ver, Revision: rev}
	if err := b.Run(ctx, hostPlatform, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// layerFiles reads every entry of every layer of img: name → header.
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	headers, contents := map[string]*tar.Header{}, map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			name := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
			headers[name] = h
			if h.Typeflag == tar.TypeReg {
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				contents[name] = data
			}
		}
		_ = rc.Close()
	}
	return headers, contents
}

// The image is built here without Docker, from a base assembled from files
// and the static binary, and is what a restricted pod needs: a non-root
// numeric user, the binary as entrypoint, labels that say what it is, no
// shell or anything else that runs, CA certificates for the HTTPS API. The
// binary taken back out of its layer runs and reports its stamp.
func TestImageBuiltWithoutDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const ver, rev = "v9.8.7-image-test", "89abcdef0123456789abcdef0123456789abcdef"
	bin := buildBinary(t, ver, rev)
	meta := image.Meta{Version: ver, Revision: rev, Source: "https://github.com/agentrelay/agentrelay", Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	idx, err := image.Index([]image.Platform{{Platform: hostPlatform, Binary: bin}}, meta)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := image.WriteLayout(dir, idx, ver); err != nil {
		t.Fatal(err)
	}

	// Read it back from the layout, as a registry client would.
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	outer, err := stored.IndexManifest()
	if err != nil || len(outer.Manifests) != 1 {
		t.Fatalf("layout index: %v, %d entries", err, len(outer.Manifests))
	}
	if got := outer.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != ver {
		t.Errorf("the layout names the image %q, want %q", got, ver)
	}
	multi, err := stored.ImageIndex(outer.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := multi.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || !im.Manifests[0].Platform.Equals(hostPlatform) {
		t.Fatalf("index manifests %+v, want one for %s", im.Manifests, hostPlatform)
	}
	img, err := multi.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("config", func(t *testing.T) {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != fmt.Sprintf("%d:%d", image.UID, image.GID) || image.UID == 0 {
			t.Errorf("user %q, want the numeric non-root %d:%d", c.User, image.UID, image.GID)
		}
		if !slices.Equal(c.Entrypoint, []string{"/agentrelay"}) {
			t.Errorf("entrypoint %q, want [/agentrelay]", c.Entrypoint)
		}
		if !slices.Equal(c.Cmd, []string{"run", "--config", "/etc/agentrelay/agentrelay.yaml"}) {
			t.Errorf("cmd %q", c.Cmd)
		}
		if _, ok := c.ExposedPorts["9090/tcp"]; !ok {
			t.Errorf("exposed ports %v, want 9090/tcp (metrics.listen)", c.ExposedPorts)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.version":  ver,
			"org.opencontainers.image.revision": rev,
			"org.opencontainers.image.source":   meta.Source,
			"org.opencontainers.image.created":  "2026-12-01T10:00:00Z",
			"org.opencontainers.image.title":    "agentrelay",
		} {
			if c.Labels[k] != want {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], want)
			}
		}
		if cf.OS != hostPlatform.OS || cf.Architecture != hostPlatform.Architecture {
			t.Errorf("config platform %s/%s, want %s", cf.OS, cf.Architecture, hostPlatform)
		}
		if !cf.Created.Time.Equal(meta.Created) {
			t.Errorf("created %v, want %v", cf.Created.Time, meta.Created)
		}
	})

	headers, contents := layerFiles(t, img)
	t.Run("no shell, nothing else that runs", func(t *testing.T) {
		for name, h := range headers {
			base := filepath.Base(name)
			if slices.Contains([]string{"sh", "bash", "ash", "dash", "zsh", "busybox", "toybox"}, base) || strings.HasPrefix(name, "/bin") || strings.HasPrefix(name, "/usr/bin") || strings.HasPrefix(name, "/sbin") {
				t.Errorf("the image holds %s", name)
			}
			if h.Typeflag == tar.TypeReg && h.Mode&0o111 != 0 && name != "/agentrelay" {
				t.Errorf("%s is executable; only /agentrelay may be", name)
			}
			if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
				t.Errorf("%s is a link", name)
			}
		}
		passwd := string(contents["/etc/passwd"])
		if !strings.Contains(passwd, fmt.Sprintf(":%d:%d:", image.UID, image.GID)) {
			t.Errorf("/etc/passwd names no user %d:%d:\n%s", image.UID, image.GID, passwd)
		}
		if h := headers["/tmp"]; h == nil || h.Mode&0o1777 != 0o1777 {
			t.Error("/tmp must exist, world-writable with the sticky bit")
		}
		if h := headers["/home/nonroot"]; h == nil || h.Uid != image.UID {
			t.Error("the user's home must exist and be its own")
		}
	})

	t.Run("CA certificates", func(t *testing.T) {
		pool := x509.NewCertPool()
		rest, n := contents[image.CABundlePath], 0
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			pool.AddCert(c)
			n++
		}
		if n < 100 {
			t.Errorf("%s holds %d certificates; the trigger API is HTTPS", image.CABundlePath, n)
		}
	})

	t.Run("the binary in its layer runs", func(t *testing.T) {
		h := headers["/agentrelay"]
		if h == nil || h.Mode&0o111 == 0 || h.Uid != 0 {
			t.Fatalf("/agentrelay %+v: want an executable owned by root, which the user cannot change", h)
		}
		extracted := filepath.Join(t.TempDir(), "agentrelay")
		if err := os.WriteFile(extracted, contents["/agentrelay"], 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(extracted, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("agentrelay version: %v\n%s", err, out)
		}
		if want := fmt.Sprintf("agentrelay %s\nrevision %s\n", ver, rev); !strings.HasPrefix(string(out), want) {
			t.Errorf("`agentrelay version` printed\n%s\nwant it to start with\n%s", out, want)
		}
		// The release build: no embedded nats-server or API emulator.
		mods, err := exec.Command("go", "version", "-m", extracted).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m: %v\n%s", err, mods)
		}
		if strings.Contains(string(mods), "github.com/nats-io/nats-server") || !strings.Contains(string(mods), "-tags=release") {
			t.Errorf("the image's binary is not the release build (nats-server linked, or no release tag):\n%s", mods)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		again, err := image.Index([]image.Platform{{Platform: hostPlatform, Binary: bin}}, meta)
		if err != nil {
			t.Fatal(err)
		}
		d1, _ := idx.Digest()
		d2, _ := again.Digest()
		if d1 != d2 {
			t.Errorf("two builds of the same binary: %s and %s", d1, d2)
		}
	})

	t.Run("pushed to a registry and pulled back", func(t *testing.T) {
		reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		defer reg.Close()
		ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/agentrelay:"+ver, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(ref, idx); err != nil {
			t.Fatal(err)
		}
		pulled, err := remote.Index(ref)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := idx.Digest()
		if got, _ := pulled.Digest(); got != want {
			t.Errorf("pulled %s, pushed %s", got, want)
		}
	})

	t.Run("SBOM", func(t *testing.T) {
		b, err := sbom.FromBinary(bin, ver, meta.Created)
		if err != nil {
			t.Fatal(err)
		}
		data, err := b.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil || doc["bomFormat"] != "CycloneDX" {
			t.Fatalf("not a CycloneDX document: %v", err)
		}
		if b.Metadata.Component.Name != "github.com/agentrelay/agentrelay" || b.Metadata.Component.Version != ver {
			t.Errorf("the SBOM describes %s %s", b.Metadata.Component.Name, b.Metadata.Component.Version)
		}
		// Every module the worker requires at run time is listed at the
		// version go.mod selects, with its go.sum hash.
		src, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]sbom.Component{}
		for _, c := range b.Components {
			listed[c.Name] = c
		}
		for _, path := range []string{"github.com/nats-io/nats.go", "github.com/prometheus/client_golang"} {
			m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(path) + ` (v\S+)`).FindSubmatch(src)
			if m == nil {
				t.Fatalf("../go.mod does not require %s", path)
			}
			want := string(m[1])
			c, ok := listed[path]
			if !ok || c.Version != want || len(c.Hashes) != 1 || c.PURL != "pkg:golang/"+path+"@"+want {
				t.Errorf("SBOM component %s = %+v, want version %s with its hash", path, c, want)
			}
		}
		if _, ok := listed["std"]; !ok {
			t.Error("the SBOM does not list the Go standard library")
		}
		again, _ := sbom.FromBinary(bin, ver, meta.Created)
		if again.SerialNumber != b.SerialNumber {
			t.Error("two SBOMs of the same binary differ")
		}
	})
}

// The Dockerfile, kept for those who build with Docker, runs as the same
// user as the supported image.
func TestDockerfileUserIsTheImageUser(t *testing.T) {
	users := parseDockerfile(t).Final().Find("USER")
	if len(users) == 0 || users[len(users)-1].Args != image.User {
		t.Errorf("the Dockerfile's USER must be %s, the image's", image.User)
	}
}
