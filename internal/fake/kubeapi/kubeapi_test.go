package kubeapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	promk8s "github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
	"github.com/shardscrape/shardscrape/internal/fake/sdtest"
)

const wait = 15 * time.Second

func serve(t *testing.T, s *kubeapi.Server) *fake.Server {
	t.Helper()
	srv, err := fake.Serve(s)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return srv
}

// runSD runs Prometheus's kubernetes SD (the real Discoverer, client-go
// informers over HTTP) against url and keeps the latest group per source.
func runSD(t *testing.T, url, cfg string) *sdtest.Groups {
	t.Helper()
	var conf promk8s.SDConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte("api_server: "+url+"\n"+cfg), &conf))
	return sdtest.Run(t, &conf)
}

func cluster(t *testing.T) (*kubeapi.Server, *corev1.Pod, *corev1.Service) {
	t.Helper()
	s := kubeapi.New(kubeapi.Options{BookmarkInterval: 100 * time.Millisecond})
	pod := kubeapi.NewPod("shop", "web-0", "n1", "10.1.0.1",
		map[string]string{"app": "web", "app.kubernetes.io/name": "web"},
		map[string]string{"prometheus.io/scrape": "true"},
		corev1.ContainerPort{Name: "metrics", ContainerPort: 9100, Protocol: corev1.ProtocolTCP})
	svc := kubeapi.NewService("shop", "web", "10.96.0.10", map[string]string{"app": "web"},
		map[string]string{"prometheus.io/scrape": "true"},
		corev1.ServicePort{Name: "metrics", Port: 80, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP})
	ep, slice := kubeapi.EndpointsFor(svc, []*corev1.Pod{pod})
	pathType := networkingv1.PathTypePrefix
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: map[string]string{"prometheus.io/probe": "true"}},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
			Host: "shop.example.com",
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: &pathType,
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}},
			}}}},
		}}},
	}
	require.NoError(t, s.Apply(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}},
		kubeapi.NewNode("n1", "10.0.0.1", map[string]string{"zone": "z1"}),
		pod, svc, ep, slice, ing,
	))
	return s, pod, svc
}

func TestPrometheusKubernetesSDRoles(t *testing.T) {
	s, _, _ := cluster(t)
	srv := serve(t, s)

	for _, tc := range []struct {
		role, extra, source string
		want                model.LabelSet // a subset of the first target's labels
		wantGroup           model.LabelSet // a subset of the group's labels
	}{
		{role: "node", source: "node/n1",
			want:      model.LabelSet{"__address__": "10.0.0.1:10250", "instance": "n1", "__meta_kubernetes_node_address_InternalIP": "10.0.0.1"},
			wantGroup: model.LabelSet{"__meta_kubernetes_node_name": "n1", "__meta_kubernetes_node_label_zone": "z1"}},
		{role: "pod", source: "pod/shop/web-0", extra: "attach_metadata: {node: true, namespace: true}\nselectors: [{role: pod, field: spec.nodeName=n1, label: app=web}]\n",
			want: model.LabelSet{"__address__": "10.1.0.1:9100", "__meta_kubernetes_pod_container_port_name": "metrics", "__meta_kubernetes_pod_container_name": "main"},
			wantGroup: model.LabelSet{
				"__meta_kubernetes_pod_name": "web-0", "__meta_kubernetes_namespace": "shop", "__meta_kubernetes_pod_ip": "10.1.0.1",
				"__meta_kubernetes_pod_node_name": "n1", "__meta_kubernetes_pod_label_app_kubernetes_io_name": "web",
				"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true", "__meta_kubernetes_pod_ready": "true",
				"__meta_kubernetes_node_label_zone": "z1", "__meta_kubernetes_namespace_label_team": "a",
			}},
		{role: "service", source: "svc/shop/web",
			want:      model.LabelSet{"__address__": "web.shop.svc:80", "__meta_kubernetes_service_port_name": "metrics", "__meta_kubernetes_service_cluster_ip": "10.96.0.10"},
			wantGroup: model.LabelSet{"__meta_kubernetes_service_name": "web", "__meta_kubernetes_service_annotation_prometheus_io_scrape": "true"}},
		{role: "endpoints", source: "endpoints/shop/web",
			want:      model.LabelSet{"__address__": "10.1.0.1:9100", "__meta_kubernetes_pod_name": "web-0", "__meta_kubernetes_endpoint_port_name": "metrics", "__meta_kubernetes_endpoint_ready": "true", "__meta_kubernetes_endpoint_node_name": "n1"},
			wantGroup: model.LabelSet{"__meta_kubernetes_service_name": "web", "__meta_kubernetes_endpoints_name": "web", "__meta_kubernetes_service_annotation_prometheus_io_scrape": "true"}},
		{role: "endpointslice", source: "endpointslice/shop/web-fake",
			want:      model.LabelSet{"__address__": "10.1.0.1:9100", "__meta_kubernetes_pod_name": "web-0", "__meta_kubernetes_endpointslice_port_name": "metrics"},
			wantGroup: model.LabelSet{"__meta_kubernetes_endpointslice_address_type": "IPv4", "__meta_kubernetes_service_name": "web", "__meta_kubernetes_endpointslice_name": "web-fake"}},
		{role: "ingress", source: "ingress/shop/web",
			want:      model.LabelSet{"__address__": "shop.example.com", "__meta_kubernetes_ingress_scheme": "http", "__meta_kubernetes_ingress_path": "/"},
			wantGroup: model.LabelSet{"__meta_kubernetes_ingress_name": "web", "__meta_kubernetes_ingress_annotation_prometheus_io_probe": "true"}},
	} {
		t.Run(tc.role, func(t *testing.T) {
			g := runSD(t, srv.URL, "role: "+tc.role+"\n"+tc.extra)
			require.Eventually(t, func() bool {
				tg := g.Get(tc.source)
				return tg != nil && len(tg.Targets) > 0
			}, wait, 10*time.Millisecond)
			tg := g.Get(tc.source)
			for k, v := range tc.want {
				require.Equal(t, v, tg.Targets[0][k], "target label %s in %v", k, tg.Targets[0])
			}
			for k, v := range tc.wantGroup {
				require.Equal(t, v, tg.Labels[k], "group label %s in %v", k, tg.Labels)
			}
		})
	}
}

