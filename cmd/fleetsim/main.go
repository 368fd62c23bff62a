// Command fleetsim is a simulated fleet for local runs, tests and
// benchmarks (internal/fleet): node_exporter-like targets and application
// pods, each at its own loopback address, registered in a Consul catalog
// fake and a Kubernetes API fake served on --web.listen-address, where
// Prometheus's consul_sd_configs (server) and kubernetes_sd_configs
// (api_server) find them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"

	"github.com/shardscrape/shardscrape/internal/fleet"
	"github.com/shardscrape/shardscrape/internal/synth"
)

type flagConfig struct {
	webListen string
	opts      fleet.Options
	log       promslog.Config
}

func newApp(cfg *flagConfig) *kingpin.Application {
	a := kingpin.New("fleetsim", "A simulated fleet: node_exporter-like targets (one per node, at 127.1.x.y) and application pods (at 127.16+.x.y), found through a Consul catalog fake and a Kubernetes API fake served on --web.listen-address.")
	a.HelpFlag.Short('h')
	a.Flag("web.listen-address", "Address of the Consul HTTP API (/v1/), the Kubernetes API (/api, /apis), /-/ready, /-/healthy and /metrics.").
		Default("127.0.0.1:8500").StringVar(&cfg.webListen)
	a.Flag("nodes", "Number of nodes, each with one node_exporter target.").
		Default("100").IntVar(&cfg.opts.Nodes)
	a.Flag("pods-per-node", "Application pods per node (apps app-0 .. app-N-1, one pod of each per node), each a target at its own pod IP.").
		Default("3").IntVar(&cfg.opts.PodsPerNode)
	a.Flag("node.series", "Series per node target.").
		Default(fmt.Sprint(synth.DefaultSeries)).IntVar(&cfg.opts.NodeSeries)
	a.Flag("pod.series", "Series per application target.").
		Default(fmt.Sprint(synth.DefaultAppSeries)).IntVar(&cfg.opts.PodSeries)
	a.Flag("churn.rate", "Fraction of each target's series replaced per minute (0: none).").
		Default("0").Float64Var(&cfg.opts.ChurnRate)
	a.Flag("node.port", "Port of every node_exporter target (0: any free port).").
		Default(fmt.Sprint(fleet.DefaultNodePort)).IntVar(&cfg.opts.NodePort)
	a.Flag("pod.port", "Port of every application target (0: any free port).").
		Default(fmt.Sprint(fleet.DefaultPodPort)).IntVar(&cfg.opts.PodPort)
	a.Flag("consul.datacenter", "Datacenter of the Consul fake (also the nodes' meta \"cluster\").").
		Default(fleet.DefaultDatacenter).StringVar(&cfg.opts.Datacenter)
	promslogflag.AddFlags(a, &cfg.log)
	return a
}

func main() {
	os.Exit(runMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// runMain parses args and runs the fleet until ctx ends or SIGINT/SIGTERM.
// It returns the exit code.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := flagConfig{log: promslog.Config{}}
	a := newApp(&cfg)
	a.UsageWriter(stdout).ErrorWriter(stderr)
	if _, err := a.Parse(args); err != nil {
		fmt.Fprintf(stderr, "Error parsing command-line arguments: %v\n", err)
		return 2
	}
	cfg.log.Writer = stderr
	logger := promslog.New(&cfg.log)
	if err := runFleet(ctx, cfg, logger); err != nil {
		logger.Error("Fleetsim failed", "err", err)
		return 1
	}
	return 0
}

// flagOf names the flag behind a fleet option error.
func flagOf(err error) error {
	var pe *fleet.PortError
	if errors.As(err, &pe) {
		return fmt.Errorf("--%s.port=%d: %w (another process listens there; choose another port or stop it)", pe.Kind, pe.Port, pe.Err)
	}
	return err
}

func runFleet(ctx context.Context, cfg flagConfig, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.opts.Logger = logger.With("component", "fleet")
	cfg.opts.Registerer = reg
	f, err := fleet.New(cfg.opts)
	if err != nil {
		return fmt.Errorf("invalid flags: %w", err)
	}
	raiseOpenFiles(cfg.opts.Nodes*(1+cfg.opts.PodsPerNode), logger)
	lis, err := net.Listen("tcp", cfg.webListen)
	if err != nil {
		return fmt.Errorf("listen on --web.listen-address=%s: %w", cfg.webListen, err)
	}
	defer lis.Close()
	if err := f.Start(); err != nil {
		return flagOf(err)
	}
	defer f.Close()
	url := "http://" + lis.Addr().String()
	nodes, pods := f.Nodes(), f.Pods()
	logger.Info("Fleet is up",
		"consul_api", lis.Addr().String(), "kubernetes_api", url,
		"nodes", len(nodes), "pods", len(pods),
		"node_targets", fmt.Sprintf("127.1.0.1:%d ... %s", f.NodePort(), nodes[len(nodes)-1].Addr),
		"pod_targets", podRange(pods))

	var g run.Group
	{
		// Termination: SIGINT/SIGTERM (or ctx) stops every actor.
		g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	}
	{
		// The targets, served since f.Start: a failing target listener
		// stops every target and ends the run (/-/ready answers 503 from
		// the failure on). They stop (f.Close, deferred) after the group.
		stop := make(chan struct{})
		g.Add(func() error {
			return watchTargets(f, stop)
		}, func(error) {
			close(stop)
		})
	}
	{
		// The control API. The targets stop (f.Close, deferred) after it.
		srv := &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 10 * time.Second}
		g.Add(func() error {
			if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve HTTP: %w", err)
			}
			return nil
		}, func(error) {
			// Close, not Shutdown: blocking queries and watches stay open
			// for minutes and would hold a graceful shutdown.
			_ = srv.Close()
		})
	}
	err = g.Run()
	var sig run.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		logger.Info("Exited cleanly", "reason", err)
		return nil
	}
	return err
}

// servingFleet is what the run group watches of the fleet.
type servingFleet interface {
	// Done is closed once the targets are no longer served.
	Done() <-chan struct{}
	// Err says why serving failed (nil: closed).
	Err() error
}

var _ servingFleet = (*fleet.Fleet)(nil)

// watchTargets blocks until stop is closed (nil) or the fleet stops serving
// its targets (an error).
func watchTargets(f servingFleet, stop <-chan struct{}) error {
	select {
	case <-stop:
		return nil
	case <-f.Done():
		if err := f.Err(); err != nil {
			return fmt.Errorf("targets: %w", err)
		}
		return errors.New("targets: no longer served")
	}
}

func podRange(pods []fleet.Pod) string {
	if len(pods) == 0 {
		return "none"
	}
	return pods[0].Addr + " ... " + pods[len(pods)-1].Addr
}
