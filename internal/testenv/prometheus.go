package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// PrometheusOptions says how to run bin/prometheus.
type PrometheusOptions struct {
	// Agent runs it in agent mode (--agent): it scrapes and remote-writes
	// Config, and has no query API.
	Agent bool
	// Config is the prometheus.yml content; empty means no scrape configs.
	Config string
	// RemoteWriteReceiver enables /api/v1/write
	// (--web.enable-remote-write-receiver; server mode only).
	RemoteWriteReceiver bool
	// AcceptedProtobufMessages restricts the receiver to these messages
	// (--web.remote-write-receiver.accepted-protobuf-messages), e.g.
	// "io.prometheus.write.v2.Request" to reject remote-write 1.0. Empty
	// keeps Prometheus's default (1.0 and 2.0).
	AcceptedProtobufMessages []string
	// OutOfOrderTimeWindow sets storage.tsdb.out_of_order_time_window in the
	// config (server mode only). Two workers briefly scraping one target
	// during a handoff write interleaved timestamps, which Prometheus
	// rejects as out of order without this window. Config must then have no
	// top-level storage section of its own.
	OutOfOrderTimeWindow time.Duration
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// Prometheus is a running bin/prometheus, its TSDB or agent WAL in a
// t.TempDir(). Stop and Start restart it on the same address and data.
type Prometheus struct {
	*Process
	// URL is the base URL, http://127.0.0.1:<port>.
	URL string
	// DataDir is --storage.tsdb.path (server) or --storage.agent.path (agent).
	DataDir string
	// ConfigFile is the --config.file written from the options.
	ConfigFile string

	api promv1.API
}

// StartPrometheus writes the config, starts bin/prometheus on a free
// 127.0.0.1 port and waits for /-/ready.
func StartPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	bin := Binary(t, PrometheusBinary)
	dir := t.TempDir()
	cfg := opts.Config
	if opts.OutOfOrderTimeWindow > 0 {
		if opts.Agent {
			t.Fatalf("testenv: OutOfOrderTimeWindow is for server mode; agent mode has no TSDB")
		}
		if hasTopLevelKey(cfg, "storage") {
			t.Fatalf("testenv: OutOfOrderTimeWindow with a Config that has its own storage section: set out_of_order_time_window there")
		}
		cfg += fmt.Sprintf("\nstorage:\n  tsdb:\n    out_of_order_time_window: %s\n", model.Duration(opts.OutOfOrderTimeWindow))
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(cfg), 0o600); err != nil {
		t.Fatalf("testenv: write %s: %v", configFile, err)
	}
	dataDir := filepath.Join(dir, "data")
	args := func(addr string) []string {
		a := []string{
			"--web.listen-address=" + addr,
			"--config.file=" + configFile,
			"--log.level=warn",
		}
		if opts.Agent {
			a = append(a, "--agent", "--storage.agent.path="+dataDir)
		} else {
			a = append(a, "--storage.tsdb.path="+dataDir)
		}
		if opts.RemoteWriteReceiver {
			a = append(a, "--web.enable-remote-write-receiver")
		}
		for _, m := range opts.AcceptedProtobufMessages {
			a = append(a, "--web.remote-write-receiver.accepted-protobuf-messages="+m)
		}
		return append(a, opts.ExtraArgs...)
	}
	p, addr := startOnFreePort(t, bin, args, "/-/ready")
	prom := &Prometheus{Process: p, URL: "http://" + addr, DataDir: dataDir, ConfigFile: configFile}
	client, err := api.NewClient(api.Config{Address: prom.URL})
	if err != nil {
		t.Fatalf("testenv: query client for %s: %v", prom.URL, err)
	}
	prom.api = promv1.NewAPI(client)
	return prom
}

// Start starts the stopped Prometheus again on the same address and data
// and waits for /-/ready.
func (p *Prometheus) Start() error {
	if err := p.Process.Start(); err != nil {
		return err
	}
	return p.waitReady(context.Background(), p.URL+"/-/ready")
}

// WriteURL is the remote-write receiver endpoint, <URL>/api/v1/write.
func (p *Prometheus) WriteURL() string { return p.URL + "/api/v1/write" }

// API returns a Prometheus HTTP API client (server mode).
func (p *Prometheus) API() promv1.API { return p.api }

// RawSamples returns the raw samples of every series matching the selector
// in the window ending now, from an instant query of selector[window].
func (p *Prometheus) RawSamples(ctx context.Context, selector string, window time.Duration) ([]Series, error) {
	q := fmt.Sprintf("%s[%s]", selector, model.Duration(window))
	v, _, _, err := p.api.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("query %q: got %s, want a matrix", q, v.Type())
	}
	out := make([]Series, 0, len(m))
	for _, ss := range m {
		s := Series{Labels: metricLabels(ss.Metric)}
		for _, sp := range ss.Values {
			s.Timestamps = append(s.Timestamps, int64(sp.Timestamp))
			s.Values = append(s.Values, float64(sp.Value))
		}
		out = append(out, s)
	}
	return out, nil
}

// SampleCounts returns the number of raw samples per series matching the
// selector in the window ending now, keyed like VictoriaMetrics.SampleCounts.
func (p *Prometheus) SampleCounts(ctx context.Context, selector string, window time.Duration) (map[string]int, error) {
	series, err := p.RawSamples(ctx, selector, window)
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(series))
	for _, s := range series {
		counts[s.Labels.String()] = len(s.Timestamps)
	}
	return counts, nil
}

func metricLabels(m model.Metric) labels.Labels {
	b := labels.NewScratchBuilder(len(m))
	for k, v := range m {
		b.Add(string(k), string(v))
	}
	b.Sort()
	return b.Labels()
}

// hasTopLevelKey reports whether the YAML document has key at column 0.
func hasTopLevelKey(doc, key string) bool {
	for line := range strings.SplitSeq(doc, "\n") {
		if strings.HasPrefix(line, key+":") {
			return true
		}
	}
	return false
}
