// Command render-manifests prints the Kubernetes manifests of a kustomize
// overlay, built with the same kustomize library the deploy tests use:
//
//	go run ./cmd/render-manifests kubernetes/overlays/example | kubectl apply -f -
//
// Every rendered object is decoded strictly before it is printed, so a
// manifest with an unknown field is refused here rather than by the cluster.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/agentrelay/agentrelay/deploy/internal/kube"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: render-manifests KUSTOMIZATION_DIR")
		return 2
	}
	out, err := kube.Render(args[0])
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
