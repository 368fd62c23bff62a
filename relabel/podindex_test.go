package relabel

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
)

const wait = 15 * time.Second

// kube serves a fake API server for the test.
func kube(t testing.TB) (*kubeapi.Server, string) {
	t.Helper()
	s := kubeapi.New(kubeapi.Options{})
	srv, err := fake.Serve(s)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return s, srv.URL
}

// runIndex starts a pod index against url and waits for its sync.
func runIndex(t testing.TB, url string, reg prometheus.Registerer, opts PodIndexOptions) *PodIndex {
	t.Helper()
	c, err := NewKubeClient(url, "")
	require.NoError(t, err)
	opts.Client = c
	x, err := NewPodIndex(opts, nil, reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = x.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	require.True(t, x.WaitForSync(ctx))
	return x
}

func podAt(ns, name, node, ip string, lbls map[string]string) *corev1.Pod {
	return kubeapi.NewPod(ns, name, node, ip, lbls, nil)
}

func name(p *Pod) string {
	if p == nil {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

func TestPodIndexChurn(t *testing.T) {
	s, url := kube(t)
	old := podAt("shop", "web-0", "n1", "10.1.0.1", map[string]string{"app": "web", "app.kubernetes.io/version": "1"})
	host := podAt("kube-system", "node-exporter-x", "n1", "10.0.0.1", nil)
	host.Spec.HostNetwork = true
	require.NoError(t, s.Apply(old, host))

	reg := prometheus.NewRegistry()
	x := runIndex(t, url, reg, PodIndexOptions{})
	p := x.Lookup("10.1.0.1")
	require.NotNil(t, p)
	require.Equal(t, "web-0", p.Name)
	require.Equal(t, model.LabelSet{
		MetaPodName: "web-0", MetaPodNamespace: "shop", MetaPodNode: "n1", MetaPodIP: "10.1.0.1",
		"__meta_pod_label_app": "web", "__meta_pod_labelpresent_app": "true",
		"__meta_pod_label_app_kubernetes_io_version": "1", "__meta_pod_labelpresent_app_kubernetes_io_version": "true",
	}, p.MetaLabels())
	require.Nil(t, x.Lookup("10.0.0.1"), "host-network pods share the node IP and are not indexed")
	require.Equal(t, 1, x.Len())
	require.Equal(t, 1.0, testutil.ToFloat64(x.metrics.pods))
	require.Equal(t, 1.0, testutil.ToFloat64(x.metrics.hit))
	require.Equal(t, 1.0, testutil.ToFloat64(x.metrics.miss))

	drain := func() {
		for {
			select {
			case <-x.Changed():
			default:
				return
			}
		}
	}
	drain()

	// A status-only update does not change the answer's identity.
	upd := old.DeepCopy()
	upd.Status.Conditions = append(upd.Status.Conditions, corev1.PodCondition{Type: "Extra", Status: corev1.ConditionTrue})
	v := x.Version()
	require.NoError(t, s.Apply(upd, podAt("shop", "marker", "n1", "10.9.9.9", nil)))
	require.Eventually(t, func() bool { return x.Lookup("10.9.9.9") != nil }, wait, 5*time.Millisecond)
	require.Same(t, p, x.Lookup("10.1.0.1"))
	require.Equal(t, v+1, x.Version(), "only the marker pod changed an answer")

	// The old pod terminates, a new pod gets its IP: the new one wins.
	done := old.DeepCopy()
	done.Status.Phase = corev1.PodSucceeded
	drain()
	require.NoError(t, s.Apply(done))
	require.Eventually(t, func() bool { return x.Lookup("10.1.0.1") == nil }, wait, 5*time.Millisecond, "a terminated pod's IP is free")
	<-x.Changed()
	next := podAt("shop", "web-1", "n2", "10.1.0.1", map[string]string{"app": "web"})
	next.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Minute))
	require.NoError(t, s.Apply(next))
	require.Eventually(t, func() bool { return name(x.Lookup("10.1.0.1")) == "shop/web-1" }, wait, 5*time.Millisecond)
	<-x.Changed()
	require.Equal(t, "n2", x.Lookup("10.1.0.1").Node)

	// A pod being deleted loses to a live one; a newer Running pod wins
	// over an older one.
	dying := podAt("other", "zz", "n3", "10.1.0.1", nil)
	dying.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
	now := metav1.Now()
	dying.DeletionTimestamp = &now
	require.NoError(t, s.Apply(dying, podAt("shop", "marker2", "n1", "10.9.9.8", nil)))
	require.Eventually(t, func() bool { return x.Lookup("10.9.9.8") != nil }, wait, 5*time.Millisecond)
	require.Equal(t, "shop/web-1", name(x.Lookup("10.1.0.1")))

	// Deleting the winner hands the IP to what is left.
	require.NoError(t, s.Delete(next))
	require.Eventually(t, func() bool { return name(x.Lookup("10.1.0.1")) == "other/zz" }, wait, 5*time.Millisecond)
	require.NoError(t, s.Delete(dying, done))
	require.Eventually(t, func() bool { return x.Lookup("10.1.0.1") == nil }, wait, 5*time.Millisecond)
	require.Eventually(t, func() bool { return testutil.ToFloat64(x.metrics.pods) == 2 }, wait, 5*time.Millisecond)
}

func TestPodIndexOptions(t *testing.T) {
	_, err := NewPodIndex(PodIndexOptions{}, nil, nil)
	require.Error(t, err)
	_, err = NewKubeClient("", filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err)

	s, url := kube(t)
	host := podAt("kube-system", "node-exporter-x", "n1", "10.0.0.1", nil)
	host.Spec.HostNetwork = true
	require.NoError(t, s.Apply(host, podAt("a", "p", "n1", "10.1.0.1", nil), podAt("b", "q", "n2", "10.1.0.2", nil)))
	x := runIndex(t, url, nil, PodIndexOptions{IncludeHostNetwork: true, FieldSelector: "spec.nodeName=n1"})
	require.Equal(t, "kube-system/node-exporter-x", name(x.Lookup("10.0.0.1")))
	require.Equal(t, "a/p", name(x.Lookup("10.1.0.1")))
	require.Nil(t, x.Lookup("10.1.0.2"))
}

func TestPodIndexKubeconfig(t *testing.T) {
	s, url := kube(t)
	require.NoError(t, s.Apply(podAt("a", "p", "n1", "10.1.0.1", nil)))
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, kubeapi.WriteKubeconfig(path, url))
	c, err := NewKubeClient("", path)
	require.NoError(t, err)
	x, err := NewPodIndex(PodIndexOptions{Client: c}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = x.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	require.True(t, x.WaitForSync(ctx))
	require.True(t, x.HasSynced())
	require.Equal(t, "a/p", name(x.Lookup("10.1.0.1")))
}

func TestPodIndexForbidden(t *testing.T) {
	// An API server that refuses the pod list, as without RBAC for pods.
	srv, err := fake.Serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"pods is forbidden"}`))
	}))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	c, err := NewKubeClient(srv.URL, "")
	require.NoError(t, err)
	x, err := NewPodIndex(PodIndexOptions{Client: c}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = x.Run(ctx) })
	require.Eventually(t, func() bool { return testutil.ToFloat64(x.metrics.watchErrors) > 0 }, wait, 10*time.Millisecond)
	require.False(t, x.HasSynced())
	require.Nil(t, x.Lookup("10.1.0.1"))
	cancel()
	wg.Wait()
	require.False(t, x.WaitForSync(ctx), "a canceled wait reports no sync")
}
