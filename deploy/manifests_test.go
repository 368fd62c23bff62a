package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	promlabels "github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/require"
	"github.com/thanos-io/objstore/client"
	"github.com/thanos-io/objstore/providers/filesystem"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/shardscrape/shardscrape/internal/testenv"
	"github.com/shardscrape/shardscrape/remotewrite"
)

// kustomizations are the directories `kustomize build` renders; every
// kustomization.yaml under deploy/ must be one of them.
var kustomizations = []string{
	"base",
	"overlays/victoriametrics",
	"overlays/thanos-receive",
	"overlays/multi-cluster",
	"exporters",
}

// notManifests are the directories of deploy/ that hold no Kubernetes
// manifests (Grafana dashboards, Prometheus rule files: monitoring_test.go).
var notManifests = []string{"dashboards", "rules"}

// userSecrets are Secrets the manifests mount that the operator creates by
// hand (deploy/README.md), with the keys they must hold.
var userSecrets = map[string][]string{"shardscrape-auth": {"auth-token", "admin-token"}}

const saTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

func deployDir(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	require.NoError(t, err)
	return filepath.Join(root, "deploy")
}

// strictDecoder decodes YAML into the typed objects of client-go's scheme,
// failing on unknown and duplicate fields.
var strictDecoder = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// decodeStrict decodes every document of a YAML stream.
func decodeStrict(data []byte) ([]runtime.Object, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var probe any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if probe == nil { // empty or comments only
			continue
		}
		obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d (%v): %w", i, gvk, err)
		}
		out = append(out, obj)
	}
}

// renderKustomization runs `kustomize build dir` and decodes its output strictly.
func renderKustomization(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t, "kustomize"), "build", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "kustomize build %s: %s", dir, stderr.String())
	objs, err := decodeStrict(out)
	require.NoError(t, err, "kustomize build %s", dir)
	require.NotEmpty(t, objs)
	return objs
}

// jsonPatchOp is one operation of a JSON 6902 patch file.
type jsonPatchOp struct {
	Op    string `yaml:"op"`
	Path  string `yaml:"path"`
	From  string `yaml:"from"`
	Value any    `yaml:"value"`
}

func yamlStrict(data []byte, v any) error {
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	return d.Decode(v)
}

// checkFile validates one YAML file of deploy/ by what it is.
func checkFile(t *testing.T, file string, data []byte) {
	t.Helper()
	switch base := filepath.Base(file); {
	case base == "kustomization.yaml":
		// Rendered (and so validated, unknown fields included) by
		// TestKustomizeBuilds; here only: it is one of those rendered.
		rel, err := filepath.Rel(deployDir(t), filepath.Dir(file))
		require.NoError(t, err)
		require.Contains(t, kustomizations, filepath.ToSlash(rel), "a kustomization the tests do not build")
	case base == "prometheus.yml":
		_, err := config.Load(string(data), nil)
		require.NoError(t, err)
	case base == "objstore.yml":
		var bc client.BucketConfig
		require.NoError(t, yamlStrict(data, &bc))
		if bc.Type == "FILESYSTEM" {
			raw, err := yaml.Marshal(bc.Config)
			require.NoError(t, err)
			var fc filesystem.Config
			require.NoError(t, yamlStrict(raw, &fc))
			require.NotEmpty(t, fc.Directory)
		}
	default:
		var top any
		require.NoError(t, yaml.Unmarshal(data, &top))
		if _, ok := top.([]any); ok {
			var ops []jsonPatchOp
			require.NoError(t, yamlStrict(data, &ops), "JSON 6902 patch")
			for _, op := range ops {
				require.Contains(t, []string{"add", "remove", "replace", "move", "copy", "test"}, op.Op)
				require.True(t, strings.HasPrefix(op.Path, "/"), "patch path %q", op.Path)
			}
			return
		}
		objs, err := decodeStrict(data)
		require.NoError(t, err)
		require.NotEmpty(t, objs)
	}
}

func TestManifestFilesDecodeStrictly(t *testing.T) {
	dir := deployDir(t)
	var n int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && slices.Contains(notManifests, d.Name()) && filepath.Dir(p) == dir {
			return filepath.SkipDir
		}
		if d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml")) {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		n++
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			checkFile(t, p, data)
		})
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, n, 15, "YAML files under deploy/")
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"top level": `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replicass: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
`,
		"in a container": `
apiVersion: v1
kind: Pod
metadata: {name: x}
spec:
  containers:
    - name: c
      image: i
      readinessProbe: {httpGet: {path: /-/ready, prot: http}}
`,
		"duplicate field": `
apiVersion: v1
kind: Service
metadata: {name: x, name: y}
`,
		"unknown kind": `
apiVersion: apps/v1
kind: Deploymnet
metadata: {name: x}
`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decodeStrict([]byte(doc))
			require.Error(t, err)
		})
	}
	// The same document without the typo decodes.
	objs, err := decodeStrict([]byte(`
apiVersion: v1
kind: Pod
metadata: {name: x}
spec:
  containers:
    - name: c
      image: i
      readinessProbe: {httpGet: {path: /-/ready, port: http}}
`))
	require.NoError(t, err)
	require.Len(t, objs, 1)
}

// rendering is one rendered kustomization.
type rendering struct {
	name string
	objs []runtime.Object
}

func TestKustomizeBuilds(t *testing.T) {
	flags := binaryFlags(t)
	for _, k := range kustomizations {
		t.Run(k, func(t *testing.T) {
			b := rendering{name: k, objs: renderKustomization(t, filepath.Join(deployDir(t), k))}
			for _, c := range []struct {
				name  string
				check func(rendering) []error
			}{
				{"selectors", checkSelectors},
				{"ports", checkPorts},
				{"references", checkReferences},
				{"flags", func(b rendering) []error { return checkFlags(b, flags) }},
				{"rbac", checkRBAC},
				{"grace", func(b rendering) []error { return checkGrace(b, flags) }},
				{"remote-write", checkRemoteWrite},
				{"wiring", checkWiring},
				{"pods", checkPods},
			} {
				t.Run(c.name, func(t *testing.T) {
					require.Empty(t, c.check(b))
				})
			}
			t.Run("config-check", func(t *testing.T) {
				require.Empty(t, checkCoordinatorConfig(b, t.TempDir()))
			})
		})
	}
}

