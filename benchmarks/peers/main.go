// Command peers runs the same fleet of node_exporter-like targets through
// the shardscrape scraper worker (fed by a real coordinator), Prometheus in
// agent mode and vmagent, one after another on this machine, each writing
// through its own counting remote-write proxy into one real
// VictoriaMetrics, and writes what the operating system, the fleet and the
// receiver saw: CPU seconds, peak RSS, bytes and samples on the wire,
// scrape-to-arrival delay, samples lost, ratios, and a saturation sweep
// with its chart. It never trusts a program's own account of itself.
//
//	go run ./benchmarks/peers -targets 200 -series 800 -interval 5s -duration 3m
//	go run ./benchmarks/peers -peers shardscrape,shardscrape-b -scraper-b-bin /tmp/scraper-old -sweep ""
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
)

func main() {
	fs := flag.NewFlagSet("peers", flag.ExitOnError)
	parse := registerFlags(fs)
	_ = fs.Parse(os.Args[1:])
	o, err := parse()
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, stopSignals...)
	ab := &aborter{}
	finished, done := make(chan struct{}), make(chan struct{})
	go func() {
		handleSignals(sigs, finished, cancel, ab, logger, func() { os.Exit(130) })
		close(done)
	}()
	err = run(ctx, o, os.Args, logger, os.Stdout, ab)
	if err != nil {
		logger.Error("Benchmark failed", "err", err)
	}
	close(finished)
	<-done
	signal.Stop(sigs)
	if err != nil {
		cancel()
		os.Exit(1)
	}
}
