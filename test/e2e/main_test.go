// Package e2e_test runs shardscrape's real binaries together: a coordinator,
// scraper workers, a simulated fleet (internal/fleet: node_exporter-like and
// application targets at their own 127.x addresses, the Consul and
// Kubernetes fakes) and a real VictoriaMetrics, and measures what arrives at
// the receiver: every target's `up` samples per scrape interval. Skipped
// under -short.
//
// Figures are logged as `e2e-figure: <case> key=value ...` lines, so
//
//	go test -count 1 ./test/e2e/ -v | grep e2e-figure
//
// prints the coverage the run measured.
package e2e_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// binDir holds the coordinator and scraper built once for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	start := time.Now()
	var err error
	binDir, err = os.MkdirTemp("", "shardscrape-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	var build []string
	for _, cmd := range []string{"coordinator", "scraper"} {
		// SHARDSCRAPE_E2E_<CMD>=path runs a binary built elsewhere (an
		// older commit, to show a case failing without a fix).
		if path := os.Getenv("SHARDSCRAPE_E2E_" + strings.ToUpper(cmd)); path != "" {
			if err := os.Symlink(path, filepath.Join(binDir, cmd)); err != nil {
				fmt.Fprintln(os.Stderr, "e2e:", err)
				return 1
			}
			fmt.Printf("e2e: %s from %s\n", cmd, path)
			continue
		}
		build = append(build, cmd)
	}
	if err := testenv.BuildCommands(binDir, build...); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	code := m.Run()
	fmt.Printf("e2e-figure: suite seconds=%.1f exit=%d\n", time.Since(start).Seconds(), code)
	return code
}
