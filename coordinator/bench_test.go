package coordinator

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

// benchClient is a worker that only follows generations and counts targets.
type benchClient struct {
	gen     atomic.Uint64
	targets atomic.Int64
}

// benchTargets returns n targets of job; round changes every id and key.
func benchTargets(job string, n, round int) []relabel.Target {
	ts := make([]relabel.Target, n)
	for i := range ts {
		addr := fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 9100+round)
		ts[i] = relabel.Target{
			ID:      xxhash.Sum64String(job + "/" + addr),
			Job:     job,
			Address: addr,
			Key:     xxhash.Sum64String(addr),
			Labels:  labels.FromStrings("__address__", addr, "__meta_consul_service", "node"),
		}
	}
	return ts
}

// BenchmarkCoordinator measures the time from a full target-set change
// (every target replaced by a new one) to every worker's stream having
// received its update, over real gRPC streams (bufconn, one connection per
// worker as in a deployment).
//
// clients=proto decode every message as a worker does (proto.Unmarshal);
// clients=raw only scan the message's top-level fields, so that the figures
// are mostly the coordinator's own cost (the clients share the process and
// its cores).
//
// Reported: s/update (UpdateTargets until the last client received its
// update), s/UpdateTargets-call, s/all-sent (until the last stream's Send
// returned), MiB-peak-rss (the process's VmHWM: coordinator, the benchmark's
// target sets and the clients together), MiB-peak-heap (the largest Go heap
// in use, live and garbage, sampled every 5ms during the measured updates,
// same scope) and MiB-live-heap (the heap after a GC at the end: the
// coordinator's state, which shares the label strings of the last target
// set given, and the idle clients).
func BenchmarkCoordinator(b *testing.B) {
	for _, size := range []struct{ workers, targets int }{{10, 10_000}, {200, 1_000_000}} {
		for _, raw := range []bool{false, true} {
			name := fmt.Sprintf("workers=%d/targets=%d/clients=proto", size.workers, size.targets)
			if raw {
				name = fmt.Sprintf("workers=%d/targets=%d/clients=raw", size.workers, size.targets)
			}
			b.Run(name, func(b *testing.B) {
				if size.targets > 100_000 && testing.Short() {
					b.Skip("large size skipped under -short")
				}
				benchCoordinator(b, size.workers, size.targets, raw, nil)
			})
		}
	}
}

// BenchmarkFullPath is the path the binary takes for a full change, timed
// from discovery's delivery (what discovery.Manager sends on its sync
// channel, after its update interval) to every worker's stream having
// received its update: the discovered groups go through the relabel
// pipeline cold (Prometheus's PopulateLabels per target, every address
// new), then UpdateTargets, then the streams to 200 raw clients. s/relabel
// is the pipeline's share of s/update.
//
// targets=1000000: 1M static targets in 100 groups of 10,000.
// nodes=5000: a cluster of 5,000 nodes × 30 pods, as Kubernetes pod
// discovery gives it (a group per pod, its container port a target, the
// usual prometheus.io annotations relabeling) plus each node's
// node_exporter through Consul (one service group): 155,000 targets.
func BenchmarkFullPath(b *testing.B) {
	if testing.Short() {
		b.Skip("large size skipped under -short")
	}
	b.Run("targets=1000000", func(b *testing.B) {
		benchCoordinator(b, 200, 1_000_000, true, newBenchPipeline(b))
	})
	b.Run("nodes=5000", func(b *testing.B) {
		benchCoordinator(b, 200, 5000*31, true, newClusterPipeline(b, 5000, 30))
	})
}

// benchSource makes the targets of a round: prepare, untimed, returns the
// timed step.
type benchSource func(round int) (timed func() map[string][]relabel.Target)

