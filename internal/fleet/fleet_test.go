package fleet_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promconsul "github.com/prometheus/prometheus/discovery/consul"
	promk8s "github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/sdtest"
	"github.com/shardscrape/shardscrape/internal/fleet"
	"github.com/shardscrape/shardscrape/internal/synth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// start starts a fleet on free ports and serves its control handler.
func start(t *testing.T, opts fleet.Options) (*fleet.Fleet, *fake.Server) {
	t.Helper()
	f, err := fleet.New(opts)
	require.NoError(t, err)
	require.NoError(t, f.Start())
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	srv, err := fake.Serve(f.Handler())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return f, srv
}

func client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// parse parses a text exposition into series → value (testenv.ParseText),
// failing the test on a malformed body or a series given twice.
func parse(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	set, err := testenv.ParseText(bytes.NewReader(body))
	require.NoError(t, err)
	out, err := set.Values()
	require.NoError(t, err)
	return out
}

func TestTargetsAtTheirOwnAddresses(t *testing.T) {
	reg := prometheus.NewRegistry()
	f, ctl := start(t, fleet.Options{Nodes: 4, PodsPerNode: 2, NodeSeries: 200, PodSeries: 40, Registerer: reg})
	c := client(t)

	nodes, pods := f.Nodes(), f.Pods()
	require.Len(t, nodes, 4)
	require.Len(t, pods, 8)
	require.NotZero(t, f.NodePort())
	require.NotZero(t, f.PodPort())
	require.NotEqual(t, f.NodePort(), f.PodPort())

	seen := map[string]bool{}
	bodies := map[string]string{}
	for _, n := range nodes {
		require.True(t, strings.HasPrefix(n.IP, "127.1."), n.IP)
		require.Equal(t, net.JoinHostPort(n.IP, fmt.Sprint(f.NodePort())), n.Addr)
		code, body := get(t, c, "http://"+n.Addr+"/metrics")
		require.Equal(t, http.StatusOK, code)
		require.Len(t, parse(t, body), 200)
		require.Contains(t, string(body), `node_cpu_seconds_total{cpu="0",mode="idle"}`)
		seen[n.Addr] = true
		bodies[n.Addr] = string(body)
	}
	for _, p := range pods {
		require.True(t, strings.HasPrefix(p.IP, "127.16."), p.IP)
		require.Equal(t, fleet.Namespace, p.Namespace)
		code, body := get(t, c, "http://"+p.Addr+"/metrics")
		require.Equal(t, http.StatusOK, code)
		series := parse(t, body)
		require.Contains(t, series, `{__name__="http_requests_total", code="200", handler="/api/v1/orders", method="GET"}`)
		require.Contains(t, string(body), "# TYPE http_request_duration_seconds histogram")
		seen[p.Addr] = true
		bodies[p.Addr] = string(body)
	}
	// Every target is its own address (so its own instance label) and its
	// own values.
	require.Len(t, seen, 12)
	distinct := map[string]bool{}
	for _, b := range bodies {
		distinct[b] = true
	}
	require.Len(t, distinct, 12)
	require.Equal(t, 4.0, served(t, reg, "node"))
	require.Equal(t, 8.0, served(t, reg, "pod"))

	// No target at this address, or not on this port: 404, counted.
	code, _ := get(t, c, fmt.Sprintf("http://127.1.200.200:%d/metrics", f.NodePort()))
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, c, fmt.Sprintf("http://%s:%d/metrics", pods[0].IP, f.NodePort()))
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, c, fmt.Sprintf("http://%s:%d/metrics", nodes[0].IP, f.PodPort()))
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, c, "http://"+nodes[0].Addr+"/other")
	require.Equal(t, http.StatusNotFound, code)
	code, body := get(t, c, ctl.URL+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), "shardscrape_fleet_unknown_address_requests_total 3")

	code, _ = get(t, c, ctl.URL+"/-/ready")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(t, c, ctl.URL+"/-/healthy")
	require.Equal(t, http.StatusOK, code)
}

// served is the fleet's scrapes served counter of kind.
func served(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "shardscrape_fleet_scrapes_served_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == kind {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no scrapes served counter of kind %q", kind)
	return 0
}