// TestOverlays pins what each overlay changes.
func TestOverlays(t *testing.T) {
	dir := deployDir(t)
	urls := map[string]string{}
	for _, k := range kustomizations[:4] {
		b := rendering{name: k, objs: renderKustomization(t, filepath.Join(dir, k))}
		sts := onlyObject[*appsv1.StatefulSet](t, b)
		args := flagValues(sts.Spec.Template.Spec.Containers[0])
		urls[k] = strings.Join(args["remote-write.url"], ",")
		dep := onlyObject[*appsv1.Deployment](t, b)
		require.Equal(t, map[string]string{
			"base":                     "cluster-1",
			"overlays/victoriametrics": "cluster-1",
			"overlays/thanos-receive":  "cluster-1",
			"overlays/multi-cluster":   "cluster-2",
		}[k], expandEnv(dep.Spec.Template.Spec.Containers[0], "$(CLUSTER_NAME)"), k)
		if k == "overlays/thanos-receive" {
			require.Equal(t, []string{"thanos-receive"}, args["remote-write.receiver"])
			require.NotEmpty(t, args["remote-write.tenant"])
		}
	}
	// Each cluster its own state: the second cluster's objstore config
	// differs from the base's (another prefix or bucket).
	objstore := func(k string) string {
		b := rendering{name: k, objs: renderKustomization(t, filepath.Join(dir, k))}
		var found []string
		for _, s := range objectsOf[*corev1.Secret](b) {
			if strings.HasPrefix(s.Name, "shardscrape-objstore") {
				data := s.Data["objstore.yml"]
				if len(data) == 0 {
					data = []byte(s.StringData["objstore.yml"])
				}
				var bc client.BucketConfig
				require.NoError(t, yamlStrict(data, &bc), k)
				raw, err := yaml.Marshal(bc)
				require.NoError(t, err)
				found = append(found, string(raw))
			}
		}
		require.Len(t, found, 1, k)
		return found[0]
	}
	require.NotEqual(t, objstore("base"), objstore("overlays/multi-cluster"), "the second cluster shares the first one's state bucket")
	require.Equal(t, objstore("base"), objstore("overlays/victoriametrics"))

	require.Equal(t, map[string]string{
		"base":                     "", // the config's placeholder
		"overlays/victoriametrics": "http://vminsert.victoria-metrics.svc:8480/insert/0/prometheus/api/v1/write",
		"overlays/thanos-receive":  "http://thanos-receive.thanos.svc:19291/api/v1/receive",
		"overlays/multi-cluster":   "https://vminsert.metrics.example.com/insert/0/prometheus/api/v1/write",
	}, urls)
}

// onlyObject returns the single object of type T in b.
func onlyObject[T runtime.Object](t *testing.T, b rendering) T {
	t.Helper()
	var found []T
	for _, o := range b.objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	require.Len(t, found, 1, "%s: objects of type %T", b.name, *new(T))
	return found[0]
}

// podTemplate is a workload's pod template with the workload's identity.
type podTemplate struct {
	kind, namespace, name string
	selector              *metav1.LabelSelector
	tmpl                  *corev1.PodTemplateSpec
}

func (p podTemplate) String() string { return p.kind + " " + p.namespace + "/" + p.name }

func podTemplates(b rendering) []podTemplate {
	var out []podTemplate
	for _, o := range b.objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			out = append(out, podTemplate{"Deployment", w.Namespace, w.Name, w.Spec.Selector, &w.Spec.Template})
		case *appsv1.StatefulSet:
			out = append(out, podTemplate{"StatefulSet", w.Namespace, w.Name, w.Spec.Selector, &w.Spec.Template})
		case *appsv1.DaemonSet:
			out = append(out, podTemplate{"DaemonSet", w.Namespace, w.Name, w.Spec.Selector, &w.Spec.Template})
		}
	}
	return out
}

