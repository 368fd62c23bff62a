// Package fleet is a simulated Kubernetes and Consul fleet in one process:
// node_exporter-like targets, one per node, and application targets at pod
// IPs, each at its own loopback address (the whole 127.0.0.0/8 reaches the
// loopback interface), registered in the Consul catalog fake
// (internal/fake/consul) and the Kubernetes API fake (internal/fake/kubeapi)
// that Prometheus's own service discovery reads.
//
// Two listening sockets serve every target, whatever their number: one on
// the node port and one on the pod port, each on the wildcard address bound
// to the loopback device; a scrape's target is the local address its
// connection arrived at. cmd/fleetsim wires flags to it; tests and
// benchmarks use it directly.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shardscrape/shardscrape/internal/fake/consul"
	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
	"github.com/shardscrape/shardscrape/internal/synth"
)

// Defaults of Options (cmd/fleetsim's flag defaults).
const (
	DefaultNodePort   = 9100
	DefaultPodPort    = 8080
	DefaultDatacenter = "dc1"

	// Namespace holds every application pod and service.
	Namespace = "apps"
	// NodeService is the Consul service of every node_exporter.
	NodeService = "node-exporter"
	// AppService is the Consul service of every application pod.
	AppService = "app"
	// MetricsPath is the only path targets answer.
	MetricsPath = "/metrics"

	// MaxNodes is how many node addresses 127.1.0.0/16 holds.
	MaxNodes = 1<<16 - 2
	// MaxPods is how many pod addresses 127.16.0.0/12 holds.
	MaxPods = 1<<20 - 2
)

var (
	nodeBase = ip4(127, 1, 0, 0)  // 127.1.0.0/16
	podBase  = ip4(127, 16, 0, 0) // 127.16.0.0/12
)

// Options shape a fleet. Zero values take the documented defaults except
// Nodes, which must be set.
type Options struct {
	// Nodes is the number of node_exporter-like targets, one per node.
	Nodes int
	// PodsPerNode is the number of application targets per node, each at
	// its own pod IP, one pod of each app app-0 .. app-(PodsPerNode-1).
	PodsPerNode int
	// NodeSeries is the series count of a node target (0: synth.DefaultSeries).
	NodeSeries int
	// PodSeries is the series count of an application target (0:
	// synth.DefaultAppSeries).
	PodSeries int
	// ChurnRate is the fraction of each target's series replaced per
	// minute (0 = none; see synth.Options.ChurnRate).
	ChurnRate float64
	// NodePort is the port of every node_exporter (0 = pick a free one).
	NodePort int
	// PodPort is the port of every application pod (0 = pick a free one).
	PodPort int
	// Datacenter is the Consul datacenter ("" = "dc1"); node meta "cluster"
	// carries it too.
	Datacenter string
	// Logger logs; nil discards.
	Logger *slog.Logger
	// Registerer registers the fleet's metrics; nil registers none. When it
	// is also a prometheus.Gatherer, Handler serves it at /metrics.
	Registerer prometheus.Registerer
}

// Node is a node target.
type Node struct {
	// Name is the node name, in Consul and Kubernetes.
	Name string
	// IP is the node's address in 127.1.0.0/16.
	IP string
	// Addr is IP:NodePort (the port is known after Start).
	Addr string
}

// Pod is an application target.
type Pod struct {
	Namespace, Name string
	// Node is the name of the node it runs on.
	Node string
	// App is its app label: app-0, app-1, ...
	App string
	// IP is the pod IP in 127.16.0.0/12.
	IP string
	// Addr is IP:PodPort (the port is known after Start).
	Addr string
}

// target is one served address.
type target struct {
	kind     string // "node" or "pod"
	exporter *synth.Exporter
	scrapes  prometheus.Counter
}

// Fleet is a simulated fleet. Use New, then Start; Close stops it.
type Fleet struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics
	start   time.Time

	consul *consul.Catalog
	kube   *kubeapi.Server

	nodeSeries  int // per target, as laid out
	podSeries   int
	nodeTargets map[uint32]*target // by IPv4 address
	podTargets  map[uint32]*target

	mu       sync.Mutex
	nodes    []Node
	pods     []Pod
	podIndex map[string]int // namespace/name → index in pods
	podGen   map[string]int // namespace/name → generation, for ReplacePod names
	nodePort int
	podPort  int
	started  bool
	closed   bool
	servers  []*http.Server
	done     chan struct{}
	serveErr []error
	ready    bool
}

