package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/kustomize/api/types"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/deploy/internal/alertpack"
	"github.com/agentrelay/agentrelay/deploy/internal/grafana"
	"github.com/agentrelay/agentrelay/deploy/internal/kube"
	"github.com/agentrelay/agentrelay/deploy/internal/strict"
	"github.com/agentrelay/agentrelay/internal/app"
)

// Every YAML and JSON file under deploy/ is read strictly by what it is:
// a Kubernetes object into its typed struct, a kustomization into
// kustomize's own type, agentrelay.yaml by agentrelay's configuration
// loader, the dashboard and the nats CLI files into their types. A file
// this test does not know is an error, so nothing escapes checking.
func TestEveryFileDecodesStrictly(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		ext := filepath.Ext(path)
		if ext != ".yaml" && ext != ".yml" && ext != ".json" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		t.Run(path, func(t *testing.T) { decodeDeployFile(t, path, data) })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func decodeDeployFile(t *testing.T, path string, data []byte) {
	base := filepath.Base(path)
	dir := filepath.Base(filepath.Dir(path))
	switch {
	case base == "agentrelay.yaml":
		c, err := config.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		c.ApplyDefaults()
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if problems := app.CheckConfig(c); len(problems) > 0 {
			t.Fatal(strings.Join(problems, "; "))
		}
	case dir == "kustomizeconfig":
		if _, err := kube.DecodeTransformerConfig(data); err != nil {
			t.Fatal(err)
		}
	case dir == "dashboards":
		if _, err := grafana.Parse(data); err != nil {
			t.Fatal(err)
		}
	case base == "agentrelay.rules.yaml":
		if _, err := alertpack.ParseRules(data); err != nil {
			t.Fatal(err)
		}
	case base == "agentrelay.rules.test.yaml":
		var tests promtoolTests
		if err := strict.YAML(data, &tests); err != nil {
			t.Fatal(err)
		}
	case dir == "alertmanager":
		if _, err := alertpack.ParseInhibitRules(data); err != nil {
			t.Fatal(err)
		}
	case strings.HasSuffix(base, ".stream.json"):
		var c jetstream.StreamConfig
		decodeJSONFile(t, path, &c)
	case strings.HasSuffix(base, ".consumer.json"):
		var c jetstream.ConsumerConfig
		decodeJSONFile(t, path, &c)
	case filepath.Ext(path) == ".json":
		t.Fatal("unknown JSON file: teach TestEveryFileDecodesStrictly what it is")
	default:
		objs, err := kube.DecodeAll(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) == 0 {
			t.Fatal("no objects")
		}
		if base == "kustomization.yaml" && (len(objs) != 1 || kube.All[*types.Kustomization](objs) == nil) {
			t.Fatal("kustomization.yaml must hold one Kustomization or Component")
		}
	}
}

// Every manifest under kubernetes/ and nats/nack is part of a
// kustomization: a file no kustomization names is never applied, and never
// checked by the render tests either.
func TestNoManifestIsLeftOut(t *testing.T) {
	referenced := map[string]bool{}
	var files []string
	for _, root := range []string{"kubernetes", "nats/nack"} {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			if filepath.Base(path) == "kustomization.yaml" {
				for _, ref := range kustomizationRefs(t, path) {
					referenced[filepath.Join(filepath.Dir(path), ref)] = true
				}
				return nil
			}
			files = append(files, path)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		if !referenced[f] {
			t.Errorf("%s is not named by any kustomization", f)
		}
	}
}

// kustomizationRefs lists the files a kustomization names.
func kustomizationRefs(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.DecodeAll(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	k := kube.All[*types.Kustomization](objs)[0]
	refs := slices.Concat(k.Resources, k.Components, k.Configurations, k.Crds)
	for _, p := range k.Patches {
		if p.Path != "" {
			refs = append(refs, p.Path)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.FileSources {
			_, file, found := strings.Cut(f, "=")
			if !found {
				file = f
			}
			refs = append(refs, file)
		}
	}
	return refs
}
