package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/discovery"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/client"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/shardscrape/shardscrape/coordinator"
	"github.com/shardscrape/shardscrape/internal/leader"
	"github.com/shardscrape/shardscrape/internal/pprofhttp"
	"github.com/shardscrape/shardscrape/internal/rpc"
	"github.com/shardscrape/shardscrape/relabel"
)

// app is the coordinator process: every component, built by newCoordinator
// (which listens on the web and gRPC addresses but starts nothing) and run
// as oklog/run actors by run.
type app struct {
	flags  flagConfig
	logger *slog.Logger
	reg    *prometheus.Registry

	webLn, grpcLn net.Listener
	web           *http.Server
	grpc          *rpc.Server
	host          *host
	pipeline      *relabel.Pipeline
	pods          *relabel.PodIndex // nil: pod enrichment off
	syncer        *syncer
	discovery     *discovery.Manager
	cancelSD      context.CancelFunc
	elector       *leader.Elector // nil: leader election off

	reloadCh chan chan error
	metrics  *appMetrics
}

type appMetrics struct {
	reloadSuccess  prometheus.Gauge
	reloadTime     prometheus.Gauge
	reloadFailures prometheus.Counter
}

func newAppMetrics(reg prometheus.Registerer) *appMetrics {
	m := &appMetrics{
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_coordinator_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_coordinator_config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration reload.",
		}),
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_coordinator_config_reload_failures_total",
			Help: "Configuration reloads rejected (the previous configuration stays in force).",
		}),
	}
	reg.MustRegister(m.reloadSuccess, m.reloadTime, m.reloadFailures)
	return m
}

// newCoordinator builds the coordinator from its flags: it loads and
// applies the configuration (failing on an invalid one), opens the state
// bucket and listens on the web and gRPC addresses. It starts no goroutine
// but the discovery manager's context.
func newCoordinator(f flagConfig, logger *slog.Logger) (_ *app, err error) {
	if err := f.cluster.Validate(); err != nil {
		return nil, fmt.Errorf("--cluster.label/--cluster.name: %w", err)
	}
	a := &app{flags: f, logger: logger, reg: prometheus.NewRegistry(), reloadCh: make(chan chan error)}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = newAppMetrics(a.reg)

	lc, err := loadConfig(f.configFile, f.cluster, logger)
	if err != nil {
		return nil, err
	}

	if err := checkCoreOptions(f); err != nil {
		return nil, err
	}
	bucket, err := openBucket(f, logger, a.reg)
	if err != nil {
		return nil, err
	}
	if a.grpc, err = rpc.NewServer(f.grpc, logger.With("component", "grpc"), a.reg); err != nil {
		return nil, err
	}
	a.host = newHost(coordinator.Options{
		LeaseTTL:          f.leaseTTL,
		HandoffTimeout:    f.handoffTimeout,
		ReplicationFactor: f.replicationFactor,
		Bucket:            bucket,
	}, logger, a.reg, a.grpc)
	a.host.register(a.grpc)

	popts := relabel.PipelineOptions{OwnershipKey: f.ownershipKey, TargetLabels: f.targetLabels()}
	if f.podEnrichment {
		kc, err := relabel.NewKubeClient(f.podAPIServer, f.podKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--pod-enrichment.*: %w", err)
		}
		a.pods, err = relabel.NewPodIndex(relabel.PodIndexOptions{
			Client:             kc,
			Namespace:          f.podNamespace,
			LabelSelector:      f.podLabelSelector,
			IncludeHostNetwork: f.podIncludeHostNet,
		}, logger, a.reg)
		if err != nil {
			return nil, err
		}
		popts.Pods = a.pods
	}
	if a.pipeline, err = relabel.NewPipeline(popts, logger, a.reg); err != nil {
		return nil, err
	}
	a.syncer = newSyncer(a.pipeline, a.host, logger.With("component", "syncer"))

	// As cmd/prometheus does: Kubernetes client metrics are process-wide,
	// SD metrics per mechanism.
	if err := discovery.RegisterK8sClientMetricsWithPrometheus(a.reg); err != nil {
		return nil, fmt.Errorf("register Kubernetes client metrics: %w", err)
	}
	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(a.reg)
	if err != nil {
		return nil, fmt.Errorf("register service discovery metrics: %w", err)
	}
	var sdCtx context.Context
	sdCtx, a.cancelSD = context.WithCancel(context.Background())
	a.discovery = discovery.NewManager(sdCtx, logger.With("component", "discovery manager scrape"), a.reg, sdMetrics, discovery.Name("scrape"), discovery.Updatert(f.sdUpdateInterval))
	if a.discovery == nil {
		return nil, errors.New("create the discovery manager")
	}

	if !f.leaderElection {
		// Alone, this replica always leads; the gauge says so, as the
		// elector's does with leader election.
		a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shardscrape_coordinator_leader",
			Help: "1 when this coordinator replica holds the leader Lease, 0 otherwise.",
		}, func() float64 { return 1 }))
	} else {
		kc, err := leader.NewKubeClient(f.leaderAPIServer, f.leaderKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--leader-election.*: %w", err)
		}
		a.elector, err = leader.New(leader.Options{
			Client:           kc,
			Namespace:        f.leaderNamespace,
			Name:             f.leaderLeaseName,
			Identity:         f.leaderIdentity,
			LeaseDuration:    f.leaderLeaseDuration,
			RenewDeadline:    f.leaderRenewDeadline,
			RetryPeriod:      f.leaderRetryPeriod,
			OnStartedLeading: a.host.startTerm,
			// On shutdown the term has ended before (see run); this is
			// for a lost Lease.
			OnStoppedLeading: a.host.loseTerm,
		}, logger, a.reg)
		if err != nil {
			return nil, err
		}
	}

	if err := a.applyConfig(lc); err != nil {
		return nil, err
	}
	a.metrics.reloadSuccess.Set(1)
	a.metrics.reloadTime.SetToCurrentTime()

	if a.webLn, err = net.Listen("tcp", f.webListenAddress); err != nil {
		return nil, fmt.Errorf("listen on --web.listen-address %q: %w", f.webListenAddress, err)
	}
	if a.grpcLn, err = net.Listen("tcp", a.grpc.Options().ListenAddress); err != nil {
		return nil, fmt.Errorf("listen on --grpc.listen-address %q: %w", a.grpc.Options().ListenAddress, err)
	}
	a.web = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