func TestPrometheusKubernetesSDChanges(t *testing.T) {
	s, pod, _ := cluster(t)
	srv := serve(t, s)
	g := runSD(t, srv.URL, "role: pod\nnamespaces: {names: [shop]}\nselectors: [{role: pod, field: spec.nodeName=n1}]\n")
	require.Eventually(t, func() bool { return g.Get("pod/shop/web-0") != nil }, wait, 10*time.Millisecond)

	// Update: a label change propagates through the watch.
	p := pod.DeepCopy()
	p.Labels["version"] = "2"
	require.NoError(t, s.Apply(p))
	require.Eventually(t, func() bool {
		tg := g.Get("pod/shop/web-0")
		return tg.Labels["__meta_kubernetes_pod_label_version"] == "2"
	}, wait, 10*time.Millisecond)

	// Add: a pod on n1 appears; one on n2 (outside the field selector) and
	// one in another namespace do not.
	p2 := kubeapi.NewPod("shop", "web-1", "n1", "10.1.0.2", map[string]string{"app": "web"}, nil, corev1.ContainerPort{ContainerPort: 8080})
	require.NoError(t, s.Apply(p2,
		kubeapi.NewPod("shop", "web-2", "n2", "10.1.0.3", nil, nil),
		kubeapi.NewPod("other", "web-3", "n1", "10.1.0.4", nil, nil)))
	require.Eventually(t, func() bool { return g.Get("pod/shop/web-1") != nil }, wait, 10*time.Millisecond)
	require.Nil(t, g.Get("pod/shop/web-2"))
	require.Nil(t, g.Get("pod/other/web-3"))

	// Moving out of the field selector is a delete for the watch.
	moved := p2.DeepCopy()
	moved.Spec.NodeName = "n2"
	require.NoError(t, s.Apply(moved))
	require.Eventually(t, func() bool { tg := g.Get("pod/shop/web-1"); return len(tg.Targets) == 0 }, wait, 10*time.Millisecond)

	// Delete.
	require.NoError(t, s.Delete(pod))
	require.Eventually(t, func() bool { tg := g.Get("pod/shop/web-0"); return len(tg.Targets) == 0 }, wait, 10*time.Millisecond)
}