func newBenchPipeline(b *testing.B) benchSource {
	p, err := relabel.NewPipeline(relabel.PipelineOptions{}, nil, prometheus.NewRegistry())
	require.NoError(b, err)
	cfg, err := config.Load("scrape_configs:\n- job_name: bench\n", nil)
	require.NoError(b, err)
	require.NoError(b, p.ApplyConfig(cfg))
	return func(round int) func() map[string][]relabel.Target {
		const groupsN, perGroup = 100, 10_000
		groups := make([]*targetgroup.Group, groupsN)
		for g := range groups {
			tg := &targetgroup.Group{Source: fmt.Sprint(g), Labels: model.LabelSet{"env": "bench"}}
			for i := range perGroup {
				n := g*perGroup + i
				addr := fmt.Sprintf("10.%d.%d.%d:%d", n>>16&255, n>>8&255, n&255, 9100+round)
				tg.Targets = append(tg.Targets, model.LabelSet{model.AddressLabel: model.LabelValue(addr)})
			}
			groups[g] = tg
		}
		return func() map[string][]relabel.Target {
			ts, errs := p.Targets("bench", groups)
			require.Empty(b, errs)
			return map[string][]relabel.Target{"bench": ts}
		}
	}
}

// clusterYAML is a Kubernetes pods job and a Consul node_exporter job as
// commonly configured (their SD configs left out: the groups are given).
const clusterYAML = `
scrape_configs:
- job_name: kubernetes-pods
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: true
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    regex: (.+)
    target_label: __metrics_path__
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - source_labels: [__meta_kubernetes_pod_node_name]
    target_label: node
- job_name: consul-nodes
  relabel_configs:
  - source_labels: [__meta_consul_tags]
    regex: .*,metrics,.*
    action: keep
  - source_labels: [__meta_consul_node]
    target_label: node
`

// newClusterPipeline gives nodes × pods Kubernetes pod groups and a Consul
// group of nodes node_exporters; round changes every pod and node address.
func newClusterPipeline(b *testing.B, nodes, pods int) benchSource {
	p, err := relabel.NewPipeline(relabel.PipelineOptions{}, nil, prometheus.NewRegistry())
	require.NoError(b, err)
	cfg, err := config.Load(clusterYAML, nil)
	require.NoError(b, err)
	require.NoError(b, p.ApplyConfig(cfg))
	return func(round int) func() map[string][]relabel.Target {
		ip := func(n int) string {
			return fmt.Sprintf("%d.%d.%d.%d", 10+round%100, n>>16&255, n>>8&255, n&255)
		}
		podGroups := make([]*targetgroup.Group, 0, nodes*pods)
		consul := &targetgroup.Group{Source: "node-exporter", Labels: model.LabelSet{
			"__meta_consul_service": "node-exporter", "__meta_consul_dc": "dc1"}}
		for n := range nodes {
			node := fmt.Sprintf("node-%05d", n)
			for k := range pods {
				i := n*pods + k
				app := fmt.Sprintf("app-%d", i%500)
				name := fmt.Sprintf("%s-%08x-%d", app, i, round)
				podGroups = append(podGroups, &targetgroup.Group{
					Source: "pod/ns-" + strconv.Itoa(i%50) + "/" + name,
					Labels: model.LabelSet{
						"__meta_kubernetes_namespace":                                  model.LabelValue("ns-" + strconv.Itoa(i%50)),
						"__meta_kubernetes_pod_name":                                   model.LabelValue(name),
						"__meta_kubernetes_pod_ip":                                     model.LabelValue(ip(i)),
						"__meta_kubernetes_pod_node_name":                              model.LabelValue(node),
						"__meta_kubernetes_pod_host_ip":                                model.LabelValue(ip(1<<20 + n)),
						"__meta_kubernetes_pod_uid":                                    model.LabelValue(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, round)),
						"__meta_kubernetes_pod_ready":                                  "true",
						"__meta_kubernetes_pod_phase":                                  "Running",
						"__meta_kubernetes_pod_controller_kind":                        "ReplicaSet",
						"__meta_kubernetes_pod_controller_name":                        model.LabelValue(app + "-5d8f7c9b4"),
						"__meta_kubernetes_pod_label_app":                              model.LabelValue(app),
						"__meta_kubernetes_pod_labelpresent_app":                       "true",
						"__meta_kubernetes_pod_label_pod_template_hash":                "5d8f7c9b4",
						"__meta_kubernetes_pod_labelpresent_pod_template_hash":         "true",
						"__meta_kubernetes_pod_annotation_prometheus_io_scrape":        "true",
						"__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape": "true",
						"__meta_kubernetes_pod_annotation_prometheus_io_port":          "8080",
						"__meta_kubernetes_pod_annotationpresent_prometheus_io_port":   "true",
					},
					Targets: []model.LabelSet{{
						model.AddressLabel:                              model.LabelValue(ip(i) + ":8080"),
						"__meta_kubernetes_pod_container_name":          "app",
						"__meta_kubernetes_pod_container_image":         "registry.example/app:1.2.3",
						"__meta_kubernetes_pod_container_port_name":     "http-metrics",
						"__meta_kubernetes_pod_container_port_number":   "8080",
						"__meta_kubernetes_pod_container_port_protocol": "TCP",
						"__meta_kubernetes_pod_container_init":          "false",
						"__meta_kubernetes_pod_container_id":            model.LabelValue(fmt.Sprintf("containerd://%016x", i)),
					}},
				})
			}
			consul.Targets = append(consul.Targets, model.LabelSet{
				model.AddressLabel:           model.LabelValue(ip(1<<20+n) + ":9100"),
				"__meta_consul_node":         model.LabelValue(node),
				"__meta_consul_tags":         ",metrics,",
				"__meta_consul_service_id":   model.LabelValue("node-exporter-" + node),
				"__meta_consul_service_port": "9100",
				"__meta_consul_health":       "passing",
			})
		}
		return func() map[string][]relabel.Target {
			out := map[string][]relabel.Target{}
			for job, groups := range map[string][]*targetgroup.Group{"kubernetes-pods": podGroups, "consul-nodes": {consul}} {
				ts, errs := p.Targets(job, groups)
				require.Empty(b, errs)
				out[job] = ts
			}
			return out
		}
	}
}

