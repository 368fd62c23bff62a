package remotewrite

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/agent"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// The tests below send real samples through the path the worker uses,
// Prometheus agent mode's: tsdb/agent WAL → storage/remote queue → receiver.

// noScrapeManager stands in for the scrape manager storage/remote reads
// metadata from; the tests have no scrapes, hence no metadata.
type noScrapeManager struct{}

func (noScrapeManager) Get() (*scrape.Manager, error) { return nil, errors.New("no scrape manager") }

// pipeline is an agent WAL whose writes a remote storage ships to rws.
type pipeline struct {
	db  *agent.DB
	rs  *remote.Storage
	reg *prometheus.Registry
}

// startPipeline ships to rws, and returns once every queue's WAL watcher
// is reading: a watcher ships only samples newer than its start. To keep the
// tests fast it lowers each queue's batch_send_deadline (the preset's 5 s
// bounds the latency of quiet shards only; nothing on the wire depends on it).
func startPipeline(t testing.TB, rws ...*config.RemoteWriteConfig) *pipeline {
	t.Helper()
	for _, rw := range rws {
		rw.QueueConfig.BatchSendDeadline = model.Duration(200 * time.Millisecond)
	}
	return startPipelineAsIs(t, rws...)
}

// startPipelineAsIs is startPipeline with the queue settings left as given.
func startPipelineAsIs(t testing.TB, rws ...*config.RemoteWriteConfig) *pipeline {
	t.Helper()
	for i, rw := range rws {
		if rw.Name == "" {
			rw.Name = fmt.Sprintf("queue-%d", i) // to find its metrics
		}
	}
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	rs := remote.NewStorage(logger, reg, nil, dir, 10*time.Second, noScrapeManager{}, false)
	db, err := agent.Open(logger, reg, rs, dir, agent.DefaultOptions())
	require.NoError(t, err)
	db.SetWriteNotified(rs)
	cfg := &config.Config{GlobalConfig: config.DefaultGlobalConfig, RemoteWriteConfigs: rws}
	require.NoError(t, rs.ApplyConfig(cfg))
	t.Cleanup(func() {
		// The WAL stops taking writes before the queues flush and close.
		require.NoError(t, db.Close())
		require.NoError(t, rs.Close())
	})
	p := &pipeline{db: db, rs: rs, reg: reg}

	// A watcher takes its start time before it reads its first record, so
	// once every queue has read a samples record, samples stamped from now
	// on are shipped. The canary samples themselves may or may not be.
	canary := labels.FromStrings("__name__", canaryName)
	require.Eventually(t, func() bool {
		app := db.Appender(t.Context())
		_, err := app.Append(0, canary, time.Now().UnixMilli(), 1)
		require.NoError(t, err)
		require.NoError(t, app.Commit())
		for _, rw := range rws {
			if metricValue(t, reg, "prometheus_wal_watcher_records_read_total", map[string]string{"consumer": rw.Name, "type": "samples"}) == 0 {
				return false
			}
		}
		return true
	}, time.Minute, 10*time.Millisecond, "remote-write WAL watchers did not start")
	return p
}

// canaryName is the series startPipeline writes until the watchers run.
const canaryName = "remotewrite_test_canary"

// workload is nSeries series of nSamples samples each, 10 ms apart.
type workload struct {
	name     string
	nSeries  int
	nSamples int
	start    time.Time
}

// newWorkload starts its samples just after now, so after the watchers of a
// started pipeline.
func newWorkload(name string, nSeries, nSamples int) workload {
	return workload{name: name, nSeries: nSeries, nSamples: nSamples, start: time.Now().Add(10 * time.Millisecond).Truncate(time.Millisecond)}
}

func (w workload) series(i int) labels.Labels {
	return labels.FromStrings("__name__", w.name, "series", strconv.Itoa(i), "job", "remotewrite_test")
}

func (w workload) value(i, j int) float64 { return float64(i*1000 + j) }

func (w workload) ts(j int) int64 {
	return w.start.Add(time.Duration(j) * 10 * time.Millisecond).UnixMilli()
}

// end is the timestamp just after the last sample.
func (w workload) end() time.Time { return time.UnixMilli(w.ts(w.nSamples-1) + 1) }

