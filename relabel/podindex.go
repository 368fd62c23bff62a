package relabel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/util/strutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	kubeclient "github.com/shardscrape/shardscrape/internal/kube"
)

// The labels enrichment adds to a target whose address host is a pod IP.
const (
	MetaPodName         = model.MetaLabelPrefix + "pod_name"
	MetaPodNamespace    = model.MetaLabelPrefix + "pod_namespace"
	MetaPodNode         = model.MetaLabelPrefix + "pod_node"
	MetaPodIP           = model.MetaLabelPrefix + "pod_ip"
	MetaPodLabelPrefix  = model.MetaLabelPrefix + "pod_label_"
	MetaPodLabelPresent = model.MetaLabelPrefix + "pod_labelpresent_"
)

// podIndexResync is the informer's resync period: none, the index follows
// the watch.
const podIndexResync = 0

// Pod is what the pod index knows of a pod. Values are immutable: a change
// of the pod replaces its *Pod, so comparing pointers tells whether a
// lookup's answer changed.
type Pod struct {
	Name, Namespace, Node, IP string
	Labels                    map[string]string

	uid     types.UID
	phase   corev1.PodPhase
	deleted bool // has a deletion timestamp
	created time.Time
	// meta holds the __meta_pod_* labels, computed once.
	meta model.LabelSet
}

// MetaLabels returns the pod's __meta_pod_* labels. Do not modify it.
func (p *Pod) MetaLabels() model.LabelSet { return p.meta }

// PodLookup finds the pod holding an IP.
type PodLookup interface {
	// Lookup returns the pod that holds ip, or nil.
	Lookup(ip string) *Pod
}

var _ PodLookup = (*PodIndex)(nil)

// PodIndexOptions configure a PodIndex.
type PodIndexOptions struct {
	// Client lists and watches pods. Required; see NewKubeClient.
	Client kubernetes.Interface
	// Namespace limits the index to one namespace; "" means all.
	Namespace string
	// LabelSelector and FieldSelector limit the pods listed, in the
	// apiserver's syntax (e.g. FieldSelector "status.phase=Running").
	LabelSelector, FieldSelector string
	// IncludeHostNetwork indexes pods on the host network too. They share
	// their node's IP, so by default they are left out: a node-level target
	// is not a pod's.
	IncludeHostNetwork bool
}

// PodIndex maps pod IPs to pods, fed by a Kubernetes pod list/watch
// (a client-go informer). Terminated pods (Succeeded, Failed) never match:
// their IP is free for the next pod. When several live pods claim one IP
// (a pod being deleted and its successor), one not being deleted wins,
// Running over Pending, then the newest. Pods on the host network are left
// out unless IncludeHostNetwork. Safe for concurrent use.
type PodIndex struct {
	opts    PodIndexOptions
	logger  *slog.Logger
	metrics *podIndexMetrics

	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration
	changed  chan struct{}
	version  atomic.Uint64

	mu     sync.RWMutex
	byUID  map[types.UID]*Pod            // a pod's first IP entry
	uidIPs map[types.UID][]string        // the IPs a pod is indexed under
	byIP   map[string]map[types.UID]*Pod // every pod holding an IP
	best   map[string]*Pod               // the winner per IP
}

type podIndexMetrics struct {
	pods, ips   prometheus.Gauge
	hit, miss   prometheus.Counter
	changes     prometheus.Counter
	watchErrors prometheus.Counter
	collectors  []prometheus.Collector
}

func newPodIndexMetrics(reg prometheus.Registerer) (*podIndexMetrics, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shardscrape_podindex_lookups_total",
		Help: "Pod index lookups of a target's address host, by result (hit, miss).",
	}, []string{"result"})
	m := &podIndexMetrics{
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_podindex_pods",
			Help: "Pods in the pod index.",
		}),
		ips: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_podindex_ips",
			Help: "Pod IPs in the pod index.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_podindex_changes_total",
			Help: "Changes of the pod an IP maps to.",
		}),
		watchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_podindex_watch_errors_total",
			Help: "Pod list/watch cycles that failed (e.g. forbidden) and are retried with backoff; refused connections are retried inside client-go and not counted.",
		}),
		hit:  lookups.WithLabelValues("hit"),
		miss: lookups.WithLabelValues("miss"),
	}
	m.collectors = []prometheus.Collector{lookups, m.pods, m.ips, m.changes, m.watchErrors}
	if reg != nil {
		for _, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register pod index metrics: %w", err)
			}
		}
	}
	return m, nil
}

