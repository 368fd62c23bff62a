package main

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shardscrape/shardscrape/benchmarks/internal/chart"
	"github.com/shardscrape/shardscrape/benchmarks/internal/report"
)

// scenario names the result file: <date>-worker-vs-peers.md.
const scenario = "worker-vs-peers"

// chartFile is the sweep chart next to it: <date>-worker-sweep.svg.
func chartFile(dir string, t time.Time) string {
	return filepath.Join(dir, t.UTC().Format("2006-01-02")+"-worker-sweep.svg")
}

// shortErr is an error's first line, at most 300 characters (the full one
// is in the log).
func shortErr(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "…"
	}
	return s
}

func bytesIEC(n uint64) string { return report.Bytes(float64(n)) }

func seconds(d time.Duration) string { return report.Float(d.Seconds(), 2) }

func millis(d time.Duration) string { return report.Float(float64(d)/float64(time.Millisecond), 0) }

func percent(f float64) string { return report.Float(100*f, 2) + " %" }

// steadyTable has every figure of every peer's steady run, and a row for
// each shardscrape coordinator.
func steadyTable(ms []measurement) report.Table {
	t := report.Table{Header: []string{
		"process", "CPU s (window)", "CPU s (lifetime)", "CPU s / M samples", "samples / CPU s",
		"peak RSS", "RSS bytes / series", "bytes sent / sample", "p50 delay ms", "p99 delay ms", "max delay ms",
		"samples served", "delivered (VM)", "delivered (proxy)", "lost", "lost %", "scrapes served / nominal",
		"up/scrape_* samples", "write requests", "rejected requests / samples", "protocol", "decode errors", "bench CPU s (fleet + proxy)", "VictoriaMetrics CPU s",
	}}
	for _, m := range ms {
		name := m.Peer
		if m.Run != "steady" && m.Round > 0 {
			name += fmt.Sprintf(" (round %d)", m.Round)
		}
		if m.Err != "" {
			t.Add(name, "failed: "+shortErr(m.Err))
			continue
		}
		t.Add(name, seconds(m.CPUWindow), seconds(m.CPULifetime), report.Float(m.CPUPerMillion(), 2),
			report.Float(m.SamplesPerCPUSecond(), 0), bytesIEC(m.PeakRSS), report.Float(m.RSSPerSeries(), 0),
			report.Float(m.BytesPerSample(), 3), millis(m.DelayP50), millis(m.DelayP99), millis(m.DelayMax),
			report.Float(m.Served(), 0), report.Float(m.Delivered, 0), report.Float(float64(m.ProxySamples), 0),
			report.Float(m.Lost(), 0), percent(m.LostFraction()),
			report.Float(m.ScrapesServed, 0)+" / "+report.Float(m.NominalScrapes(), 0),
			report.Float(float64(m.ReportSamples), 0), report.Float(float64(m.WriteRequests), 0),
			report.Float(float64(m.RejectedRequests), 0)+" / "+report.Float(float64(m.RejectedSamples), 0), m.Protocols, report.Float(float64(m.DecodeErrors), 0),
			seconds(m.BenchCPU), seconds(m.ReceiverCPU))
		if m.Coordinator != nil {
			t.Add(name+" coordinator (informational)", seconds(m.Coordinator.CPUWindow), "", "", "",
				bytesIEC(m.Coordinator.PeakRSS), report.Float(ratio(float64(m.Coordinator.PeakRSS), m.ActiveSeries()), 0))
		}
	}
	return t
}