// want is the sample count per series, keyed by labels.String().
func (w workload) want() map[string]int {
	m := make(map[string]int, w.nSeries)
	for i := range w.nSeries {
		m[w.series(i).String()] = w.nSamples
	}
	return m
}

// notify wakes the queues' WAL watchers. A commit does so too, but a
// watcher still starting up misses it and reads only on its 15 s timer; a
// scraping worker commits every interval, a test once.
func (p *pipeline) notify() { p.rs.Notify() }

// write appends the workload in one commit per sample round, as scrapes do.
func (p *pipeline) write(t testing.TB, w workload) {
	t.Helper()
	for j := range w.nSamples {
		app := p.db.Appender(t.Context())
		for i := range w.nSeries {
			_, err := app.Append(0, w.series(i), w.ts(j), w.value(i, j))
			require.NoError(t, err)
		}
		require.NoError(t, app.Commit())
	}
}

func TestVictoriaMetricsPreset(t *testing.T) {
	vm := testenv.StartVictoriaMetrics(t)
	rw, err := Endpoint{URL: vm.URL, Receiver: VictoriaMetrics, Name: "vm"}.RemoteWriteConfig()
	require.NoError(t, err)
	p := startPipeline(t, rw)

	w := newWorkload("rw_vm_test", 20, 30)
	p.write(t, w)

	var got map[string]int
	require.Eventually(t, func() bool {
		p.notify()
		got, err = vm.SampleCounts(t.Context(), `{__name__="rw_vm_test"}`)
		require.NoError(t, err)
		return len(got) == w.nSeries && sum(got) >= w.nSeries*w.nSamples
	}, time.Minute, 200*time.Millisecond, "samples did not arrive: %v", got)
	require.Equal(t, w.want(), got, "exactly the samples written, per series")

	// Values and timestamps, not just counts.
	series, err := vm.Export(t.Context(), `rw_vm_test{series="7"}`, time.Time{}, time.Time{})
	require.NoError(t, err)
	require.Len(t, series, 1)
	for j := range w.nSamples {
		require.Equal(t, w.ts(j), series[0].Timestamps[j])
		require.Equal(t, w.value(7, j), series[0].Values[j])
	}
	require.Zero(t, failedSamples(t, p.reg, "vm"))
}

func TestPrometheusPreset(t *testing.T) {
	// The receiver accepts remote-write 2.0 only: a 1.0 request is
	// rejected, so samples arriving prove the preset sends 2.0.
	prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{
		RemoteWriteReceiver:      true,
		AcceptedProtobufMessages: []string{string(remoteapi.WriteV2MessageType)},
		OutOfOrderTimeWindow:     10 * time.Minute,
	})
	rw, err := Endpoint{URL: prom.URL, Receiver: Prometheus, Name: "prom"}.RemoteWriteConfig()
	require.NoError(t, err)
	// Control: the same receiver through a 1.0 (VictoriaMetrics) preset.
	rw1, err := Endpoint{URL: prom.URL, Receiver: VictoriaMetrics, Name: "v1-control"}.RemoteWriteConfig()
	require.NoError(t, err)
	p := startPipeline(t, rw, rw1)

	w := newWorkload("rw_prom_test", 10, 5)
	p.write(t, w)

	var got map[string]int
	require.Eventually(t, func() bool {
		p.notify()
		if time.Now().Before(w.end()) {
			return false // the query's window ends now
		}
		got, err = prom.SampleCounts(t.Context(), `{__name__="rw_prom_test"}`, time.Hour)
		require.NoError(t, err)
		return len(got) == w.nSeries && sum(got) >= w.nSeries*w.nSamples
	}, time.Minute, 200*time.Millisecond, "samples did not arrive: %v", got)
	require.Equal(t, w.want(), got, "exactly the samples written, per series (and nothing twice from the 1.0 control)")
	require.Eventually(t, func() bool {
		return failedSamples(t, p.reg, "v1-control") >= float64(w.nSeries*w.nSamples)
	}, time.Minute, 200*time.Millisecond, "the 2.0-only receiver accepted 1.0: the test cannot tell 1.0 from 2.0")
	require.Zero(t, failedSamples(t, p.reg, "prom"))
}

// failedSamples reads storage/remote's failed-samples counter of one queue.
func failedSamples(t testing.TB, reg *prometheus.Registry, queue string) float64 {
	return metricValue(t, reg, "prometheus_remote_storage_samples_failed_total", map[string]string{"remote_name": queue})
}

