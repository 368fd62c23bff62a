package scraper

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// metricSum sums every sample of the metric family name in reg.
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func standaloneOpts(dir, config string) Options {
	o := workerOpts(dir, nil)
	o.ConfigFile = config
	return o
}

// gzipBomb is 16 MiB of comment lines, gzip-compressed to tens of KiB.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	require.NoError(t, err)
	line := []byte("# " + strings.Repeat("x", 1021) + "\n")
	for range 16 << 10 {
		_, err := zw.Write(line)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestBadExposition scrapes malformed and oversized targets next to a good
// one, in standalone mode: each bad scrape fails with up=0 and its
// Prometheus counter moves; the good target and the worker are unaffected.
func TestBadExposition(t *testing.T) {
	good := target(t, nil)
	big := target(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "big_metric{l=%q} 1\n", strings.Repeat("v", 4096))
	})
	many := target(t, func(w http.ResponseWriter, _ *http.Request) {
		for i := range 50 {
			fmt.Fprintf(w, "many_metric{i=\"%d\"} 1\n", i)
		}
	})
	utf8 := target(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("bad_utf8{l=\"\xff\xfe\"} 1\n"))
	})
	bomb := gzipBomb(t)
	gz := target(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(bomb)
	})
	drip := target(t, func(w http.ResponseWriter, r *http.Request) {
		fl := w.(http.Flusher)
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "drip_%d 1\n", i); err != nil {
				return
			}
			fl.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	wide := target(t, func(w http.ResponseWriter, _ *http.Request) {
		var b strings.Builder
		b.WriteString("wide{")
		for i := range 10000 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "l%d=\"v\"", i)
		}
		b.WriteString("} 1\n")
		_, _ = w.Write([]byte(b.String()))
	})

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `
global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
- job_name: good
  static_configs: [{targets: [%q]}]
- job_name: body
  body_size_limit: 1KB
  static_configs: [{targets: [%q]}]
- job_name: samples
  sample_limit: 10
  static_configs: [{targets: [%q]}]
- job_name: utf8
  static_configs: [{targets: [%q]}]
- job_name: gzip
  body_size_limit: 1MB
  static_configs: [{targets: [%q]}]
- job_name: drip
  static_configs: [{targets: [%q]}]
- job_name: wide
  label_limit: 100
  static_configs: [{targets: [%q]}]
`, good, big, many, utf8, gz, drip, wide), 0o644))

	r := start(t, standaloneOpts(filepath.Join(dir, "data"), cfg))
	require.Eventually(t, scrapedOK(r, "good", good), 20*time.Second, 20*time.Millisecond)
	require.True(t, r.w.Ready())

	for job, addr := range map[string]string{"body": big, "samples": many, "utf8": utf8, "gzip": gz, "drip": drip, "wide": wide} {
		require.Eventually(t, func() bool {
			v, ok := r.rec.up(job, addr)
			return ok && v == 0
		}, 20*time.Second, 20*time.Millisecond, "job %s: up=0", job)
	}
	for name, min := range map[string]float64{
		"prometheus_target_scrapes_exceeded_body_size_limit_total":  2, // body and gzip
		"prometheus_target_scrapes_exceeded_sample_limit_total":     1,
		"prometheus_target_scrape_pool_exceeded_label_limits_total": 1,
	} {
		require.Eventually(t, func() bool { return metricSum(t, r.reg, name) >= min }, 20*time.Second, 20*time.Millisecond, name)
	}
	// The drip target fails on the timeout; the invalid UTF-8 one on parsing.
	errs := map[string]string{}
	for job, ts := range r.w.ScrapeManager().TargetsActive() {
		for _, tg := range ts {
			if err := tg.LastError(); err != nil {
				errs[job] = err.Error()
			}
		}
	}
	require.Contains(t, errs["drip"], "deadline")
	require.NotEmpty(t, errs["utf8"])

	// The good target kept being scraped all along.
	n := r.rec.sampleCount(good)
	require.Eventually(t, func() bool { return r.rec.sampleCount(good) > n+4 }, 10*time.Second, 20*time.Millisecond)
	v, _ := r.rec.up("good", good)
	require.Equal(t, 1.0, v)
	r.stop(t)
}

func TestStandaloneReload(t *testing.T) {
	a, b := target(t, nil), target(t, nil)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	write := func(targets ...string) {
		require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `
global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
- job_name: j
  static_configs: [{targets: ['%s']}]
`, strings.Join(targets, "','")), 0o644))
	}
	write(a)
	r := start(t, standaloneOpts(filepath.Join(dir, "data"), cfg))
	require.Eventually(t, scrapedOK(r, "j", a), 20*time.Second, 20*time.Millisecond)
	srv := httptest.NewServer(r.w.Handler())
	defer srv.Close()

	write(a, b)
	resp, err := http.Post(srv.URL+"/-/reload", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, scrapedOK(r, "j", b), 20*time.Second, 20*time.Millisecond)

	// A broken file is refused; the last good config stays in force.
	require.NoError(t, os.WriteFile(cfg, []byte("scrape_configs: [{job_name: j, bogus: 1}]\n"), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.ErrorContains(t, r.w.Reload(ctx), "bogus")
	require.Equal(t, 0.0, metricSum(t, r.reg, "shardscrape_scraper_config_last_reload_successful"))
	n := r.rec.sampleCount(b)
	require.Eventually(t, func() bool { return r.rec.sampleCount(b) > n+4 }, 10*time.Second, 20*time.Millisecond)
	r.stop(t)
}

// TestStandaloneTargetsAPI: /api/v1/targets lists the active targets and,
// as Prometheus does, those the job's relabel_configs dropped.
func TestStandaloneTargetsAPI(t *testing.T) {
	a := target(t, nil)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `
global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
- job_name: j
  static_configs: [{targets: ['%s', '10.0.0.9:9100']}]
  relabel_configs:
  - source_labels: [__address__]
    regex: 10\..*
    action: drop
`, a), 0o644))
	r := start(t, standaloneOpts(filepath.Join(dir, "data"), cfg))
	require.Eventually(t, scrapedOK(r, "j", a), 20*time.Second, 20*time.Millisecond)
	srv := httptest.NewServer(r.w.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/v1/targets")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body TargetsResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Len(t, body.Data.ActiveTargets, 1)
	require.Equal(t, a, body.Data.ActiveTargets[0].Labels["instance"])
	require.Len(t, body.Data.DroppedTargets, 1)
	dropped := body.Data.DroppedTargets[0]
	require.Equal(t, "j", dropped.ScrapePool)
	require.Equal(t, "10.0.0.9:9100", dropped.DiscoveredLabels["__address__"])
	require.Equal(t, "j", dropped.DiscoveredLabels["job"])
	r.stop(t)
}