func TestReadyOnlyWhileStarted(t *testing.T) {
	f, err := fleet.New(fleet.Options{Nodes: 1})
	require.NoError(t, err)
	srv, err := fake.Serve(f.Handler())
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()
	c := client(t)
	code, _ := get(t, c, srv.URL+"/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = get(t, c, srv.URL+"/metrics")
	require.Equal(t, http.StatusNotFound, code, "no registry, no /metrics")
	require.NoError(t, f.Start())
	code, _ = get(t, c, srv.URL+"/-/ready")
	require.Equal(t, http.StatusOK, code)
	require.Error(t, f.Start(), "a second Start")
	require.NoError(t, f.Close())
	code, _ = get(t, c, srv.URL+"/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.NoError(t, f.Close(), "Close twice")
}

func TestPrometheusConsulSDFindsNodeExporters(t *testing.T) {
	f, ctl := start(t, fleet.Options{Nodes: 5, PodsPerNode: 2, NodeSeries: 50, Datacenter: "east"})
	var conf promconsul.SDConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte("server: "+ctl.Addr+"\nservices: [node-exporter, app]\nrefresh_interval: 50ms\n"), &conf))
	g := sdtest.Run(t, &conf)
	require.Eventually(t, func() bool {
		a, b := g.Get(fleet.NodeService), g.Get(fleet.AppService)
		return a != nil && len(a.Targets) == 5 && b != nil && len(b.Targets) == 10
	}, 15*time.Second, 20*time.Millisecond)

	want := map[model.LabelValue]fleet.Node{}
	for _, n := range f.Nodes() {
		want[model.LabelValue(n.Addr)] = n
	}
	tg := g.Get(fleet.NodeService)
	require.Equal(t, model.LabelValue("east"), tg.Labels["__meta_consul_dc"])
	for _, tl := range tg.Targets {
		n, ok := want[tl[model.AddressLabel]]
		require.True(t, ok, "unexpected target %v", tl)
		require.Equal(t, model.LabelValue(n.Name), tl["__meta_consul_node"])
		require.Equal(t, model.LabelValue(n.Name), tl["__meta_consul_metadata_node"])
		require.Equal(t, model.LabelValue("east"), tl["__meta_consul_metadata_cluster"])
		require.Equal(t, model.LabelValue(n.IP), tl["__meta_consul_address"])
		delete(want, tl[model.AddressLabel])
	}
	require.Empty(t, want)

	pods := map[model.LabelValue]fleet.Pod{}
	for _, p := range f.Pods() {
		pods[model.LabelValue(p.Addr)] = p
	}
	for _, tl := range g.Get(fleet.AppService).Targets {
		p, ok := pods[tl[model.AddressLabel]]
		require.True(t, ok, "unexpected app target %v", tl)
		require.Equal(t, model.LabelValue(","+p.App+","), tl["__meta_consul_tags"])
		require.Equal(t, model.LabelValue(p.Node), tl["__meta_consul_node"])
	}
}