// selecting returns the pod templates of namespace ns a selector selects.
func selecting(b rendering, ns string, sel labels.Selector) []podTemplate {
	var out []podTemplate
	for _, p := range podTemplates(b) {
		if p.namespace == ns && sel.Matches(labels.Set(p.tmpl.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// checkSelectors: every workload selects its own pod template, every
// Service selector and PDB selector selects some pod template, and a
// StatefulSet's serviceName is a headless Service selecting it.
func checkSelectors(b rendering) []error {
	var errs []error
	for _, p := range podTemplates(b) {
		sel, err := metav1.LabelSelectorAsSelector(p.selector)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: selector: %w", p, err))
		case sel.Empty():
			errs = append(errs, fmt.Errorf("%s: empty selector", p))
		case !sel.Matches(labels.Set(p.tmpl.Labels)):
			errs = append(errs, fmt.Errorf("%s: selector %s does not match its pod labels %v", p, sel, p.tmpl.Labels))
		}
	}
	for _, o := range b.objs {
		switch v := o.(type) {
		case *corev1.Service:
			if len(v.Spec.Selector) == 0 {
				errs = append(errs, fmt.Errorf("service %s: no selector", v.Name))
			} else if len(selecting(b, v.Namespace, labels.SelectorFromSet(v.Spec.Selector))) == 0 {
				errs = append(errs, fmt.Errorf("service %s: selector %v selects no pod template", v.Name, v.Spec.Selector))
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(v.Spec.Selector)
			if err != nil || sel.Empty() {
				errs = append(errs, fmt.Errorf("pdb %s: bad or empty selector: %v", v.Name, err))
			} else if len(selecting(b, v.Namespace, sel)) == 0 {
				errs = append(errs, fmt.Errorf("pdb %s: selector %s selects no pod template", v.Name, sel))
			}
		case *appsv1.StatefulSet:
			svc := findObject[*corev1.Service](b, v.Namespace, v.Spec.ServiceName)
			switch {
			case svc == nil:
				errs = append(errs, fmt.Errorf("statefulset %s: serviceName %q is no Service", v.Name, v.Spec.ServiceName))
			case svc.Spec.ClusterIP != corev1.ClusterIPNone:
				errs = append(errs, fmt.Errorf("statefulset %s: service %s is not headless", v.Name, svc.Name))
			case !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(v.Spec.Template.Labels)):
				errs = append(errs, fmt.Errorf("statefulset %s: service %s does not select its pods", v.Name, svc.Name))
			}
		}
	}
	return errs
}

// findObject returns the object of type T named ns/name, or the zero T.
func findObject[T interface {
	runtime.Object
	GetName() string
	GetNamespace() string
}](b rendering, ns, name string) T {
	for _, o := range b.objs {
		if v, ok := o.(T); ok && v.GetName() == name && v.GetNamespace() == ns {
			return v
		}
	}
	var zero T
	return zero
}

// portMatches reports whether port names (or numbers) a port of c.
func portMatches(c corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

// checkPorts: probes name ports of their container; Service targetPorts
// name a port of every pod template the Service selects.
func checkPorts(b rendering) []error {
	var errs []error
	for _, p := range podTemplates(b) {
		for _, c := range p.tmpl.Spec.Containers {
			seen := map[string]bool{}
			for _, port := range c.Ports {
				if port.Name != "" && seen[port.Name] {
					errs = append(errs, fmt.Errorf("%s container %s: port name %q twice", p, c.Name, port.Name))
				}
				seen[port.Name] = true
			}
			for what, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
				if probe == nil {
					if what != "startup" {
						errs = append(errs, fmt.Errorf("%s container %s: no %s probe", p, c.Name, what))
					}
					continue
				}
				var port intstr.IntOrString
				switch {
				case probe.HTTPGet != nil:
					port = probe.HTTPGet.Port
				case probe.TCPSocket != nil:
					port = probe.TCPSocket.Port
				default:
					errs = append(errs, fmt.Errorf("%s container %s: %s probe is neither HTTP nor TCP", p, c.Name, what))
					continue
				}
				if !portMatches(c, port) {
					errs = append(errs, fmt.Errorf("%s container %s: %s probe port %s is none of its ports", p, c.Name, what, port.String()))
				}
			}
		}
	}
	for _, svc := range objectsOf[*corev1.Service](b) {
		for _, p := range selecting(b, svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector)) {
			for _, sp := range svc.Spec.Ports {
				if !slices.ContainsFunc(p.tmpl.Spec.Containers, func(c corev1.Container) bool { return portMatches(c, sp.TargetPort) }) {
					errs = append(errs, fmt.Errorf("service %s port %s: targetPort %s is no port of %s", svc.Name, sp.Name, sp.TargetPort.String(), p))
				}
			}
		}
	}
	return errs
}

func objectsOf[T runtime.Object](b rendering) []T {
	var out []T
	for _, o := range b.objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// checkReferences: the ServiceAccounts, ConfigMaps and Secrets a pod
// template uses exist in the build (or are the operator's own Secret, with
// the keys mounted), and every $(VAR) in command and args is a variable of
// the container.
func checkReferences(b rendering) []error {
	var errs []error
	for _, p := range podTemplates(b) {
		spec := p.tmpl.Spec
		if sa := spec.ServiceAccountName; sa != "" && findObject[*corev1.ServiceAccount](b, p.namespace, sa) == nil {
			errs = append(errs, fmt.Errorf("%s: service account %q not in the build", p, sa))
		}
		for _, v := range spec.Volumes {
			switch {
			case v.ConfigMap != nil:
				if findObject[*corev1.ConfigMap](b, p.namespace, v.ConfigMap.Name) == nil {
					errs = append(errs, fmt.Errorf("%s: volume %s: config map %q not in the build", p, v.Name, v.ConfigMap.Name))
				}
			case v.Secret != nil:
				keys, user := userSecrets[v.Secret.SecretName]
				if !user && findObject[*corev1.Secret](b, p.namespace, v.Secret.SecretName) == nil {
					errs = append(errs, fmt.Errorf("%s: volume %s: secret %q neither in the build nor created by hand", p, v.Name, v.Secret.SecretName))
				}
				for _, it := range v.Secret.Items {
					if user && !slices.Contains(keys, it.Key) {
						errs = append(errs, fmt.Errorf("%s: volume %s: key %q is not one deploy/README.md creates", p, v.Name, it.Key))
					}
				}
			}
		}
		for _, c := range spec.Containers {
			defined := map[string]bool{}
			for _, e := range c.Env {
				defined[e.Name] = true
			}
			for _, a := range slices.Concat(c.Command, c.Args) {
				for _, m := range envRef.FindAllStringSubmatch(a, -1) {
					if !defined[m[1]] {
						errs = append(errs, fmt.Errorf("%s container %s: %q uses $(%s), which the container does not define", p, c.Name, a, m[1]))
					}
				}
			}
		}
	}
	return errs
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandEnv replaces $(VAR) as the kubelet does: literal values, and for
// field references a stand-in (pod-0, the namespace).
func expandEnv(c corev1.Container, s string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		for _, e := range c.Env {
			if e.Name != name {
				continue
			}
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				switch e.ValueFrom.FieldRef.FieldPath {
				case "metadata.name":
					return "pod-0"
				case "metadata.namespace":
					return "shardscrape"
				}
			}
			return e.Value
		}
		return ref
	})
}

// flagSpec is a flag of a binary's --help.
type flagSpec struct {
	boolean bool   // --[no-]name
	def     string // default value, as --help prints it
}

var helpFlag = regexp.MustCompile(`^\s+(?:-\w, )?--(\[no-\])?([a-z0-9][a-z0-9._-]*)(?:=(\S*))?`)

// parseHelp reads the flags out of a kingpin --help page.
func parseHelp(help string) map[string]flagSpec {
	flags := map[string]flagSpec{}
	for line := range strings.Lines(help) {
		m := helpFlag.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		flags[m[2]] = flagSpec{boolean: m[1] != "", def: strings.Trim(m[3], `"`)}
	}
	return flags
}

// binaryFlags runs each shardscrape binary with --help.
func binaryFlags(t *testing.T) map[string]map[string]flagSpec {
	t.Helper()
	out := map[string]map[string]flagSpec{}
	for _, c := range commands {
		help, err := exec.Command(command(c), "--help").CombinedOutput()
		require.NoError(t, err, "%s --help: %s", c, help)
		out[c] = parseHelp(string(help))
		require.Contains(t, out[c], "help", "%s --help parsed", c)
		require.Greater(t, len(out[c]), 5, "%s --help parsed", c)
	}
	return out
}

// shardscrapeContainers returns the containers running a shardscrape
// binary, by binary.
func shardscrapeContainers(b rendering) map[string][]corev1.Container {
	out := map[string][]corev1.Container{}
	for _, p := range podTemplates(b) {
		for _, c := range p.tmpl.Spec.Containers {
			if len(c.Command) > 0 && slices.Contains(commands, path.Base(c.Command[0])) {
				out[path.Base(c.Command[0])] = append(out[path.Base(c.Command[0])], c)
			}
		}
	}
	return out
}

// checkFlags: every argument of a shardscrape container is --name=value for
// a flag the binary takes a value for, or --name / --no-name for a boolean
// flag.
func checkFlags(b rendering, flags map[string]map[string]flagSpec) []error {
	var errs []error
	for bin, cs := range shardscrapeContainers(b) {
		for _, c := range cs {
			if len(c.Command) != 1 {
				errs = append(errs, fmt.Errorf("%s: command %q: want just the binary, flags in args", c.Name, c.Command))
			}
			for _, a := range c.Args {
				name, _, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				spec, ok := flags[bin][name]
				if !ok && strings.HasPrefix(name, "no-") {
					spec, ok = flags[bin][strings.TrimPrefix(name, "no-")]
					ok = ok && spec.boolean && !hasValue
				}
				switch {
				case !strings.HasPrefix(a, "--"):
					errs = append(errs, fmt.Errorf("%s: argument %q is not a --flag", c.Name, a))
				case !ok:
					errs = append(errs, fmt.Errorf("%s: %s has no flag --%s (argument %q)", c.Name, bin, name, a))
				case spec.boolean && hasValue:
					errs = append(errs, fmt.Errorf("%s: boolean flag given a value: %q", c.Name, a))
				case !spec.boolean && !hasValue:
					errs = append(errs, fmt.Errorf("%s: flag --%s needs =value: %q", c.Name, name, a))
				}
			}
		}
	}
	return errs
}

// flagValues returns the --name=value arguments of c, by name.
func flagValues(c corev1.Container) map[string][]string {
	out := map[string][]string{}
	for _, a := range c.Args {
		if name, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			out[name] = append(out[name], v)
		}
	}
	return out
}

func parseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	d, err := model.ParseDuration(s)
	return time.Duration(d), err
}

// httpShutdown bounds the scraper's HTTP server shutdown, the last step.
const httpShutdown = 5 * time.Second

