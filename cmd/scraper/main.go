// Command scraper is the shardscrape worker: it joins the coordinator,
// scrapes its share of the targets with Prometheus's scrape engine and
// remote-writes them through an agent WAL (see scraper/). With
// --config.file it runs that prometheus.yml on its own, as a Prometheus
// agent.
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
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/tsdb/agent"
	"github.com/prometheus/prometheus/util/compression"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/shardscrape/shardscrape/internal/rpc"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/remotewrite"
	"github.com/shardscrape/shardscrape/scraper"
)

// coordinatorConnectParams bound the reconnect backoff to the coordinator
// at one second (gRPC's default MinConnectTimeout kept).
var coordinatorConnectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 20 * time.Second,
}

const (
	defaultWebListenAddress = ":9095"
	defaultStoragePath      = "data-scraper/"
)

type flagConfig struct {
	configFile      string
	coordinator     rpc.ClientOptions
	workerID        string
	zone            string
	capacity        float64
	webListen       string
	webExternal     string
	storagePath     string
	walCompression  bool
	walCompressType string
	leave           bool
	handoffTimeout  time.Duration
	flushDeadline   model.Duration
	discoveryReload model.Duration
	remoteWrite     *remotewrite.Flags
	log             promslog.Config
}

func newApp(cfg *flagConfig) *kingpin.Application {
	a := kingpin.New("scraper", "The shardscrape scraper worker: scrapes the targets the coordinator assigns with Prometheus's scrape engine and remote-writes them through an agent WAL. With --config.file, runs that prometheus.yml alone, as a Prometheus agent.")
	a.HelpFlag.Short('h')

	a.Flag("config.file", "Standalone mode: run this Prometheus configuration file with the worker's own service discovery, as a Prometheus agent (SIGHUP or POST /-/reload reloads it). The --coordinator.* flags are then ignored.").
		Default("").StringVar(&cfg.configFile)
	cfg.coordinator.AddFlags(a, "coordinator")
	a.Flag("worker.id", "Worker id, stable across restarts (the StatefulSet pod name). Default: $HOSTNAME.").
		Default(os.Getenv("HOSTNAME")).StringVar(&cfg.workerID)
	a.Flag("worker.zone", "Failure domain of the worker, for replica spread. Empty: none shared with any other worker.").
		Default("").StringVar(&cfg.zone)
	a.Flag("worker.capacity", "Relative capacity: the worker's weight on the ring, in (0, 1000].").
		Default("1").Float64Var(&cfg.capacity)
	a.Flag("web.listen-address", "Address for HTTP: /metrics, /-/healthy, /-/ready, /-/reload, /api/v1/targets, /debug/pprof/.").
		Default(defaultWebListenAddress).StringVar(&cfg.webListen)
	a.Flag("web.external-address", "host:port the coordinator reaches the worker's HTTP endpoint at. Default: the worker id (a StatefulSet pod's DNS name under a headless service works too) with the listen port.").
		Default("").StringVar(&cfg.webExternal)
	a.Flag("storage.path", "Directory of the agent WAL and the persisted assignment (fail static).").
		Default(defaultStoragePath).StringVar(&cfg.storagePath)
	a.Flag("storage.agent.wal-compression", "Compress the agent WAL (as Prometheus's flag). If false, --storage.agent.wal-compression-type is ignored.").
		Default("true").BoolVar(&cfg.walCompression)
	a.Flag("storage.agent.wal-compression-type", "Compression algorithm of the agent WAL, used when --storage.agent.wal-compression is true (as Prometheus's flag).").
		Hidden().Default(compression.Snappy).EnumVar(&cfg.walCompressType, compression.Snappy, compression.Zstd)
	a.Flag("shutdown.leave", "On SIGTERM, Leave the coordinator (drain: hand every target over before stopping). A worker restarting in place may skip it: its lease holds its targets and its restarted self resumes them.").
		Default("true").BoolVar(&cfg.leave)
	a.Flag("shutdown.handoff-timeout", "Longest wait for the coordinator to hand the worker's targets over on shutdown (Leave).").
		Default(scraper.DefaultHandoffTimeout.String()).DurationVar(&cfg.handoffTimeout)
	a.Flag("storage.remote.flush-deadline", "How long to wait flushing remote-write samples on shutdown.").
		Default("1m").SetValue(&cfg.flushDeadline)
	a.Flag("scrape.discovery-reload-interval", "Interval at which the scrape manager applies target changes. 0: 1s with a coordinator (incoming targets start quickly), Prometheus's 5s in standalone mode.").
		Hidden().Default("0s").SetValue(&cfg.discoveryReload)
	cfg.remoteWrite = remotewrite.RegisterFlags(a)
	promslogflag.AddFlags(a, &cfg.log)
	return a
}

