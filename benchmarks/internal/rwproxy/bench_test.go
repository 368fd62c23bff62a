package rwproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkCount is the proxy's own cost per write request of 5000
// samples (the shardscrape scraper's max_samples_per_send): decode and
// tally, no forwarding. It bounds how many samples per second the bench
// process can count beside the peer it measures.
func BenchmarkCount(b *testing.B) {
	now := time.Now()
	ts := make([]prompb.TimeSeries, 5000)
	for i := range ts {
		ts[i] = prompb.TimeSeries{
			Labels: []prompb.Label{
				{Name: "__name__", Value: "node_cpu_seconds_total"}, {Name: "bench_peer", Value: "shardscrape"},
				{Name: "cpu", Value: strconv.Itoa(i % 64)}, {Name: "instance", Value: fmt.Sprintf("127.1.%d.%d:9100", i/250, i%250)},
				{Name: "job", Value: "node"}, {Name: "mode", Value: "idle"},
			},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: now.UnixMilli()}},
		}
	}
	body := v1Body(b, ts)
	p, err := New(Options{Target: "http://127.0.0.1:1"})
	if err != nil {
		b.Fatal(err)
	}
	p.SetWindow(Window{From: now.Add(-time.Minute), To: now.Add(time.Minute)})
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", nil)
	req.Header.Set("Content-Type", "application/x-protobuf")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		p.add(p.decode(req, body), true, now)
	}
	b.ReportMetric(float64(b.N)*5000/b.Elapsed().Seconds(), "samples/s")
}