// checkGrace: a scraper pod's grace period covers its whole bounded
// shutdown, in order:
//
//	Leave, every target handed over       --shutdown.handoff-timeout
//	remote write catching up               --storage.remote.flush-deadline
//	remote storage close, flushing queues  --storage.remote.flush-deadline
//	scrape loops stopping: a scrape in      the largest scrape_timeout of
//	flight runs to its timeout              the config map's jobs
//	HTTP server shutdown                    5 s
//
// and the grace period must exceed the sum (the kubelet's SIGKILL comes at
// the grace period; what is still queued then is lost).
func checkGrace(b rendering, flags map[string]map[string]flagSpec) []error {
	var errs []error
	var scrapeTimeout time.Duration
	if text, ok := promConfig(b); ok {
		cfg, err := config.Load(text, nil)
		if err != nil {
			return []error{fmt.Errorf("prometheus.yml: %w", err)}
		}
		scs, err := cfg.GetScrapeConfigs()
		if err != nil {
			return []error{fmt.Errorf("prometheus.yml: %w", err)}
		}
		for _, sc := range scs {
			scrapeTimeout = max(scrapeTimeout, time.Duration(sc.ScrapeTimeout))
		}
	}
	for _, sts := range objectsOf[*appsv1.StatefulSet](b) {
		for _, c := range sts.Spec.Template.Spec.Containers {
			if len(c.Command) == 0 || path.Base(c.Command[0]) != "scraper" {
				continue
			}
			vals := flagValues(c)
			get := func(name string) time.Duration {
				v := flags["scraper"][name].def
				if vs := vals[name]; len(vs) > 0 {
					v = vs[len(vs)-1]
				}
				d, err := parseDuration(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: --%s=%q: %w", sts.Name, name, v, err))
				}
				return d
			}
			need := get("shutdown.handoff-timeout") + 2*get("storage.remote.flush-deadline") + scrapeTimeout + httpShutdown
			grace := sts.Spec.Template.Spec.TerminationGracePeriodSeconds
			if grace == nil || time.Duration(*grace)*time.Second <= need {
				errs = append(errs, fmt.Errorf("statefulset %s: terminationGracePeriodSeconds %v does not exceed handoff + 2 x flush deadline + largest scrape_timeout (%v) + HTTP shutdown (%v) = %v",
					sts.Name, ptrValue(grace), scrapeTimeout, httpShutdown, need))
			}
		}
	}
	return errs
}

// checkRemoteWrite: the workers' --remote-write.* flags make a valid
// remotewrite.Endpoint, one per URL.
func checkRemoteWrite(b rendering) []error {
	var errs []error
	for _, c := range shardscrapeContainers(b)["scraper"] {
		v := flagValues(c)
		last := func(name string) string {
			if len(v[name]) == 0 {
				return ""
			}
			return v[name][len(v[name])-1]
		}
		recv, err := remotewrite.ParseReceiver(orDefault(last("remote-write.receiver"), "victoriametrics"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, u := range v["remote-write.url"] {
			e := remotewrite.Endpoint{URL: u, Receiver: recv, Tenant: last("remote-write.tenant"), TenantHeader: last("remote-write.tenant-header")}
			if _, err := e.RemoteWriteConfig(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
			}
		}
	}
	return errs
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checkWiring: the workers' --coordinator.address is a Service port whose
// target is the coordinator's --grpc.listen-address, and the address a
// worker advertises (--web.external-address) is its pod's name under the
// StatefulSet's headless Service, at the port it listens on.
func checkWiring(b rendering) []error {
	var errs []error
	port := func(addr string) string {
		_, p, _ := strings.Cut(addr, ":")
		return p
	}
	for _, sts := range objectsOf[*appsv1.StatefulSet](b) {
		for _, c := range sts.Spec.Template.Spec.Containers {
			if len(c.Command) == 0 || path.Base(c.Command[0]) != "scraper" {
				continue
			}
			v := flagValues(c)
			addr := strings.Join(v["coordinator.address"], ",")
			host, svcPort, _ := strings.Cut(strings.TrimPrefix(addr, "dns:///"), ":")
			svcName, ns, _ := strings.Cut(host, ".")
			if ns = strings.TrimSuffix(ns, ".svc"); ns == "" {
				ns = sts.Namespace
			}
			svc := findObject[*corev1.Service](b, ns, svcName)
			if svc == nil {
				errs = append(errs, fmt.Errorf("%s: --coordinator.address=%s is no Service of the build", sts.Name, addr))
				continue
			}
			i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return fmt.Sprint(p.Port) == svcPort })
			if i < 0 {
				errs = append(errs, fmt.Errorf("%s: --coordinator.address=%s: service %s has no port %s", sts.Name, addr, svc.Name, svcPort))
				continue
			}
			sp := svc.Spec.Ports[i]
			for _, p := range selecting(b, svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector)) {
				for _, cc := range p.tmpl.Spec.Containers {
					listen := strings.Join(flagValues(cc)["grpc.listen-address"], ",")
					for _, cp := range cc.Ports {
						if (sp.TargetPort.Type == intstr.String && cp.Name == sp.TargetPort.StrVal) || cp.ContainerPort == sp.TargetPort.IntVal {
							if fmt.Sprint(cp.ContainerPort) != port(listen) {
								errs = append(errs, fmt.Errorf("%s: service %s port %s reaches container port %d, the coordinator listens on gRPC at %q", p, svc.Name, sp.Name, cp.ContainerPort, listen))
							}
						}
					}
				}
			}
			ext := expandEnv(c, strings.Join(v["web.external-address"], ","))
			want := "pod-0." + sts.Spec.ServiceName + "."
			if ext == "" || !strings.HasPrefix(ext, want) || port(ext) != port(strings.Join(v["web.listen-address"], ",")) {
				errs = append(errs, fmt.Errorf("%s: --web.external-address=%s is not <pod>.%s...:<listen port>", sts.Name, ext, sts.Spec.ServiceName))
			}
		}
	}
	return errs
}

// promConfig returns the prometheus.yml of the coordinator's config map.
func promConfig(b rendering) (string, bool) {
	for _, cm := range objectsOf[*corev1.ConfigMap](b) {
		if s, ok := cm.Data["prometheus.yml"]; ok {
			return s, true
		}
	}
	return "", false
}

