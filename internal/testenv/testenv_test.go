package testenv

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

func TestModuleRootAndBinDir(t *testing.T) {
	root, err := ModuleRoot()
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "go.mod"))

	t.Setenv(EnvBin, "/somewhere/bin")
	dir, err := BinDir()
	require.NoError(t, err)
	require.Equal(t, "/somewhere/bin", dir)

	t.Setenv(EnvBin, "")
	dir, err = BinDir()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "bin"), dir)
}

func TestProcUsage(t *testing.T) {
	u, err := ProcUsage(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, u.RSSBytes)
	require.GreaterOrEqual(t, u.PeakRSSBytes, u.RSSBytes)

	_, err = ProcUsage(-1)
	require.Error(t, err)
}

func TestParseExportLine(t *testing.T) {
	s, err := parseExportLine([]byte(`{"metric":{"__name__":"m","b":"2","a":"1"},"values":[1.5,null,"Infinity","-Infinity"],"timestamps":[1,2,3,4]}`))
	require.NoError(t, err)
	require.Equal(t, `{__name__="m", a="1", b="2"}`, s.Labels.String())
	require.Equal(t, []int64{1, 2, 3, 4}, s.Timestamps)
	require.Equal(t, 1.5, s.Values[0])
	require.True(t, math.IsNaN(s.Values[1]))
	require.True(t, math.IsInf(s.Values[2], 1))
	require.True(t, math.IsInf(s.Values[3], -1))

	_, err = parseExportLine([]byte(`{"metric":{},"values":[1],"timestamps":[]}`))
	require.ErrorContains(t, err, "1 values for 0 timestamps")
	_, err = parseExportLine([]byte(`{"metric":{},"values":["x"],"timestamps":[1]}`))
	require.Error(t, err)
}

func TestMergeSeries(t *testing.T) {
	a := Series{Timestamps: []int64{5, 6}, Values: []float64{5, 6}}
	b := Series{Timestamps: []int64{1, 2}, Values: []float64{1, 2}}
	a.Labels = labels.FromStrings("__name__", "a")
	b.Labels = labels.FromStrings("__name__", "a")
	c := Series{Labels: labels.FromStrings("__name__", "c"), Timestamps: []int64{1}, Values: []float64{1}}
	out := mergeSeries([]Series{a, c, b})
	require.Len(t, out, 2)
	require.Equal(t, []int64{1, 2, 5, 6}, out[0].Timestamps)
	require.Equal(t, []float64{1, 2, 5, 6}, out[0].Values)
}

func TestVictoriaMetrics(t *testing.T) {
	vm := StartVictoriaMetrics(t)
	ctx := t.Context()

	// Samples in through VictoriaMetrics' own JSON import, so this test
	// depends on nothing else of this module.
	now := time.Now().Add(-time.Minute).UnixMilli()
	lines := fmt.Sprintf(`{"metric":{"__name__":"testenv_a","k":"1"},"values":[1,2,3,4,5],"timestamps":[%d,%d,%d,%d,%d]}
{"metric":{"__name__":"testenv_a","k":"2"},"values":[1,2,3],"timestamps":[%d,%d,%d]}
`, now, now+1000, now+2000, now+3000, now+4000, now, now+1000, now+2000)
	resp, err := http.Post(vm.URL+"/api/v1/import", "application/json", strings.NewReader(lines))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	want := map[string]int{`{__name__="testenv_a", k="1"}`: 5, `{__name__="testenv_a", k="2"}`: 3}
	counts, err := vm.SampleCounts(ctx, `{__name__="testenv_a"}`)
	require.NoError(t, err)
	require.Equal(t, want, counts)

	series, err := vm.Export(ctx, `testenv_a{k="1"}`, time.UnixMilli(now+1000), time.UnixMilli(now+3000))
	require.NoError(t, err)
	require.Len(t, series, 1)
	require.Equal(t, []int64{now + 1000, now + 2000, now + 3000}, series[0].Timestamps)
	require.Equal(t, []float64{2, 3, 4}, series[0].Values)

	v, _, _, err := vm.API().Query(ctx, `count(testenv_a)`, time.UnixMilli(now+4000))
	require.NoError(t, err)
	require.Contains(t, v.String(), "=> 2 @")

	u, err := vm.Usage()
	require.NoError(t, err)
	require.Positive(t, u.RSSBytes)

	// Outage and restart on the same address and data.
	pid := vm.Pid()
	require.NoError(t, vm.Stop())
	require.False(t, vm.Running())
	_, err = vm.SampleCounts(ctx, `{__name__="testenv_a"}`)
	require.Error(t, err, "stopped VictoriaMetrics still answers")
	eu, err := vm.ExitUsage()
	require.NoError(t, err)
	require.Positive(t, eu.PeakRSSBytes)

	require.NoError(t, vm.Start())
	require.NotEqual(t, pid, vm.Pid())
	counts, err = vm.SampleCounts(ctx, `{__name__="testenv_a"}`)
	require.NoError(t, err)
	require.Equal(t, want, counts, "data lost across restart")
	require.Error(t, vm.Process.Start(), "second Start of a running process")
}

