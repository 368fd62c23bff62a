// Package leader runs optional leader election for the coordinator with a
// Kubernetes Lease (coordination.k8s.io/v1), through client-go's
// tools/leaderelection and resourcelock.LeaseLock.
//
// Two coordinator replicas run an Elector each; the one holding the Lease is
// the leader: it is ready, serves workers and assigns targets. The other
// waits, not ready, and fails every worker call with UNAVAILABLE. When the
// leader's context ends it releases the Lease (ReleaseOnCancel), so the
// other takes over within one retry period instead of one lease duration.
package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/shardscrape/shardscrape/internal/kube"
)

// Defaults of client-go's core components (kube-controller-manager,
// kube-scheduler).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Options configure an Elector.
type Options struct {
	// Client talks to the Kubernetes API (in-cluster config, a kubeconfig,
	// or a test server). Required.
	Client kubernetes.Interface
	// Namespace and Name of the Lease object. Required.
	Namespace string
	Name      string
	// Identity of this replica in the Lease's holderIdentity: the pod name.
	// Required, and distinct per replica.
	Identity string

	// Zero values take the Default... constants. LeaseDuration must exceed
	// RenewDeadline, which must exceed 1.2 × RetryPeriod (client-go's
	// rules).
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration

	// OnStartedLeading is called when this replica becomes the leader,
	// with a context that ends when it stops leading. It must not block:
	// start work in a goroutine. Optional.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading is called when this replica stops being the leader
	// (its renewal failed for RenewDeadline, or Run's context ended: as
	// soon as client-go cancels the leading context), always after the matching
	// OnStartedLeading has returned, and only if it was called. It must not
	// block. Optional.
	OnStoppedLeading func()
	// OnNewLeader is called with the identity of every leader this replica
	// observes, itself included. Optional; for logs and status.
	OnNewLeader func(identity string)
}

// Elector campaigns for the Lease until its Run context ends, and again
// after each loss of leadership, so a replica that lost the Lease (an API
// server outage, say) becomes a candidate again rather than exiting.
type Elector struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	leading bool
	term    uint64 // counts started terms; names the current one
	leader  string // last observed leader identity
}

type metrics struct {
	leader      prometheus.Gauge
	transitions prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_coordinator_leader",
			Help: "1 when this coordinator replica holds the leader Lease, 0 otherwise.",
		}),
		transitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_coordinator_leader_transitions_total",
			Help: "Times this coordinator replica became the leader.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.leader, m.transitions} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register leader election metrics: %w", err)
			}
		}
	}
	return m, nil
}

// ErrInvalidOptions is wrapped by New's errors about its options.
var ErrInvalidOptions = errors.New("invalid leader election options")

// New validates opts and returns an Elector; it starts no goroutine. A nil
// logger discards; a nil reg registers nothing.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Elector, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = DefaultRenewDeadline
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = DefaultRetryPeriod
	}
	switch {
	case opts.Client == nil:
		return nil, fmt.Errorf("%w: no Kubernetes client", ErrInvalidOptions)
	case opts.Namespace == "":
		return nil, fmt.Errorf("%w: empty lease namespace (--leader-election.namespace)", ErrInvalidOptions)
	case opts.Name == "":
		return nil, fmt.Errorf("%w: empty lease name (--leader-election.lease-name)", ErrInvalidOptions)
	case opts.Identity == "":
		return nil, fmt.Errorf("%w: empty identity (--leader-election.identity)", ErrInvalidOptions)
	}
	e := &Elector{
		opts:   opts,
		logger: logger.With("component", "leader-election", "lease", opts.Namespace+"/"+opts.Name, "identity", opts.Identity),
	}
	// Validate the timing rules now rather than at Run, and before
	// anything is registered.
	if _, err := e.newLeaderElector(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	e.metrics = m
	return e, nil
}

func (e *Elector) newLeaderElector() (*leaderelection.LeaderElector, error) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta: metav1.ObjectMeta{Namespace: e.opts.Namespace, Name: e.opts.Name},
		Client:    e.opts.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{
			Identity: e.opts.Identity,
		},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   e.opts.LeaseDuration,
		RenewDeadline:   e.opts.RenewDeadline,
		RetryPeriod:     e.opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.opts.Namespace + "/" + e.opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: e.started,
			OnStoppedLeading: e.stopped,
			OnNewLeader:      e.newLeader,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return le, nil
}

// Run campaigns until ctx ends; after a loss of leadership it campaigns
// again. When ctx ends while leading, the Lease is released before Run
// returns, so stop the leader's work first (it is told by
// OnStoppedLeading, which runs before Run returns). It returns nil when ctx
// ends.
func (e *Elector) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		le, err := e.newLeaderElector()
		if err != nil {
			return err
		}
		e.logger.Info("Campaigning for the leader lease")
		le.Run(ctx) // returns when ctx ends or leadership is lost
		if ctx.Err() == nil {
			e.logger.Warn("Lost the leader lease; campaigning again")
		}
	}
	return nil
}

// IsLeader reports whether this replica currently leads.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// Leader returns the identity of the last leader observed ("" if none yet).
func (e *Elector) Leader() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader
}

// started runs in a goroutine of client-go's; leadership may already be
// lost (ctx done) when it runs, and then it does nothing, so that
// OnStartedLeading and OnStoppedLeading always pair up and in order.
func (e *Elector) started(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ctx.Err() != nil || e.leading {
		return
	}
	e.leading = true
	e.term++
	term := e.term
	e.leader = e.opts.Identity
	e.metrics.leader.Set(1)
	e.metrics.transitions.Inc()
	e.logger.Info("Became the leader")
	if e.opts.OnStartedLeading != nil {
		e.opts.OnStartedLeading(ctx)
	}
	// Step down as soon as client-go gives up renewing (ctx ends), not
	// only when its OnStoppedLeading runs: that comes after an attempt to
	// release the Lease, one more API round trip during which another
	// replica may already lead. It ends this term only: when it runs late,
	// this replica may lead again, in a term that is not its to end.
	go func() {
		<-ctx.Done()
		e.stop(term)
	}()
}

// stopped is client-go's OnStoppedLeading: it runs as its LeaderElector
// returns, before Run starts the next one, so the term it ends is the
// current one.
func (e *Elector) stopped() { e.stop(0) }

// stop ends term (0: the current one) if it is the current one.
func (e *Elector) stop(term uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leading || (term != 0 && term != e.term) {
		return
	}
	e.leading = false
	e.metrics.leader.Set(0)
	e.logger.Info("Stopped being the leader")
	if e.opts.OnStoppedLeading != nil {
		e.opts.OnStoppedLeading()
	}
}

func (e *Elector) newLeader(identity string) {
	e.mu.Lock()
	e.leader = identity
	e.mu.Unlock()
	e.logger.Info("Observed a leader", "leader", identity)
	if e.opts.OnNewLeader != nil {
		e.opts.OnNewLeader(identity)
	}
}

// NewKubeClient returns a client for the Lease (see kube.NewClient).
func NewKubeClient(apiServer, kubeconfig string) (kubernetes.Interface, error) {
	return kube.NewClient(apiServer, kubeconfig, "shardscrape-coordinator-leader-election")
}
