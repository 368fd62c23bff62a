// Package e2e_test runs shardscrape's real binaries together: a coordinator,
// scraper workers, synthetic targets and a real VictoriaMetrics, and checks
// what arrives at the receiver. Skipped under -short.
package e2e_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
	root, err := testenv.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binDir, err = os.MkdirTemp("", "shardscrape-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	for _, cmd := range []string{"coordinator", "scraper"} {
		build := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "./cmd/"+cmd)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", cmd, err, out)
			return 1
		}
	}
	return m.Run()
}
