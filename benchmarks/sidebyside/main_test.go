package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"
)

func TestParsePeer(t *testing.T) {
	p, err := parsePeer("shardscrape+GOGC=50+--no-storage.agent.wal-compression+queue.min_shards=1")
	require.NoError(t, err)
	require.Equal(t, "shardscrape", p.kind)
	require.Equal(t, []string{"GOGC=50"}, p.env)
	require.Equal(t, []string{"--no-storage.agent.wal-compression"}, p.flags)
	require.Equal(t, []string{"min_shards: 1"}, p.queue)

	for _, bad := range []string{"nginx", "shardscrape+GOGC", "shardscrape+queue.min_shards"} {
		_, err := parsePeer(bad)
		require.Error(t, err, bad)
	}
}

func TestAggregate(t *testing.T) {
	agg := aggregate([]result{
		{peer: "a", cpuSeconds: 1, samples: 10, peakRSS: 300},
		{peer: "b", cpuSeconds: 2, samples: 10, peakRSS: 100},
		{peer: "a", cpuSeconds: 3, samples: 30, peakRSS: 100},
		{peer: "a", cpuSeconds: 1, samples: 10, peakRSS: 200},
	})
	require.Len(t, agg, 2)
	require.Equal(t, "a", agg[0].peer)
	require.Equal(t, 5.0, agg[0].cpuSeconds)
	require.Equal(t, 50.0, agg[0].samples)
	require.Equal(t, int64(200), agg[0].peakRSS) // median
	require.Equal(t, int64(100), agg[1].peakRSS)

	agg = aggregate([]result{{peer: "a", peakRSS: 100}, {peer: "a", peakRSS: 300}})
	require.Equal(t, int64(200), agg[0].peakRSS) // mean of the middle two
}

// TestConfig: the generated prometheus.yml loads in Prometheus, with the
// queue settings given; vmagent's has no remote_write.
func TestConfig(t *testing.T) {
	o := options{interval: 5 * time.Second}
	text := config(o, "http://127.0.0.1:8428", "run-0", []string{"min_shards: 1", "max_samples_per_send: 500"}, []string{"127.0.0.1:1", "127.0.0.1:2"})
	cfg, err := promconfig.Load(text, nil)
	require.NoError(t, err)
	require.Len(t, cfg.RemoteWriteConfigs, 1)
	require.Equal(t, 1, cfg.RemoteWriteConfigs[0].QueueConfig.MinShards)
	require.Equal(t, 500, cfg.RemoteWriteConfigs[0].QueueConfig.MaxSamplesPerSend)
	require.Equal(t, "run-0", cfg.GlobalConfig.ExternalLabels.Get("bench"))
	require.Len(t, cfg.ScrapeConfigs[0].ServiceDiscoveryConfigs, 1)

	require.NotContains(t, config(o, "", "run-1", nil, []string{"127.0.0.1:1"}), "remote_write")
}

func TestRenderRatiosAgainstPeers(t *testing.T) {
	out := render(options{targets: 1, series: 1, interval: time.Second, duration: time.Second}, []result{
		{peer: "prometheus-agent", run: "prometheus-agent-0", cpuSeconds: 2, samples: 100, peakRSS: 200, expected: 100},
		{peer: "shardscrape", run: "shardscrape-1", cpuSeconds: 1, samples: 100, peakRSS: 100, expected: 100},
	})
	require.True(t, strings.Contains(out, "shardscrape vs prometheus-agent: samples per CPU-second 2.00×, peak RSS 0.50×"), out)
}

func TestDirBytes(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "wal"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a"), make([]byte, 10), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wal", "00000000"), make([]byte, 32), 0o644))
	n, err := dirBytes(dir)
	require.NoError(t, err)
	require.Equal(t, int64(42), n)
	n, err = dirBytes(filepath.Join(dir, "missing"))
	require.NoError(t, err)
	require.Zero(t, n)
}
