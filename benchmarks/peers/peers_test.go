package main

import (
	"bytes"
	"flag"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/benchmarks/internal/report"
	"github.com/shardscrape/shardscrape/benchmarks/internal/rwproxy"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

func steadyMeasurement() measurement {
	from := time.Unix(1_700_000_000, 0)
	return measurement{
		Peer: peerShardscrape, Run: "steady", Targets: 200, Series: 800, Interval: 5 * time.Second,
		From: from, To: from.Add(time.Minute),
		CPUWindow:     6 * time.Second,
		PeakRSS:       160_000_000,
		ScrapesServed: 2400, // 200 targets × 12 intervals
		Delivered:     1_900_800,
		BodyBytes:     4_000_000,
		WireSamples:   2_000_000,
		DelayP99:      3 * time.Second,
	}
}

func TestFigures(t *testing.T) {
	m := steadyMeasurement()
	require.Equal(t, 160_000.0, m.ActiveSeries())
	require.Equal(t, 1_920_000.0, m.Served())
	require.Equal(t, 2400.0, m.NominalScrapes())
	require.Equal(t, 19_200.0, m.Lost())
	require.InDelta(t, 0.01, m.LostFraction(), 1e-12)
	require.InDelta(t, 316_800, m.SamplesPerCPUSecond(), 1e-6)
	require.InDelta(t, 6/1.9008, m.CPUPerMillion(), 1e-9)
	require.Equal(t, 1000.0, m.RSSPerSeries())
	require.Equal(t, 2.0, m.BytesPerSample())

	var zero measurement
	require.Zero(t, zero.LostFraction())
	require.True(t, math.IsNaN(zero.SamplesPerCPUSecond()))
	require.True(t, math.IsNaN(zero.BytesPerSample()))
}

func TestFallsBehind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*measurement)
		want   []string // substrings, one per reason
	}{
		{"keeps up at exactly 1 % lost", func(*measurement) {}, nil},
		{"lost above 1 %", func(m *measurement) { m.Delivered -= 1 }, []string{"lost 1.00% > 1%"}},
		{"p99 delay above 2 intervals", func(m *measurement) { m.DelayP99 = 10*time.Second + time.Millisecond }, []string{"p99 delay 10.001s > 10s"}},
		{"p99 delay of exactly 2 intervals", func(m *measurement) { m.DelayP99 = 10 * time.Second }, nil},
		{"fleet served under 95 %", func(m *measurement) {
			m.ScrapesServed = 2279 // < 0.95 × 2400 = 2280
			m.Delivered = m.Served()
		}, []string{"served 95.0% of nominal scrapes"}},
		{"RSS capped", func(m *measurement) { m.RSSCapped = true }, []string{"RSS above -rss-cap"}},
		{"every reason", func(m *measurement) {
			m.ScrapesServed, m.Delivered, m.DelayP99, m.RSSCapped = 1000, 0, time.Minute, true
		}, []string{"lost 100.00%", "p99 delay 1m0s", "served 41.7%", "RSS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := steadyMeasurement()
			tc.change(&m)
			got := fallsBehind(m)
			require.Len(t, got, len(tc.want), "%q", got)
			for i, w := range tc.want {
				require.Contains(t, got[i], w)
			}
		})
	}
}

func TestMachineBound(t *testing.T) {
	m := steadyMeasurement() // 60 s window, CPU 6 s
	m.Cores = 2
	m.BenchCPU, m.ReceiverCPU = 90*time.Second, 12*time.Second // 108 s of 120: exactly 90 %
	require.InDelta(t, 0.9, m.MachineShare(), 1e-12)
	require.True(t, machineBound(m))
	m.ReceiverCPU -= time.Second
	require.False(t, machineBound(m))
	m.Coordinator = &usageFigures{CPUWindow: time.Second}
	require.True(t, machineBound(m), "the coordinator's CPU counts")
	m.Cores = 0
	require.False(t, machineBound(m), "no cores known: not machine-bound")
}

func TestWouldExceedCap(t *testing.T) {
	require.False(t, wouldExceedCap(0, 0, 400, 6<<30), "no previous step")
	require.False(t, wouldExceedCap(800, 2<<30, 1600, 6<<30), "4 GiB predicted")
	require.True(t, wouldExceedCap(1600, 4<<30, 3200, 6<<30), "8 GiB predicted")
}

