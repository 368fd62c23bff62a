package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// VMAgentOptions says how to run bin/vmagent.
type VMAgentOptions struct {
	// ScrapeConfig is the -promscrape.config content (Prometheus's
	// scrape_configs format); empty means no scraping.
	ScrapeConfig string
	// RemoteWriteURLs are the -remoteWrite.url values.
	RemoteWriteURLs []string
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// VMAgent is a running bin/vmagent, its remote-write buffer in a
// t.TempDir(). Stop and Start restart it on the same address and buffer.
type VMAgent struct {
	*Process
	// URL is the base URL, http://127.0.0.1:<port>.
	URL string
	// DataDir is the -remoteWrite.tmpDataPath.
	DataDir string
}

// StartVMAgent writes the scrape config, starts bin/vmagent on a free
// 127.0.0.1 port and waits for /health.
func StartVMAgent(t testing.TB, opts VMAgentOptions) *VMAgent {
	t.Helper()
	bin := Binary(t, VMAgentBinary)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	var configArg []string
	if opts.ScrapeConfig != "" {
		configFile := filepath.Join(dir, "scrape.yml")
		if err := os.WriteFile(configFile, []byte(opts.ScrapeConfig), 0o600); err != nil {
			t.Fatalf("testenv: write %s: %v", configFile, err)
		}
		configArg = []string{"-promscrape.config=" + configFile}
	}
	args := func(addr string) []string {
		a := append([]string{
			"-httpListenAddr=" + addr,
			"-remoteWrite.tmpDataPath=" + dataDir,
			"-loggerLevel=WARN",
		}, configArg...)
		for _, u := range opts.RemoteWriteURLs {
			a = append(a, "-remoteWrite.url="+u)
		}
		return append(a, opts.ExtraArgs...)
	}
	p, addr := startOnFreePort(t, bin, args, "/health")
	return &VMAgent{Process: p, URL: "http://" + addr, DataDir: dataDir}
}

// Start starts the stopped vmagent again and waits for /health.
func (a *VMAgent) Start() error {
	if err := a.Process.Start(); err != nil {
		return err
	}
	return a.waitReady(context.Background(), a.URL+"/health")
}
