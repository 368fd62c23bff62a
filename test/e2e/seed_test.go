package e2e_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

// TestSeedConfig runs the source document's prometheus-seed.yml (the
// repository's copy, relabel/testdata, so a fresh clone has it), changed
// only to point every kubernetes_sd_config at the Kubernetes fake (an
// api_server line) and its credential files at placeholders, through the
// real coordinator: its node, pod and service-endpoint jobs discover
// exactly the targets Prometheus would keep in kubeapi.SeedCluster, and the
// coordinator lists them on /api/v1/targets.
func TestSeedConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real binaries")
	}
	root, err := testenv.ModuleRoot()
	require.NoError(t, err)
	seedFile := filepath.Join(root, "relabel", "testdata", "prometheus-seed.yml")
	raw, err := os.ReadFile(seedFile)
	require.NoError(t, err, "the seed config's copy in the repository")
	if shared, err := os.ReadFile(filepath.Join(root, "..", "shared", "seed", "prometheus-seed.yml")); err == nil {
		require.Equal(t, string(shared), string(raw), "relabel/testdata/prometheus-seed.yml is a copy of ../shared/seed/prometheus-seed.yml")
	}

	kube := kubeapi.New(kubeapi.Options{})
	require.NoError(t, kube.Apply(kubeapi.SeedCluster()...))
	srv, err := fake.Serve(kube)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "token"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("placeholder\n"), 0o600))
	}
	seed := strings.ReplaceAll(string(raw), "/var/run/secrets/kubernetes.io/serviceaccount/", dir+"/")
	seed = strings.ReplaceAll(seed, "  - role: ", "  - api_server: "+srv.URL+"\n    role: ")
	require.Equal(t, 7, strings.Count(seed, "api_server: "), "every kubernetes_sd_config points at the fake")
	c := startCluster(t, "e2e-seed", seed, "--pod-enrichment.enabled", "--pod-enrichment.api-server="+srv.URL)

	// What Prometheus keeps of SeedCluster, job by job: the instance labels
	// after relabeling (node name for the node roles, the probed URL for
	// the blackbox jobs).
	want := map[string][]string{
		"kubernetes-apiservers":        {"10.0.0.100:6443"},
		"kubernetes-nodes":             {"n1", "n2"},
		"kubernetes-cadvisor":          {"n1", "n2"},
		"kubernetes-service-endpoints": {"10.1.0.1:9102", "10.1.0.2:9102", "10.1.0.3:9102"},
		"kubernetes-services":          {"web.shop.svc:80"},
		"kubernetes-ingresses":         {"https://shop.example.com/"},
		"kubernetes-pods":              {"10.1.0.1:9102", "10.1.0.2:9102"},
	}
	var got map[string][]string
	var ts []fleetTarget
	ok := pollUntil(waitLong, func() bool {
		ts = c.targets()
		got = map[string][]string{}
		for _, ft := range ts {
			got[ft.ScrapePool] = append(got[ft.ScrapePool], ft.Labels["instance"])
		}
		for _, v := range got {
			slices.Sort(v)
		}
		return equalJobs(got, want)
	})
	require.True(t, ok, "targets by job: got %v, want %v", got, want)

	// Labels Prometheus's relabeling gives them, and the pod enrichment.
	paths := map[string]bool{}
	for _, ft := range ts {
		switch ft.ScrapePool {
		case "kubernetes-nodes":
			paths[ft.Labels["kubernetes_io_hostname"]] = true
		case "kubernetes-pods":
			require.Equal(t, "shop", ft.Labels["kubernetes_namespace"], ft.Labels)
			require.Equal(t, ft.Labels["kubernetes_pod_name"], ft.Labels["pod"], "pod enrichment agrees with the pod role: %v", ft.Labels)
			require.Equal(t, "web", ft.Labels["app"])
		case "kubernetes-service-endpoints":
			require.Equal(t, "web", ft.Labels["kubernetes_name"], ft.Labels)
		}
	}
	require.Equal(t, map[string]bool{"n1": true, "n2": true}, paths, "both nodes")
	figure(t, "seed", "targets", len(ts), "jobs", len(got))
}

func equalJobs(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if !slices.Equal(a[k], v) {
			return false
		}
	}
	return true
}