// TestInformerResumesAfterDisconnect runs a plain client-go informer, kills
// its connections, and checks it resumes and sees later changes.
func TestInformerResumesAfterDisconnect(t *testing.T) {
	s, _, _ := cluster(t)
	srv, err := fake.Serve(s)
	require.NoError(t, err)
	addr := srv.Addr

	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	require.NoError(t, err)
	inf := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(client.CoreV1().RESTClient(), "pods", "", fieldsEverything()), &corev1.Pod{}, 0, cache.Indexers{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { inf.Run(ctx.Done()) })
	defer func() { cancel(); wg.Wait() }()
	require.Eventually(t, func() bool { return len(inf.GetStore().List()) == 1 }, wait, 10*time.Millisecond)
	require.Equal(t, uint64(1), s.Requests()["watchlist pods"], "client-go streams the initial list by default")

	require.NoError(t, srv.Close())
	require.NoError(t, s.Apply(kubeapi.NewPod("shop", "late", "n1", "10.1.0.9", nil, nil)))
	srv2, err := fake.ServeOn(addr, s)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv2.Close()) }()
	require.Eventually(t, func() bool { return len(inf.GetStore().List()) == 2 }, 30*time.Second, 10*time.Millisecond)
}

type rawEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

func TestWatchProtocol(t *testing.T) {
	s, pod, _ := cluster(t)
	srv := serve(t, s)
	rv := s.ResourceVersion()

	// Lists carry kind, apiVersion and the resource version.
	resp, err := http.Get(srv.URL + "/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb")
	require.NoError(t, err)
	var list struct {
		Kind, APIVersion string
		Metadata         struct{ ResourceVersion string }
		Items            []corev1.Pod
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Equal(t, "PodList", list.Kind)
	require.Equal(t, "v1", list.APIVersion)
	require.Len(t, list.Items, 1)

	// Get, in process and over HTTP.
	obj, err := s.Get(pod)
	require.NoError(t, err)
	require.Equal(t, "web-0", obj.(*corev1.Pod).Name)
	require.NotEmpty(t, obj.(*corev1.Pod).ResourceVersion)
	require.NotEmpty(t, obj.(*corev1.Pod).UID)
	resp, err = http.Get(srv.URL + "/api/v1/namespaces/shop/pods/web-0")
	require.NoError(t, err)
	var one corev1.Pod
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&one))
	resp.Body.Close()
	require.Equal(t, "Pod", one.Kind)
	require.Equal(t, "10.1.0.1", one.Status.PodIP)
	resp, err = http.Get(srv.URL + "/api/v1/namespaces/shop/pods/nope")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// Unsupported field selectors are rejected as by the apiserver.
	resp, err = http.Get(srv.URL + "/api/v1/pods?fieldSelector=spec.bogus%3Dx")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// A watch from rv sees a change leaving its selector as DELETED.
	resp, err = http.Get(srv.URL + "/api/v1/pods?watch=true&labelSelector=app%3Dweb&resourceVersion=" + itoa(rv))
	require.NoError(t, err)
	defer resp.Body.Close()
	p := pod.DeepCopy()
	p.Labels["app"] = "other"
	require.NoError(t, s.Apply(p))
	sc := bufio.NewScanner(resp.Body)
	require.True(t, sc.Scan())
	var ev rawEvent
	require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
	require.Equal(t, "DELETED", ev.Type)
	var got corev1.Pod
	require.NoError(t, json.Unmarshal(ev.Object, &got))
	require.Equal(t, "Pod", got.Kind)
	require.Equal(t, "web", got.Labels["app"], "DELETED carries the last matching state")
	require.Equal(t, itoa(s.ResourceVersion()), got.ResourceVersion)

	// Watch-list: initial ADDED events, then the initial-events-end bookmark.
	resp2, err := http.Get(srv.URL + "/api/v1/nodes?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
	require.NoError(t, err)
	defer resp2.Body.Close()
	sc = bufio.NewScanner(resp2.Body)
	require.True(t, sc.Scan())
	require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
	require.Equal(t, "ADDED", ev.Type)
	require.True(t, sc.Scan())
	require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
	require.Equal(t, "BOOKMARK", ev.Type)
	var bm metav1.PartialObjectMetadata
	require.NoError(t, json.Unmarshal(ev.Object, &bm))
	require.Equal(t, "true", bm.Annotations[metav1.InitialEventsAnnotationKey])
}