// checkCoordinatorConfig runs `coordinator --config.check` with the
// manifest's own arguments (so the binary parses every flag value) on the
// config map's prometheus.yml, written into dir.
func checkCoordinatorConfig(b rendering, dir string) []error {
	cs := shardscrapeContainers(b)["coordinator"]
	if len(cs) == 0 {
		return nil
	}
	cfg, ok := promConfig(b)
	if !ok {
		return []error{errors.New("no config map with prometheus.yml")}
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return []error{err}
	}
	var errs []error
	for _, c := range cs {
		var args []string
		for _, a := range c.Args {
			if !strings.HasPrefix(a, "--config.file=") {
				args = append(args, expandEnv(c, a))
			}
		}
		args = append(args, "--config.check", "--config.file="+file)
		out, err := exec.Command(command("coordinator"), args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			errs = append(errs, fmt.Errorf("coordinator %s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	return errs
}

// rbacAccess is what an RBAC rule grants: verb on group/resource (or a
// non-resource URL), optionally one object name.
type rbacAccess struct {
	verb, group, resource, name, url string
}

func (a rbacAccess) String() string {
	if a.url != "" {
		return a.verb + " " + a.url
	}
	s := a.verb + " " + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.name != "" {
		s += "/" + a.name
	}
	return s
}

func listHas(list []string, v string) bool {
	return slices.Contains(list, v) || slices.Contains(list, "*")
}

func ruleAllows(r rbacv1.PolicyRule, a rbacAccess) bool {
	if !listHas(r.Verbs, a.verb) {
		return false
	}
	if a.url != "" {
		return slices.ContainsFunc(r.NonResourceURLs, func(u string) bool {
			return u == a.url || (strings.HasSuffix(u, "*") && strings.HasPrefix(a.url, strings.TrimSuffix(u, "*")))
		})
	}
	return listHas(r.APIGroups, a.group) && listHas(r.Resources, a.resource) &&
		(len(r.ResourceNames) == 0 || (a.name != "" && slices.Contains(r.ResourceNames, a.name)))
}

// rbacAllowed reports whether service account ns/sa may do a, cluster-wide
// (cluster=true: ClusterRoleBindings only) or in namespace ns.
func rbacAllowed(b rendering, ns, sa string, a rbacAccess, cluster bool) bool {
	subject := func(ss []rbacv1.Subject) bool {
		return slices.ContainsFunc(ss, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == ns
		})
	}
	rules := func(ref rbacv1.RoleRef, roleNS string) []rbacv1.PolicyRule {
		switch ref.Kind {
		case "ClusterRole":
			if r := findObject[*rbacv1.ClusterRole](b, "", ref.Name); r != nil {
				return r.Rules
			}
		case "Role":
			if r := findObject[*rbacv1.Role](b, roleNS, ref.Name); r != nil {
				return r.Rules
			}
		}
		return nil
	}
	var granted []rbacv1.PolicyRule
	for _, crb := range objectsOf[*rbacv1.ClusterRoleBinding](b) {
		if subject(crb.Subjects) {
			granted = append(granted, rules(crb.RoleRef, "")...)
		}
	}
	if !cluster {
		for _, rb := range objectsOf[*rbacv1.RoleBinding](b) {
			if rb.Namespace == ns && subject(rb.Subjects) {
				granted = append(granted, rules(rb.RoleRef, ns)...)
			}
		}
	}
	return slices.ContainsFunc(granted, func(r rbacv1.PolicyRule) bool { return ruleAllows(r, a) })
}

// sdAccess maps a kubernetes_sd_configs role to the list/watch grants
// Prometheus's discovery needs for it.
func sdAccess(sd *kubernetes.SDConfig) []rbacAccess {
	var res [][2]string // group, resource
	switch sd.Role {
	case kubernetes.RoleNode:
		res = [][2]string{{"", "nodes"}}
	case kubernetes.RolePod:
		res = [][2]string{{"", "pods"}}
	case kubernetes.RoleService:
		res = [][2]string{{"", "services"}}
	case kubernetes.RoleEndpoint:
		res = [][2]string{{"", "endpoints"}, {"", "services"}, {"", "pods"}}
	case kubernetes.RoleEndpointSlice:
		res = [][2]string{{"discovery.k8s.io", "endpointslices"}, {"", "services"}, {"", "pods"}}
	case kubernetes.RoleIngress:
		res = [][2]string{{"networking.k8s.io", "ingresses"}}
	}
	if sd.AttachMetadata.Node {
		res = append(res, [2]string{"", "nodes"})
	}
	var out []rbacAccess
	for _, r := range res {
		for _, verb := range []string{"list", "watch"} {
			out = append(out, rbacAccess{verb: verb, group: r[0], resource: r[1]})
		}
	}
	return out
}

// kubeStateMetricsResources maps kube-state-metrics' --resources names to
// API groups.
var kubeStateMetricsResources = map[string]string{
	"configmaps": "", "endpoints": "", "limitranges": "", "namespaces": "", "nodes": "",
	"persistentvolumeclaims": "", "persistentvolumes": "", "pods": "", "replicationcontrollers": "",
	"resourcequotas": "", "secrets": "", "serviceaccounts": "", "services": "",
	"daemonsets": "apps", "deployments": "apps", "replicasets": "apps", "statefulsets": "apps",
	"cronjobs": "batch", "jobs": "batch", "horizontalpodautoscalers": "autoscaling",
	"ingresses": "networking.k8s.io", "ingressclasses": "networking.k8s.io", "networkpolicies": "networking.k8s.io",
	"poddisruptionbudgets": "policy", "storageclasses": "storage.k8s.io", "volumeattachments": "storage.k8s.io",
	"endpointslices": "discovery.k8s.io", "leases": "coordination.k8s.io",
	"certificatesigningrequests":    "certificates.k8s.io",
	"mutatingwebhookconfigurations": "admissionregistration.k8s.io", "validatingwebhookconfigurations": "admissionregistration.k8s.io",
}

// checkRBAC: the coordinator's account may list and watch what every
// kubernetes_sd_configs role of the config map's prometheus.yml reads, and
// hold its Lease; the workers' account may scrape what the jobs scrape with
// the service account token (the API server's /metrics, kubelets through
// the API server proxy or directly); kube-state-metrics may list and watch
// every resource it is told to.
func checkRBAC(b rendering) []error {
	var errs []error
	need := func(ns, sa string, a rbacAccess, cluster bool, why string) {
		if !rbacAllowed(b, ns, sa, a, cluster) {
			errs = append(errs, fmt.Errorf("service account %s/%s may not %s (%s)", ns, sa, a, why))
		}
	}
	var coord, scraper []podTemplate
	for _, p := range podTemplates(b) {
		for _, c := range p.tmpl.Spec.Containers {
			if len(c.Command) > 0 && path.Base(c.Command[0]) == "coordinator" {
				coord = append(coord, p)
				v := flagValues(c)
				lease := "shardscrape-coordinator"
				if l := v["leader-election.lease-name"]; len(l) > 0 {
					lease = l[len(l)-1]
				}
				if slices.Contains(c.Args, "--leader-election.enabled") {
					for _, verb := range []string{"get", "update"} {
						need(p.namespace, p.tmpl.Spec.ServiceAccountName, rbacAccess{verb: verb, group: "coordination.k8s.io", resource: "leases", name: lease}, false, "leader election")
					}
					need(p.namespace, p.tmpl.Spec.ServiceAccountName, rbacAccess{verb: "create", group: "coordination.k8s.io", resource: "leases"}, false, "leader election")
				}
			}
			if len(c.Command) > 0 && path.Base(c.Command[0]) == "scraper" {
				scraper = append(scraper, p)
			}
			if strings.Contains(c.Image, "kube-state-metrics") {
				for _, res := range strings.Split(strings.Join(flagValues(c)["resources"], ","), ",") {
					group, ok := kubeStateMetricsResources[res]
					if !ok {
						errs = append(errs, fmt.Errorf("kube-state-metrics: unknown resource %q", res))
						continue
					}
					for _, verb := range []string{"list", "watch"} {
						need(p.namespace, p.tmpl.Spec.ServiceAccountName, rbacAccess{verb: verb, group: group, resource: res}, true, "kube-state-metrics --resources")
					}
				}
			}
		}
	}
	if len(coord) == 0 {
		return errs
	}
	text, ok := promConfig(b)
	if !ok {
		return append(errs, errors.New("no config map with prometheus.yml"))
	}
	cfg, err := config.Load(text, nil)
	if err != nil {
		return append(errs, fmt.Errorf("prometheus.yml: %w", err))
	}
	scs, err := cfg.GetScrapeConfigs()
	if err != nil {
		return append(errs, fmt.Errorf("prometheus.yml: %w", err))
	}
	for _, sc := range scs {
		for _, d := range sc.ServiceDiscoveryConfigs {
			sd, ok := d.(*kubernetes.SDConfig)
			if !ok {
				continue
			}
			for _, a := range sdAccess(sd) {
				for _, p := range coord {
					need(p.namespace, p.tmpl.Spec.ServiceAccountName, a, true, fmt.Sprintf("job %s: kubernetes_sd role %s", sc.JobName, sd.Role))
				}
			}
			// Scraping with the workers' service account token.
			if sc.HTTPClientConfig.Authorization == nil || sc.HTTPClientConfig.Authorization.CredentialsFile != saTokenFile {
				continue
			}
			var wants []rbacAccess
			proxied := slices.ContainsFunc(sc.RelabelConfigs, func(r *relabel.Config) bool {
				return r.TargetLabel == model.MetricsPathLabel && strings.Contains(r.Replacement, "/proxy/")
			})
			switch {
			case proxied:
				wants = append(wants, rbacAccess{verb: "get", resource: "nodes/proxy"})
			case sd.Role == kubernetes.RoleNode:
				wants = append(wants, rbacAccess{verb: "get", resource: "nodes/metrics"})
			default:
				wants = append(wants, rbacAccess{verb: "get", url: "/metrics"})
			}
			for _, a := range wants {
				for _, p := range scraper {
					need(p.namespace, p.tmpl.Spec.ServiceAccountName, a, true, "job "+sc.JobName+" scrapes with the service account token")
				}
			}
		}
	}
	return errs
}

// TestChecksCatchBrokenManifests breaks a rendered overlay in one place at a
// time and requires the check that guards that place to say so.
func TestChecksCatchBrokenManifests(t *testing.T) {
	dir := deployDir(t)
	flags := binaryFlags(t)
	vm := renderKustomization(t, filepath.Join(dir, "overlays/victoriametrics"))
	exporters := renderKustomization(t, filepath.Join(dir, "exporters"))

	container := func(b rendering, bin string) *corev1.Container {
		for _, p := range podTemplates(b) {
			for i, c := range p.tmpl.Spec.Containers {
				if len(c.Command) > 0 && c.Command[0] == bin {
					return &p.tmpl.Spec.Containers[i]
				}
			}
		}
		t.Fatalf("no %s container", bin)
		return nil
	}
	setArg := func(c *corev1.Container, name, value string) {
		for i, a := range c.Args {
			if strings.HasPrefix(a, "--"+name+"=") || a == "--"+name {
				c.Args[i] = "--" + name + "=" + value
				return
			}
		}
		c.Args = append(c.Args, "--"+name+"="+value)
	}
	dropRule := func(b rendering, role, resource string) {
		cr := findObject[*rbacv1.ClusterRole](b, "", role)
		require.NotNil(t, cr, role)
		for i := range cr.Rules {
			cr.Rules[i].Resources = slices.DeleteFunc(cr.Rules[i].Resources, func(r string) bool { return r == resource })
		}
	}
	checks := map[string]func(rendering) []error{
		"selectors":    checkSelectors,
		"ports":        checkPorts,
		"references":   checkReferences,
		"flags":        func(b rendering) []error { return checkFlags(b, flags) },
		"rbac":         checkRBAC,
		"grace":        func(b rendering) []error { return checkGrace(b, flags) },
		"remote-write": checkRemoteWrite,
		"wiring":       checkWiring,
		"pods":         checkPods,
		"config-check": func(b rendering) []error { return checkCoordinatorConfig(b, t.TempDir()) },
	}
	for _, tc := range []struct {
		name   string
		from   []runtime.Object
		check  string
		want   string // in one of the errors
		mutate func(b rendering)
	}{
		{"unknown flag", vm, "flags", "--scrape.fake-flag", func(b rendering) {
			c := container(b, "scraper")
			c.Args = append(c.Args, "--scrape.fake-flag=1")
		}},
		{"value flag without value", vm, "flags", "--cluster.name needs =value", func(b rendering) {
			c := container(b, "coordinator")
			c.Args = append(c.Args, "--cluster.name")
		}},
		{"boolean flag with a value", vm, "flags", "boolean flag", func(b rendering) {
			c := container(b, "coordinator")
			c.Args = append(c.Args, "--leader-election.enabled=true")
		}},
		{"workload selector", vm, "selectors", "does not match its pod labels", func(b rendering) {
			onlyObject[*appsv1.StatefulSet](t, b).Spec.Template.Labels["app.kubernetes.io/component"] = "scrapper"
		}},
		{"service selector", vm, "selectors", "selects no pod template", func(b rendering) {
			findObject[*corev1.Service](b, "shardscrape", "shardscrape-coordinator").Spec.Selector["app.kubernetes.io/component"] = "coordinatr"
		}},
		{"pdb selector", vm, "selectors", "pdb shardscrape-scraper", func(b rendering) {
			onlyObject[*policyv1.PodDisruptionBudget](t, b).Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		}},
		{"service target port", vm, "ports", "targetPort grcp", func(b rendering) {
			svc := findObject[*corev1.Service](b, "shardscrape", "shardscrape-coordinator")
			svc.Spec.Ports[0].TargetPort = intstr.FromString("grcp")
		}},
		{"probe port", vm, "ports", "readiness probe port htpp", func(b rendering) {
			container(b, "scraper").ReadinessProbe.HTTPGet.Port = intstr.FromString("htpp")
		}},
		{"undefined env reference", vm, "references", "$(POD_NAM)", func(b rendering) {
			setArg(container(b, "scraper"), "worker.id", "$(POD_NAM)")
		}},
		{"secret not rendered", vm, "references", "shardscrape-objstor", func(b rendering) {
			d := onlyObject[*appsv1.Deployment](t, b)
			for i, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil && strings.HasPrefix(v.Secret.SecretName, "shardscrape-objstore") {
					d.Spec.Template.Spec.Volumes[i].Secret.SecretName = "shardscrape-objstor"
				}
			}
		}},
		{"discovery rbac", vm, "rbac", "list endpointslices.discovery.k8s.io", func(b rendering) {
			dropRule(b, "shardscrape-coordinator", "endpointslices")
		}},
		{"scrape rbac", vm, "rbac", "get nodes/proxy", func(b rendering) {
			dropRule(b, "shardscrape-scraper", "nodes/proxy")
		}},
		{"lease rbac", vm, "rbac", "leases.coordination.k8s.io/other-lease", func(b rendering) {
			setArg(container(b, "coordinator"), "leader-election.lease-name", "other-lease")
		}},
		{"kube-state-metrics rbac", exporters, "rbac", "list secrets", func(b rendering) {
			for _, d := range objectsOf[*appsv1.Deployment](b) {
				c := &d.Spec.Template.Spec.Containers[0]
				setArg(c, "resources", strings.Join(flagValues(*c)["resources"], ",")+",secrets")
			}
		}},
		{"grace period", vm, "grace", "does not exceed", func(b rendering) {
			setArg(container(b, "scraper"), "storage.remote.flush-deadline", "2m")
		}},
		{"grace period and scrape timeout", vm, "grace", "largest scrape_timeout (1m40s)", func(b rendering) {
			for _, cm := range objectsOf[*corev1.ConfigMap](b) {
				if text, ok := cm.Data["prometheus.yml"]; ok {
					text = strings.Replace(text, "  scrape_interval: 15s\n  scrape_timeout: 10s\n", "  scrape_interval: 2m\n  scrape_timeout: 100s\n", 1)
					require.Contains(t, text, "scrape_timeout: 100s")
					cm.Data["prometheus.yml"] = text
				}
			}
		}},
		{"coordinator address", vm, "wiring", "shardscrape-coordinatr", func(b rendering) {
			setArg(container(b, "scraper"), "coordinator.address", "shardscrape-coordinatr:9094")
		}},
		{"coordinator grpc port", vm, "wiring", "9095", func(b rendering) {
			setArg(container(b, "coordinator"), "grpc.listen-address", ":9095")
		}},
		{"advertised address", vm, "wiring", "not <pod>.shardscrape-scraper", func(b rendering) {
			setArg(container(b, "scraper"), "web.external-address", "$(POD_NAME):9095")
		}},
		{"remote-write receiver", vm, "remote-write", "victoria", func(b rendering) {
			setArg(container(b, "scraper"), "remote-write.receiver", "victoria")
		}},
		{"pdb unhealthy pods", vm, "pods", "unhealthyPodEvictionPolicy", func(b rendering) {
			onlyObject[*policyv1.PodDisruptionBudget](t, b).Spec.UnhealthyPodEvictionPolicy = nil
		}},
		{"no GOMEMLIMIT", vm, "pods", "no GOMEMLIMIT", func(b rendering) {
			c := container(b, "scraper")
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" })
		}},
		{"GOMEMLIMIT above the limit", vm, "pods", "is not below the memory limit", func(b rendering) {
			c := container(b, "coordinator")
			for i := range c.Env {
				if c.Env[i].Name == "GOMEMLIMIT" {
					c.Env[i].Value = "4GiB"
				}
			}
		}},
		{"node selector", exporters, "pods", "no nodeSelector", func(b rendering) {
			onlyObject[*appsv1.DaemonSet](t, b).Spec.Template.Spec.NodeSelector = nil
		}},
		{"restricted pod security", vm, "pods", "seccompProfile not RuntimeDefault", func(b rendering) {
			onlyObject[*appsv1.StatefulSet](t, b).Spec.Template.Spec.SecurityContext.SeccompProfile = nil
		}},
		{"exporters in a restricted namespace", exporters, "pods", "host namespaces", func(b rendering) {
			for _, ns := range objectsOf[*corev1.Namespace](b) {
				ns.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
			}
		}},
		{"config", vm, "config-check", "FAILED", func(b rendering) {
			for _, cm := range objectsOf[*corev1.ConfigMap](b) {
				if s, ok := cm.Data["prometheus.yml"]; ok {
					cm.Data["prometheus.yml"] = strings.Replace(s, "role: endpointslice", "role: endpointslices", 1)
				}
			}
		}},
		{"flag value", vm, "config-check", "--log.level", func(b rendering) {
			setArg(container(b, "coordinator"), "log.level", "loud")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rendering{name: tc.name}
			for _, o := range tc.from {
				b.objs = append(b.objs, o.DeepCopyObject())
			}
			check := checks[tc.check]
			require.Empty(t, check(b), "the unbroken build passes %s", tc.check)
			tc.mutate(b)
			errs := check(b)
			require.NotEmpty(t, errs)
			require.Contains(t, errors.Join(errs...).Error(), tc.want)
		})
	}
}

// TestREADME checks the commands of deploy/README.md against the manifests:
// the kustomizations it applies exist, the Secret it creates has the keys
// the pods mount, and its shardctl command uses flags shardctl has and the
// admin token file the coordinator mounts.
func TestREADME(t *testing.T) {
	dir := deployDir(t)
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	require.NoError(t, err)
	shardctl := binaryFlags(t)["shardctl"]
	base := rendering{name: "base", objs: renderKustomization(t, filepath.Join(dir, "base"))}
	coord := shardscrapeContainers(base)["coordinator"]
	require.Len(t, coord, 1)
	dep := onlyObject[*appsv1.Deployment](t, base)

	// mounted returns the Secret key a file path of the coordinator is.
	mounted := func(file string) (secret, key string) {
		for _, m := range coord[0].VolumeMounts {
			if filepath.Dir(file) != m.MountPath {
				continue
			}
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					for _, it := range v.Secret.Items {
						if it.Path == filepath.Base(file) {
							return v.Secret.SecretName, it.Key
						}
					}
				}
			}
		}
		return "", ""
	}

	var applied, secrets, shardctls int
	for line := range strings.Lines(string(readme)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "kubectl ") {
			continue
		}
		fields := strings.Fields(line)
		switch {
		case strings.Contains(line, " apply -k "):
			applied++
			k := strings.TrimPrefix(fields[slices.Index(fields, "-k")+1], "deploy/")
			require.Contains(t, kustomizations, k, line)
		case strings.Contains(line, " create secret generic "):
			secrets++
			name := fields[slices.Index(fields, "generic")+1]
			keys, ok := userSecrets[name]
			require.True(t, ok, "README creates secret %q the manifests do not mount", name)
			for _, k := range keys {
				require.Contains(t, line, "--from-literal="+k+"=", line)
			}
		case strings.Contains(line, " shardctl "):
			shardctls++
			for _, f := range fields[slices.Index(fields, "shardctl")+1:] {
				if !strings.HasPrefix(f, "--") {
					continue
				}
				name, value, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
				require.Contains(t, shardctl, name, line)
				if name == "coordinator.auth-token-file" {
					secret, key := mounted(value)
					require.Equal(t, "shardscrape-auth", secret, "%s is no shardscrape-auth key the coordinator mounts", value)
					require.Equal(t, "admin-token", key, value)
				}
				if name == "coordinator.address" {
					host, port, _ := strings.Cut(value, ":")
					svc := findObject[*corev1.Service](base, "shardscrape", host)
					require.NotNil(t, svc, value)
					require.True(t, slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
						return fmt.Sprint(p.Port) == port && p.Name == "grpc"
					}), value)
				}
			}
		}
	}
	require.Equal(t, 2, applied, "install and second-cluster apply commands")
	require.Equal(t, 2, secrets)
	require.Equal(t, 2, shardctls)
}

