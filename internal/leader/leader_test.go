package leader

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/shardscrape/shardscrape/internal/leader/leasetest"
)

// Short timings so that a takeover happens in well under a second; the
// assertions poll and never depend on them.
const (
	testLease = 2 * time.Second
	testRenew = time.Second
	testRetry = 100 * time.Millisecond
)

type candidate struct {
	e        *Elector
	reg      *prometheus.Registry
	cancel   context.CancelFunc
	done     chan struct{}
	started  atomic.Int32
	stopped  atomic.Int32
	overlaps *atomic.Int32
}

func startCandidate(t *testing.T, url, id string, leaders *atomic.Int32, overlaps *atomic.Int32) *candidate {
	t.Helper()
	cs, err := leasetest.Clientset(url)
	require.NoError(t, err)
	c := &candidate{reg: prometheus.NewRegistry(), done: make(chan struct{}), overlaps: overlaps}
	c.e, err = New(Options{
		Client: cs, Namespace: "monitoring", Name: "shardscrape-coordinator", Identity: id,
		LeaseDuration: testLease, RenewDeadline: testRenew, RetryPeriod: testRetry,
		OnStartedLeading: func(context.Context) {
			c.started.Add(1)
			if leaders.Add(1) > 1 {
				overlaps.Add(1)
			}
		},
		OnStoppedLeading: func() {
			c.stopped.Add(1)
			leaders.Add(-1)
		},
	}, nil, c.reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		defer close(c.done)
		require.NoError(t, c.e.Run(ctx))
	}()
	return c
}

func (c *candidate) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("elector did not stop")
	}
}

func TestOneLeaderThenTakeoverOnCancel(t *testing.T) {
	fake := leasetest.New()
	srv := fake.Start()
	defer srv.Close()

	var leaders, overlaps atomic.Int32
	a := startCandidate(t, srv.URL, "coordinator-0", &leaders, &overlaps)
	b := startCandidate(t, srv.URL, "coordinator-1", &leaders, &overlaps)

	// Exactly one leads.
	require.Eventually(t, func() bool { return a.e.IsLeader() != b.e.IsLeader() }, 20*time.Second, 10*time.Millisecond)
	first, second := a, b
	if b.e.IsLeader() {
		first, second = b, a
	}
	require.Equal(t, first.e.opts.Identity, fake.Holder("monitoring", "shardscrape-coordinator"))
	require.Equal(t, 1.0, testutil.ToFloat64(first.e.metrics.leader))
	require.Equal(t, 0.0, testutil.ToFloat64(second.e.metrics.leader))

	// Several renewals later the leader is unchanged and the other still waits.
	renewals := fake.Updates()
	require.Eventually(t, func() bool { return fake.Updates() >= renewals+3 }, 20*time.Second, 10*time.Millisecond)
	require.True(t, first.e.IsLeader())
	require.False(t, second.e.IsLeader())
	require.Equal(t, int32(0), second.started.Load())

	// The leader's context ends: it releases the Lease, the other takes over.
	first.stop(t)
	require.False(t, first.e.IsLeader())
	require.Equal(t, int32(1), first.stopped.Load())
	require.Equal(t, 0.0, testutil.ToFloat64(first.e.metrics.leader))
	require.Eventually(t, second.e.IsLeader, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, second.e.opts.Identity, fake.Holder("monitoring", "shardscrape-coordinator"))
	require.Equal(t, 1.0, testutil.ToFloat64(second.e.metrics.leader))
	require.Equal(t, second.e.opts.Identity, second.e.Leader())

	second.stop(t)
	require.Equal(t, int32(0), overlaps.Load(), "two leaders at once")
	require.Equal(t, int32(0), leaders.Load())
}