// NewKubeClient returns a client for the pod index (see kube.NewClient).
func NewKubeClient(apiServer, kubeconfig string) (kubernetes.Interface, error) {
	return kubeclient.NewClient(apiServer, kubeconfig, "shardscrape-podindex")
}

// NewPodIndex returns a pod index; Run fills it and keeps it current.
func NewPodIndex(opts PodIndexOptions, logger *slog.Logger, reg prometheus.Registerer) (*PodIndex, error) {
	if opts.Client == nil {
		return nil, errors.New("pod index: no Kubernetes client")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newPodIndexMetrics(reg)
	if err != nil {
		return nil, err
	}
	x := &PodIndex{
		opts:    opts,
		logger:  logger.With("component", "podindex"),
		metrics: m,
		changed: make(chan struct{}, 1),
		byUID:   map[types.UID]*Pod{},
		uidIPs:  map[types.UID][]string{},
		byIP:    map[string]map[types.UID]*Pod{},
		best:    map[string]*Pod{},
	}
	pods := opts.Client.CoreV1().Pods(opts.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector, o.FieldSelector = opts.LabelSelector, opts.FieldSelector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector, o.FieldSelector = opts.LabelSelector, opts.FieldSelector
			return pods.Watch(ctx, o)
		},
	}
	x.informer = cache.NewSharedIndexInformer(lw, &corev1.Pod{}, podIndexResync, cache.Indexers{})
	if err := x.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		x.metrics.watchErrors.Inc()
		x.logger.Warn("Pod list/watch failed, retrying", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	// Keep only what the index needs: 150,000 full pods are gigabytes.
	if err := x.informer.SetTransform(trimPod); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	handler, err := x.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { x.set(obj) },
		UpdateFunc: func(_, obj any) { x.set(obj) },
		DeleteFunc: x.remove,
	})
	if err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	x.handler = handler
	return x, nil
}

// Run feeds the index until ctx ends; it returns nil then.
func (x *PodIndex) Run(ctx context.Context) error {
	x.logger.Info("Starting pod index", "namespace", x.opts.Namespace, "label_selector", x.opts.LabelSelector, "field_selector", x.opts.FieldSelector)
	x.informer.RunWithContext(ctx)
	x.logger.Info("Pod index stopped")
	return nil
}

// HasSynced reports whether the index holds the initial pod list.
func (x *PodIndex) HasSynced() bool { return x.handler.HasSynced() }

// WaitForSync blocks until the initial list is indexed or ctx ends; it
// reports whether the index synced.
func (x *PodIndex) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), x.handler.HasSynced)
}

// Changed returns a channel that receives after the pod of some IP changed
// (coalesced: one receive may stand for many changes); the owner re-runs
// the pipeline then.
func (x *PodIndex) Changed() <-chan struct{} { return x.changed }

// Lookup returns the pod holding ip, or nil.
func (x *PodIndex) Lookup(ip string) *Pod {
	x.mu.RLock()
	p := x.best[ip]
	x.mu.RUnlock()
	if p == nil {
		x.metrics.miss.Inc()
	} else {
		x.metrics.hit.Inc()
	}
	return p
}

// Version returns a number that changes whenever the pod of some IP does.
func (x *PodIndex) Version() uint64 { return x.version.Load() }

// Len returns how many pods are indexed.
func (x *PodIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byUID)
}

func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	t := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
			ResourceVersion: p.ResourceVersion, CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	return t, nil
}

func podIPs(p *corev1.Pod) []string {
	ips := make([]string, 0, 2)
	if p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	for _, ip := range p.Status.PodIPs {
		if ip.IP != "" && ip.IP != p.Status.PodIP {
			ips = append(ips, ip.IP)
		}
	}
	return ips
}

