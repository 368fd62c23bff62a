// Package deploy_test checks deploy/: the manifests decode strictly into the
// typed Kubernetes objects, kustomize renders every overlay, and the flags,
// ports, PromQL and metric names they use are the ones the real binaries have.
package deploy_test

import (
	"flag"
	"fmt"
	"os"
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
	var err error
	binDir, err = os.MkdirTemp("", "shardscrape-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if err := testenv.BuildCommands(binDir, commands...); err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		return 1
	}
	return m.Run()
}

// command returns the path of a shardscrape binary built for this run.
func command(name string) string { return filepath.Join(binDir, name) }