func TestWatchExpired(t *testing.T) {
	s := kubeapi.New(kubeapi.Options{EventHistory: 4})
	for i := range 10 {
		require.NoError(t, s.Apply(kubeapi.NewNode("n"+itoa(uint64(i)), "10.0.0.1", nil)))
	}
	srv := serve(t, s)
	resp, err := http.Get(srv.URL + "/api/v1/nodes?watch=true&resourceVersion=2")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	require.True(t, sc.Scan())
	var ev rawEvent
	require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
	require.Equal(t, "ERROR", ev.Type)
	var st metav1.Status
	require.NoError(t, json.Unmarshal(ev.Object, &st))
	require.Equal(t, metav1.StatusReasonExpired, st.Reason)
	require.EqualValues(t, http.StatusGone, st.Code)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func fieldsEverything() fields.Selector { return fields.Everything() }

// listWatchOnly makes the reflector list then watch (the path client-go
// takes when watch-list is off or unsupported).
type listWatchOnly struct{ *cache.ListWatch }

func (listWatchOnly) IsWatchListSemanticsUnSupported() bool { return true }

func TestInformerListThenWatch(t *testing.T) {
	s, _, _ := cluster(t)
	srv := serve(t, s)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	require.NoError(t, err)
	lw := listWatchOnly{cache.NewListWatchFromClient(client.CoreV1().RESTClient(), "nodes", "", fieldsEverything())}
	inf := cache.NewSharedIndexInformer(lw, &corev1.Node{}, 0, cache.Indexers{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { inf.Run(ctx.Done()) })
	defer func() { cancel(); wg.Wait() }()
	require.Eventually(t, func() bool { return len(inf.GetStore().List()) == 1 }, wait, 10*time.Millisecond)
	require.NoError(t, s.Apply(kubeapi.NewNode("n2", "10.0.0.2", nil)))
	require.Eventually(t, func() bool { return len(inf.GetStore().List()) == 2 }, wait, 10*time.Millisecond)
	require.Equal(t, uint64(1), s.Requests()["list nodes"])
	require.Zero(t, s.Requests()["watchlist nodes"])
	require.NoError(t, s.Delete(kubeapi.NewNode("n1", "", nil)))
	require.Eventually(t, func() bool { return len(inf.GetStore().List()) == 1 }, wait, 10*time.Millisecond)
	_, ok, err := inf.GetStore().GetByKey("n2")
	require.NoError(t, err)
	require.True(t, ok)
}

func TestPrometheusKubernetesSDEndpointSliceChanges(t *testing.T) {
	s, pod, svc := cluster(t)
	srv := serve(t, s)
	g := runSD(t, srv.URL, "role: endpointslice\n")
	src := "endpointslice/shop/web-fake"
	require.Eventually(t, func() bool { tg := g.Get(src); return tg != nil && len(tg.Targets) == 1 }, wait, 10*time.Millisecond)

	// A second ready pod joins the service.
	p2 := kubeapi.NewPod("shop", "web-1", "n1", "10.1.0.2", pod.Labels, nil, pod.Spec.Containers[0].Ports...)
	_, slice := kubeapi.EndpointsFor(svc, []*corev1.Pod{pod, p2})
	require.NoError(t, s.Apply(p2, slice))
	require.Eventually(t, func() bool { tg := g.Get(src); return len(tg.Targets) == 2 }, wait, 10*time.Millisecond)

	// A service annotation change reaches the slice's group labels.
	svc2 := svc.DeepCopy()
	svc2.Annotations["team"] = "payments"
	require.NoError(t, s.Apply(svc2))
	require.Eventually(t, func() bool {
		return g.Get(src).Labels["__meta_kubernetes_service_annotation_team"] == "payments"
	}, wait, 10*time.Millisecond)

	// The slice goes away.
	require.NoError(t, s.Delete(slice))
	require.Eventually(t, func() bool { tg := g.Get(src); return len(tg.Targets) == 0 }, wait, 10*time.Millisecond)
}
