//lint:file-ignore SA1019 the seed config's role: endpoints jobs read v1 Endpoints, deprecated or not

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
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
)

// seedCluster fills the fake with what the seed config's seven jobs find
// (the same cluster as relabel's TestSeedConfig).
func seedCluster(t *testing.T, s *kubeapi.Server) {
	t.Helper()
	var pods []*corev1.Pod
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		kubeapi.NewNode("n1", "10.0.0.1", map[string]string{"kubernetes.io/hostname": "n1"}),
		kubeapi.NewNode("n2", "10.0.0.2", map[string]string{"kubernetes.io/hostname": "n2"}),
	}
	api := kubeapi.NewService("default", "kubernetes", "10.96.0.1", nil, nil, corev1.ServicePort{Name: "https", Port: 443, TargetPort: intstr.FromInt32(6443), Protocol: corev1.ProtocolTCP})
	apiEP := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.100"}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: 6443, Protocol: corev1.ProtocolTCP}},
		}},
	}
	objs = append(objs, api, apiEP)
	for i, n := range []string{"n1", "n2", "n1"} {
		ann := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9102"}
		if i == 2 {
			ann = map[string]string{"prometheus.io/scrape": "false"}
		}
		pods = append(pods, kubeapi.NewPod("shop", "web-"+string(rune('0'+i)), n, "10.1.0."+string(rune('1'+i)),
			map[string]string{"app": "web"}, ann,
			corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			corev1.ContainerPort{Name: "metrics", ContainerPort: 9102, Protocol: corev1.ProtocolTCP}))
	}
	web := kubeapi.NewService("shop", "web", "10.96.0.20", map[string]string{"app": "web"},
		map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9102", "prometheus.io/path": "/m", "prometheus.io/probe": "true"},
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP})
	quiet := kubeapi.NewService("shop", "quiet", "10.96.0.21", map[string]string{"app": "web"}, nil,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP})
	for _, svc := range []*corev1.Service{web, quiet} {
		ep, slice := kubeapi.EndpointsFor(svc, pods)
		objs = append(objs, svc, ep, slice)
	}
	pathType := networkingv1.PathTypePrefix
	objs = append(objs, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: map[string]string{"prometheus.io/probe": "true"}},
		Spec: networkingv1.IngressSpec{
			Rules: []networkingv1.IngressRule{{Host: "shop.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pathType, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}},
			}}}},
		},
	})
	for _, p := range pods {
		objs = append(objs, p)
	}
	for _, o := range objs {
		require.NoError(t, s.Apply(o))
	}
}

// TestSeedConfigThroughTheBinary runs the source document's config,
// unchanged but for the API server URL and its credential file paths,
// against the Kubernetes fake: every job discovers and keeps the targets
// Prometheus would (relabel's TestSeedConfig checks them label for label),
// and pod targets carry their pod labels.
func TestSeedConfigThroughTheBinary(t *testing.T) {
	api := kubeapi.New(kubeapi.Options{})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close) // after the instance stops
	seedCluster(t, api)

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