// New validates opts and builds the fleet's targets; it binds nothing and
// starts no goroutine.
func New(opts Options) (*Fleet, error) {
	switch {
	case opts.Nodes <= 0:
		return nil, fmt.Errorf("nodes %d: must be at least 1", opts.Nodes)
	case opts.Nodes > MaxNodes:
		return nil, fmt.Errorf("nodes %d: at most %d fit in 127.1.0.0/16", opts.Nodes, MaxNodes)
	case opts.PodsPerNode < 0:
		return nil, fmt.Errorf("pods per node %d: must not be negative", opts.PodsPerNode)
	case opts.Nodes*opts.PodsPerNode > MaxPods:
		return nil, fmt.Errorf("nodes × pods per node = %d: at most %d pods fit in 127.16.0.0/12", opts.Nodes*opts.PodsPerNode, MaxPods)
	case opts.NodeSeries < 0:
		return nil, fmt.Errorf("node series %d: must not be negative", opts.NodeSeries)
	case opts.PodSeries < 0:
		return nil, fmt.Errorf("pod series %d: must not be negative", opts.PodSeries)
	case math.IsNaN(opts.ChurnRate) || opts.ChurnRate < 0 || math.IsInf(opts.ChurnRate, 0):
		return nil, fmt.Errorf("churn rate %v: must be a fraction per minute, 0 or more", opts.ChurnRate)
	case opts.NodePort < 0 || opts.NodePort > 65535:
		return nil, fmt.Errorf("node port %d: out of range", opts.NodePort)
	case opts.PodPort < 0 || opts.PodPort > 65535:
		return nil, fmt.Errorf("pod port %d: out of range", opts.PodPort)
	case opts.PodsPerNode > 0 && opts.NodePort != 0 && opts.NodePort == opts.PodPort:
		return nil, fmt.Errorf("node port and pod port are both %d: they must differ", opts.NodePort)
	}
	if opts.Datacenter == "" {
		opts.Datacenter = DefaultDatacenter
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{
		opts:        opts,
		logger:      logger,
		metrics:     newMetrics(opts.Registerer),
		start:       time.Now(),
		consul:      consul.New(opts.Datacenter),
		kube:        kubeapi.New(kubeapi.Options{Logger: logger.With("component", "kubeapi")}),
		nodeTargets: make(map[uint32]*target, opts.Nodes),
		podTargets:  make(map[uint32]*target, opts.Nodes*opts.PodsPerNode),
		podIndex:    make(map[string]int, opts.Nodes*opts.PodsPerNode),
		podGen:      map[string]int{},
		done:        make(chan struct{}),
	}
	nodeLayout := synth.NewLayout(synth.KindNode, opts.NodeSeries)
	podLayout := synth.NewLayout(synth.KindApp, opts.PodSeries)
	f.nodeSeries, f.podSeries = nodeLayout.Series(), podLayout.Series()
	nodeScrapes := f.metrics.scrapes.WithLabelValues("node")
	podScrapes := f.metrics.scrapes.WithLabelValues("pod")
	for n := range opts.Nodes {
		a := nodeBase + uint32(n) + 1
		node := Node{Name: nodeName(n), IP: ipString(a)}
		f.nodes = append(f.nodes, node)
		f.nodeTargets[a] = &target{kind: "node", scrapes: nodeScrapes, exporter: nodeLayout.New(synth.Options{
			Seed: uint64(a), Start: f.start, ChurnRate: opts.ChurnRate,
		})}
		for k := range opts.PodsPerNode {
			pa := podBase + uint32(n*opts.PodsPerNode+k) + 1
			app := "app-" + strconv.Itoa(k)
			p := Pod{Namespace: Namespace, Name: podName(app, n, 0), Node: node.Name, App: app, IP: ipString(pa)}
			f.podIndex[p.Namespace+"/"+p.Name] = len(f.pods)
			f.pods = append(f.pods, p)
			f.podTargets[pa] = &target{kind: "pod", scrapes: podScrapes, exporter: podLayout.New(synth.Options{
				Seed: uint64(pa), Start: f.start, ChurnRate: opts.ChurnRate,
			})}
		}
	}
	return f, nil
}

func nodeName(n int) string { return "node-" + strconv.Itoa(n) }

// podName names a pod as a StatefulSet would, with a generation suffix
// once it has been replaced.
func podName(app string, node, gen int) string {
	name := app + "-" + strconv.Itoa(node)
	if gen > 0 {
		name += "-r" + strconv.Itoa(gen)
	}
	return name
}

// Start binds the node and pod listeners, registers every target in the
// Consul and Kubernetes fakes at its bound address, and serves the targets
// until Close. It returns once listening.
func (f *Fleet) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started {
		return errors.New("fleet already started")
	}
	f.started = true
	nodeLn, bound, err := listen(f.opts.NodePort)
	if err != nil {
		return &PortError{Kind: "node", Port: f.opts.NodePort, Err: err}
	}
	var podLn net.Listener
	if f.opts.PodsPerNode > 0 {
		podLn, _, err = listen(f.opts.PodPort)
		if err != nil {
			_ = nodeLn.Close()
			return &PortError{Kind: "pod", Port: f.opts.PodPort, Err: err}
		}
		f.podPort = podLn.Addr().(*net.TCPAddr).Port
	}
	f.nodePort = nodeLn.Addr().(*net.TCPAddr).Port
	f.logger.Info("Listening for scrapes", "node_port", f.nodePort, "pod_port", f.podPort, "bound_to_device", bound)
	for i := range f.nodes {
		f.nodes[i].Addr = net.JoinHostPort(f.nodes[i].IP, strconv.Itoa(f.nodePort))
	}
	for i := range f.pods {
		f.pods[i].Addr = net.JoinHostPort(f.pods[i].IP, strconv.Itoa(f.podPort))
	}
	if err := f.register(); err != nil {
		_ = nodeLn.Close()
		if podLn != nil {
			_ = podLn.Close()
		}
		return err
	}

	var wg sync.WaitGroup
	for _, l := range []struct {
		ln      net.Listener
		targets map[uint32]*target
	}{{nodeLn, f.nodeTargets}, {podLn, f.podTargets}} {
		if l.ln == nil {
			continue
		}
		srv := f.targetServer(l.targets)
		f.servers = append(f.servers, srv)
		wg.Go(func() {
			if err := srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				f.mu.Lock()
				f.serveErr = append(f.serveErr, err)
				f.mu.Unlock()
			}
		})
	}
	go func() {
		wg.Wait()
		close(f.done)
	}()
	f.ready = true
	f.logger.Info("Fleet started", "nodes", len(f.nodes), "pods", len(f.pods),
		"node_series", f.nodeSeries, "pod_series", f.podSeries, "churn_rate", f.opts.ChurnRate)
	return nil
}