// checkCoreOptions runs the coordinator core's own checks of the flags it
// takes, now: the core is built per leadership term, in the background and
// retried, where a bad flag would only be logged, again and again, by a
// coordinator that never becomes ready. Each flag is checked alone, so that
// the error names it.
func checkCoreOptions(f flagConfig) error {
	for _, c := range []struct {
		flag string
		opts coordinator.Options
	}{
		{"--lease.ttl", coordinator.Options{LeaseTTL: f.leaseTTL}},
		{"--handoff.timeout", coordinator.Options{HandoffTimeout: f.handoffTimeout}},
		{"--replication-factor", coordinator.Options{ReplicationFactor: f.replicationFactor}},
	} {
		// No bucket: nothing is loaded; no registry: nothing registered.
		if _, err := coordinator.New(context.Background(), c.opts, nil, nil); err != nil {
			return fmt.Errorf("%s: %w", c.flag, err)
		}
	}
	return nil
}

// openBucket returns the state bucket: the --objstore.config-file client,
// or a filesystem bucket under --storage.path.
func openBucket(f flagConfig, logger *slog.Logger, reg prometheus.Registerer) (objstore.Bucket, error) {
	var (
		bkt objstore.Bucket
		err error
	)
	if f.objstoreConfigFile != "" {
		conf, rerr := os.ReadFile(f.objstoreConfigFile)
		if rerr != nil {
			return nil, fmt.Errorf("--objstore.config-file: %w", rerr)
		}
		bkt, err = client.NewBucket(kitLogger{logger.With("component", "objstore")}, conf, "shardscrape-coordinator", nil)
		if err != nil {
			return nil, fmt.Errorf("--objstore.config-file %s: %w", f.objstoreConfigFile, err)
		}
	} else {
		dir := filepath.Join(f.storagePath, "bucket")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("--storage.path: %w", err)
		}
		if bkt, err = filesystem.NewBucket(dir); err != nil {
			return nil, fmt.Errorf("--storage.path %s: %w", dir, err)
		}
	}
	return objstore.WrapWithMetrics(bkt, prometheus.WrapRegistererWithPrefix("shardscrape_coordinator_", reg), bkt.Name()), nil
}