// ratioTable compares the first shardscrape peer with every other peer,
// within each round; over several rounds it gives the median of the
// rounds' ratios and their range. Each peer has a row against the scraper
// alone and, when the coordinator was measured, one against scraper +
// coordinator (CPU and peak RSS summed). > 1× is better for shardscrape in the
// first column, < 1× in the others.
func ratioTable(ms []measurement) (report.Table, bool) {
	t := report.Table{Header: []string{"shardscrape vs", "samples / CPU s (higher is better)", "RSS / series (lower is better)",
		"bytes / sample (lower is better)", "p99 delay (lower is better)"}}
	var basePeer string
	for _, m := range ms {
		if isShardscrape(m.Peer) {
			basePeer = m.Peer
			break
		}
	}
	if basePeer == "" {
		return t, false
	}
	figures := []func(measurement) float64{
		measurement.SamplesPerCPUSecond, measurement.RSSPerSeries, measurement.BytesPerSample,
		func(m measurement) float64 { return m.DelayP99.Seconds() },
	}
	var rows []string
	ratios := map[string][][]float64{} // row → figure → one ratio per round
	addRatios := func(row string, base, m measurement) {
		if _, ok := ratios[row]; !ok {
			rows = append(rows, row)
			ratios[row] = make([][]float64, len(figures))
		}
		for i, f := range figures {
			ratios[row][i] = append(ratios[row][i], ratio(f(base), f(m)))
		}
	}
	for _, m := range ms {
		if m.Peer == basePeer || m.Err != "" {
			continue
		}
		var base *measurement
		for i := range ms {
			if ms[i].Peer == basePeer && ms[i].Round == m.Round && ms[i].Err == "" {
				base = &ms[i]
			}
		}
		if base == nil {
			continue
		}
		addRatios(m.Peer, *base, m)
		if base.Coordinator != nil {
			addRatios(m.Peer+" (shardscrape scraper + coordinator)", withCoordinator(*base), m)
		}
	}
	for _, r := range rows {
		row := []string{r}
		for _, rs := range ratios[r] {
			row = append(row, ratioCell(rs))
		}
		t.Add(row...)
	}
	return t, len(t.Rows) > 0
}

// withCoordinator is a shardscrape run with its coordinator's CPU and peak
// RSS added to the scraper's: the whole of shardscrape for one worker.
func withCoordinator(m measurement) measurement {
	if m.Coordinator != nil {
		m.CPUWindow += m.Coordinator.CPUWindow
		m.PeakRSS += m.Coordinator.PeakRSS
	}
	return m
}

// ratioCell formats one ratio, or the median of several with their range.
func ratioCell(rs []float64) string {
	var ok []float64
	for _, r := range rs {
		if !math.IsNaN(r) && !math.IsInf(r, 0) {
			ok = append(ok, r)
		}
	}
	switch {
	case len(ok) == 0:
		return "n/a"
	case len(rs) == 1:
		return report.Ratio(ok[0], 1)
	}
	slices.Sort(ok)
	med := ok[len(ok)/2]
	if len(ok)%2 == 0 {
		med = (ok[len(ok)/2-1] + ok[len(ok)/2]) / 2
	}
	return fmt.Sprintf("%s (%s–%s, %d rounds)", report.Ratio(med, 1), report.Ratio(ok[0], 1), report.Ratio(ok[len(ok)-1], 1), len(ok))
}

func sweepTable(steps []sweepStep) report.Table {
	t := report.Table{Header: []string{"targets", "process", "active series", "samples / CPU s", "peak RSS",
		"RSS bytes / series", "bytes / sample", "p99 delay ms", "lost %", "scrapes served / nominal", "bench CPU s (fleet + proxy)", "VictoriaMetrics CPU s", "machine CPU %", "verdict"}}
	for _, s := range steps {
		verdict := "keeps up"
		switch {
		case s.Skipped != "":
			t.Add(report.Float(float64(s.Targets), 0), s.Peer, report.Float(s.ActiveSeries(), 0), "", "", "", "", "", "", "", "", "", "", "not run: "+s.Skipped)
			continue
		case s.Err != "":
			verdict = "failed: " + shortErr(s.Err)
		case len(s.Behind) > 0 && s.MachineBound:
			verdict = fmt.Sprintf("machine-bound (machine CPU %s ≥ %.0f %%): %s", percent(s.MachineShare()), 100*maxMachineShare, strings.Join(s.Behind, "; "))
		case len(s.Behind) > 0:
			verdict = "falls behind: " + strings.Join(s.Behind, "; ")
		}
		t.Add(report.Float(float64(s.Targets), 0), s.Peer, report.Float(s.ActiveSeries(), 0),
			report.Float(s.SamplesPerCPUSecond(), 0), bytesIEC(s.PeakRSS), report.Float(s.RSSPerSeries(), 0),
			report.Float(s.BytesPerSample(), 3), millis(s.DelayP99), percent(s.LostFraction()),
			report.Float(s.ScrapesServed, 0)+" / "+report.Float(s.NominalScrapes(), 0), seconds(s.BenchCPU), seconds(s.ReceiverCPU), percent(s.MachineShare()), verdict)
	}
	return t
}

