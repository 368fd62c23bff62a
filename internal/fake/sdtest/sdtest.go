// Package sdtest runs one of Prometheus's service discoverers (the real
// Discoverer of a *_sd_configs entry) inside a test and keeps the latest
// target group per source, for tests against the fakes of internal/fake.
package sdtest

import (
	"context"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"
)

// Groups is the latest target group per source of a running discoverer.
type Groups struct {
	mu sync.Mutex
	m  map[string]*targetgroup.Group
}

// Get returns the latest group of source, or nil if none came yet.
func (g *Groups) Get(source string) *targetgroup.Group {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[source]
}

// Run starts conf's discoverer, with its metrics on a fresh registry, until
// the test ends.
func Run(t testing.TB, conf discovery.Config) *Groups {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics := conf.NewDiscovererMetrics(reg, discovery.NewRefreshMetrics(reg))
	require.NoError(t, metrics.Register())
	d, err := conf.NewDiscoverer(discovery.DiscovererOptions{Metrics: metrics})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []*targetgroup.Group)
	g := &Groups{m: map[string]*targetgroup.Group{}}
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx, ch) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case tgs := <-ch:
				g.mu.Lock()
				for _, tg := range tgs {
					g.m[tg.Source] = tg
				}
				g.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		metrics.Unregister()
	})
	return g
}
