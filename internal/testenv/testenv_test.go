package testenv

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
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
