package main

import (
	"fmt"
	"time"
)

// measurement is what one peer did in one run (a steady phase or a sweep
// step), from the OS, the fleet and the receiver.
type measurement struct {
	Peer    string
	Run     string // bench_run label: "steady", "steady-<round>" or "sweep-<targets>"
	Round   int    // steady round, from 1 (0 in the sweep)
	Targets int
	Series  int // per target
	// Interval is the scrape interval, Window the measured span of sample
	// timestamps [From, To).
	Interval time.Duration
	From, To time.Time

	// CPUWindow is the process's utime+stime (/proc/<pid>/stat) between
	// From and To; CPULifetime from start to exit, startup and the SIGTERM
	// flush included (rusage of the exited process).
	CPUWindow, CPULifetime time.Duration
	// PeakRSS is the largest of VmHWM just before SIGTERM and the exited
	// process's rusage maxrss.
	PeakRSS uint64
	// RSSCapped: the run ended early because RSS passed -rss-cap.
	RSSCapped bool

	// ScrapesServed are the scrapes the fleet's targets answered between
	// From and To (shardscrape_fleet_scrapes_served_total).
	ScrapesServed float64
	// Delivered are the samples VictoriaMetrics holds with timestamps in
	// the window, up and scrape_* excluded (count_over_time).
	Delivered float64
	// ProxySamples are the samples the proxy saw with timestamps in the
	// window, same exclusions (the cross-check of Delivered).
	ProxySamples uint64
	// ReportSamples are the samples of up and scrape_* stamped in the
	// window (proxy): the scrapers' own series, kept out of Delivered,
	// ProxySamples and the delays.
	ReportSamples uint64
	// Wire figures of the whole run (start to exit), from the proxy.
	BodyBytes, WireSamples uint64
	WriteRequests          uint64
	DecodeErrors           uint64
	// RejectedRequests are write requests the receiver did not accept
	// (non-2xx, or not reachable), RejectedSamples their target samples
	// (whole run, proxy): a retried request's refused attempts. They are in
	// no other figure.
	RejectedRequests, RejectedSamples uint64
	Protocols                         string
	// Delays (arrival − sample timestamp) of the window's samples.
	DelayP50, DelayP99, DelayMax time.Duration

	// BenchCPU is this program's own CPU time in the window: the fleet
	// serving the targets and the proxy counting, on the same cores as
	// the peer (informational).
	BenchCPU time.Duration
	// ReceiverCPU is VictoriaMetrics' CPU time in the window, the same
	// cores again (informational).
	ReceiverCPU time.Duration

	// Coordinator is the shardscrape coordinator's usage (informational).
	Coordinator *usageFigures

	// Cores is the CPUs this program may run on (runtime.NumCPU), which the
	// peer, the fleet, the proxy and VictoriaMetrics share.
	Cores int

	// Err says why the run failed ("" when it did not); its figures are
	// then incomplete.
	Err string
}

// usageFigures is a side process's cost.
type usageFigures struct {
	CPUWindow time.Duration
	PeakRSS   uint64
}

func (m measurement) window() time.Duration { return m.To.Sub(m.From) }

// ActiveSeries is targets × series per target.
func (m measurement) ActiveSeries() float64 { return float64(m.Targets * m.Series) }

// Served is the samples the targets served in the window: scrapes × series
// per target.
func (m measurement) Served() float64 { return m.ScrapesServed * float64(m.Series) }

// NominalScrapes is how many scrapes the window should have: targets ×
// window / interval.
func (m measurement) NominalScrapes() float64 {
	return float64(m.Targets) * m.window().Seconds() / m.Interval.Seconds()
}

// Lost is Served − Delivered (negative: more arrived than served, i.e.
// duplicates).
func (m measurement) Lost() float64 { return m.Served() - m.Delivered }

// LostFraction is Lost / Served (0 when nothing was served).
func (m measurement) LostFraction() float64 {
	if m.Served() == 0 {
		return 0
	}
	return m.Lost() / m.Served()
}

// SamplesPerCPUSecond is Delivered / CPUWindow.
func (m measurement) SamplesPerCPUSecond() float64 {
	return ratio(m.Delivered, m.CPUWindow.Seconds())
}

// CPUPerMillion is CPU seconds per million samples delivered.
func (m measurement) CPUPerMillion() float64 {
	return ratio(m.CPUWindow.Seconds(), m.Delivered/1e6)
}

// RSSPerSeries is peak RSS bytes per active series.
func (m measurement) RSSPerSeries() float64 { return ratio(float64(m.PeakRSS), m.ActiveSeries()) }

// BytesPerSample is request body bytes per sample on the wire (every
// sample sent: report series and staleness markers too).
func (m measurement) BytesPerSample() float64 {
	return ratio(float64(m.BodyBytes), float64(m.WireSamples))
}

// ratio is a/b, NaN when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return nan
	}
	return a / b
}

// MachineCPU is the CPU time of every process of the run in the window:
// the peer's (its coordinator too), this program's (fleet and proxy) and
// VictoriaMetrics'.
func (m measurement) MachineCPU() time.Duration {
	d := m.CPUWindow + m.BenchCPU + m.ReceiverCPU
	if m.Coordinator != nil {
		d += m.Coordinator.CPUWindow
	}
	return d
}

// MachineShare is MachineCPU ÷ (cores × window): 1 is every core busy for
// the whole window (NaN without cores or a window).
func (m measurement) MachineShare() float64 {
	return ratio(m.MachineCPU().Seconds(), float64(m.Cores)*m.window().Seconds())
}

// machineBound tells whether the machine, not the peer, was the limit: the
// run's processes used at least 90 % of all cores over the window.
func machineBound(m measurement) bool { return m.MachineShare() >= maxMachineShare }

// Thresholds of the falls-behind rule.
const (
	maxMachineShare   = 0.9
	maxLostFraction   = 0.01
	maxDelayIntervals = 2
	minServedFraction = 0.95
)

// fallsBehind applies the sweep's rule: a peer falls behind when it lost
// more than 1 % of what was served, when its p99 delay exceeds 2 ×
// interval, when the fleet served under 95 % of the nominal scrapes (the
// peer did not scrape on time), or when its RSS passed the cap. It returns
// every reason that holds.
func fallsBehind(m measurement) []string {
	var why []string
	if f := m.LostFraction(); f > maxLostFraction {
		why = append(why, fmt.Sprintf("lost %.2f%% > %.0f%%", 100*f, 100*maxLostFraction))
	}
	if lim := maxDelayIntervals * m.Interval; m.DelayP99 > lim {
		why = append(why, fmt.Sprintf("p99 delay %s > %s", m.DelayP99.Round(time.Millisecond), lim))
	}
	if nom := m.NominalScrapes(); nom > 0 && m.ScrapesServed < minServedFraction*nom {
		why = append(why, fmt.Sprintf("served %.1f%% of nominal scrapes < %.0f%%", 100*m.ScrapesServed/nom, 100*minServedFraction))
	}
	if m.RSSCapped {
		why = append(why, "RSS above -rss-cap")
	}
	return why
}

// wouldExceedCap predicts from the previous step (prevTargets, prevPeak)
// whether the next (targets) would pass cap, scaling peak RSS linearly with
// targets.
func wouldExceedCap(prevTargets int, prevPeak uint64, targets int, capBytes uint64) bool {
	if prevTargets <= 0 || prevPeak == 0 {
		return false
	}
	return float64(prevPeak)*float64(targets)/float64(prevTargets) > float64(capBytes)
}
