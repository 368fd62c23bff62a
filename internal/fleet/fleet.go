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
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
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
	nodeBase = netip.AddrFrom4([4]byte{127, 1, 0, 0})  // 127.1.0.0/16
	podBase  = netip.AddrFrom4([4]byte{127, 16, 0, 0}) // 127.16.0.0/12
)

// nth is the i-th address after base (i ≥ 1; the range is never left).
func nth(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], binary.BigEndian.Uint32(b[:])+uint32(i))
	return netip.AddrFrom4(out)
}

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

// podRecord is a pod with the indexes its names were made from.
type podRecord struct {
	Pod
	node int // index of its node in Fleet.nodes
	app  int // k of its app app-k
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
	listen func(port int) (ln net.Listener, boundToDevice bool, err error)

	nodeSeries  int // per target, as laid out
	podSeries   int
	nodeTargets map[netip.Addr]*target
	podTargets  map[netip.Addr]*target

	mu         sync.Mutex
	nodes      []Node
	pods       []podRecord
	podIndex   map[string]int // namespace/name → index in pods
	podGen     map[string]int // base name (app-k-n) → generation, for ReplacePod names
	namespaces map[string]bool
	nodePort   int
	podPort    int
	started    bool // Start succeeded
	closed     bool
	servers    []*http.Server
	listeners  []net.Listener
	done       chan struct{} // closed once serving ended (Close or failure)
	serveErr   []error
	ready      bool
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
		nodeTargets: make(map[netip.Addr]*target, opts.Nodes),
		podTargets:  make(map[netip.Addr]*target, opts.Nodes*opts.PodsPerNode),
		podIndex:    make(map[string]int, opts.Nodes*opts.PodsPerNode),
		podGen:      map[string]int{},
		namespaces:  map[string]bool{Namespace: true},
		done:        make(chan struct{}),
		listen:      listen,
	}
	nodeLayout := synth.NewLayout(synth.KindNode, opts.NodeSeries)
	podLayout := synth.NewLayout(synth.KindApp, opts.PodSeries)
	f.nodeSeries, f.podSeries = nodeLayout.Series(), podLayout.Series()
	nodeScrapes := f.metrics.scrapes.WithLabelValues("node")
	podScrapes := f.metrics.scrapes.WithLabelValues("pod")
	for n := range opts.Nodes {
		a := nth(nodeBase, n+1)
		node := Node{Name: nodeName(n), IP: a.String()}
		f.nodes = append(f.nodes, node)
		f.nodeTargets[a] = &target{kind: "node", scrapes: nodeScrapes, exporter: nodeLayout.New(synth.Options{
			Seed: seed(a), Start: f.start, ChurnRate: opts.ChurnRate,
		})}
		for k := range opts.PodsPerNode {
			pa := nth(podBase, n*opts.PodsPerNode+k+1)
			app := appName(k)
			p := podRecord{Pod: Pod{Namespace: Namespace, Name: podName(app, n, 0), Node: node.Name, App: app, IP: pa.String()}, node: n, app: k}
			f.podIndex[p.Namespace+"/"+p.Name] = len(f.pods)
			f.pods = append(f.pods, p)
			f.podTargets[pa] = &target{kind: "pod", scrapes: podScrapes, exporter: podLayout.New(synth.Options{
				Seed: seed(pa), Start: f.start, ChurnRate: opts.ChurnRate,
			})}
		}
	}
	return f, nil
}

func nodeName(n int) string { return "node-" + strconv.Itoa(n) }

func appName(k int) string { return "app-" + strconv.Itoa(k) }

// seed is a target's synth seed: its IPv4 address as a number.
func seed(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(binary.BigEndian.Uint32(b[:]))
}

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
// until Close or until a listener fails (Done, Err). It returns once
// listening. When it fails (a port taken) it leaves nothing bound or
// registered, and may be called again.
func (f *Fleet) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return errors.New("fleet closed")
	case f.started:
		return errors.New("fleet already started")
	}
	nodeLn, nodeBound, err := f.listen(f.opts.NodePort)
	if err != nil {
		return &PortError{Kind: "node", Port: f.opts.NodePort, Err: err}
	}
	lns := []net.Listener{nodeLn}
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	podPort, podBound := 0, true
	if f.opts.PodsPerNode > 0 {
		podLn, bound, err := f.listen(f.opts.PodPort)
		if err != nil {
			closeAll()
			return &PortError{Kind: "pod", Port: f.opts.PodPort, Err: err}
		}
		lns = append(lns, podLn)
		podPort, podBound = podLn.Addr().(*net.TCPAddr).Port, bound
	}
	f.nodePort, f.podPort = nodeLn.Addr().(*net.TCPAddr).Port, podPort
	f.logger.Info("Listening for scrapes", "node_port", f.nodePort, "pod_port", f.podPort, "bound_to_device", nodeBound && podBound)
	if !nodeBound || !podBound {
		f.logger.Warn("The kernel refused to bind the target ports to the loopback device (SO_BINDTODEVICE): "+
			"they listen on every interface, so other hosts can complete a TCP handshake on them; "+
			"the accept filter closes every connection whose local address is not a loopback address",
			"node_port", f.nodePort, "pod_port", f.podPort)
	}
	f.setAddrs()
	if err := f.register(); err != nil {
		f.unregister()
		closeAll()
		f.nodePort, f.podPort = 0, 0
		f.setAddrs()
		return err
	}

	var wg sync.WaitGroup
	for i, ln := range lns {
		targets := f.nodeTargets
		if i == 1 {
			targets = f.podTargets
		}
		srv := f.targetServer(targets)
		f.servers = append(f.servers, srv)
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				f.fail(fmt.Errorf("serve targets on %s: %w", ln.Addr(), err))
			}
		})
	}
	f.listeners = lns
	go func() {
		wg.Wait()
		close(f.done)
	}()
	f.started = true
	f.ready = true
	f.logger.Info("Fleet started", "nodes", len(f.nodes), "pods", len(f.pods),
		"node_series", f.nodeSeries, "pod_series", f.podSeries, "churn_rate", f.opts.ChurnRate)
	return nil
}