func TestFlags(t *testing.T) {
	parse := func(args ...string) (options, error) {
		fs := flag.NewFlagSet("peers", flag.ContinueOnError)
		finish := registerFlags(fs)
		require.NoError(t, fs.Parse(args))
		return finish()
	}
	o, err := parse()
	require.NoError(t, err)
	require.Equal(t, 200, o.targets)
	require.Equal(t, 800, o.series)
	require.Equal(t, 5*time.Second, o.interval)
	require.Equal(t, 3*time.Minute, o.duration)
	require.Equal(t, []string{peerShardscrape, peerAgent, peerVMAgent}, o.peers)
	require.Equal(t, []int{400, 800, 1600, 3200}, o.sweep)
	require.Equal(t, 90*time.Second, o.sweepDuration)
	require.Equal(t, filepath.Join("bin", "scraper"), o.scraperBin)
	require.Equal(t, uint64(6<<30), o.rssCap)
	require.Equal(t, time.Minute, o.drainMax)
	require.Equal(t, 1, o.rounds)

	o, err = parse("-sweep", "", "-peers", "shardscrape, shardscrape-b", "-scraper-b-bin", "/tmp/old")
	require.NoError(t, err)
	require.Empty(t, o.sweep)
	require.Equal(t, []string{peerShardscrape, peerShardscrapeB}, o.peers)

	for _, bad := range [][]string{
		{"-peers", "prometheus"},
		{"-peers", "vmagent,vmagent"},
		{"-peers", ""},
		{"-peers", "shardscrape-b"}, // without -scraper-b-bin
		{"-sweep", "400,200"},
		{"-sweep", "0"},
		{"-sweep", "x"},
		{"-targets", "0"},
		{"-duration", "1s"},
		{"-interval", "100ms"},
		{"-rounds", "0"},
	} {
		_, err := parse(bad...)
		require.Error(t, err, "%q", bad)
	}
}

func testPeerConfig(peer string) peerConfig {
	return peerConfig{Peer: peer, Run: "sweep-400", Interval: 15 * time.Second,
		Targets: []string{"127.1.0.1:9100", "127.1.0.2:9100"}, WriteURL: "http://127.0.0.1:1234/api/v1/write"}
}

// TestPrometheusConfig: the agent's and the coordinator's prometheus.yml
// load with Prometheus's own config.Load, as written.
func TestPrometheusConfig(t *testing.T) {
	for _, peer := range []string{peerAgent, peerShardscrape} {
		t.Run(peer, func(t *testing.T) {
			c := testPeerConfig(peer)
			cfg, err := config.Load(configFor(c), promslog.NewNopLogger())
			require.NoError(t, err)
			require.Equal(t, "15s", cfg.GlobalConfig.ScrapeInterval.String())
			require.Equal(t, "10s", cfg.GlobalConfig.ScrapeTimeout.String(), "the timeout is at most 10s")
			require.Equal(t, c.Run, cfg.GlobalConfig.ExternalLabels.Get(labelRun))
			if peer == peerAgent {
				require.Equal(t, peer, cfg.GlobalConfig.ExternalLabels.Get(labelPeer))
			} else {
				require.Empty(t, cfg.GlobalConfig.ExternalLabels.Get(labelPeer), "the coordinator adds it as the cluster label")
			}
			require.Len(t, cfg.ScrapeConfigs, 1)
			sc := cfg.ScrapeConfigs[0]
			require.Equal(t, jobName, sc.JobName)
			require.Len(t, sc.ServiceDiscoveryConfigs, 1)
			require.Contains(t, configFor(c), `- "127.1.0.2:9100"`)
			require.Len(t, cfg.RemoteWriteConfigs, 1)
			require.Equal(t, c.WriteURL, cfg.RemoteWriteConfigs[0].URL.String())
		})
	}
}

