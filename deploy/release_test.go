package deploy_test

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/agentrelay/agentrelay/deploy/internal/kube"
)

// A release's manifests run the released image by digest (what the
// kubelet pulls cannot change under the tag), with the tag beside it for
// people; nothing else in them changes.
func TestReleaseManifestsPinTheImage(t *testing.T) {
	pin := kube.Pin{Repository: "registry.example.com/platform/agentrelay", Tag: "v1.2.3", Digest: "sha256:" + strings.Repeat("ab", 32)}
	out, err := kube.RenderPinned(exampleOverlay, containerName, pin)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.DecodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	plain := renderExample(t)
	if len(objs) != len(plain.objs) {
		t.Errorf("%d objects pinned, %d plain", len(objs), len(plain.objs))
	}
	want := pin.Repository + ":" + pin.Tag + "@" + pin.Digest
	for _, d := range kube.All[*appsv1.Deployment](objs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == containerName && c.Image != want {
				t.Errorf("container %s runs %q, want %q", c.Name, c.Image, want)
			}
		}
	}
	for _, bad := range []kube.Pin{
		{Repository: pin.Repository, Tag: pin.Tag},
		{Repository: pin.Repository, Tag: pin.Tag, Digest: "sha256:abc"},
		{Repository: pin.Repository, Digest: pin.Digest},
		{Tag: pin.Tag, Digest: pin.Digest},
	} {
		if _, err := kube.RenderPinned(exampleOverlay, containerName, bad); !errors.Is(err, kube.ErrBadPin) {
			t.Errorf("RenderPinned(%+v) = %v, want ErrBadPin", bad, err)
		}
	}
}
