package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
)

// TestSeedConfigThroughTheBinary runs the source document's config,
// unchanged but for the API server URL and its credential file paths,
// against the Kubernetes fake: every job discovers and keeps the targets
// Prometheus would (relabel's TestSeedConfig checks them label for label),
// and pod targets carry their pod labels.
func TestSeedConfigThroughTheBinary(t *testing.T) {
	api := kubeapi.New(kubeapi.Options{})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close) // after the instance stops
	require.NoError(t, api.Apply(kubeapi.SeedCluster()...))

	raw, err := os.ReadFile(seedConfig)
	require.NoError(t, err)
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "token"} {
		writeFile(t, filepath.Join(dir, f), "placeholder\n")
	}
	seed := strings.ReplaceAll(string(raw), "/var/run/secrets/kubernetes.io/serviceaccount/", dir+"/")
	seed = strings.ReplaceAll(seed, "  - role: ", "  - api_server: "+srv.URL+"\n    role: ")
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, seed)

	in := startInstance(t, "--config.file="+cfg, "--cluster.name=eu1",
		"--pod-enrichment.enabled", "--pod-enrichment.api-server="+srv.URL)
	in.waitReady(t)

	want := map[string]int{
		"kubernetes-apiservers":        1,
		"kubernetes-nodes":             2,
		"kubernetes-cadvisor":          2,
		"kubernetes-service-endpoints": 3,
		"kubernetes-services":          1,
		"kubernetes-ingresses":         1,
		"kubernetes-pods":              2,
	}
	require.Eventually(t, func() bool {
		jobs := in.jobs(t)
		for job, n := range want {
			if len(jobs[job]) != n {
				return false
			}
		}
		return len(jobs) == len(want)
	}, 30*time.Second, 20*time.Millisecond)
	code, body := in.get(t, "/api/v1/targets?scrapePool=kubernetes-pods")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"pod":"web-0"`)
	require.Contains(t, body, `"kubernetes_pod_name":"web-0"`)
	require.Equal(t, "12", in.metric(t, "shardscrape_coordinator_targets_kept"))
}