// kitLogger adapts slog to the go-kit log.Logger interface objstore's
// client takes (Log(keyvals ...any) error).
type kitLogger struct{ l *slog.Logger }

func (k kitLogger) Log(keyvals ...any) error {
	msg, lvl := "", slog.LevelInfo
	args := make([]any, 0, len(keyvals))
	for i := 0; i+1 < len(keyvals); i += 2 {
		switch fmt.Sprint(keyvals[i]) {
		case "msg":
			msg = fmt.Sprint(keyvals[i+1])
		case "level":
			switch fmt.Sprint(keyvals[i+1]) {
			case "debug":
				lvl = slog.LevelDebug
			case "warn":
				lvl = slog.LevelWarn
			case "error":
				lvl = slog.LevelError
			}
		default:
			args = append(args, keyvals[i], keyvals[i+1])
		}
	}
	k.l.Log(context.Background(), lvl, msg, args...)
	return nil
}

// applyConfig applies a validated configuration: first to the core (the
// workers' configs), then to the pipeline (which re-relabels the targets
// it has and empties removed jobs), then to discovery (which starts and
// stops providers; their targets follow through the syncer).
func (a *app) applyConfig(lc *loadedConfig) error {
	if err := a.host.applyConfig(lc.core); err != nil {
		return fmt.Errorf("apply configuration to the coordinator: %w", err)
	}
	a.syncer.applyConfig(lc.scrape)
	if err := a.discovery.ApplyConfig(lc.sd); err != nil {
		return fmt.Errorf("apply configuration to discovery: %w", err)
	}
	return nil
}

// reload loads --config.file again; an invalid file is rejected, counted,
// and the configuration in force stays.
func (a *app) reload() error {
	start := time.Now()
	lc, err := loadConfig(a.flags.configFile, a.flags.cluster, a.logger)
	if err == nil {
		err = a.applyConfig(lc)
	}
	if err != nil {
		a.metrics.reloadSuccess.Set(0)
		a.metrics.reloadFailures.Inc()
		a.logger.Error("Configuration reload rejected; the previous configuration stays in force", "file", a.flags.configFile, "err", err)
		return err
	}
	a.metrics.reloadSuccess.Set(1)
	a.metrics.reloadTime.SetToCurrentTime()
	// The gRPC token files are re-read on change anyway; a reload makes it
	// immediate. A bad token file keeps the last good token.
	if err := a.grpc.Reload(); err != nil {
		a.logger.Error("Reload gRPC token files", "err", err)
	}
	a.logger.Info("Configuration reloaded", "file", a.flags.configFile, "jobs", len(lc.core.Jobs), "duration", time.Since(start))
	return nil
}

// handler serves the coordinator's HTTP endpoints.
func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Coordinator is Healthy.")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !a.host.ready() {
			http.Error(w, "Coordinator is not ready: not the leader, or its state is loading.", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Coordinator is Ready.")
	})
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "This endpoint requires a POST or PUT request.", http.StatusMethodNotAllowed)
			return
		}
		errc := make(chan error, 1)
		select {
		case a.reloadCh <- errc:
		case <-r.Context().Done():
			return
		}
		if err := <-errc; err != nil {
			http.Error(w, fmt.Sprintf("failed to reload config: %s", err), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "Configuration reloaded.")
	})
	mux.Handle("/api/v1/targets", a.host)
	mux.Handle("/ring", a.host)
	mux.Handle("/assignment", a.host)
	pprofhttp.Register(mux)
	return mux
}