// Close stops serving targets and closes their connections. The fakes keep
// their state; Handler keeps answering for them until its server stops.
func (f *Fleet) Close() error {
	f.mu.Lock()
	if f.closed || !f.started {
		f.closed = true
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.ready = false
	servers := f.servers
	f.mu.Unlock()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Close())
	}
	if len(servers) > 0 {
		<-f.done
	}
	f.mu.Lock()
	errs = append(errs, f.serveErr...)
	f.mu.Unlock()
	return errors.Join(errs...)
}

type targetKey struct{}

// targetServer serves the targets of one listener, told apart by the local
// address of each connection.
func (f *Fleet) targetServer(targets map[uint32]*target) *http.Server {
	return &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(f.logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
				if v4 := a.IP.To4(); v4 != nil {
					if t := targets[ip4(v4[0], v4[1], v4[2], v4[3])]; t != nil {
						return context.WithValue(ctx, targetKey{}, t)
					}
				}
			}
			return ctx
		},
		Handler: http.HandlerFunc(f.serveTarget),
	}
}

func (f *Fleet) serveTarget(w http.ResponseWriter, r *http.Request) {
	t, _ := r.Context().Value(targetKey{}).(*target)
	if t == nil {
		f.metrics.unknown.Inc()
		http.Error(w, "no target at this address", http.StatusNotFound)
		return
	}
	if r.URL.Path != MetricsPath {
		http.NotFound(w, r)
		return
	}
	t.scrapes.Inc()
	t.exporter.ServeHTTP(w, r)
}

// register fills the Consul and Kubernetes fakes; f.mu is held.
func (f *Fleet) register() error {
	objs := make([]runtime.Object, 0, 1+len(f.nodes)+len(f.pods)+3*f.opts.PodsPerNode)
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}})
	for i, n := range f.nodes {
		f.consul.SetNode(consul.Node{
			Name: n.Name, Address: n.IP,
			Meta:            map[string]string{"cluster": f.opts.Datacenter, "node": n.Name},
			TaggedAddresses: map[string]string{"lan": n.IP, "lan_ipv4": n.IP},
		})
		if err := f.consul.SetService(consul.Service{Node: n.Name, Name: NodeService, Address: n.IP, Port: f.nodePort, Tags: []string{"node-exporter"}, Health: consul.Passing}); err != nil {
			return fmt.Errorf("register node %s in consul: %w", n.Name, err)
		}
		objs = append(objs, kubeapi.NewNode(n.Name, n.IP, map[string]string{
			"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"topology.kubernetes.io/zone": "zone-" + strconv.Itoa(i%3),
		}))
	}
	byApp := map[string][]*corev1.Pod{}
	for _, p := range f.pods {
		if err := f.consul.SetService(consul.Service{Node: p.Node, ID: AppService + "-" + p.IP, Name: AppService, Address: p.IP, Port: f.podPort, Tags: []string{p.App}, Health: consul.Passing}); err != nil {
			return fmt.Errorf("register pod %s in consul: %w", p.Name, err)
		}
		kp := f.kubePod(p)
		byApp[p.App] = append(byApp[p.App], kp)
		objs = append(objs, kp)
	}
	for k := range f.opts.PodsPerNode {
		app := "app-" + strconv.Itoa(k)
		svc := f.kubeService(app, k)
		ep, slice := kubeapi.EndpointsFor(svc, byApp[app])
		objs = append(objs, svc, ep, slice)
	}
	if err := f.kube.Apply(objs...); err != nil {
		return fmt.Errorf("register in kubernetes: %w", err)
	}
	return nil
}