func TestLeaderStepsDownWhenAPIServerIsUnreachable(t *testing.T) {
	fake := leasetest.New()
	srv := fake.Start()
	defer srv.Close()

	var leaders, overlaps atomic.Int32
	a := startCandidate(t, srv.URL, "coordinator-0", &leaders, &overlaps)
	defer a.stop(t)
	require.Eventually(t, a.e.IsLeader, 20*time.Second, 10*time.Millisecond)

	// Renewals fail: after the renew deadline the replica steps down, and
	// campaigns again.
	fake.SetDown(true)
	require.Eventually(t, func() bool { return !a.e.IsLeader() }, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, int32(1), a.stopped.Load())
	require.Equal(t, 0.0, testutil.ToFloat64(a.e.metrics.leader))

	fake.SetDown(false)
	require.Eventually(t, a.e.IsLeader, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, int32(2), a.started.Load())
	require.Equal(t, 2.0, testutil.ToFloat64(a.e.metrics.transitions))
}

func TestNewValidates(t *testing.T) {
	cs, err := leasetest.Clientset("http://127.0.0.1:1")
	require.NoError(t, err)
	ok := Options{Client: cs, Namespace: "ns", Name: "l", Identity: "me"}
	for name, mutate := range map[string]func(*Options){
		"no client":     func(o *Options) { o.Client = nil },
		"no namespace":  func(o *Options) { o.Namespace = "" },
		"no name":       func(o *Options) { o.Name = "" },
		"no identity":   func(o *Options) { o.Identity = "" },
		"renew >= ttl":  func(o *Options) { o.LeaseDuration, o.RenewDeadline = time.Second, 2*time.Second },
		"retry > renew": func(o *Options) { o.RenewDeadline, o.RetryPeriod = time.Second, time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			o := ok
			mutate(&o)
			_, err := New(o, nil, nil)
			require.ErrorIs(t, err, ErrInvalidOptions)
		})
	}
	reg := prometheus.NewRegistry()
	_, err = New(ok, nil, reg)
	require.NoError(t, err)
	// A second elector on the same registry is an error, not a panic.
	_, err = New(ok, nil, reg)
	require.ErrorContains(t, err, "register leader election metrics")
}

func TestMain(m *testing.M) {
	// client-go logs through klog's global logger; keep test output clean.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}

func TestNewKubeClient(t *testing.T) {
	fake := leasetest.New()
	srv := fake.Start()
	defer srv.Close()
	cs, err := NewKubeClient(srv.URL, "")
	require.NoError(t, err)
	_, err = cs.CoordinationV1().Leases("ns").Get(context.Background(), "missing", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "%v", err)

	_, err = NewKubeClient("", filepath.Join(t.TempDir(), "missing"))
	require.ErrorContains(t, err, "kubeconfig")
}

// TestLateStopOfAnOldTermLeavesTheNewOneAlone: the goroutine that ends a
// term when its context ends may run late, after client-go has already
// ended that term and this replica has won the Lease again; it must not
// end the new term (the replica would hold the Lease without serving).
func TestLateStopOfAnOldTermLeavesTheNewOneAlone(t *testing.T) {
	cs, err := leasetest.Clientset("http://127.0.0.1:1")
	require.NoError(t, err)
	var started, stopped atomic.Int32
	e, err := New(Options{
		Client: cs, Namespace: "ns", Name: "l", Identity: "me",
		OnStartedLeading: func(context.Context) { started.Add(1) },
		OnStoppedLeading: func() { stopped.Add(1) },
	}, nil, nil)
	require.NoError(t, err)

	// Term 1 starts; client-go ends it (OnStoppedLeading) before its
	// context's goroutine has run, and term 2 starts.
	ctx1, cancel1 := context.WithCancel(context.Background())
	e.started(ctx1)
	e.stopped()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	e.started(ctx2)
	require.True(t, e.IsLeader())
	require.Equal(t, int32(2), started.Load())
	require.Equal(t, int32(1), stopped.Load())

	// Term 1's goroutine runs now.
	cancel1()
	require.Never(t, func() bool { return !e.IsLeader() || stopped.Load() != 1 }, 200*time.Millisecond, 5*time.Millisecond)

	// Term 2's context ends: term 2 ends.
	cancel2()
	require.Eventually(t, func() bool { return !e.IsLeader() && stopped.Load() == 2 }, 10*time.Second, 5*time.Millisecond)
}
