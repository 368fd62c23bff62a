// Command coordinator runs Prometheus service discovery on an unchanged
// prometheus.yml and splits the discovered targets across a fleet of
// scraper workers (see coordinator/ and proto/shardscrape/v1).
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/common/promslog"
	"k8s.io/klog/v2"
)

func main() {
	os.Exit(runMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// runMain parses args, then checks the configuration (--config.check) or
// runs the coordinator until ctx ends or a signal stops it. It returns the
// exit code.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f flagConfig
	a := newApp(&f)
	a.UsageWriter(stdout).ErrorWriter(stderr)
	if _, err := a.Parse(args); err != nil {
		fmt.Fprintf(stderr, "Error parsing command-line arguments: %v\n", err)
		return 2
	}
	if f.configCheck {
		return checkConfig(f.configFile, f.cluster, stdout, stderr)
	}
	f.log.Writer = stderr
	logger := promslog.New(&f.log)
	// client-go (leader election, pod index, Kubernetes SD) logs through klog.
	klog.SetSlogLogger(logger.With("component", "k8s_client_runtime"))

	c, err := newCoordinator(f, logger)
	if err != nil {
		logger.Error("Cannot start the coordinator", "err", err)
		return 1
	}
	if err := c.run(ctx); err != nil {
		logger.Error("Coordinator failed", "err", err)
		return 1
	}
	return 0
}