func (f *Fleet) kubePod(p Pod) *corev1.Pod {
	port := strconv.Itoa(f.podPort)
	kp := kubeapi.NewPod(p.Namespace, p.Name, p.Node, p.IP,
		map[string]string{"app": p.App},
		map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": port},
		corev1.ContainerPort{Name: "metrics", ContainerPort: int32(f.podPort), Protocol: corev1.ProtocolTCP})
	kp.Status.HostIP = f.nodes[f.nodeIndex(p.Node)].IP
	kp.Status.HostIPs = []corev1.HostIP{{IP: kp.Status.HostIP}}
	return kp
}

func (f *Fleet) kubeService(app string, k int) *corev1.Service {
	return kubeapi.NewService(Namespace, app, "10.96.1."+strconv.Itoa(k%250+1),
		map[string]string{"app": app},
		map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(f.podPort)},
		corev1.ServicePort{Name: "metrics", Port: int32(f.podPort), TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP})
}

func (f *Fleet) nodeIndex(name string) int {
	n, _ := strconv.Atoi(name[len("node-"):])
	return n
}

// Nodes returns the node targets.
func (f *Fleet) Nodes() []Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Node(nil), f.nodes...)
}

// Pods returns the application targets.
func (f *Fleet) Pods() []Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Pod(nil), f.pods...)
}

// NodePort is the bound node port (after Start).
func (f *Fleet) NodePort() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodePort
}

// PodPort is the bound pod port (after Start; 0 without pods).
func (f *Fleet) PodPort() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.podPort
}

// ErrUnknownPod is returned by ReplacePod for a pod the fleet does not have.
var ErrUnknownPod = errors.New("unknown pod")

// ReplacePod deletes the pod and creates a new one (new name and UID, same
// IP and node, as a restarted StatefulSet pod or a recycled IP) in the
// Kubernetes fake, and updates its service's endpoints. The Consul
// registration, keyed by IP, stays. It returns the new pod.
func (f *Fleet) ReplacePod(namespace, name string) (Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		return Pod{}, errors.New("replace pod: fleet not started")
	}
	i, ok := f.podIndex[namespace+"/"+name]
	if !ok {
		return Pod{}, fmt.Errorf("replace pod %s/%s: %w", namespace, name, ErrUnknownPod)
	}
	old := f.pods[i]
	base := podName(old.App, f.nodeIndex(old.Node), 0)
	f.podGen[base]++
	p := old
	p.Name = podName(old.App, f.nodeIndex(old.Node), f.podGen[base])
	if err := f.kube.Delete(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}}); err != nil {
		return Pod{}, fmt.Errorf("replace pod %s/%s: %w", namespace, name, err)
	}
	delete(f.podIndex, namespace+"/"+name)
	f.pods[i] = p
	f.podIndex[p.Namespace+"/"+p.Name] = i
	var same []*corev1.Pod
	for _, q := range f.pods {
		if q.App == p.App {
			same = append(same, f.kubePod(q))
		}
	}
	k, _ := strconv.Atoi(p.App[len("app-"):])
	ep, slice := kubeapi.EndpointsFor(f.kubeService(p.App, k), same)
	if err := f.kube.Apply(f.kubePod(p), ep, slice); err != nil {
		return Pod{}, fmt.Errorf("replace pod %s/%s: %w", namespace, name, err)
	}
	f.logger.Debug("Replaced pod", "old", old.Name, "new", p.Name, "ip", p.IP)
	return p, nil
}

// Consul is the Consul catalog fake, for direct edits.
func (f *Fleet) Consul() *consul.Catalog { return f.consul }

// Kube is the Kubernetes API fake, for direct edits.
func (f *Fleet) Kube() *kubeapi.Server { return f.kube }

func ip4(a, b, c, d byte) uint32 {
	return uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d)
}

func ipString(a uint32) string {
	return strconv.Itoa(int(a>>24)) + "." + strconv.Itoa(int(a>>16&0xff)) + "." + strconv.Itoa(int(a>>8&0xff)) + "." + strconv.Itoa(int(a&0xff))
}