// webAddr and grpcAddr are the listening addresses (for tests on port 0).
func (a *app) webAddr() string  { return a.webLn.Addr().String() }
func (a *app) grpcAddr() string { return a.grpcLn.Addr().String() }

// close releases what newCoordinator opened, for a failed start.
func (a *app) close() {
	if a.cancelSD != nil {
		a.cancelSD()
	}
	for _, l := range []net.Listener{a.webLn, a.grpcLn} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// run runs the coordinator until ctx ends, SIGTERM or SIGINT arrives, or a
// component fails. Every actor is interrupted at once; the order that
// matters is handled inside the actors: a leadership term ends (streams end
// with UNAVAILABLE, the core saves its assignment) before the core actor
// returns, and the gRPC server's graceful stop waits for those streams.
func (a *app) run(ctx context.Context) error {
	var g run.Group
	{
		// Termination: SIGTERM/SIGINT, or the caller's context.
		g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	}
	{
		// Discovery manager.
		g.Add(func() error {
			err := a.discovery.Run()
			a.logger.Info("Discovery manager stopped")
			return err
		}, func(error) {
			a.cancelSD()
		})
	}
	if a.pods != nil {
		// Pod index (pod enrichment): list/watch of pods.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return a.pods.Run(ctx)
		}, func(error) {
			cancel()
		})
	}
	{
		// Syncer: discovery updates and pod changes through the relabel
		// pipeline into the core.
		ctx, cancel := context.WithCancel(context.Background())
		var (
			podsSynced func(context.Context) bool
			podChanged <-chan struct{}
		)
		if a.pods != nil {
			podsSynced, podChanged = a.pods.WaitForSync, a.pods.Changed()
		}
		g.Add(func() error {
			return a.syncer.run(ctx, a.discovery.SyncCh(), podsSynced, podChanged)
		}, func(error) {
			cancel()
		})
	}
	{
		// Coordinator core: one term for the process without leader
		// election; with it, terms follow leadership. On stop the term
		// ends and the core saves its assignment before this returns.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			if a.elector == nil {
				a.host.startTerm(ctx)
			}
			<-ctx.Done()
			a.host.stopTerm()
			a.host.wait()
			return nil
		}, func(error) {
			cancel()
		})
	}
	if a.elector != nil {
		// Leader election. Cancelling it releases the Lease, so the other
		// replica takes over within one retry period. Order: the term ends
		// and the core saves its assignment first, then the Lease is
		// released, so the next leader loads the latest state.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return a.elector.Run(ctx)
		}, func(error) {
			a.host.stopTerm()
			a.host.wait()
			cancel()
		})
	}
	{
		// gRPC server: WorkerService and AdminService (gated by
		// leadership), health, reflection.
		g.Add(func() error {
			return a.grpc.Serve(a.grpcLn)
		}, func(error) {
			// The term's streams end when the core actor is interrupted
			// (at the same time), so the graceful stop does not wait for
			// them the full timeout.
			if err := a.grpc.Stop(context.Background()); err != nil {
				a.logger.Warn("gRPC server stop", "err", err)
			}
		})
	}
	{
		// HTTP server.
		g.Add(func() error {
			if err := a.web.Serve(a.webLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve HTTP on %s: %w", a.webLn.Addr(), err)
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = a.web.Shutdown(ctx)
		})
	}
	{
		// Reload: SIGHUP and POST /-/reload.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		cancel := make(chan struct{})
		g.Add(func() error {
			defer signal.Stop(hup)
			for {
				select {
				case <-hup:
					_ = a.reload()
				case errc := <-a.reloadCh:
					errc <- a.reload()
				case <-cancel:
					return nil
				}
			}
		}, func(error) {
			close(cancel)
		})
	}
	a.logger.Info("Coordinator started", "web", a.webAddr(), "grpc", a.grpcAddr(), "config", a.flags.configFile, "leader_election", a.elector != nil)
	err := g.Run()
	var sig run.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		a.logger.Info("Coordinator stopped", "reason", err)
		return nil
	}
	return err
}