// metricValue is the value of the counter or gauge name whose labels include
// match; 0 when there is none.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, match map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if have[k] != v {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// recorder is a remote-write receiver on 127.0.0.1 that keeps every
// request's method, path and headers and decodes its body.
type recorder struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []recorded
	counts   map[string]int // samples per series
	errs     []error
}

type recorded struct {
	method, path string
	header       http.Header
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{counts: map[string]int{}}
	rec.srv = httptest.NewServer(http.HandlerFunc(rec.serveHTTP)) // binds 127.0.0.1
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.requests = append(rec.requests, recorded{method: r.Method, path: r.URL.Path, header: r.Header.Clone()})
	var b labels.ScratchBuilder
	samples := 0
	switch ct := r.Header.Get("Content-Type"); ct {
	case "application/x-protobuf", "application/x-protobuf;proto=prometheus.WriteRequest":
		req, err := remote.DecodeWriteRequest(r.Body)
		if err != nil {
			rec.errs = append(rec.errs, fmt.Errorf("decode 1.0 request: %w", err))
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, ts := range req.Timeseries {
			rec.count(ts.ToLabels(&b, nil), len(ts.Samples))
			samples += len(ts.Samples)
		}
	case "application/x-protobuf;proto=io.prometheus.write.v2.Request":
		req, err := remote.DecodeWriteV2Request(r.Body)
		if err != nil {
			rec.errs = append(rec.errs, fmt.Errorf("decode 2.0 request: %w", err))
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, ts := range req.Timeseries {
			ls, err := ts.ToLabels(&b, req.Symbols)
			if err != nil {
				rec.errs = append(rec.errs, fmt.Errorf("2.0 labels: %w", err))
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			rec.count(ls, len(ts.Samples))
			samples += len(ts.Samples)
		}
		// A 2.0 receiver confirms what it wrote.
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(samples))
		w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", "0")
		w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", "0")
	default:
		rec.errs = append(rec.errs, fmt.Errorf("unexpected Content-Type %q", ct))
		http.Error(w, "unsupported content type", http.StatusUnsupportedMediaType)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// count adds n samples of the series, leaving out startPipeline's canary.
func (rec *recorder) count(ls labels.Labels, n int) {
	if ls.Get("__name__") != canaryName {
		rec.counts[ls.String()] += n
	}
}

func (rec *recorder) snapshot() ([]recorded, map[string]int, []error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	counts := make(map[string]int, len(rec.counts))
	for k, v := range rec.counts {
		counts[k] = v
	}
	return append([]recorded(nil), rec.requests...), counts, append([]error(nil), rec.errs...)
}

// TestPresetRequests checks, request by request, what each preset puts on
// the wire: path, protobuf message (Content-Type and version header),
// compression, tenant header; and that every sample arrives exactly once.
func TestPresetRequests(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ep          Endpoint
		wantPath    string
		wantType    string
		wantVersion string
		wantTenant  [2]string // header, value
	}{
		{
			name:        "victoriametrics never gets 2.0",
			ep:          Endpoint{Receiver: VictoriaMetrics},
			wantPath:    "/api/v1/write",
			wantType:    "application/x-protobuf",
			wantVersion: "0.1.0",
		},
		{
			name:        "thanos-receive default tenant header",
			ep:          Endpoint{Receiver: ThanosReceive, Tenant: "team-a"},
			wantPath:    "/api/v1/receive",
			wantType:    "application/x-protobuf",
			wantVersion: "0.1.0",
			wantTenant:  [2]string{"THANOS-TENANT", "team-a"},
		},
		{
			name:        "thanos-receive custom tenant header",
			ep:          Endpoint{Receiver: ThanosReceive, Tenant: "team-b", TenantHeader: "X-Tenant-Id"},
			wantPath:    "/api/v1/receive",
			wantType:    "application/x-protobuf",
			wantVersion: "0.1.0",
			wantTenant:  [2]string{"X-Tenant-Id", "team-b"},
		},
		{
			name:        "prometheus gets 2.0",
			ep:          Endpoint{Receiver: Prometheus},
			wantPath:    "/api/v1/write",
			wantType:    "application/x-protobuf;proto=io.prometheus.write.v2.Request",
			wantVersion: "2.0.0",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(t)
			tc.ep.URL = rec.srv.URL
			rw, err := tc.ep.RemoteWriteConfig()
			require.NoError(t, err)
			p := startPipeline(t, rw)
			w := newWorkload("rw_recorded_"+strings.ReplaceAll(string(tc.ep.Receiver), "-", "_"), 5, 4)
			p.write(t, w)

			require.Eventually(t, func() bool {
				p.notify()
				_, counts, errs := rec.snapshot()
				return len(errs) > 0 || sum(counts) >= w.nSeries*w.nSamples
			}, time.Minute, 100*time.Millisecond)
			reqs, counts, errs := rec.snapshot()
			require.Empty(t, errs)
			require.Equal(t, w.want(), counts)
			require.NotEmpty(t, reqs)
			for _, r := range reqs {
				require.Equal(t, http.MethodPost, r.method)
				require.Equal(t, tc.wantPath, r.path)
				require.Equal(t, tc.wantType, r.header.Get("Content-Type"))
				require.Equal(t, "snappy", r.header.Get("Content-Encoding"))
				require.Equal(t, tc.wantVersion, r.header.Get("X-Prometheus-Remote-Write-Version"))
				require.True(t, strings.HasPrefix(r.header.Get("User-Agent"), "Prometheus/"), r.header.Get("User-Agent"))
				if tc.wantTenant[0] != "" {
					require.Equal(t, []string{tc.wantTenant[1]}, r.header.Values(tc.wantTenant[0]))
				}
				if tc.ep.Tenant == "" {
					require.Empty(t, r.header.Values(DefaultTenantHeader), "tenant header sent without a tenant")
				}
			}
		})
	}
}

// TestVictoriaMetricsOutage stops VictoriaMetrics while samples are written
// and starts it again on the same address and data: the queue retries with
// the preset's backoff and every sample arrives exactly once, none dropped.
func TestVictoriaMetricsOutage(t *testing.T) {
	vm := testenv.StartVictoriaMetrics(t)
	rw, err := Endpoint{URL: vm.URL, Name: "vm"}.RemoteWriteConfig()
	require.NoError(t, err)
	p := startPipeline(t, rw)

	before := newWorkload("rw_outage_before", 5, 10)
	p.write(t, before)
	require.Eventually(t, func() bool {
		p.notify()
		got, err := vm.SampleCounts(t.Context(), `{__name__="rw_outage_before"}`)
		require.NoError(t, err)
		return sum(got) == before.nSeries*before.nSamples
	}, time.Minute, 100*time.Millisecond)

	require.NoError(t, vm.Stop())
	during := newWorkload("rw_outage_during", 5, 10)
	p.write(t, during)
	require.Eventually(t, func() bool {
		p.notify()
		return metricValue(t, p.reg, "prometheus_remote_storage_samples_retried_total", map[string]string{"remote_name": "vm"}) > 0
	}, time.Minute, 100*time.Millisecond, "the queue never met the outage")
	require.NoError(t, vm.Start())

	var got map[string]int
	require.Eventually(t, func() bool {
		p.notify()
		got, err = vm.SampleCounts(t.Context(), `{__name__=~"rw_outage_.*"}`)
		require.NoError(t, err)
		return sum(got) >= (before.nSeries*before.nSamples + during.nSeries*during.nSamples)
	}, time.Minute, 100*time.Millisecond, "samples written during the outage did not arrive: %v", got)
	want := before.want()
	for k, v := range during.want() {
		want[k] = v
	}
	require.Equal(t, want, got)
	require.Zero(t, failedSamples(t, p.reg, "vm"))
}

// TestOutOfOrderAcrossWorkers is the handoff case: two workers briefly
// scrape one target at different offsets, so one series arrives with
// interleaved timestamps from two writers. VictoriaMetrics takes them as
// they come; Prometheus (and Thanos Receive, the same TSDB) rejects the
// older ones unless an out-of-order window is configured (README).
func TestOutOfOrderAcrossWorkers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		start      func(t *testing.T) (url string, r Receiver, count func(name string) int)
		wantReject bool
	}{
		{
			name: "victoriametrics",
			start: func(t *testing.T) (string, Receiver, func(string) int) {
				vm := testenv.StartVictoriaMetrics(t)
				return vm.URL, VictoriaMetrics, func(name string) int {
					got, err := vm.SampleCounts(t.Context(), fmt.Sprintf("{__name__=%q}", name))
					require.NoError(t, err)
					return sum(got)
				}
			},
		},
		{
			name:       "prometheus without out-of-order window",
			start:      startPrometheusReceiver(0),
			wantReject: true,
		},
		{
			name:  "prometheus with out-of-order window",
			start: startPrometheusReceiver(10 * time.Minute),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, r, count := tc.start(t)
			rwA, err := Endpoint{URL: url, Receiver: r, Name: "worker-a"}.RemoteWriteConfig()
			require.NoError(t, err)
			rwB, err := Endpoint{URL: url, Receiver: r, Name: "worker-b"}.RemoteWriteConfig()
			require.NoError(t, err)
			a, b := startPipeline(t, rwA), startPipeline(t, rwB)

			// Worker A (the old owner) has delivered samples at 0, 20, …;
			// worker B (the new owner) then delivers 10, 30, … of the same
			// series, offset by half an interval: older than A's latest.
			w := newWorkload("rw_ooo_test", 1, 10)
			series := w.series(0)
			ts := func(j int) int64 { return w.start.UnixMilli() + int64(j)*10 }
			appendAll := func(p *pipeline, odd bool) {
				app := p.db.Appender(t.Context())
				for j := range 2 * w.nSamples {
					if (j%2 == 1) == odd {
						_, err := app.Append(0, series, ts(j), float64(j))
						require.NoError(t, err)
					}
				}
				require.NoError(t, app.Commit())
			}
			appendAll(a, false)
			require.Eventually(t, func() bool {
				a.notify()
				return time.Now().UnixMilli() > ts(2*w.nSamples) && count(w.name) == w.nSamples
			}, time.Minute, 100*time.Millisecond, "worker A's samples did not arrive")

			appendAll(b, true)
			if tc.wantReject {
				require.Eventually(t, func() bool {
					b.notify()
					return failedSamples(t, b.reg, "worker-b") > 0
				}, time.Minute, 100*time.Millisecond, "out-of-order samples were accepted without a window")
				// Only B's last sample is newer than A's latest.
				require.Equal(t, w.nSamples+1, count(w.name))
				return
			}
			require.Eventually(t, func() bool {
				b.notify()
				return count(w.name) == 2*w.nSamples
			}, time.Minute, 100*time.Millisecond)
			require.Zero(t, failedSamples(t, b.reg, "worker-b"))
		})
	}
}

