package deploy_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/deploy/internal/dockerfile"
	"github.com/agentrelay/agentrelay/deploy/internal/kube"
	"github.com/agentrelay/agentrelay/internal/app"
)

// Paths, relative to deploy/ (where `go test` runs).
const (
	repoRoot       = ".."
	exampleOverlay = "kubernetes/overlays/example"
	baseDir        = "kubernetes/base"
	nackDir        = "nats/nack"
	natsCLIDir     = "nats/cli"
	dockerfilePath = "docker/Dockerfile"
	dashboardPath  = "kubernetes/components/monitoring/dashboards/agentrelay.json"
	readmeRoot     = "../README.md"
	deployingDoc   = "../docs/deploying.md"
	runbookDoc     = "../docs/runbook.md"

	// containerName is the worker container of the Deployment.
	containerName = "agentrelay"
)

// deployment is the example overlay as it would be applied, with the
// worker's configuration as the pod would read it.
type deployment struct {
	objs      []kube.Object
	dep       *appsv1.Deployment
	pod       corev1.PodSpec
	container corev1.Container
	// configPath is the --config argument; configMap holds that file.
	configPath string
	configMap  *corev1.ConfigMap
	// config is the ConfigMap's agentrelay.yaml with the container's
	// environment overrides and the defaults applied, and validated.
	config *config.Config
}

// renderExample builds the example overlay and finds the worker and its
// configuration in it. Anything missing fails the test.
func renderExample(t *testing.T) deployment {
	t.Helper()
	return renderDir(t, exampleOverlay)
}

func renderDir(t *testing.T, dir string) deployment {
	t.Helper()
	objs, err := kube.RenderObjects(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := deployment{objs: objs, dep: only[*appsv1.Deployment](t, objs)}
	d.pod = d.dep.Spec.Template.Spec
	c, ok := findContainer(d.pod, containerName)
	if !ok {
		t.Fatalf("Deployment %s has no container %q", d.dep.Name, containerName)
	}
	d.container = c
	d.configPath = flagValue(c.Args, "--config")
	if d.configPath == "" {
		t.Fatalf("container %s: args %q do not name a --config file", c.Name, c.Args)
	}
	d.configMap = configMapFor(t, d, d.configPath)
	data, ok := d.configMap.Data[path.Base(d.configPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q for --config %s", d.configMap.Name, path.Base(d.configPath), d.configPath)
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", d.configMap.Name, err)
	}
	cfg.ApplyEnv(containerEnv(c))
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("ConfigMap %s: %v", d.configMap.Name, err)
	}
	if problems := app.CheckConfig(cfg); len(problems) > 0 {
		t.Fatalf("ConfigMap %s: %s", d.configMap.Name, strings.Join(problems, "; "))
	}
	d.config = cfg
	return d
}

// only returns the single object of type T, failing unless there is
// exactly one.
func only[T any](t *testing.T, objs []kube.Object) T {
	t.Helper()
	all := kube.All[T](objs)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want exactly one %T in the rendered manifests, got %d", zero, len(all))
	}
	return all[0]
}

func findContainer(pod corev1.PodSpec, name string) (corev1.Container, bool) {
	for _, c := range pod.Containers {
		if c.Name == name {
			return c, true
		}
	}
	return corev1.Container{}, false
}

// flagValue returns the value of a flag in args, written "--f v" or
// "--f=v".
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// containerEnv looks up the container's literal environment variables.
func containerEnv(c corev1.Container) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, e := range c.Env {
			if e.Name == name && e.ValueFrom == nil {
				return e.Value, true
			}
		}
		return "", false
	}
}

// mountFor returns the container's volume mount that holds file, and the
// volume behind it.
func mountFor(d deployment, file string) (corev1.VolumeMount, corev1.Volume, bool) {
	for _, m := range d.container.VolumeMounts {
		if rel, err := filepath.Rel(m.MountPath, file); err == nil && !strings.HasPrefix(rel, "..") {
			for _, v := range d.pod.Volumes {
				if v.Name == m.Name {
					return m, v, true
				}
			}
		}
	}
	return corev1.VolumeMount{}, corev1.Volume{}, false
}

// configMapFor returns the rendered ConfigMap mounted where file is.
func configMapFor(t *testing.T, d deployment, file string) *corev1.ConfigMap {
	t.Helper()
	_, vol, ok := mountFor(d, file)
	if !ok || vol.ConfigMap == nil {
		t.Fatalf("%s is not in a ConfigMap volume of container %s", file, d.container.Name)
	}
	return configMapNamed(t, d, vol.ConfigMap.Name)
}

// configMapNamed returns the rendered ConfigMap called name.
func configMapNamed(t *testing.T, d deployment, name string) *corev1.ConfigMap {
	t.Helper()
	for _, cm := range kube.All[*corev1.ConfigMap](d.objs) {
		if cm.Name == name {
			return cm
		}
	}
	t.Fatalf("the pod mounts ConfigMap %s, which the overlay does not create", name)
	return nil
}

// volumeNamed returns the pod's volume called name.
func volumeNamed(t *testing.T, d deployment, name string) corev1.Volume {
	t.Helper()
	for _, v := range d.pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("the pod mounts volume %s, which it does not define", name)
	return corev1.Volume{}
}

// filesTheWorkerReads lists every file path in the configuration, by the
// field that names it.
func filesTheWorkerReads(c *config.Config) map[string]string {
	files := map[string]string{}
	add := func(field, p string) {
		if p != "" {
			files[field] = p
		}
	}
	add("nats.credentials_file", c.NATS.CredentialsFile)
	add("nats.nkey_seed_file", c.NATS.NKeySeedFile)
	add("nats.password_file", c.NATS.PasswordFile)
	add("nats.token_file", c.NATS.TokenFile)
	for prefix, t := range map[string]config.TLS{"nats.tls": c.NATS.TLS, "api.tls": c.API.TLS} {
		add(prefix+".ca_file", t.CAFile)
		add(prefix+".cert_file", t.CertFile)
		add(prefix+".key_file", t.KeyFile)
	}
	for i, r := range c.Routes {
		add(fmt.Sprintf("routes[%d].token.file", i), r.Token.File)
	}
	return files
}

// parseDockerfile reads and parses the Dockerfile.
func parseDockerfile(t *testing.T) *dockerfile.File {
	t.Helper()
	src, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := dockerfile.Parse(string(src))
	if err != nil {
		t.Fatalf("%s: %v", dockerfilePath, err)
	}
	return f
}

// readDoc returns a document of the repository (a path relative to deploy/).
func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