// TestCoordinatorConfigCheck: the coordinator accepts its config with the
// flags the benchmark gives it (skipped without a built coordinator).
func TestCoordinatorConfigCheck(t *testing.T) {
	dir, err := testenv.BinDir()
	require.NoError(t, err)
	bin := filepath.Join(dir, "coordinator")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no coordinator at %s (go build -o bin/ ./cmd/...)", bin)
	}
	c := testPeerConfig(peerShardscrape)
	file := filepath.Join(t.TempDir(), "config.yml")
	require.NoError(t, os.WriteFile(file, []byte(configFor(c)), 0o644))
	cmds, err := peerCommands(c, bins{coordinator: bin, scraper: "scraper"}, file, t.TempDir(), addrs{web: "127.0.0.1:1", grpc: "127.0.0.1:2", workerWeb: "127.0.0.1:3"})
	require.NoError(t, err)
	require.Equal(t, "coordinator", cmds[0].name)
	check := func() error {
		var out bytes.Buffer
		cmd := exec.Command(bin, append(cmds[0].args, "--config.check")...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		t.Logf("coordinator --config.check: %s", out.String())
		return err
	}
	require.NoError(t, check())
	// The check tells a bad config apart: a timeout above the interval.
	bad := strings.Replace(configFor(c), "scrape_timeout: 10s", "scrape_timeout: 1m", 1)
	require.NotEqual(t, configFor(c), bad)
	require.NoError(t, os.WriteFile(file, []byte(bad), 0o644))
	require.Error(t, check())
}

func TestVMAgentConfig(t *testing.T) {
	c := testPeerConfig(peerVMAgent)
	y := configFor(c)
	require.NotContains(t, y, "remote_write", "vmagent takes remote write as flags (strict parsing rejects the key)")
	require.NotContains(t, y, "external_labels")
	// The scrape part is the one the others get.
	require.Contains(t, prometheusYAML(c, true), scrapeConfigsYAML(c))
	require.Contains(t, y, scrapeConfigsYAML(c))
	cmds, err := peerCommands(c, bins{vmagent: "/bin/vmagent"}, "/cfg.yml", "/data", addrs{web: "127.0.0.1:1"})
	require.NoError(t, err)
	require.Len(t, cmds, 1)
	args := strings.Join(cmds[0].args, " ")
	for _, want := range []string{"-promscrape.config=/cfg.yml", "-remoteWrite.url=" + c.WriteURL,
		"-remoteWrite.label=bench_peer=vmagent", "-remoteWrite.label=bench_run=sweep-400", "-remoteWrite.tmpDataPath=/data/vmagent"} {
		require.Contains(t, args, want)
	}
	require.Equal(t, "http://127.0.0.1:1/health", cmds[0].ready)
}

func TestShardscrapeB(t *testing.T) {
	c := testPeerConfig(peerShardscrapeB)
	cmds, err := peerCommands(c, bins{coordinator: "/c", scraper: "/a", scraperB: "/b"}, "/cfg.yml", "/data", addrs{web: "w", grpc: "g", workerWeb: "ww"})
	require.NoError(t, err)
	require.Len(t, cmds, 2)
	require.Equal(t, "/b", cmds[1].path)
	require.Contains(t, cmds[0].args, "--cluster.name=shardscrape-b")
	require.Contains(t, cmds[1].args, "--coordinator.address=g")
	_, err = peerCommands(peerConfig{Peer: "x"}, bins{}, "", "", addrs{})
	require.Error(t, err)
}

func TestDeliveredQuery(t *testing.T) {
	from := time.UnixMilli(1_700_000_000_000)
	q, at := deliveredQuery("vmagent", "steady", from, from.Add(90*time.Second))
	require.Equal(t, `sum(count_over_time({bench_peer="vmagent",bench_run="steady",job="node",__name__!~"up|scrape_.*"}[90000ms]))`, q)
	require.Equal(t, from.Add(90*time.Second-time.Millisecond), at)
}