func startPrometheusReceiver(oooWindow time.Duration) func(t *testing.T) (string, Receiver, func(string) int) {
	return func(t *testing.T) (string, Receiver, func(string) int) {
		prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{RemoteWriteReceiver: true, OutOfOrderTimeWindow: oooWindow})
		return prom.URL, Prometheus, func(name string) int {
			got, err := prom.SampleCounts(t.Context(), fmt.Sprintf("{__name__=%q}", name), time.Hour)
			require.NoError(t, err)
			return sum(got)
		}
	}
}

// TestVictoriaMetricsTakesMetadata: with remote-write 1.0 Prometheus sends
// metric metadata (metadata_config.send, on by default) in requests of its
// own, every minute; VictoriaMetrics must accept them, or every worker would
// log and count a failure per minute.
func TestVictoriaMetricsTakesMetadata(t *testing.T) {
	vm := testenv.StartVictoriaMetrics(t)
	rw, err := Endpoint{URL: vm.URL}.RemoteWriteConfig()
	require.NoError(t, err)
	require.True(t, rw.MetadataConfig.Send)
	c, err := remote.NewWriteClient("vm", &remote.ClientConfig{
		URL:              rw.URL,
		WriteProtoMsg:    rw.ProtobufMessage,
		Timeout:          rw.RemoteTimeout,
		HTTPClientConfig: rw.HTTPClientConfig,
		Headers:          rw.Headers,
	})
	require.NoError(t, err)
	req := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{MetricFamilyName: "rw_meta_test", Type: prompb.MetricMetadata_COUNTER, Help: "help text", Unit: ""},
	}}
	raw, err := req.Marshal()
	require.NoError(t, err)
	_, err = c.Store(t.Context(), snappy.Encode(nil, raw), 0)
	require.NoError(t, err)
}