// TestConfigIsTheDocumentsJobsMadeCurrent pins what base/config/prometheus.yml
// keeps of the source document's config and what it changes.
func TestConfigIsTheDocumentsJobsMadeCurrent(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(deployDir(t), "base/config/prometheus.yml"))
	require.NoError(t, err)
	cfg, err := config.Load(string(text), nil)
	require.NoError(t, err)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	var jobs []string
	for _, sc := range scs {
		jobs = append(jobs, sc.JobName)
		for _, d := range sc.ServiceDiscoveryConfigs {
			sd, ok := d.(*kubernetes.SDConfig)
			require.True(t, ok, "job %s: only Kubernetes discovery", sc.JobName)
			require.NotEqual(t, kubernetes.RoleEndpoint, sd.Role, "job %s: the endpointslice role, not the deprecated Endpoints API", sc.JobName)
			require.Empty(t, sd.HTTPClientConfig.Authorization, "job %s: discovery uses the in-cluster account", sc.JobName)
		}
		if strings.HasPrefix(sc.JobName, "kubernetes-services") || strings.HasPrefix(sc.JobName, "kubernetes-ingresses") {
			require.Equal(t, "/probe", sc.MetricsPath, sc.JobName)
			require.Equal(t, []string{"http_2xx"}, sc.Params["module"], sc.JobName)
			require.True(t, slices.ContainsFunc(sc.RelabelConfigs, func(r *relabel.Config) bool {
				return r.TargetLabel == model.AddressLabel && r.Replacement == "blackbox-exporter:9115"
			}), "%s: probes through the blackbox-exporter placeholder", sc.JobName)
		}
	}
	require.Equal(t, []string{
		"kubernetes-apiservers", "kubernetes-nodes", "kubernetes-cadvisor", "kubernetes-service-endpoints",
		"kubernetes-services", "kubernetes-ingresses", "kubernetes-pods",
	}, jobs)
	require.NotContains(t, string(text), "\n    bearer_token_file:", "authorization.credentials_file replaces bearer_token_file")
	require.Len(t, cfg.RemoteWriteConfigs, 1)
	require.Equal(t, "remote-write.invalid", cfg.RemoteWriteConfigs[0].URL.Hostname(), "a placeholder the overlays replace")
}

