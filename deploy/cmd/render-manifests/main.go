// Command render-manifests prints the Kubernetes manifests of a kustomize
// overlay, built with the same kustomize library the deploy tests use:
//
//	go run ./cmd/render-manifests kubernetes/overlays/example | kubectl apply -f -
//
// For a release, -image, -tag and -digest pin the worker's image (see
// docs/releasing.md):
//
//	go run ./cmd/render-manifests -image registry.example.com/agentrelay -tag v1.2.3 \
//	    -digest sha256:... kubernetes/overlays/prod > agentrelay-v1.2.3.yaml
//
// Every rendered object is decoded strictly before it is printed, so a
// manifest with an unknown field is refused here rather than by the cluster.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/agentrelay/agentrelay/deploy/internal/kube"
)

// container is the worker's container in the Deployment.
const container = "agentrelay"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("render-manifests", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pin kube.Pin
	fs.StringVar(&pin.Repository, "image", "", "pin the worker's image to this repository (with -tag and -digest)")
	fs.StringVar(&pin.Tag, "tag", "", "the release tag of the pinned image")
	fs.StringVar(&pin.Digest, "digest", "", "the sha256 digest of the pinned image")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: render-manifests [-image REPO -tag TAG -digest sha256:...] KUSTOMIZATION_DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		if err == nil {
			fs.Usage()
		}
		return 2
	}
	var (
		out []byte
		err error
	)
	if pin == (kube.Pin{}) {
		out, err = kube.Render(fs.Arg(0))
	} else {
		out, err = kube.RenderPinned(fs.Arg(0), container, pin)
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	if _, err := kube.DecodeAll(out); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}