// rawUpdate is what a raw client reads of a WatchAssignmentsResponse.
type rawUpdate struct {
	gen               uint64
	snapshot, partial bool
	upserts, removed  int
}

// rawCodec decodes WatchAssignmentsResponse into rawUpdate by scanning its
// top-level fields only; it marshals requests as protobuf.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }

func (rawCodec) Unmarshal(b []byte, v any) error {
	u := v.(*rawUpdate)
	*u = rawUpdate{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			u.gen, n = protowire.ConsumeVarint(b)
		case num == 2 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			u.snapshot = x != 0
		case num == 4 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			u.partial = x != 0
		case num == 8:
			u.upserts++
			n = protowire.ConsumeFieldValue(num, typ, b)
		case num == 9 && typ == protowire.BytesType:
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			u.removed += len(p) / 8
		case num == 9:
			u.removed++
			n = protowire.ConsumeFieldValue(num, typ, b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// benchStream opens a worker's stream on its own connection and feeds the
// updates it receives to cl.
func benchStream(b *testing.B, ctx context.Context, lis *bufconn.Listener, req *shardscrapev1.WatchAssignmentsRequest, raw bool, cl *benchClient) func() {
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	var recv func() (rawUpdate, error)
	if raw {
		cs, err := conn.NewStream(ctx, &shardscrapev1.WorkerService_ServiceDesc.Streams[0],
			shardscrapev1.WorkerService_WatchAssignments_FullMethodName, grpc.ForceCodec(rawCodec{}))
		require.NoError(b, err)
		require.NoError(b, cs.SendMsg(req))
		require.NoError(b, cs.CloseSend())
		recv = func() (rawUpdate, error) {
			var u rawUpdate
			err := cs.RecvMsg(&u)
			return u, err
		}
	} else {
		stream, err := shardscrapev1.NewWorkerServiceClient(conn).WatchAssignments(ctx, req)
		require.NoError(b, err)
		recv = func() (rawUpdate, error) {
			m, err := stream.Recv()
			if err != nil {
				return rawUpdate{}, err
			}
			return rawUpdate{gen: m.GetGeneration(), snapshot: m.GetSnapshot(), partial: m.GetPartial(),
				upserts: len(m.GetUpserts()), removed: len(m.GetRemovedTargetIds())}, nil
		}
	}
	return func() {
		var n int64
		mid := false // within a split update
		for {
			u, err := recv()
			if err != nil {
				return
			}
			if u.snapshot && !mid {
				n = 0
			}
			mid = u.partial
			n += int64(u.upserts) - int64(u.removed)
			if !u.partial {
				cl.targets.Store(n)
				cl.gen.Store(u.gen)
			}
		}
	}
}

// benchCoordinator runs the benchmark; src nil gives targets straight to
// UpdateTargets (benchTargets), else they come from src, timed.
func benchCoordinator(b *testing.B, nWorkers, nTargets int, raw bool, src benchSource) {
	if src == nil {
		src = func(round int) func() map[string][]relabel.Target {
			ts := benchTargets("bench", nTargets, round)
			return func() map[string][]relabel.Target { return map[string][]relabel.Target{"bench": ts} }
		}
	}
	e := newEnv(b, nil, nil, Options{})
	// The workers' connections, with small buffers: bufconn allocates its
	// buffer up front, twice per connection.
	lis := bufconn.Listen(64 << 10)
	var lwg sync.WaitGroup
	lwg.Go(func() { _ = e.srv.Serve(lis) })
	b.Cleanup(func() { e.stop(); lwg.Wait() })
	clients := make([]*benchClient, nWorkers)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	allSent := make(chan time.Time, 1)
	e.c.mu.Lock()
	e.c.onAllSent = func() {
		select {
		case allSent <- time.Now():
		default:
		}
	}
	e.c.mu.Unlock()
	for i := range clients {
		id := fmt.Sprintf("scraper-%d", i)
		resp, err := e.wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: id})
		require.NoError(b, err)
		cl := &benchClient{}
		clients[i] = cl
		wg.Go(benchStream(b, ctx, lis, &shardscrapev1.WatchAssignmentsRequest{WorkerId: id, LeaseEpoch: resp.GetLeaseEpoch()}, raw, cl))
	}
	waitAll := func(gen uint64) {
		for _, cl := range clients {
			for cl.gen.Load() < gen {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	round := 0
	update := func() uint64 {
		byJob := src(round)()
		round++
		e.c.UpdateTargets(byJob)
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		return e.c.gen
	}
	waitAll(update())

	var peakHeap atomic.Uint64
	sampleDone := make(chan struct{})
	stopSampling := sync.OnceFunc(func() { close(sampleDone) })
	var swg sync.WaitGroup
	swg.Go(func() {
		s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleDone:
				return
			case <-t.C:
			}
			rtmetrics.Read(s)
			if v := s[0].Value.Uint64(); v > peakHeap.Load() {
				peakHeap.Store(v)
			}
		}
	})
	b.Cleanup(func() { stopSampling(); swg.Wait() })

	b.ReportAllocs()
	b.ResetTimer()
	var total, inSource, inCall, toSent time.Duration
	for b.Loop() {
		b.StopTimer()
		produce := src(round)
		round++
		runtime.GC()
		select {
		case <-allSent:
		default:
		}
		b.StartTimer()
		start := time.Now()
		byJob := produce()
		inSource += time.Since(start)
		called := time.Now()
		e.c.UpdateTargets(byJob)
		e.c.mu.Lock()
		gen := e.c.gen
		e.c.mu.Unlock()
		inCall += time.Since(called)
		waitAll(gen)
		total += time.Since(start)
		toSent += (<-allSent).Sub(start)
	}
	b.StopTimer()
	stopSampling()
	swg.Wait()
	var sum int64
	for _, cl := range clients {
		sum += cl.targets.Load()
	}
	require.Equal(b, int64(nTargets), sum, "every target owned once")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/update")
	b.ReportMetric(inCall.Seconds()/float64(b.N), "s/UpdateTargets-call")
	if inSource > time.Millisecond {
		b.ReportMetric(inSource.Seconds()/float64(b.N), "s/relabel")
	}
	b.ReportMetric(toSent.Seconds()/float64(b.N), "s/all-sent")
	b.ReportMetric(float64(vmHWM())/(1<<20), "MiB-peak-rss")
	b.ReportMetric(float64(peakHeap.Load())/(1<<20), "MiB-peak-heap")
	runtime.GC()
	live := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(live)
	b.ReportMetric(float64(live[0].Value.Uint64())/(1<<20), "MiB-live-heap")
}

// vmHWM returns the process's peak resident set size in bytes (0 if unknown).
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
