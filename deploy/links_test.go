package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docsDir holds the documentation beside the README, relative to deploy/.
const docsDir = "../docs"

// Every relative link in the README and under docs/ names a file (or
// folder) of the repository, and every #anchor a heading of its target: a
// clone must be readable on its own, so no link may leave the repository
// (../shared/...) or name a path of one machine (/work/...).
func TestDocumentLinksResolveInsideTheRepository(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	docs := []string{readmeRoot}
	err = filepath.WalkDir(docsDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || filepath.Ext(p) != ".md" {
			return err
		}
		docs = append(docs, p)
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v (the trigger API reference lives there)", docsDir, err)
	}
	checked := 0
	for _, doc := range docs {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range markdownLinks(string(text)) {
			checked++
			if problem := checkLink(root, doc, link); problem != "" {
				t.Errorf("%s: link %q %s", doc, link, problem)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no links found: the link parser is broken")
	}
}

// checkLink returns what is wrong with a link in doc, or "".
func checkLink(root, doc, link string) string {
	if isExternal(link) {
		return ""
	}
	target, anchor, _ := strings.Cut(link, "#")
	if filepath.IsAbs(target) || strings.HasPrefix(target, "/") {
		return "is an absolute path: link relative to the document, inside the repository"
	}
	file := doc
	if target != "" {
		file = filepath.Join(filepath.Dir(doc), filepath.FromSlash(target))
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return err.Error()
	}
	if rel, err := filepath.Rel(root, abs); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "points outside the repository, so it is broken in a clone"
	}
	info, err := os.Stat(abs)
	if err != nil {
		return "names no file of the repository"
	}
	if anchor == "" || info.IsDir() || filepath.Ext(abs) != ".md" {
		return ""
	}
	text, err := os.ReadFile(abs)
	if err != nil {
		return err.Error()
	}
	if !slices.Contains(markdownAnchors(string(text)), anchor) {
		return "names no heading of " + filepath.Base(abs)
	}
	return ""
}

// isExternal reports whether a link has a scheme (https:, mailto:).
func isExternal(link string) bool {
	return scheme.MatchString(link)
}

var (
	// inlineLink is [text](target) or [text](target "title").
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// referenceLink is a link definition: [label]: target.
	referenceLink = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	// scheme starts a link to somewhere else (https:, mailto:).
	scheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	// codeSpan is inline code, where brackets are no links.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
)

// markdownLinks lists the link targets of a Markdown document, outside
// fenced code blocks and code spans.
func markdownLinks(doc string) []string {
	var links []string
	fenced := false
	for _, line := range strings.Split(doc, "\n") {
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			links = append(links, m[1])
		}
		if m := referenceLink.FindStringSubmatch(line); m != nil {
			links = append(links, m[1])
		}
	}
	return links
}

// The link checker finds what it must refuse.
func TestLinkCheckerRefusesBrokenLinks(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	doc := readmeRoot
	for link, wantProblem := range map[string]bool{
		"docs/trigger-api.md":                           false,
		"docs/trigger-api.md#what-agentrelay-relies-on": false,
		"#response-classes":                             false,
		"deploy/":                                       false,
		"https://keda.sh":                               false,
		"../shared/spec/workspace-agents-trigger-api.txt":    true,
		"/work/shared/spec/workspace-agents-trigger-api.txt": true,
		"docs/no-such-file.md":                               true,
		"#no-such-heading":                                   true,
		"docs/trigger-api.md#no-such-heading":                true,
	} {
		if got := checkLink(root, doc, link) != ""; got != wantProblem {
			t.Errorf("checkLink(%q): problem %v, want %v", link, got, wantProblem)
		}
	}
	got := markdownLinks("[a](x.md) `[b](y.md)` [c](z.md \"title\")\n```\n[d](w.md)\n```\n[e]: v.md\n")
	if want := []string{"x.md", "z.md", "v.md"}; !slices.Equal(got, want) {
		t.Errorf("markdownLinks = %q, want %q", got, want)
	}
}

// maxReadmeLines bounds the README: what agentrelay is, the two commands,
// the contract, the response classes, configuration at a glance and links.
// Everything else lives under docs/, where a reader finds it by its index.
const maxReadmeLines = 350

// The README stays short and leads to docs/, and the docs index links every
// page under docs/, so no page is reachable only by knowing its name.
func TestReadmeIsShortAndEveryDocIsIndexed(t *testing.T) {
	readme := readDoc(t, readmeRoot)
	if n := strings.Count(readme, "\n"); n > maxReadmeLines {
		t.Errorf("%s has %d lines, want at most %d: move sections under docs/", readmeRoot, n, maxReadmeLines)
	}
	if !slices.Contains(markdownLinks(readme), "docs/README.md") {
		t.Errorf("%s does not link the docs index docs/README.md", readmeRoot)
	}
	index := filepath.Join(docsDir, "README.md")
	linked := map[string]bool{}
	for _, l := range markdownLinks(readDoc(t, index)) {
		target, _, _ := strings.Cut(l, "#")
		linked[filepath.Clean(target)] = true
	}
	pages, err := filepath.Glob(filepath.Join(docsDir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) < 2 {
		t.Fatalf("%d pages under %s", len(pages), docsDir)
	}
	for _, p := range pages {
		if name := filepath.Base(p); name != "README.md" && !linked[name] {
			t.Errorf("%s is not linked from %s", p, index)
		}
	}
}
