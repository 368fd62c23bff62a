package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shardscrape/shardscrape/benchmarks/internal/report"
)

// run runs the benchmark and writes the result file, the chart and the
// tables (to stdout).
func run(ctx context.Context, o options, args []string, logger *slog.Logger, stdout io.Writer, ab *aborter) error {
	b, err := newBench(ctx, o, logger, ab)
	if err != nil {
		return err
	}
	defer b.close()
	res, err := b.all(ctx)
	if err != nil {
		return err
	}
	h := header{machine: report.Detect(), o: o, series: b.series, command: "go run ./benchmarks/peers " + strings.Join(args[1:], " "),
		started: b.started, took: time.Since(b.started)}
	for _, bin := range []struct{ name, path string }{
		{"scraper", b.bins.scraper}, {"scraper (shardscrape-b)", b.bins.scraperB}, {"coordinator", b.bins.coordinator},
		{"prometheus", b.bins.prometheus}, {"vmagent", b.bins.vmagent}, {"victoria-metrics", b.bins.victoriaMetrics},
	} {
		if bin.path != "" {
			h.versions = append(h.versions, [2]string{bin.name, report.Build(bin.path)})
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	svgName := ""
	if len(res.sweep) > 0 {
		svg, err := sweepChart(o.peers, res.sweep)
		if err != nil {
			return fmt.Errorf("sweep chart: %w", err)
		}
		if svg != nil {
			path := chartFile(o.out, b.started)
			if err := os.WriteFile(path, svg, 0o644); err != nil {
				return err
			}
			svgName = filepath.Base(path)
		}
	}
	mdPath := report.FileName(o.out, scenario, b.started)
	if err := os.WriteFile(mdPath, []byte(markdown(h, res, svgName)), 0o644); err != nil {
		return err
	}
	fmt.Fprint(stdout, printTables(res))
	logger.Info("Results written", "markdown", mdPath, "chart", svgName)
	var failed []string
	for _, m := range res.steady {
		if m.Err != "" {
			failed = append(failed, fmt.Sprintf("%s (%s): %s", m.Peer, m.Run, m.Err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("steady runs failed: %s", strings.Join(failed, "; "))
	}
	return nil
}
