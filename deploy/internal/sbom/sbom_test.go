package sbom

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Package URLs follow the purl spec for Go: lower case, each path segment
// escaped.
func TestPURL(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"github.com/nats-io/nats.go", "v1.55.0"}:       "pkg:golang/github.com/nats-io/nats.go@v1.55.0",
		{"github.com/BurntSushi/toml", "v1.4.0"}:        "pkg:golang/github.com/burntsushi/toml@v1.4.0",
		{"example.com/a b", "v0.0.0-2024+incompatible"}: "pkg:golang/example.com/a%20b@v0.0.0-2024+incompatible",
	} {
		if got := purl(in[0], in[1]); got != want {
			t.Errorf("purl(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
}

// A file without Go build information is refused with ErrNoBuildInfo.
func TestFromBinaryRefusesOtherFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "not-a-binary")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := FromBinary(p, "v1", time.Unix(0, 0)); !errors.Is(err, ErrNoBuildInfo) {
		t.Errorf("FromBinary = %v, want ErrNoBuildInfo", err)
	}
}