// setAddrs sets every target's Addr from the bound ports; f.mu is held.
func (f *Fleet) setAddrs() {
	for i := range f.nodes {
		f.nodes[i].Addr = ""
		if f.nodePort != 0 {
			f.nodes[i].Addr = net.JoinHostPort(f.nodes[i].IP, strconv.Itoa(f.nodePort))
		}
	}
	for i := range f.pods {
		f.pods[i].Addr = ""
		if f.podPort != 0 {
			f.pods[i].Addr = net.JoinHostPort(f.pods[i].IP, strconv.Itoa(f.podPort))
		}
	}
}

// fail records a listener's failure and stops serving every target, so
// that Done is closed and /-/ready answers 503.
func (f *Fleet) fail(err error) {
	f.mu.Lock()
	f.serveErr = append(f.serveErr, err)
	f.ready = false
	servers := f.servers
	f.mu.Unlock()
	f.logger.Error("Serving targets failed; stopping every target", "err", err)
	for _, s := range servers {
		_ = s.Close()
	}
}

// Done is closed once the fleet stopped serving targets: after Close, or
// after a listener failed (Err says why). It is not closed before a
// successful Start (unless Close was called).
func (f *Fleet) Done() <-chan struct{} { return f.done }

// Err is why target serving failed, nil while serving or after a Close with
// no failure.
func (f *Fleet) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.serveErr...)
}

// Close stops serving targets and closes their connections, and returns
// any serving failure (as Err). The fakes keep their state; Handler keeps
// answering for them until its server stops. After Close, Start fails.
func (f *Fleet) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.ready = false
	if !f.started {
		close(f.done)
		f.mu.Unlock()
		return nil
	}
	servers := f.servers
	f.mu.Unlock()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Close())
	}
	<-f.done
	f.mu.Lock()
	errs = append(errs, f.serveErr...)
	f.mu.Unlock()
	return errors.Join(errs...)
}

type targetKey struct{}