// checkPods: what every pod of the build must have. A PodDisruptionBudget
// lets unhealthy pods go (AlwaysAllow: an unready worker holds no assignment
// in force, and with the default IfHealthyBudget two unready workers would
// block every eviction). A container with a memory limit sets GOMEMLIMIT
// below it (else the Go heap grows past the cgroup limit during a backlog
// and the kernel kills the pod instead of the GC working harder). Every pod
// asks for Linux nodes. Every workload's namespace is in the build with a
// Pod Security enforce level, and the pods of a restricted namespace comply
// with the restricted profile.
func checkPods(b rendering) []error {
	var errs []error
	for _, pdb := range objectsOf[*policyv1.PodDisruptionBudget](b) {
		if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
			errs = append(errs, fmt.Errorf("pdb %s: unhealthyPodEvictionPolicy is not AlwaysAllow", pdb.Name))
		}
	}
	for _, p := range podTemplates(b) {
		spec := p.tmpl.Spec
		if spec.NodeSelector[corev1.LabelOSStable] != "linux" {
			errs = append(errs, fmt.Errorf("%s: no nodeSelector %s: linux", p, corev1.LabelOSStable))
		}
		for _, c := range spec.Containers {
			limit, ok := c.Resources.Limits[corev1.ResourceMemory]
			if !ok {
				continue
			}
			i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" })
			if i < 0 {
				errs = append(errs, fmt.Errorf("%s container %s: memory limit %s but no GOMEMLIMIT", p, c.Name, limit.String()))
				continue
			}
			n, err := parseGoMemLimit(c.Env[i].Value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s container %s: %w", p, c.Name, err))
			} else if n >= limit.Value() {
				errs = append(errs, fmt.Errorf("%s container %s: GOMEMLIMIT %s is not below the memory limit %s", p, c.Name, c.Env[i].Value, limit.String()))
			}
		}
		var ns *corev1.Namespace
		for _, n := range objectsOf[*corev1.Namespace](b) {
			if n.Name == p.namespace {
				ns = n
			}
		}
		if ns == nil {
			errs = append(errs, fmt.Errorf("%s: namespace %q not in the build", p, p.namespace))
			continue
		}
		switch level := ns.Labels["pod-security.kubernetes.io/enforce"]; level {
		case "restricted":
			for _, e := range restrictedViolations(spec) {
				errs = append(errs, fmt.Errorf("%s in restricted namespace %s: %s", p, ns.Name, e))
			}
		case "privileged", "baseline":
		default:
			errs = append(errs, fmt.Errorf("namespace %s: pod-security.kubernetes.io/enforce %q", ns.Name, level))
		}
	}
	return errs
}

