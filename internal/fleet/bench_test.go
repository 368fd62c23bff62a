package fleet_test

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/fleet"
	"github.com/shardscrape/shardscrape/internal/synth"
)

// BenchmarkServeNode is the cost of one scrape of a node target (800
// series) through the fleet's listener: "append" is the exposition alone,
// "http" the whole request over loopback with a keep-alive client.
func BenchmarkServeNode(b *testing.B) {
	benchServe(b, synth.KindNode, synth.DefaultSeries)
}

// BenchmarkServePod is BenchmarkServeNode for an application target (50
// series).
func BenchmarkServePod(b *testing.B) {
	benchServe(b, synth.KindApp, synth.DefaultAppSeries)
}

func benchServe(b *testing.B, kind synth.Kind, series int) {
	b.Run("append", func(b *testing.B) {
		e := synth.NewLayout(kind, series).New(synth.Options{Seed: 1, Start: time.Now().Add(-time.Hour)})
		var buf []byte
		now := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			buf = e.Append(buf[:0], now)
		}
		b.ReportMetric(float64(len(buf)), "bytes/scrape")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(series), "ns/series")
	})
	b.Run("http", func(b *testing.B) {
		f, err := fleet.New(fleet.Options{Nodes: 1, PodsPerNode: 1, NodeSeries: series, PodSeries: series})
		require.NoError(b, err)
		require.NoError(b, f.Start())
		defer func() { require.NoError(b, f.Close()) }()
		url := "http://" + f.Nodes()[0].Addr + "/metrics"
		if kind == synth.KindApp {
			url = "http://" + f.Pods()[0].Addr + "/metrics"
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		var n int64
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			n, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		b.ReportMetric(float64(n), "bytes/scrape")
	})
}

// BenchmarkStart is the time New and Start take for a big fleet, with the
// live heap it holds once started (heap-MB) and per target (heap-B/target).
func BenchmarkStart(b *testing.B) {
	for _, size := range []struct{ nodes, pods int }{{10000, 0}, {2500, 3}, {10000, 3}} {
		b.Run(fmt.Sprintf("nodes=%d/pods-per-node=%d", size.nodes, size.pods), func(b *testing.B) {
			var heap uint64
			for b.Loop() {
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				f, err := fleet.New(fleet.Options{Nodes: size.nodes, PodsPerNode: size.pods, NodePort: 0, PodPort: 0})
				require.NoError(b, err)
				require.NoError(b, f.Start())
				b.StopTimer()
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				heap = after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(f)
				require.NoError(b, f.Close())
				b.StartTimer()
			}
			targets := size.nodes * (1 + size.pods)
			b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
			b.ReportMetric(float64(heap)/float64(targets), "heap-B/target")
		})
	}
}

// BenchmarkScrapeFleet scrapes every target of a 10,000-node fleet once per
// op, 64 at a time: each target answers at its own address through the two
// listeners.
func BenchmarkScrapeFleet(b *testing.B) {
	f, err := fleet.New(fleet.Options{Nodes: 10000, PodsPerNode: 0})
	require.NoError(b, err)
	require.NoError(b, f.Start())
	defer func() { require.NoError(b, f.Close()) }()
	nodes := f.Nodes()
	// No keep-alive: 10,000 idle connections would hold 20,000 descriptors
	// in this one process (client and server ends).
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	b.ReportAllocs()
	for b.Loop() {
		work := make(chan string)
		var wg sync.WaitGroup
		var failed sync.Once
		for range 64 {
			wg.Go(func() {
				for addr := range work {
					resp, err := c.Get("http://" + addr + "/metrics")
					if err != nil || resp.StatusCode != http.StatusOK {
						failed.Do(func() { b.Errorf("scrape %s: %v", addr, err) })
						if err == nil {
							resp.Body.Close()
						}
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		for _, n := range nodes {
			work <- n.Addr
		}
		close(work)
		wg.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(nodes)), "ns/target-scrape")
}