func TestPrometheusReceiverAndAgent(t *testing.T) {
	recv := StartPrometheus(t, PrometheusOptions{RemoteWriteReceiver: true, OutOfOrderTimeWindow: 10 * time.Minute})
	cfg, err := os.ReadFile(recv.ConfigFile)
	require.NoError(t, err)
	require.Contains(t, string(cfg), "out_of_order_time_window: 10m")

	// An agent scraping the receiver and remote-writing to it.
	agent := StartPrometheus(t, PrometheusOptions{Agent: true, Config: fmt.Sprintf(`
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: receiver
    static_configs:
      - targets: [%q]
remote_write:
  - url: %s
    queue_config:
      batch_send_deadline: 100ms
`, strings.TrimPrefix(recv.URL, "http://"), recv.WriteURL())})
	require.Contains(t, agent.Args(), "--agent")

	require.Eventually(t, func() bool {
		counts, err := recv.SampleCounts(context.Background(), `up{job="receiver"}`, time.Hour)
		return err == nil && len(counts) == 1 && counts[`{__name__="up", instance="`+strings.TrimPrefix(recv.URL, "http://")+`", job="receiver"}`] >= 2
	}, time.Minute, 100*time.Millisecond)

	au, err := agent.Usage()
	require.NoError(t, err)
	require.Positive(t, au.PeakRSSBytes)
	require.NoError(t, agent.Stop(), "agent exit status after SIGTERM")
}

// fakeTB records what Binary does instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (*fakeTB) Helper()                     {}
func (f *fakeTB) Skip(args ...any)          { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any)         { f.failed = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.failed = fmt.Sprintf(s, a...) }

func TestBinaryMissing(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvBin, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "present"), []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "not-executable"), nil, 0o644))

	f := &fakeTB{TB: t}
	require.Equal(t, filepath.Join(dir, "present"), Binary(f, "present"))
	require.Empty(t, f.failed+f.skipped)

	short := testing.Short()
	defer func() { require.NoError(t, flag.Set("test.short", strconv.FormatBool(short))) }()
	for _, name := range []string{"absent", "not-executable"} {
		require.NoError(t, flag.Set("test.short", "false"))
		f := &fakeTB{TB: t}
		Binary(f, name)
		require.Contains(t, f.failed, "run `make tools`", "without -short a missing binary fails the test")
		require.Empty(t, f.skipped)

		require.NoError(t, flag.Set("test.short", "true"))
		f = &fakeTB{TB: t}
		Binary(f, name)
		require.Contains(t, f.skipped, "run `make tools`", "under -short a missing binary skips the test")
		require.Empty(t, f.failed)
	}
}

func TestVMAgent(t *testing.T) {
	vm := StartVictoriaMetrics(t)
	target := strings.TrimPrefix(vm.URL, "http://")
	agent := StartVMAgent(t, VMAgentOptions{
		ScrapeConfig: fmt.Sprintf(`
scrape_configs:
  - job_name: vm
    scrape_interval: 1s
    static_configs:
      - targets: [%q]
`, target),
		RemoteWriteURLs: []string{vm.WriteURL()},
		ExtraArgs:       []string{"-remoteWrite.flushInterval=100ms"},
	})
	require.Eventually(t, func() bool {
		counts, err := vm.SampleCounts(context.Background(), `up{job="vm"}`)
		require.NoError(t, err)
		return counts[`{__name__="up", instance="`+target+`", job="vm"}`] >= 2
	}, time.Minute, 100*time.Millisecond)
	require.NoError(t, agent.Stop())
}

func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# TYPE c_total counter
c_total{k="a"} 2
c_total{k="b"} 3
# TYPE g gauge
g 1.5
# TYPE h histogram
h_bucket{le="+Inf"} 4
h_sum 10
h_count 4
`)
	}))
	defer srv.Close()
	ms, err := Metrics(t.Context(), srv.URL)
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		match map[string]string
		want  float64
		ok    bool
	}{
		{"c_total", nil, 5, true},
		{"c_total", map[string]string{"k": "b"}, 3, true},
		{"c_total", map[string]string{"k": "z"}, 0, false},
		{"g", nil, 1.5, true},
		{"h_sum", nil, 10, true},
		{"h_count", nil, 4, true},
		{"absent", nil, 0, false},
	} {
		got, ok := ms.Sum(tc.name, tc.match)
		require.Equal(t, tc.ok, ok, tc.name)
		require.Equal(t, tc.want, got, tc.name)
	}
	_, err = Metrics(t.Context(), srv.URL+"/nope\x00")
	require.Error(t, err)
}