func newPod(p *corev1.Pod, ip string) *Pod {
	out := &Pod{
		Name: p.Name, Namespace: p.Namespace, Node: p.Spec.NodeName, IP: ip, Labels: p.Labels,
		uid: p.UID, phase: p.Status.Phase, deleted: p.DeletionTimestamp != nil, created: p.CreationTimestamp.Time,
	}
	meta := make(model.LabelSet, 4+2*len(p.Labels))
	meta[MetaPodName] = model.LabelValue(p.Name)
	meta[MetaPodNamespace] = model.LabelValue(p.Namespace)
	meta[MetaPodNode] = model.LabelValue(p.Spec.NodeName)
	meta[MetaPodIP] = model.LabelValue(ip)
	for k, v := range p.Labels {
		name := strutil.SanitizeLabelName(k)
		meta[model.LabelName(MetaPodLabelPrefix+name)] = model.LabelValue(v)
		meta[model.LabelName(MetaPodLabelPresent+name)] = "true"
	}
	out.meta = meta
	return out
}

// rank orders pods holding one IP: higher wins.
func rank(p *Pod) int {
	switch {
	case p.phase == corev1.PodSucceeded || p.phase == corev1.PodFailed:
		return 0
	case p.deleted:
		return 1
	case p.phase == corev1.PodRunning:
		return 3
	default:
		return 2
	}
}

func better(a, b *Pod) bool {
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra > rb
	}
	if !a.created.Equal(b.created) {
		return a.created.After(b.created)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// set indexes a pod added or updated.
func (x *PodIndex) set(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	var ips []string
	if !p.Spec.HostNetwork || x.opts.IncludeHostNetwork {
		ips = podIPs(p)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	old := map[string]*Pod{}
	for _, ip := range x.uidIPs[p.UID] {
		old[ip] = x.byIP[ip][p.UID]
	}
	touched := x.unindex(p.UID)
	for i, ip := range ips {
		np := newPod(p, ip)
		if o := old[ip]; o != nil && samePod(o, np) {
			np = o // nothing enrichment uses changed: keep the pointer
		}
		if i == 0 {
			x.byUID[p.UID] = np
		}
		m := x.byIP[ip]
		if m == nil {
			m = map[types.UID]*Pod{}
			x.byIP[ip] = m
		}
		m[p.UID] = np
		touched = append(touched, ip)
	}
	if len(ips) > 0 {
		x.uidIPs[p.UID] = ips
	}
	x.settle(touched)
}

func samePod(a, b *Pod) bool {
	return a.Name == b.Name && a.Namespace == b.Namespace && a.Node == b.Node && a.IP == b.IP &&
		a.phase == b.phase && a.deleted == b.deleted && a.created.Equal(b.created) && maps.Equal(a.Labels, b.Labels)
}

// remove drops a deleted pod.
func (x *PodIndex) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.settle(x.unindex(p.UID))
}

// unindex removes every IP entry of a pod and returns its IPs; x.mu held.
func (x *PodIndex) unindex(uid types.UID) []string {
	ips := x.uidIPs[uid]
	delete(x.uidIPs, uid)
	delete(x.byUID, uid)
	for _, ip := range ips {
		m := x.byIP[ip]
		delete(m, uid)
		if len(m) == 0 {
			delete(x.byIP, ip)
		}
	}
	return ips
}

// settle recomputes the winner of each touched IP and notifies on change;
// x.mu held.
func (x *PodIndex) settle(ips []string) {
	changed := false
	for _, ip := range ips {
		var win *Pod
		for _, p := range x.byIP[ip] {
			if rank(p) == 0 {
				continue // terminated: its IP is free for the next pod
			}
			if win == nil || better(p, win) {
				win = p
			}
		}
		if old := x.best[ip]; old != win {
			changed = true
			if win == nil {
				delete(x.best, ip)
			} else {
				x.best[ip] = win
			}
		}
	}
	x.metrics.pods.Set(float64(len(x.byUID)))
	x.metrics.ips.Set(float64(len(x.best)))
	if changed {
		x.version.Add(1)
		x.metrics.changes.Inc()
		select {
		case x.changed <- struct{}{}:
		default:
		}
	}
}
