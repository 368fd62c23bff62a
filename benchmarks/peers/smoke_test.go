package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// TestSmoke runs the shardscrape pair and vmagent briefly over a few
// targets with the real binaries of bin/ (skipped under -short, and when
// one is missing) and checks the run's own invariants: something was
// served and delivered, the receiver holds exactly what the proxy saw,
// nothing failed to decode, the temp dir is gone. (The Prometheus agent
// and the sweep take ~20 s more each: their configs and rules have unit
// tests.)
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real binaries")
	}
	dir, err := testenv.BinDir()
	require.NoError(t, err)
	for _, name := range []string{"coordinator", "scraper", "prometheus", "vmagent", "victoria-metrics"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Skipf("no %s in %s (make receivers; go build -o bin/ ./cmd/...)", name, dir)
		}
	}
	o := options{bin: dir, out: t.TempDir(), targets: 4, series: 20, interval: time.Second, duration: 2 * time.Second,
		rounds: 1, peers: []string{peerShardscrape, peerVMAgent},
		scraperBin: filepath.Join(dir, "scraper"), rssCap: defaultRSSCap, drainMax: 30 * time.Second}
	require.NoError(t, o.validate())
	var logs testenv.SyncBuffer
	b, err := newBench(context.Background(), o, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	tmp := b.dir
	defer func() {
		b.close()
		_, err := os.Stat(tmp)
		require.True(t, os.IsNotExist(err), "temp dir removed")
		if t.Failed() || testing.Verbose() {
			t.Log(logs.String())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := b.all(ctx)
	require.NoError(t, err)
	require.Len(t, res.steady, 2)
	require.Empty(t, res.sweep)
	for _, m := range res.steady {
		require.Positive(t, m.Served(), m.Peer)
		require.Positive(t, m.Delivered, m.Peer)
		require.Equal(t, m.Delivered, float64(m.ProxySamples), "%s %s: the receiver holds what the proxy saw", m.Peer, m.Run)
		require.Zero(t, m.DecodeErrors, m.Peer)
		require.Positive(t, m.PeakRSS, m.Peer)
		require.Positive(t, m.CPULifetime, m.Peer)
	}
	require.NotNil(t, res.steady[0].Coordinator)
	require.Equal(t, "prw1.0+zstd", res.steady[1].Protocols, "vmagent speaks VictoriaMetrics' protocol through the proxy")
	md := markdown(header{o: o, series: b.series, command: "test", started: b.started}, res, "")
	require.True(t, strings.Contains(md, "| vmagent"), md)
}
