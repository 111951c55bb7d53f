package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentrelay/agentrelay/deploy/internal/kube"
)

const (
	// settingsPath is the example overlay's shared settings.
	settingsPath = exampleOverlay + "/settings.yaml"
	// natsCredentialsComponent mounts the NATS credentials Secret.
	natsCredentialsComponent = "kubernetes/components/nats-credentials"
)

// overlaySettings reads the example overlay's settings ConfigMap.
func overlaySettings(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(settingsPath)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.DecodeAll(data)
	if err != nil {
		t.Fatalf("%s: %v", settingsPath, err)
	}
	cms := kube.All[*corev1.ConfigMap](objs)
	if len(cms) != 1 {
		t.Fatalf("%s must hold one ConfigMap", settingsPath)
	}
	if cms[0].Annotations["config.kubernetes.io/local-config"] != "true" {
		t.Errorf("%s must be local-config: it is kustomize's input, not a manifest to apply", settingsPath)
	}
	return cms[0].Data
}

// copiedOverlay copies deploy/kubernetes into a temporary directory, as a
// platform engineer copies the example overlay, lets edit change files of
// the copy (paths relative to the copied overlay), and renders it.
func copiedOverlay(t *testing.T, edits map[string][2]string) deployment {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir("kubernetes", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		to := filepath.Join(dir, p)
		if e.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, exampleOverlay)
	for file, edit := range edits {
		p := filepath.Join(overlay, file)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), edit[0]) {
			t.Fatalf("%s has no %q to change: the README's instructions no longer match the file", file, edit[0])
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(data), edit[0], edit[1], 1)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return renderDir(t, overlay)
}

// settingEdit changes one key of the overlay's settings.yaml.
func settingEdit(t *testing.T, key, value string) [2]string {
	t.Helper()
	old, ok := overlaySettings(t)[key]
	if !ok {
		t.Fatalf("%s has no %s", settingsPath, key)
	}
	quote := func(v string) string { return key + ": " + `"` + v + `"` }
	data, _ := os.ReadFile(settingsPath)
	if !strings.Contains(string(data), quote(old)) {
		quote = func(v string) string { return key + ": " + v }
	}
	return [2]string{quote(old), quote(value)}
}

// scaledAccounts lists the account of every trigger of the ScaledObject.
func scaledAccounts(t *testing.T, d deployment) []string {
	t.Helper()
	var accounts []string
	for _, tr := range only[*kube.ScaledObject](t, d.objs).Spec.Triggers {
		accounts = append(accounts, tr.Metadata["account"])
	}
	if len(accounts) == 0 {
		t.Fatal("the ScaledObject has no triggers")
	}
	return accounts
}

// The NATS account KEDA reads the consumers' lag from is one setting of
// the overlay: with JWT accounts it is the account's public key, not "$G",
// and every trigger must follow it.
func TestNATSAccountIsOneOverlaySetting(t *testing.T) {
	want := overlaySettings(t)["natsAccount"]
	for _, got := range scaledAccounts(t, renderExample(t)) {
		if got != want {
			t.Errorf("the example's trigger account is %q, settings.yaml says %q", got, want)
		}
	}
	// An operator-mode account: a public key.
	const account = "ACZXQ4AYRU4K6QKMF6CQJPX4WTKPIAOM3UR7LJX5HWJV3A4AY3XN6GBZ"
	d := copiedOverlay(t, map[string][2]string{"settings.yaml": settingEdit(t, "natsAccount", account)})
	for _, got := range scaledAccounts(t, d) {
		if got != account {
			t.Errorf("with natsAccount %s a trigger reads account %q", account, got)
		}
	}
	if !strings.Contains(readDoc(t, deployingDoc), "natsAccount") {
		t.Errorf("%s does not say where the NATS account KEDA reads is set (natsAccount)", deployingDoc)
	}
}

// Every alert's runbook link starts with the overlay's runbookBaseURL, so
// pointing them at a fork or a mirror is one change.
func TestRunbookLinksFollowTheOverlaySetting(t *testing.T) {
	check := func(t *testing.T, d deployment, base string) {
		t.Helper()
		rules := alertRules(t, d)
		if len(rules) == 0 {
			t.Fatal("no alerts")
		}
		for _, r := range rules {
			url := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, base+"#")
			if !ok || anchor == "" {
				t.Errorf("alert %s: runbook_url %q is not %s#<anchor>", r.Alert, url, base)
			}
		}
	}
	t.Run("example", func(t *testing.T) {
		check(t, renderExample(t), overlaySettings(t)["runbookBaseURL"])
	})
	t.Run("changed", func(t *testing.T) {
		const base = "https://gitlab.internal.example/sre/agentrelay/-/blob/v1.2.0/docs/runbook.md"
		d := copiedOverlay(t, map[string][2]string{"settings.yaml": settingEdit(t, "runbookBaseURL", base)})
		check(t, d, base)
	})
}

// With credentials_file set and the nats-credentials component added, as
// the overlay's comments say, the file is in a read-only Secret volume
// mounted without subPath, and the README tells how to create the Secret.
func TestNATSCredentialsComponentMountsTheCredentialsFile(t *testing.T) {
	d := copiedOverlay(t, map[string][2]string{
		"agentrelay.yaml": {
			"  # credentials_file: /var/run/secrets/nats/agentrelay.creds",
			"  credentials_file: /var/run/secrets/nats/agentrelay.creds",
		},
		"kustomization.yaml": {
			"  # - ../../components/nats-credentials",
			"  - ../../components/nats-credentials",
		},
	})
	file := d.config.NATS.CredentialsFile
	if file == "" {
		t.Fatal("nats.credentials_file is not set after the edit")
	}
	m, vol, ok := mountFor(d, file)
	if !ok {
		t.Fatalf("nats.credentials_file %s is in no volume of container %s", file, d.container.Name)
	}
	if vol.Secret == nil || !m.ReadOnly || m.SubPath != "" {
		t.Errorf("nats.credentials_file %s: volume %s must be a Secret mounted read-only without subPath", file, vol.Name)
	}
	checkMounts(t, d)
	checkReferences(t, d)

	// Without the component the example has no such volume: the
	// component is what adds it.
	if _, _, ok := mountFor(renderExample(t), file); ok {
		t.Errorf("the example already mounts %s; the component should add it", file)
	}
	if _, err := os.Stat(filepath.Join(natsCredentialsComponent, "kustomization.yaml")); err != nil {
		t.Fatal(err)
	}
}