func TestPrometheusKubernetesSDFindsPods(t *testing.T) {
	f, ctl := start(t, fleet.Options{Nodes: 3, PodsPerNode: 3, NodeSeries: 50})
	runK8s := func(role string) *sdtest.Groups {
		var conf promk8s.SDConfig
		require.NoError(t, yaml.UnmarshalStrict([]byte("api_server: "+ctl.URL+"\nrole: "+role+"\n"), &conf))
		return sdtest.Run(t, &conf)
	}
	pods, nodes, eps := runK8s("pod"), runK8s("node"), runK8s("endpoints")
	for _, p := range f.Pods() {
		require.Eventually(t, func() bool { return pods.Get("pod/"+p.Namespace+"/"+p.Name) != nil }, 15*time.Second, 20*time.Millisecond, p.Name)
		tg := pods.Get("pod/" + p.Namespace + "/" + p.Name)
		require.Len(t, tg.Targets, 1)
		require.Equal(t, model.LabelValue(p.Addr), tg.Targets[0][model.AddressLabel])
		require.Equal(t, model.LabelValue("metrics"), tg.Targets[0]["__meta_kubernetes_pod_container_port_name"])
		require.Equal(t, model.LabelValue("true"), tg.Labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"])
		require.Equal(t, model.LabelValue(fmt.Sprint(f.PodPort())), tg.Labels["__meta_kubernetes_pod_annotation_prometheus_io_port"])
		require.Equal(t, model.LabelValue(p.App), tg.Labels["__meta_kubernetes_pod_label_app"])
		require.Equal(t, model.LabelValue(p.Node), tg.Labels["__meta_kubernetes_pod_node_name"])
		require.Equal(t, model.LabelValue(p.IP), tg.Labels["__meta_kubernetes_pod_ip"])
	}
	for _, n := range f.Nodes() {
		require.Eventually(t, func() bool { return nodes.Get("node/"+n.Name) != nil }, 15*time.Second, 20*time.Millisecond, n.Name)
		require.Equal(t, model.LabelValue(n.IP), nodes.Get("node/" + n.Name).Targets[0]["__meta_kubernetes_node_address_InternalIP"])
	}
	for k := range 3 {
		src := fmt.Sprintf("endpoints/%s/app-%d", fleet.Namespace, k)
		require.Eventually(t, func() bool { tg := eps.Get(src); return tg != nil && len(tg.Targets) == 3 }, 15*time.Second, 20*time.Millisecond, src)
		require.Equal(t, model.LabelValue("true"), eps.Get(src).Labels["__meta_kubernetes_service_annotation_prometheus_io_scrape"])
	}
}

func TestReplacePodKeepsIPAndNode(t *testing.T) {
	f, ctl := start(t, fleet.Options{Nodes: 2, PodsPerNode: 2, NodeSeries: 50})
	var conf promk8s.SDConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte("api_server: "+ctl.URL+"\nrole: pod\n"), &conf))
	g := sdtest.Run(t, &conf)

	old := f.Pods()[1]
	require.Eventually(t, func() bool {
		tg := g.Get("pod/" + old.Namespace + "/" + old.Name)
		return tg != nil && len(tg.Targets) == 1
	}, 15*time.Second, 20*time.Millisecond)
	oldObj, err := f.Kube().Get(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}})
	require.NoError(t, err)

	p, err := f.ReplacePod(old.Namespace, old.Name)
	require.NoError(t, err)
	require.NotEqual(t, old.Name, p.Name)
	require.Equal(t, old.IP, p.IP)
	require.Equal(t, old.Addr, p.Addr)
	require.Equal(t, old.Node, p.Node)
	require.Equal(t, old.App, p.App)
	require.Equal(t, p, f.Pods()[1])
	newObj, err := f.Kube().Get(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}})
	require.NoError(t, err)
	require.NotEqual(t, oldObj.(*corev1.Pod).UID, newObj.(*corev1.Pod).UID)
	gone, err := f.Kube().Get(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}})
	require.NoError(t, err)
	require.Nil(t, gone, "the old pod is gone")

	// Discovery sees the old pod go and the new one at the same address.
	require.Eventually(t, func() bool {
		a, b := g.Get("pod/"+old.Namespace+"/"+old.Name), g.Get("pod/"+p.Namespace+"/"+p.Name)
		return a != nil && len(a.Targets) == 0 && b != nil && len(b.Targets) == 1 && b.Targets[0][model.AddressLabel] == model.LabelValue(old.Addr)
	}, 15*time.Second, 20*time.Millisecond)

	// Replacing again gives yet another name; the old name is unknown now.
	p2, err := f.ReplacePod(p.Namespace, p.Name)
	require.NoError(t, err)
	require.NotEqual(t, p.Name, p2.Name)
	_, err = f.ReplacePod(old.Namespace, old.Name)
	require.ErrorIs(t, err, fleet.ErrUnknownPod)

	// The target still answers at its address.
	code, _ := get(t, client(t), "http://"+p2.Addr+"/metrics")
	require.Equal(t, http.StatusOK, code)
}