func TestRender(t *testing.T) {
	base := steadyMeasurement()
	base.Coordinator = &usageFigures{CPUWindow: time.Second, PeakRSS: 80 << 20}
	agent := steadyMeasurement()
	agent.Peer, agent.CPUWindow, agent.PeakRSS = peerAgent, 12*time.Second, 320_000_000
	res := result{steady: []measurement{base, agent}}

	rt, ok := ratioTable(res.steady)
	require.True(t, ok)
	require.Equal(t, []string{peerAgent, "2.00×", "0.50×", "1.00×", "1.00×"}, rt.Rows[0])
	// Scraper + coordinator: 6 + 1 CPU s, 160 MB + 80 MiB against the agent's 12 s, 320 MB.
	require.Len(t, rt.Rows, 2)
	require.Equal(t, []string{peerAgent + " (shardscrape scraper + coordinator)", "1.71×", "0.76×", "1.00×", "1.00×"}, rt.Rows[1])
	_, ok = ratioTable([]measurement{agent})
	require.False(t, ok, "no shardscrape peer, no ratios")

	st := steadyTable(res.steady)
	require.Len(t, st.Rows, 3, "two peers and the coordinator's row")
	require.Contains(t, st.Rows[1][0], "coordinator")
	rejected := slices.Index(st.Header, "rejected requests / samples")
	require.Positive(t, rejected)
	require.Equal(t, "0 / 0", st.Rows[0][rejected])
	res.steady[1].RejectedRequests, res.steady[1].RejectedSamples = 3, 2400
	require.Equal(t, "3 / 2400", steadyTable(res.steady).Rows[2][rejected])

	step := func(peer string, targets int, behind ...string) sweepStep {
		m := steadyMeasurement()
		m.Peer, m.Targets, m.Run = peer, targets, "sweep"
		return sweepStep{measurement: m, Behind: behind}
	}
	var sw report.Table
	res.sweep = []sweepStep{
		step(peerShardscrape, 400), step(peerAgent, 400),
		step(peerShardscrape, 800), step(peerAgent, 800, "lost 5.00% > 1%"),
		{measurement: measurement{Peer: peerShardscrape, Targets: 1600, Series: 800}, Skipped: "RSS"},
	}
	bound := step(peerAgent, 1600, "p99 delay 11s > 10s")
	// 2 cores × 60 s window = 120 CPU s; 50 + 40 + 20 + coordinator 2 = 112: 93.33 %.
	bound.Cores, bound.CPUWindow, bound.BenchCPU, bound.ReceiverCPU = 2, 50*time.Second, 40*time.Second, 20*time.Second
	bound.Coordinator = &usageFigures{CPUWindow: 2 * time.Second}
	bound.MachineBound = machineBound(bound.measurement)
	require.True(t, bound.MachineBound)
	sw = sweepTable(append(slices.Clone(res.sweep), bound))
	require.Equal(t, "93.33 %", sw.Rows[5][len(sw.Rows[5])-2])
	require.Contains(t, sw.Rows[5][len(sw.Rows[5])-1], "machine-bound (machine CPU 93.33 % ≥ 90 %): p99 delay")
	require.NotContains(t, sw.Rows[5][len(sw.Rows[5])-1], "falls behind")
	sw = sweepTable(res.sweep)
	require.Len(t, sw.Rows, 5)
	require.Contains(t, sw.Rows[3][len(sw.Rows[3])-1], "falls behind: lost")
	require.Contains(t, sw.Rows[4][len(sw.Rows[4])-1], "not run: RSS")

	svg, err := sweepChart([]string{peerShardscrape, peerAgent, peerVMAgent}, res.sweep)
	require.NoError(t, err)
	require.Contains(t, string(svg), "<svg")
	require.Contains(t, string(svg), "Samples per CPU-second")
	none, err := sweepChart([]string{peerShardscrape}, []sweepStep{{Skipped: "x", measurement: measurement{Peer: peerShardscrape}}})
	require.NoError(t, err)
	require.Nil(t, none)

	o := options{targets: 200, series: 800, interval: 5 * time.Second, duration: time.Minute, sweep: []int{400, 800}, sweepDuration: time.Minute, rssCap: 6 << 30}
	md := markdown(header{o: o, series: 800, command: "go run ./benchmarks/peers", started: time.Unix(0, 0)}, res, "x-worker-sweep.svg")
	for _, want := range []string{"## Machine", "## Versions", "## Workload", "## Settings", "## Steady state", "## Ratios", "## Saturation sweep", "![sweep](x-worker-sweep.svg)"} {
		require.Contains(t, md, want)
	}
	require.Contains(t, printTables(res), "falls behind")
}