// sweepChart draws the sweep: four panels against targets, one series per
// peer. Steps that did not run, failed, or have no finite figure are left
// out. It returns nil when there is nothing to draw.
func sweepChart(peers []string, steps []sweepStep) ([]byte, error) {
	panels := []struct {
		title, y string
		logY     bool
		f        func(measurement) float64
	}{
		{"Samples per CPU-second", "samples / CPU s", false, measurement.SamplesPerCPUSecond},
		{"Peak RSS per active series", "bytes / series", false, measurement.RSSPerSeries},
		{"p99 delay, scrape to arrival", "seconds", false, func(m measurement) float64 { return m.DelayP99.Seconds() }},
		{"Samples lost", "% of served", false, func(m measurement) float64 { return 100 * m.LostFraction() }},
	}
	var charts []chart.Chart
	for _, p := range panels {
		c := chart.Chart{Title: p.title, XLabel: "targets", YLabel: p.y, LogX: true, LogY: p.logY, YFromZero: true}
		for _, peer := range peers {
			s := chart.Series{Name: peer}
			for _, st := range steps {
				if st.Peer != peer || st.Skipped != "" || st.Err != "" {
					continue
				}
				v := p.f(st.measurement)
				if math.IsNaN(v) || math.IsInf(v, 0) {
					continue
				}
				s.X = append(s.X, float64(st.Targets))
				s.Y = append(s.Y, v)
			}
			if len(s.X) > 0 {
				c.Series = append(c.Series, s)
			}
		}
		if len(c.Series) > 0 {
			charts = append(charts, c)
		}
	}
	if len(charts) == 0 {
		return nil, nil
	}
	return chart.Panels("Saturation sweep: shardscrape worker vs peers", 2, charts...)
}

// header is what the result file says before the tables.
type header struct {
	machine  report.Machine
	versions [][2]string // binary, version
	o        options
	series   int
	command  string
	started  time.Time
	took     time.Duration
}