func main() {
	os.Exit(runMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// runMain parses args and runs the worker until ctx ends or SIGINT/SIGTERM.
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
	if err := runWorker(ctx, cfg, logger); err != nil {
		logger.Error("Scraper failed", "err", err)
		return 1
	}
	logger.Info("See you next time!")
	return 0
}

func runWorker(ctx context.Context, cfg flagConfig, logger *slog.Logger) error {
	if _, err := cfg.remoteWrite.Endpoints(); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	lis, err := net.Listen("tcp", cfg.webListen)
	if err != nil {
		return fmt.Errorf("listen on --web.listen-address=%s: %w", cfg.webListen, err)
	}
	defer lis.Close()
	address := cfg.webExternal
	if address == "" {
		_, port, _ := net.SplitHostPort(lis.Addr().String())
		host := cfg.workerID
		if host == "" {
			host, _ = os.Hostname()
		}
		address = net.JoinHostPort(host, port)
	}

	opts := scraper.Options{
		ConfigFile:      cfg.configFile,
		WorkerID:        cfg.workerID,
		Address:         address,
		Zone:            cfg.zone,
		Capacity:        cfg.capacity,
		Version:         version(),
		StoragePath:     cfg.storagePath,
		Agent:           agentOptions(cfg),
		Scrape:          &scrape.Options{DiscoveryReloadInterval: cfg.discoveryReload},
		ConfigHook:      cfg.remoteWrite.Apply,
		SetGOGC:         true,
		LeaveOnShutdown: cfg.leave,
		HandoffTimeout:  cfg.handoffTimeout,
		FlushDeadline:   time.Duration(cfg.flushDeadline),
	}
	if cfg.configFile == "" {
		// Reconnect within a restarted coordinator's startup grace (one
		// lease TTL): gRPC's default reconnect backoff grows to 120 s, and
		// meanwhile every heartbeat fails at once with the last dial
		// error, so after a minute's outage the workers came back 10–30 s
		// late and the coordinator had handed their targets to others.
		cfg.coordinator.DialOptions = append(cfg.coordinator.DialOptions, grpc.WithConnectParams(coordinatorConnectParams))
		cc, err := rpc.Dial(cfg.coordinator.Address, cfg.coordinator)
		if err != nil {
			return fmt.Errorf("--coordinator.address: %w", err)
		}
		defer cc.Close()
		opts.Client = pb.NewWorkerServiceClient(cc)
		logger.Info("Starting scraper worker", "worker_id", cfg.workerID, "coordinator", cfg.coordinator.Address, "address", address)
	} else {
		logger.Info("Starting scraper in standalone mode", "config_file", cfg.configFile)
	}
	w, err := scraper.New(opts, logger.With("component", "scraper"), reg)
	if err != nil {
		return err
	}

	var g run.Group
	{
		// Termination: SIGINT/SIGTERM (or ctx) stops every actor.
		g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	}
	workerDone := make(chan struct{})
	{
		// The worker. On interrupt it drains: readiness false, Leave
		// (--shutdown.handoff-timeout), then scraping stops BEFORE the WAL
		// and remote storage close (flush bounded by
		// --storage.remote.flush-deadline); Run orders this itself.
		wctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			defer close(workerDone)
			return w.Run(wctx)
		}, func(error) {
			cancel()
		})
	}
	{
		// HTTP stays up while the worker drains (/-/ready says 503, /metrics
		// shows the drain) and closes once the worker has stopped.
		srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}
		g.Add(func() error {
			if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve HTTP: %w", err)
			}
			return nil
		}, func(error) {
			go func() {
				<-workerDone
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
		})
	}
	if cfg.configFile != "" {
		// SIGHUP reloads the configuration file.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		stop := make(chan struct{})
		g.Add(func() error {
			for {
				select {
				case <-hup:
					rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					if err := w.Reload(rctx); err != nil {
						logger.Error("Reload failed", "err", err)
					} else {
						logger.Info("Reloaded configuration", "file", cfg.configFile)
					}
					cancel()
				case <-stop:
					return nil
				}
			}
		}, func(error) {
			signal.Stop(hup)
			close(stop)
		})
	}
	err = g.Run()
	if errors.Is(err, run.ErrSignal) {
		logger.Info("Exited cleanly", "reason", err)
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// agentOptions are the WAL options the flags give: Prometheus agent mode's
// defaults with the flags' compression.
func agentOptions(cfg flagConfig) *agent.Options {
	o := scraper.DefaultAgentOptions()
	o.WALCompression = compression.None
	if cfg.walCompression {
		o.WALCompression = cfg.walCompressType
	}
	return o
}

// version is the module version the binary was built from.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
