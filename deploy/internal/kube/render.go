package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render builds the kustomization in dir as `kubectl kustomize dir` does
// (files may only be loaded from within each kustomization's own directory)
// and returns the YAML stream.
func Render(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return m.AsYaml()
}

// RenderObjects renders dir and decodes every object strictly.
func RenderObjects(dir string) ([]Object, error) {
	out, err := Render(dir)
	if err != nil {
		return nil, err
	}
	objs, err := DecodeAll(out)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return objs, nil
}

// Pin names the image a release's manifests run: its repository, tag and
// digest. The digest is what Kubernetes pulls; the tag is for people.
type Pin struct {
	Repository string // e.g. registry.example.com/agentrelay
	Tag        string // e.g. v1.2.3
	Digest     string // sha256:<64 hex digits>
}

// ErrBadPin is returned for a Pin that does not name one image exactly.
var ErrBadPin = errors.New("the image must be pinned by repository, tag and sha256 digest")

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// RenderPinned builds the kustomization in dir, as Render does, with the
// image of the container named container set to the pin: a kustomization
// around dir whose images transformer replaces the image dir renders.
func RenderPinned(dir, container string, pin Pin) ([]byte, error) {
	if pin.Repository == "" || pin.Tag == "" || !digestRE.MatchString(pin.Digest) {
		return nil, fmt.Errorf("%w: got %q, %q, %q", ErrBadPin, pin.Repository, pin.Tag, pin.Digest)
	}
	objs, err := RenderObjects(dir)
	if err != nil {
		return nil, err
	}
	current := ""
	for _, d := range All[*appsv1.Deployment](objs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == container {
				current = c.Image
			}
		}
	}
	if current == "" {
		return nil, fmt.Errorf("kustomize build %s: no Deployment container %q", dir, container)
	}
	name, _, _ := strings.Cut(current, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	wrapper, err := os.MkdirTemp("", "agentrelay-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(wrapper)
	// kustomize takes resources by relative path only.
	rel, err := filepath.Rel(wrapper, abs)
	if err != nil {
		return nil, err
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n  - name: %s\n    newName: %s\n    newTag: %s\n    digest: %s\n",
		strconv.Quote(filepath.ToSlash(rel)), strconv.Quote(name), strconv.Quote(pin.Repository), strconv.Quote(pin.Tag), strconv.Quote(pin.Digest))
	if err := os.WriteFile(filepath.Join(wrapper, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return nil, err
	}
	return Render(wrapper)
}
