package coordinator

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

// benchClient is a worker that only follows generations and counts targets.
type benchClient struct {
	gen     atomic.Uint64
	targets atomic.Int64
}

// benchTargets returns n targets of job; round changes every id and key.
func benchTargets(job string, n, round int) []relabel.Target {
	ts := make([]relabel.Target, n)
	for i := range ts {
		addr := fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 9100+round)
		ts[i] = relabel.Target{
			ID:      xxhash.Sum64String(job + "/" + addr),
			Job:     job,
			Address: addr,
			Key:     xxhash.Sum64String(addr),
			Labels:  labels.FromStrings("__address__", addr, "__meta_consul_service", "node"),
		}
	}
	return ts
}

// BenchmarkCoordinator measures the time from a full target-set change
// (every target replaced by a new one) to every worker's stream having
// received its update, over real gRPC streams (bufconn), and the process's
// peak RSS (coordinator and the in-process clients together).
func BenchmarkCoordinator(b *testing.B) {
	for _, size := range []struct{ workers, targets int }{{10, 10_000}, {200, 1_000_000}} {
		b.Run(fmt.Sprintf("workers=%d/targets=%d", size.workers, size.targets), func(b *testing.B) {
			if size.targets > 100_000 && testing.Short() {
				b.Skip("large size skipped under -short")
			}
			benchCoordinator(b, size.workers, size.targets)
		})
	}
}

func benchCoordinator(b *testing.B, nWorkers, nTargets int) {
	e := newEnv(b, nil, nil, Options{})
	clients := make([]*benchClient, nWorkers)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	for i := range clients {
		id := fmt.Sprintf("scraper-%d", i)
		resp, err := e.wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: id})
		require.NoError(b, err)
		stream, err := e.wc.WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{WorkerId: id, LeaseEpoch: resp.GetLeaseEpoch()})
		require.NoError(b, err)
		cl := &benchClient{}
		clients[i] = cl
		wg.Go(func() {
			var n int64
			mid := false // within a split update
			for {
				m, err := stream.Recv()
				if err != nil {
					return
				}
				if m.GetSnapshot() && !mid {
					n = 0
				}
				mid = m.GetPartial()
				n += int64(len(m.GetUpserts())) - int64(len(m.GetRemovedTargetIds()))
				if !m.GetPartial() {
					cl.targets.Store(n)
					cl.gen.Store(m.GetGeneration())
				}
			}
		})
	}
	waitAll := func(gen uint64) {
		for _, cl := range clients {
			for cl.gen.Load() < gen {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	round := 0
	update := func() uint64 {
		ts := benchTargets("bench", nTargets, round)
		old := fmt.Sprint(round - 1)
		round++
		e.c.UpdateTargets(map[string][]relabel.Target{"bench": ts, old: nil})
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		return e.c.gen
	}
	waitAll(update())

	b.ReportAllocs()
	b.ResetTimer()
	var total, inCall time.Duration
	for b.Loop() {
		b.StopTimer()
		ts := benchTargets("bench", nTargets, round)
		round++
		runtime.GC()
		b.StartTimer()
		start := time.Now()
		e.c.UpdateTargets(map[string][]relabel.Target{"bench": ts})
		e.c.mu.Lock()
		gen := e.c.gen
		e.c.mu.Unlock()
		inCall += time.Since(start)
		waitAll(gen)
		total += time.Since(start)
	}
	b.StopTimer()
	var sum int64
	for _, cl := range clients {
		sum += cl.targets.Load()
	}
	require.Equal(b, int64(nTargets), sum, "every target owned once")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/update")
	b.ReportMetric(inCall.Seconds()/float64(b.N), "s/UpdateTargets-call")
	b.ReportMetric(float64(vmHWM())/(1<<20), "MiB-peak-rss")
}

// vmHWM returns the process's peak resident set size in bytes (0 if unknown).
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