// markdown renders the whole result file; svgName is the chart's file name
// ("" when there is none).
func markdown(h header, res result, svgName string) string {
	var b strings.Builder
	o := h.o
	fmt.Fprintf(&b, "# Worker vs peers: shardscrape scraper, Prometheus agent, vmagent (%s)\n\n", h.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Command: `%s` (took %s).\n\n", h.command, h.took.Round(time.Second))
	b.WriteString("## Machine\n\n" + h.machine.Markdown() + "\n\n")
	b.WriteString("## Versions\n\n")
	vt := report.Table{Header: []string{"binary", "version"}}
	for _, v := range h.versions {
		vt.Add(v[0], v[1])
	}
	b.WriteString(vt.Markdown() + "\n")
	b.WriteString("## Workload\n\n")
	fmt.Fprintf(&b, "- Steady: %d node_exporter-like targets (internal/fleet, each its own 127.1.x.y address) × %d series, scraped every %s: %s samples/s, %s active series; measured window %s per peer, after a warm-up (every target scraped once, then 2 intervals).\n",
		o.targets, h.series, o.interval, report.Float(float64(o.targets*h.series)/o.interval.Seconds(), 0), report.Float(float64(o.targets*h.series), 0), o.duration)
	if len(o.sweep) > 0 {
		fmt.Fprintf(&b, "- Sweep: targets %v, window %s per peer and step; a peer stops rising after the step where it falls behind (lost > %.0f %% of served, p99 delay > %d × interval, the fleet served < %.0f %% of the nominal scrapes, or RSS > %s).\n",
			o.sweep, o.sweepDuration, 100*maxLostFraction, maxDelayIntervals, 100*minServedFraction, bytesIEC(o.rssCap))
	}
	if o.rounds > 1 {
		fmt.Fprintf(&b, "- Steady phase in %d rounds, every peer once per round, in the order %s in odd rounds and %s in even ones; the ratios are the median of the rounds' ratios (range in brackets).\n",
			o.rounds, strings.Join(roundOrder(o.peers, 1), ", "), strings.Join(roundOrder(o.peers, 2), ", "))
	} else {
		fmt.Fprintf(&b, "- Steady phase in one round, the peers in the order %s (each after the previous one's processes stopped; the order is not varied: use -rounds ≥ 2 to alternate it).\n", strings.Join(o.peers, ", "))
	}
	b.WriteString("- Peers run one after another against one VictoriaMetrics v1.151.0, each through its own counting proxy (benchmarks/internal/rwproxy), its series labelled bench_peer=<peer>, bench_run=<run>.\n\n")
	b.WriteString("## Settings\n\n")
	for _, s := range settings(o) {
		b.WriteString("- " + s + "\n")
	}
	b.WriteString("\n## How each figure is measured\n\n" + methods + "\n")
	b.WriteString("## Steady state\n\n" + steadyTable(res.steady).Markdown() + "\n")
	if rt, ok := ratioTable(res.steady); ok {
		b.WriteString("## Ratios (shardscrape ÷ peer, same round)\n\n" + rt.Markdown() + "\n")
	}
	if len(res.sweep) > 0 {
		b.WriteString("## Saturation sweep\n\n" + sweepTable(res.sweep).Markdown() + "\n")
		if svgName != "" {
			fmt.Fprintf(&b, "![sweep](%s)\n\n", svgName)
		}
	}
	b.WriteString("Absolute figures on a shared 2-core machine are noisy; compare peers only as the ratios of one run.\n")
	return b.String()
}

const methods = `- **CPU s (window)**: utime + stime of the measured process from /proc/<pid>/stat, read when the window opens and when it closes. **CPU s (lifetime)**: the exited process's rusage (start-up and the SIGTERM flush included). Per-sample figures use the window.
- **samples served**: the fleet's scrapes of node targets during the window (shardscrape_fleet_scrapes_served_total, in the bench process) × series per target.
- **delivered (VM)**: VictoriaMetrics' ` + "`sum(count_over_time({bench_peer=…,bench_run=…,job=\"node\",__name__!~\"up|scrape_.*\"}[window]))`" + ` over the window's sample timestamps [from, to), after /internal/force_flush, once the window's samples have arrived (drain) — staleness markers and the scrapers' own up/scrape_* series are not counted. **delivered (proxy)**: the same count from the proxy (the cross-check). **lost** = served − delivered (VM); negative means duplicates.
- **CPU s / M samples** = CPU s (window) ÷ delivered (VM) × 10⁶; **samples / CPU s** is its inverse.
- **peak RSS**: the larger of VmHWM (/proc/<pid>/status) just before SIGTERM and the exited process's rusage maxrss; **RSS bytes / series** = peak RSS ÷ (targets × series per target).
- **bytes sent / sample**: request body bytes as sent (compressed) ÷ every sample on the wire (report series and staleness markers included), over the whole run, from the proxy.
- **delay**: arrival − sample timestamp, for every target sample stamped in the window (ms resolution; up/scrape_* excluded), arrival being the time VictoriaMetrics answered the request 2xx. The proxy counts a request's samples (delivered (proxy), delays, the drain) only once VictoriaMetrics accepted it: a request refused (non-2xx, e.g. 429/5xx) or not forwarded counts in **rejected requests / samples** (whole run) instead, so a retry counts once, with the accepted attempt's delay.
- **bench CPU s**: this program's own CPU time in the window (/proc/self/stat): the fleet generating the targets' expositions and the proxy counting, on the same cores as the peer. **VictoriaMetrics CPU s**: the receiver's, likewise. **machine CPU %** (sweep) = (the peer's CPU s, its coordinator's included, + bench CPU s + VictoriaMetrics CPU s) ÷ (cores × window). A step that falls behind with machine CPU ≥ 90 % is marked **machine-bound**, not "falls behind": the cores were the limit, not the peer (the peer still stops rising there).
- **up/scrape_* samples**: the samples of the scrapers' own series (up, scrape_*) stamped in the window, from the proxy: counted apart, in no other figure but bytes sent / sample. vmagent sends more of them than Prometheus (scrape_series_added, scrape_timeout_seconds, …).
- The drain after a window waits until a sample stamped one interval past the window's end arrived and the window's count reached what was served or stopped growing (≥ 2 intervals, ≥ 6 s), at most ` + "`-drain.max`" + `; only then is the process stopped.
`

// printTables writes the tables to stdout in plain markdown.
func printTables(res result) string {
	var b strings.Builder
	b.WriteString(steadyTable(res.steady).Markdown() + "\n")
	if rt, ok := ratioTable(res.steady); ok {
		b.WriteString(rt.Markdown() + "\n")
	}
	if len(res.sweep) > 0 {
		b.WriteString(sweepTable(res.sweep).Markdown())
	}
	return b.String()
}
