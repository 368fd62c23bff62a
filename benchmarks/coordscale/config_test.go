package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/consul"
	"github.com/prometheus/prometheus/discovery/file"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"
)

func TestRenderFleetConfig(t *testing.T) {
	cfg, err := config.Load(renderFleetConfig("127.0.0.1:8500"), promslog.NewNopLogger())
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 2)
	nodes, pods := cfg.ScrapeConfigs[0], cfg.ScrapeConfigs[1]
	require.Equal(t, jobNodes, nodes.JobName)
	require.Equal(t, jobPods, pods.JobName)
	// The report's real-worker bound names this interval.
	require.Equal(t, scrapeInterval, cfg.GlobalConfig.ScrapeInterval.String())
	require.Equal(t, scrapeInterval, pods.ScrapeInterval.String())
	require.Len(t, nodes.ServiceDiscoveryConfigs, 1)
	csd, ok := nodes.ServiceDiscoveryConfigs[0].(*consul.SDConfig)
	require.True(t, ok)
	require.Equal(t, "127.0.0.1:8500", csd.Server)
	require.Equal(t, []string{"node-exporter"}, csd.Services)
	ksd, ok := pods.ServiceDiscoveryConfigs[0].(*kubernetes.SDConfig)
	require.True(t, ok)
	require.Equal(t, kubernetes.RolePod, ksd.Role)
	require.Equal(t, "http://127.0.0.1:8500", ksd.APIServer.String())
	keep := pods.RelabelConfigs[0]
	require.Equal(t, "keep", string(keep.Action))
	require.Equal(t, "__meta_kubernetes_pod_annotation_prometheus_io_scrape", string(keep.SourceLabels[0]))
	require.True(t, keep.Regex.MatchString("true"))
	require.False(t, keep.Regex.MatchString("false"))
}

func TestStaticTargets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "targets.json")
	const n = 2500
	require.NoError(t, writeStaticTargets(path, n))
	cfg, err := config.Load(renderStaticConfig(path), promslog.NewNopLogger())
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 1)
	require.Equal(t, scrapeInterval, cfg.ScrapeConfigs[0].ScrapeInterval.String())
	fsd, ok := cfg.ScrapeConfigs[0].ServiceDiscoveryConfigs[0].(*file.SDConfig)
	require.True(t, ok)
	require.Equal(t, []string{path}, fsd.Files)

	// The file parses as file_sd JSON and holds the expected set.
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var groups []*targetgroup.Group
	require.NoError(t, json.Unmarshal(b, &groups))
	require.Len(t, groups, 3)
	want := staticExpected(n)
	require.Len(t, want, n, "addresses are distinct")
	got := 0
	for _, g := range groups {
		require.NotEmpty(t, g.Labels["group"])
		for _, ts := range g.Targets {
			_, ok := want[jobAddr{jobStatic, string(ts["__address__"])}]
			require.True(t, ok, ts)
			got++
		}
	}
	require.Equal(t, n, got)
}

func TestCountingConn(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	payload := make([]byte, 100_000)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write(payload)
	}()
	var read atomic.Int64
	c, err := countingDialer(&read)(t.Context(), lis.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 4096)
	total := 0
	for total < len(payload) {
		n, err := c.Read(buf)
		require.NoError(t, err)
		total += n
	}
	require.Equal(t, int64(len(payload)), read.Load())
}

func TestParseSyncLine(t *testing.T) {
	rec, ok := parseSyncLine([]byte(`time=2026-11-25T19:03:43.263Z level=DEBUG source=syncer.go:161 msg="Discovery update applied" component=syncer jobs=1 duration=1.5s`))
	require.True(t, ok)
	at := time.Date(2026, 11, 25, 19, 3, 43, 263e6, time.UTC)
	require.Equal(t, at, rec.applied)
	require.Equal(t, at.Add(-1500*time.Millisecond), rec.received)
	rec, ok = parseSyncLine([]byte(`time=2026-11-25T19:03:43.263Z level=DEBUG msg="Discovery update applied" duration=203.525µs`))
	require.True(t, ok)
	require.Equal(t, 203525*time.Nanosecond, rec.applied.Sub(rec.received))
	_, ok = parseSyncLine([]byte(`level=DEBUG msg="Discovery update applied" duration=1s`))
	require.False(t, ok)
}

func TestGap(t *testing.T) {
	s := func(v float64) string { return "x" }
	met, _ := gap(0.5, 1, s)
	require.Equal(t, "met", met)
	met, g := gap(3, 1, s)
	require.Equal(t, "not met", met)
	require.Contains(t, g, "3.00×")
}
