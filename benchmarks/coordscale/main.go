// Command coordscale benchmarks the real coordinator binary at high node
// counts: a fleet's Consul and Kubernetes fakes (scenario k8s) or a
// million file_sd targets (scenario static), assigned to simulated workers
// (in-process gRPC clients), then one worker joining and one leaving. It
// writes benchmarks/results/<date>-coordinator-scale.md and prints it.
//
//	go run ./benchmarks/coordscale [-scenario all|k8s|static] [-workers 200] ...
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/common/promslog"
)

func main() {
	var o options
	a := kingpin.New("coordscale", "Benchmark the coordinator binary at high node counts with simulated workers.")
	a.HelpFlag.Short('h')
	a.Flag("bin", "Directory holding the coordinator binary.").Default("./bin").StringVar(&o.bin)
	a.Flag("out", "Directory of the results file.").Default("benchmarks/results").StringVar(&o.out)
	a.Flag("scenario", "Scenario: all, k8s (fleet fakes) or static (file_sd).").Default(scenarioAll).EnumVar(&o.scenario, scenarioAll, scenarioK8s, scenarioStatic)
	a.Flag("workers", "Simulated workers.").Default("200").IntVar(&o.workers)
	a.Flag("nodes", "Fleet nodes (scenario k8s).").Default("5000").IntVar(&o.nodes)
	a.Flag("pods-per-node", "Fleet pods per node (scenario k8s).").Default("30").IntVar(&o.podsPerNode)
	a.Flag("static-targets", "Generated file_sd targets (scenario static).").Default("1000000").IntVar(&o.staticTargets)
	a.Flag("discovery.update-interval", "Passed to the coordinator (discovery.Manager's batching).").Default("5s").DurationVar(&o.updateInterval)
	a.Flag("lease.ttl", "Passed to the coordinator when set (its default: 15s; workers heartbeat every third of it).").Default("0s").DurationVar(&o.leaseTTL)
	a.Flag("ack-poll", "How often a simulated worker sends the acks of its incoming targets (a real worker: 1s after a real first scrape).").Default("100ms").DurationVar(&o.ackPoll)
	a.Flag("idle", "Steady period with no change, for the coordinator's idle CPU.").Default("30s").DurationVar(&o.idle)
	a.Flag("timeout", "Longest wait for each phase (full assignment, a join, a leave).").Default("10m").DurationVar(&o.timeout)
	a.Flag("settle", "A state counts as converged once no worker's view changed for this long after it.").Default("6s").DurationVar(&o.settle)
	a.Flag("coordinator.log-dir", "Keep the coordinator's output (debug level) in this directory, one file per scenario.").Default("").StringVar(&o.logDir)
	if _, err := a.Parse(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "Error parsing command-line arguments: %v\n", err)
		os.Exit(2)
	}
	if o.workers < 2 {
		fmt.Fprintln(os.Stderr, "-workers: at least 2 (one leaves)")
		os.Exit(2)
	}
	o.logger = promslog.New(&promslog.Config{Writer: os.Stderr})
	// The simulated workers' views and the expected set make a large heap
	// whose collection takes the shared cores from the coordinator: collect
	// less often (memory is not what is measured here). The environment,
	// GOGC included, passes to the coordinator unchanged.
	debug.SetGCPercent(400)

	var g run.Group
	{
		// Ctrl-C / SIGTERM: the benchmark's context ends, which stops the
		// coordinator by pid and removes the temporary directories.
		g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	}
	{
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return runBench(ctx, o, os.Stdout)
		}, func(error) {
			cancel()
		})
	}
	err := g.Run()
	var sig run.SignalError
	if err != nil && !errors.As(err, &sig) {
		o.logger.Error("coordscale failed", "err", err)
		os.Exit(1)
	}
}
