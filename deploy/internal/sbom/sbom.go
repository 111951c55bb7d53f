// Package sbom writes a CycloneDX software bill of materials for a Go
// binary from the build information the Go linker embeds in it (what `go
// version -m` prints): the main module, every module linked in with its
// version and go.sum hash, and the Go toolchain. Reading the binary, not
// the module graph, lists exactly what ships, and leaves out what only
// tests or other packages of the graph use.
package sbom

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// SpecVersion is the CycloneDX version written.
const SpecVersion = "1.5"

// ErrNoBuildInfo is returned for a file that is not a Go binary with build
// information.
var ErrNoBuildInfo = errors.New("no Go build information")

// BOM is the part of a CycloneDX document this package writes.
type BOM struct {
	BOMFormat    string      `json:"bomFormat"`
	SpecVersion  string      `json:"specVersion"`
	SerialNumber string      `json:"serialNumber"`
	Version      int         `json:"version"`
	Metadata     Metadata    `json:"metadata"`
	Components   []Component `json:"components"`
}

// Metadata says what the BOM describes and when it was made.
type Metadata struct {
	Timestamp string    `json:"timestamp"`
	Component Component `json:"component"`
}

// Component is one piece of software.
type Component struct {
	Type       string     `json:"type"`
	BOMRef     string     `json:"bom-ref,omitempty"`
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	PURL       string     `json:"purl,omitempty"`
	Hashes     []Hash     `json:"hashes,omitempty"`
	Properties []Property `json:"properties,omitempty"`
}

// Hash is a component's digest.
type Hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

// Property is a name/value pair CycloneDX leaves to the producer.
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// FromBinary returns the BOM of the Go binary at path, describing it as
// version (the release; the binary's own module version is "(devel)" for a
// build from a checkout) made at created.
func FromBinary(path, version string, created time.Time) (*BOM, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoBuildInfo, path, err)
	}
	main := Component{
		Type: "application", Name: info.Main.Path, Version: version,
		PURL: purl(info.Main.Path, version),
	}
	main.BOMRef = main.PURL
	for _, s := range info.Settings {
		main.Properties = append(main.Properties, Property{Name: "go:build:" + s.Key, Value: s.Value})
	}
	goVersion := strings.TrimPrefix(info.GoVersion, "go")
	comps := []Component{{Type: "library", Name: "std", Version: info.GoVersion, PURL: "pkg:golang/stdlib@" + goVersion, BOMRef: "pkg:golang/stdlib@" + goVersion}}
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		c := Component{Type: "library", Name: m.Path, Version: m.Version, PURL: purl(m.Path, m.Version)}
		c.BOMRef = c.PURL
		// go.sum's h1: is a SHA-256 (of the module's file list and
		// hashes); it is the hash a Go module is verified by.
		if sum, ok := strings.CutPrefix(m.Sum, "h1:"); ok {
			if raw, err := base64.StdEncoding.DecodeString(sum); err == nil {
				c.Hashes = []Hash{{Alg: "SHA-256", Content: hex.EncodeToString(raw)}}
			}
			c.Properties = []Property{{Name: "go:sum", Value: m.Sum}}
		}
		if d.Replace != nil {
			c.Properties = append(c.Properties, Property{Name: "go:replaces", Value: d.Path + "@" + d.Version})
		}
		comps = append(comps, c)
	}
	b := &BOM{
		BOMFormat: "CycloneDX", SpecVersion: SpecVersion, Version: 1,
		Metadata:   Metadata{Timestamp: created.UTC().Format(time.RFC3339), Component: main},
		Components: comps,
	}
	b.SerialNumber = serial(b)
	return b, nil
}

// JSON returns the BOM as indented JSON.
func (b *BOM) JSON() ([]byte, error) {
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// purl is a module's package URL (pkg:golang/...), its path escaped as the
// purl spec asks.
func purl(path, version string) string {
	var segs []string
	for _, s := range strings.Split(path, "/") {
		segs = append(segs, url.PathEscape(strings.ToLower(s)))
	}
	p := "pkg:golang/" + strings.Join(segs, "/")
	if version != "" {
		p += "@" + url.PathEscape(version)
	}
	return p
}

// serial derives the BOM's urn:uuid from its content, so the same binary and
// version give the same document (a random serial would make every build's
// SBOM differ).
func serial(b *BOM) string {
	content, _ := json.Marshal(struct {
		M Metadata
		C []Component
	}{b.Metadata, b.Components})
	h := sha256.Sum256(content)
	h[6] = (h[6] & 0x0f) | 0x50 // version 5-style, name-based
	h[8] = (h[8] & 0x3f) | 0x80 // RFC 4122 variant
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