// TestReplacePodIntoAnotherNamespace: the pod IP is reused on the same
// node by a pod of another namespace; discovery sees the new namespace,
// and the app's service (in fleet.Namespace) no longer lists the address.
func TestReplacePodIntoAnotherNamespace(t *testing.T) {
	f, ctl := start(t, fleet.Options{Nodes: 2, PodsPerNode: 1, NodeSeries: 50})
	var conf promk8s.SDConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte("api_server: "+ctl.URL+"\nrole: pod\n"), &conf))
	g := sdtest.Run(t, &conf)
	old := f.Pods()[1]
	p, err := f.ReplacePodIn(old.Namespace, old.Name, "batch")
	require.NoError(t, err)
	require.Equal(t, "batch", p.Namespace)
	require.NotEqual(t, old.Name, p.Name)
	require.Equal(t, old.IP, p.IP)
	require.Equal(t, old.Node, p.Node)
	require.Equal(t, p, f.Pods()[1])
	ns, err := f.Kube().Get(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "batch"}})
	require.NoError(t, err)
	require.NotNil(t, ns, "the namespace is created")
	require.Eventually(t, func() bool {
		tg := g.Get("pod/batch/" + p.Name)
		return tg != nil && len(tg.Targets) == 1 && tg.Targets[0][model.AddressLabel] == model.LabelValue(old.Addr) &&
			tg.Labels["__meta_kubernetes_namespace"] == "batch"
	}, 15*time.Second, 20*time.Millisecond)
	slice, err := f.Kube().Get(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: fleet.Namespace, Name: "app-0-fake"}})
	require.NoError(t, err)
	var ips []string
	for _, e := range slice.(*discoveryv1.EndpointSlice).Endpoints {
		ips = append(ips, e.Addresses...)
	}
	require.Equal(t, []string{f.Pods()[0].IP}, ips, "the replaced pod left its service")
	_, err = f.ReplacePodIn(old.Namespace, old.Name, "batch")
	require.ErrorIs(t, err, fleet.ErrUnknownPod)
	// ReplacePod replaces it again within its namespace.
	back, err := f.ReplacePod(p.Namespace, p.Name)
	require.NoError(t, err)
	require.Equal(t, "batch", back.Namespace, "ReplacePod keeps the namespace")
	_, err = f.ReplacePodIn(back.Namespace, back.Name, "")
	require.ErrorContains(t, err, "empty new namespace")
}

func TestChurnChangesSeries(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	for _, kind := range []synth.Kind{synth.KindNode, synth.KindApp} {
		l := synth.NewLayout(kind, 200)
		still := l.New(synth.Options{Seed: 9, Start: start})
		churning := l.New(synth.Options{Seed: 9, Start: start, ChurnRate: 0.1})
		again := l.New(synth.Options{Seed: 9, Start: start, ChurnRate: 0.1})

		require.Equal(t, string(still.Append(nil, start)), string(churning.Append(nil, start)), "nothing churned at the start")
		for _, m := range []time.Duration{time.Minute, 5 * time.Minute, 30 * time.Minute} {
			now := start.Add(m)
			a, b := parse(t, still.Append(nil, now)), parse(t, churning.Append(nil, now))
			require.Len(t, b, 200)
			changed := 0
			for k := range b {
				if _, ok := a[k]; !ok {
					changed++
					require.Contains(t, k, synth.ChurnLabel+"=")
				}
			}
			// About 10% per minute, each series at its own phase.
			minutes := m.Minutes()
			expect := min(1, 0.1*minutes) * 200
			require.InDelta(t, expect, float64(changed), 0.5*expect+10, "%v after %v", kind, m)
			// Deterministic from the seed.
			require.Equal(t, string(churning.Append(nil, now)), string(again.Append(nil, now)))
		}
	}
}

func TestChurnThroughTheFleet(t *testing.T) {
	f, _ := start(t, fleet.Options{Nodes: 1, NodeSeries: 100, ChurnRate: 60})
	c := client(t)
	addr := "http://" + f.Nodes()[0].Addr + "/metrics"
	_, first := get(t, c, addr)
	// At 60 per minute every series changes generation every second.
	require.Eventually(t, func() bool {
		_, b := get(t, c, addr)
		return strings.Contains(string(b), synth.ChurnLabel) && string(b) != string(first)
	}, 15*time.Second, 100*time.Millisecond)
}