// restrictedViolations lists what of a pod spec the Pod Security
// "restricted" profile refuses (the checks these manifests could trip).
func restrictedViolations(spec corev1.PodSpec) []string {
	var out []string
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		out = append(out, "host namespaces")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			out = append(out, "hostPath volume "+v.Name)
		}
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = psc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			out = append(out, c.Name+": runAsNonRoot not true")
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
			out = append(out, c.Name+": seccompProfile not RuntimeDefault")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			out = append(out, c.Name+": allowPrivilegeEscalation not false")
		}
		if sc.Privileged != nil && *sc.Privileged {
			out = append(out, c.Name+": privileged")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			out = append(out, c.Name+": capabilities do not drop ALL")
		} else if slices.ContainsFunc(sc.Capabilities.Add, func(c corev1.Capability) bool { return c != "NET_BIND_SERVICE" }) {
			out = append(out, c.Name+": capabilities add more than NET_BIND_SERVICE")
		}
	}
	return out
}

// parseGoMemLimit parses a GOMEMLIMIT value (bytes, or with a B, KiB, MiB,
// GiB or TiB suffix, as the Go runtime reads it).
func parseGoMemLimit(s string) (int64, error) {
	num, mult := s, int64(1)
	for i, suf := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if strings.HasSuffix(s, suf) {
			num = strings.TrimSuffix(s, suf)
			mult = int64(1) << (10 * (4 - i))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("GOMEMLIMIT %q: not a size like 1800MiB", s)
	}
	return n * mult, nil
}

// TestNodeExporterIP: the kubernetes-pods job labels a node-exporter pod's
// series with its node's ip, for this deploy's node-exporter and
// kube-prometheus-stack's prometheus-node-exporter, and no other pod's.
func TestNodeExporterIP(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(deployDir(t), "base/config/prometheus.yml"))
	require.NoError(t, err)
	cfg, err := config.Load(string(text), nil)
	require.NoError(t, err)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	i := slices.IndexFunc(scs, func(sc *config.ScrapeConfig) bool { return sc.JobName == "kubernetes-pods" })
	require.GreaterOrEqual(t, i, 0)
	for app, want := range map[string]string{
		"node-exporter":            "10.0.0.7",
		"prometheus-node-exporter": "10.0.0.7",
		"web":                      "",
		"node-exporter-proxy":      "",
	} {
		lset := promlabels.FromStrings(
			model.AddressLabel, "10.0.0.7:9100",
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true",
			"__meta_kubernetes_pod_phase", "Running",
			"__meta_kubernetes_pod_label_app_kubernetes_io_name", app,
			"__meta_kubernetes_pod_host_ip", "10.0.0.7",
			"__meta_kubernetes_namespace", "monitoring-exporters",
			"__meta_kubernetes_pod_name", "x",
		)
		lb := promlabels.NewBuilder(lset)
		require.True(t, relabel.ProcessBuilder(lb, scs[i].RelabelConfigs...), app)
		require.Equal(t, want, lb.Get("ip"), app)
	}
}

func ptrValue[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
