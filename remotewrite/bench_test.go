package remotewrite

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// BenchmarkDelivery measures how fast the agent WAL → storage/remote
// pipeline delivers a burst of samples with the preset's queue settings and
// with Prometheus's defaults: one op is one burst (every series gets
// nSamples samples), timed from the first append until the queue reports
// every sample sent. Receivers: a real VictoriaMetrics on this machine, and
// a sink that answers after 50 ms, as a receiver across a network does (it
// reads the body and writes nothing). Resharding acts every 10 s, so a
// short burst runs at min_shards: what a worker gets on start-up. The
// machine is shared: compare figures of one run only.
func BenchmarkDelivery(b *testing.B) {
	const nSeries, nSamples = 10_000, 10
	receivers := []struct {
		name string
		url  func(b *testing.B) string
	}{
		{"victoriametrics", func(b *testing.B) string { return testenv.StartVictoriaMetrics(b).URL }},
		{"sink-50ms", func(b *testing.B) string {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				time.Sleep(50 * time.Millisecond)
				w.WriteHeader(http.StatusNoContent)
			}))
			b.Cleanup(srv.Close)
			return srv.URL
		}},
	}
	queues := []struct {
		name  string
		queue config.QueueConfig
	}{
		{"preset", DefaultQueueConfig()},
		{"prometheus-defaults", config.DefaultQueueConfig},
	}
	for _, r := range receivers {
		for _, q := range queues {
			b.Run(r.name+"/"+q.name, func(b *testing.B) {
				rw, err := Endpoint{URL: r.url(b), Name: "q"}.RemoteWriteConfig()
				require.NoError(b, err)
				rw.QueueConfig = q.queue
				p := startPipelineAsIs(b, rw)
				sent := func() float64 {
					return metricValue(b, p.reg, "prometheus_remote_storage_samples_total", map[string]string{"remote_name": "q"})
				}
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					w := newWorkload(fmt.Sprintf("rw_bench_%d", n), nSeries, nSamples)
					n++
					target := sent() + float64(nSeries*nSamples)
					p.write(b, w)
					for sent() < target {
						p.notify()
						time.Sleep(time.Millisecond)
					}
				}
				b.ReportMetric(float64(n*nSeries*nSamples)/b.Elapsed().Seconds(), "samples/s")
				b.ReportMetric(metricValue(b, p.reg, "prometheus_remote_storage_shards", map[string]string{"remote_name": "q"}), "shards")
				require.Zero(b, failedSamples(b, p.reg, "q"))
			})
		}
	}
}