func TestCountersIncrease(t *testing.T) {
	f, _ := start(t, fleet.Options{Nodes: 1, PodsPerNode: 1, NodeSeries: 100, PodSeries: 50})
	c := client(t)
	for _, addr := range []string{f.Nodes()[0].Addr, f.Pods()[0].Addr} {
		_, b := get(t, c, "http://"+addr+"/metrics")
		a := parse(t, b)
		require.Eventually(t, func() bool {
			_, b := get(t, c, "http://"+addr+"/metrics")
			now := parse(t, b)
			for k, v := range a {
				if strings.Contains(k, "_total") && now[k] <= v {
					return false
				}
			}
			return true
		}, 15*time.Second, 200*time.Millisecond)
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts fleet.Options
		want string
	}{
		{fleet.Options{}, "nodes 0"},
		{fleet.Options{Nodes: fleet.MaxNodes + 1}, "nodes 65535"},
		{fleet.Options{Nodes: 1, PodsPerNode: -1}, "pods per node -1"},
		{fleet.Options{Nodes: 2000, PodsPerNode: 600}, "at most 1048574 pods"},
		{fleet.Options{Nodes: 1, NodeSeries: -5}, "node series -5"},
		{fleet.Options{Nodes: 1, PodSeries: -5}, "pod series -5"},
		{fleet.Options{Nodes: 1, ChurnRate: -0.1}, "churn rate -0.1"},
		{fleet.Options{Nodes: 1, NodePort: 70000}, "node port 70000"},
		{fleet.Options{Nodes: 1, PodPort: -1}, "pod port -1"},
		{fleet.Options{Nodes: 1, PodsPerNode: 1, NodePort: 9100, PodPort: 9100}, "both 9100"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := fleet.New(tc.opts)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPortTaken(t *testing.T) {
	// A listener on 127.0.0.1:P makes the fleet's 0.0.0.0:P bind fail
	// (Linux: a wildcard bind conflicts with any address's on the port).
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	f, err := fleet.New(fleet.Options{Nodes: 1, PodsPerNode: 1, NodePort: port})
	require.NoError(t, err)
	err = f.Start()
	var pe *fleet.PortError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "node", pe.Kind)
	require.Equal(t, port, pe.Port)
	require.NoError(t, f.Close())

	f, err = fleet.New(fleet.Options{Nodes: 1, PodsPerNode: 1, PodPort: port})
	require.NoError(t, err)
	err = f.Start()
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "pod", pe.Kind)
	// The node port bound before the failure was released, and Start can
	// be retried once the port is free.
	require.Zero(t, f.NodePort())
	require.NoError(t, ln.Close())
	require.NoError(t, f.Start(), "Start again once the port is free")
	require.Equal(t, port, f.PodPort())
	code, _ := get(t, client(t), "http://"+f.Pods()[0].Addr+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, f.Close())
	require.Error(t, f.Start(), "no Start after Close")
}

// TestTenThousandTargets: two sockets serve a fleet of 10,000 node targets
// and 10,000 pods, each at its own address, all registered in both fakes.
func TestTenThousandTargets(t *testing.T) {
	f, _ := start(t, fleet.Options{Nodes: 10000, PodsPerNode: 1, NodeSeries: 20, PodSeries: 20})
	nodes, pods := f.Nodes(), f.Pods()
	require.Len(t, nodes, 10000)
	require.Len(t, pods, 10000)
	require.Equal(t, "127.1.39.16", nodes[9999].IP)
	require.Equal(t, "127.16.39.16", pods[9999].IP)
	require.Equal(t, 10000, f.Kube().Len(&corev1.Pod{}))
	require.Equal(t, 10000, f.Kube().Len(&corev1.Node{}))
	c := client(t)
	for _, i := range []int{0, 1, 255, 256, 4999, 9998, 9999} {
		for _, addr := range []string{nodes[i].Addr, pods[i].Addr} {
			code, body := get(t, c, "http://"+addr+"/metrics")
			require.Equal(t, http.StatusOK, code, addr)
			require.Len(t, parse(t, body), 20, addr)
		}
	}
	// One past the last of each range answers 404.
	code, _ := get(t, c, fmt.Sprintf("http://127.1.39.17:%d/metrics", f.NodePort()))
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, c, fmt.Sprintf("http://127.16.39.17:%d/metrics", f.PodPort()))
	require.Equal(t, http.StatusNotFound, code)
}