// TestEndWindowEarly: an RSS-capped run's window ends early in the
// measurement and in the proxy alike.
func TestEndWindowEarly(t *testing.T) {
	proxy, err := rwproxy.New(rwproxy.Options{Target: "http://127.0.0.1:1"})
	require.NoError(t, err)
	m := steadyMeasurement()
	proxy.SetWindow(rwproxy.Window{From: m.From, To: m.To})
	require.NoError(t, endWindowEarly(&m, proxy, m.From.Add(20*time.Second+time.Microsecond)))
	require.True(t, m.RSSCapped)
	require.Equal(t, m.From.Add(20*time.Second), m.To)
	require.Equal(t, rwproxy.Window{From: m.From, To: m.To}, proxy.Stats().Window)
}

func TestSettingsWALTruncation(t *testing.T) {
	s := strings.Join(settings(options{interval: 5 * time.Second}), "\n")
	require.Contains(t, s, "every 2 h")
	require.Contains(t, s, "excludes that recurring")
	require.Contains(t, markdown(header{o: options{interval: 5 * time.Second, rounds: 1}, started: time.Unix(0, 0)}, result{}, ""), walTruncationNote)
}

func TestRoundOrder(t *testing.T) {
	peers := []string{peerShardscrape, peerAgent, peerVMAgent}
	require.Equal(t, peers, roundOrder(peers, 1))
	require.Equal(t, []string{peerVMAgent, peerAgent, peerShardscrape}, roundOrder(peers, 2))
	require.Equal(t, peers, roundOrder(peers, 3))
	require.Equal(t, []string{peerShardscrape, peerAgent, peerVMAgent}, peers, "the flag's order is left alone")

	o := options{targets: 200, series: 800, interval: 5 * time.Second, duration: time.Minute, rounds: 1, peers: peers, rssCap: 6 << 30}
	md := markdown(header{o: o, series: 800, started: time.Unix(0, 0)}, result{}, "")
	require.Contains(t, md, "in the order shardscrape, prometheus-agent, vmagent (")
	o.rounds = 4
	md = markdown(header{o: o, series: 800, started: time.Unix(0, 0)}, result{}, "")
	require.Contains(t, md, "shardscrape, prometheus-agent, vmagent in odd rounds and vmagent, prometheus-agent, shardscrape in even ones")
}

func TestRatioRounds(t *testing.T) {
	var ms []measurement
	for r, cpu := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		base := steadyMeasurement()
		base.Round, base.Run = r+1, "steady-x"
		agent := base
		agent.Peer, agent.CPUWindow, agent.Run = peerAgent, cpu, "steady-x" // base 6 s: ratios 1/3, 2/3, 4/3
		ms = append(ms, base, agent)
	}
	rt, ok := ratioTable(ms)
	require.True(t, ok)
	require.Len(t, rt.Rows, 1)
	require.Equal(t, "0.67× (0.33×–1.33×, 3 rounds)", rt.Rows[0][1])
	require.Equal(t, "1.00× (1.00×–1.00×, 3 rounds)", rt.Rows[0][2])
	require.Equal(t, "n/a", ratioCell([]float64{math.NaN()}))
	require.Equal(t, "1.50× (1.00×–2.00×, 2 rounds)", ratioCell([]float64{2, 1}))
	st := steadyTable(ms)
	require.Equal(t, "prometheus-agent (round 3)", st.Rows[5][0])
}

func TestFailedRun(t *testing.T) {
	base := steadyMeasurement()
	failed := measurement{Peer: peerVMAgent, Run: "steady", Err: "vmagent exited\n--- last output of vmagent ---\npanic"}
	agent := steadyMeasurement()
	agent.Peer = peerAgent
	ms := []measurement{base, failed, agent}
	st := steadyTable(ms)
	require.Equal(t, []string{peerVMAgent, "failed: vmagent exited"}, st.Rows[1])
	rt, ok := ratioTable(ms)
	require.True(t, ok)
	require.Len(t, rt.Rows, 1, "no ratio against a failed run")
	require.Equal(t, peerAgent, rt.Rows[0][0])
	_, ok = ratioTable([]measurement{{Peer: peerShardscrape, Err: "x"}, agent})
	require.False(t, ok, "no ratio from a failed shardscrape run")
}

func TestChartFile(t *testing.T) {
	require.Equal(t, filepath.Join("out", "2026-11-25-worker-sweep.svg"), chartFile("out", time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC)))
}
