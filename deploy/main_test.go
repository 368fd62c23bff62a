// Package deploy_test checks deploy/: the manifests decode strictly into the
// typed Kubernetes objects, kustomize renders every overlay, and the flags,
// ports, PromQL and metric names they use are the ones the real binaries have.
package deploy_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// binDir holds the shardscrape commands, built once for this run.
var binDir string

// commands are the binaries the manifests run.
var commands = []string{"coordinator", "scraper", "shardctl"}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	root, err := testenv.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		return 1
	}
	binDir, err = os.MkdirTemp("", "shardscrape-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	for _, cmd := range commands {
		build := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "./cmd/"+cmd)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "deploy: build %s: %v\n%s", cmd, err, out)
			return 1
		}
	}
	return m.Run()
}

// command returns the path of a shardscrape binary built for this run.
func command(name string) string { return filepath.Join(binDir, name) }