// targetServer serves the targets of one listener, told apart by the local
// address of each connection.
func (f *Fleet) targetServer(targets map[netip.Addr]*target) *http.Server {
	return &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(f.logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
				if t := targets[a.AddrPort().Addr().Unmap()]; t != nil {
					return context.WithValue(ctx, targetKey{}, t)
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
	objs := f.objects()
	for _, n := range f.nodes {
		f.consul.SetNode(consul.Node{
			Name: n.Name, Address: n.IP,
			Meta:            map[string]string{"cluster": f.opts.Datacenter, "node": n.Name},
			TaggedAddresses: map[string]string{"lan": n.IP, "lan_ipv4": n.IP},
		})
		if err := f.consul.SetService(consul.Service{Node: n.Name, Name: NodeService, Address: n.IP, Port: f.nodePort, Tags: []string{"node-exporter"}, Health: consul.Passing}); err != nil {
			return fmt.Errorf("register node %s in consul: %w", n.Name, err)
		}
	}
	for _, p := range f.pods {
		if err := f.consul.SetService(consul.Service{Node: p.Node, ID: AppService + "-" + p.IP, Name: AppService, Address: p.IP, Port: f.podPort, Tags: []string{p.App}, Health: consul.Passing}); err != nil {
			return fmt.Errorf("register pod %s in consul: %w", p.Name, err)
		}
	}
	if err := f.kube.Apply(objs...); err != nil {
		return fmt.Errorf("register in kubernetes: %w", err)
	}
	return nil
}

// objects are the Kubernetes objects of the fleet: its namespace, nodes,
// pods, and a service per app with its endpoints; f.mu is held.
func (f *Fleet) objects() []runtime.Object {
	objs := make([]runtime.Object, 0, 1+len(f.nodes)+len(f.pods)+3*f.opts.PodsPerNode)
	objs = append(objs, kubeNamespace(Namespace))
	for i, n := range f.nodes {
		objs = append(objs, kubeapi.NewNode(n.Name, n.IP, map[string]string{
			"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"topology.kubernetes.io/zone": "zone-" + strconv.Itoa(i%3),
		}))
	}
	for _, p := range f.pods {
		objs = append(objs, f.kubePod(p))
	}
	for k := range f.opts.PodsPerNode {
		objs = append(objs, f.kubeAppService(k)...)
	}
	return objs
}

// unregister removes what register may have added; f.mu is held.
func (f *Fleet) unregister() {
	for _, n := range f.nodes {
		f.consul.RemoveNode(n.Name)
	}
	if err := f.kube.Delete(f.objects()...); err != nil {
		f.logger.Warn("Could not remove the fleet's Kubernetes objects", "err", err)
	}
}

func kubeNamespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
}

func (f *Fleet) kubePod(p podRecord) *corev1.Pod {
	port := strconv.Itoa(f.podPort)
	kp := kubeapi.NewPod(p.Namespace, p.Name, p.Node, p.IP,
		map[string]string{"app": p.App},
		map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": port},
		corev1.ContainerPort{Name: "metrics", ContainerPort: int32(f.podPort), Protocol: corev1.ProtocolTCP})
	kp.Status.HostIP = f.nodes[p.node].IP
	kp.Status.HostIPs = []corev1.HostIP{{IP: kp.Status.HostIP}}
	return kp
}

// kubeAppService is app-k's Service in Namespace with its Endpoints and
// EndpointSlice: the app's pods in Namespace (a pod replaced into another
// namespace is no endpoint of it); f.mu is held.
func (f *Fleet) kubeAppService(k int) []runtime.Object {
	app := appName(k)
	svc := kubeapi.NewService(Namespace, app, "10.96.1."+strconv.Itoa(k%250+1),
		map[string]string{"app": app},
		map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(f.podPort)},
		corev1.ServicePort{Name: "metrics", Port: int32(f.podPort), TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP})
	var pods []*corev1.Pod
	for _, p := range f.pods {
		if p.app == k && p.Namespace == Namespace {
			pods = append(pods, f.kubePod(p))
		}
	}
	ep, slice := kubeapi.EndpointsFor(svc, pods)
	return []runtime.Object{svc, ep, slice}
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
	out := make([]Pod, len(f.pods))
	for i, p := range f.pods {
		out[i] = p.Pod
	}
	return out
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

// ReplacePod deletes the pod and creates a new one in the same namespace
// (new name and UID, same IP and node, as a restarted StatefulSet pod or a
// recycled IP) in the Kubernetes fake, and updates its service's
// endpoints. The Consul registration, keyed by IP, stays. It returns the new
// pod.
func (f *Fleet) ReplacePod(namespace, name string) (Pod, error) {
	return f.ReplacePodIn(namespace, name, namespace)
}

// ReplacePodIn is ReplacePod with the new pod in namespace newNamespace
// (created when missing): a pod IP freed on a node and reused there by a
// pod of another namespace, as the node's pod CIDR allows. A pod outside
// Namespace is no endpoint of its app's service.
func (f *Fleet) ReplacePodIn(namespace, name, newNamespace string) (Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		return Pod{}, errors.New("replace pod: fleet not started")
	}
	if newNamespace == "" {
		return Pod{}, fmt.Errorf("replace pod %s/%s: empty new namespace", namespace, name)
	}
	i, ok := f.podIndex[namespace+"/"+name]
	if !ok {
		return Pod{}, fmt.Errorf("replace pod %s/%s: %w", namespace, name, ErrUnknownPod)
	}
	old := f.pods[i]
	base := podName(old.App, old.node, 0)
	f.podGen[base]++
	p := old
	p.Namespace = newNamespace
	p.Name = podName(old.App, old.node, f.podGen[base])
	if err := f.kube.Delete(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}}); err != nil {
		return Pod{}, fmt.Errorf("replace pod %s/%s: %w", namespace, name, err)
	}
	delete(f.podIndex, namespace+"/"+name)
	f.pods[i] = p
	f.podIndex[p.Namespace+"/"+p.Name] = i
	objs := []runtime.Object{f.kubePod(p)}
	if !f.namespaces[newNamespace] {
		objs = append([]runtime.Object{kubeNamespace(newNamespace)}, objs...)
		f.namespaces[newNamespace] = true
	}
	objs = append(objs, f.kubeAppService(p.app)...)
	if err := f.kube.Apply(objs...); err != nil {
		return Pod{}, fmt.Errorf("replace pod %s/%s: %w", namespace, name, err)
	}
	f.logger.Debug("Replaced pod", "old", old.Namespace+"/"+old.Name, "new", p.Namespace+"/"+p.Name, "ip", p.IP)
	return p.Pod, nil
}

// Consul is the Consul catalog fake, for direct edits.
func (f *Fleet) Consul() *consul.Catalog { return f.consul }

// Kube is the Kubernetes API fake, for direct edits.
func (f *Fleet) Kube() *kubeapi.Server { return f.kube }
