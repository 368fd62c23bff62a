package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/fleet"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

// TestDirectVsSharded: one plain Prometheus agent and a sharded fleet (a
// coordinator, two workers) scrape the same 30 targets with the same
// scrape configs into one VictoriaMetrics, the agent under
// cluster_name="direct" (its external label), the fleet under
// cluster_name="sharded" (--cluster.name). Without the cluster label the
// two series sets are identical, label for label (DESIGN invariant 1).
func TestDirectVsSharded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real binaries")
	}
	begin := time.Now()
	vm := testenv.StartVictoriaMetrics(t)
	fl := startSimFleet(t, fleet.Options{Nodes: 10, PodsPerNode: 2, NodeSeries: 40, PodSeries: 20})
	instances := fl.instances()
	testenv.StartPrometheus(t, testenv.PrometheusOptions{
		Agent:  true,
		Config: scrapeConfig(fl.control.Addr, vm.WriteURL(), "  external_labels:\n    cluster_name: direct\n"),
	})
	c := startCluster(t, "sharded", scrapeConfig(fl.control.Addr, vm.WriteURL(), ""))
	c.startWorker(t, "scraper-0")
	c.startWorker(t, "scraper-1")
	c.waitSettled(t, len(instances), "scraper-0", "scraper-1")
	t.Logf("settled after %s", time.Since(begin))
	// Every target scraped a few times by both sides.
	since := time.Now()
	for _, cl := range []string{"direct", "sharded"} {
		waitData(t, vm, cl, instances, since.Add(2*interval))
		t.Logf("%s data after %s", cl, time.Since(begin))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sets := map[string][]string{}
	for _, cl := range []string{"direct", "sharded"} {
		series, err := vm.Export(ctx, fmt.Sprintf(`{cluster_name=%q}`, cl), time.Time{}, time.Time{})
		require.NoError(t, err)
		for _, s := range series {
			sets[cl] = append(sets[cl], labels.NewBuilder(s.Labels).Del("cluster_name").Labels().String())
		}
		slices.Sort(sets[cl])
	}
	figure(t, "direct-vs-sharded", "targets", len(instances), "direct_series", len(sets["direct"]), "sharded_series", len(sets["sharded"]))
	require.NotEmpty(t, sets["direct"])
	require.Equal(t, sets["direct"], sets["sharded"], "series without the cluster label")
}
