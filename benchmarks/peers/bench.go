package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardscrape/shardscrape/benchmarks/internal/rwproxy"
	"github.com/shardscrape/shardscrape/internal/fleet"
	"github.com/shardscrape/shardscrape/internal/synth"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

// readyTimeout bounds a process's start; warmupMax bounds the wait for a
// peer's first scrapes to arrive.
const (
	readyTimeout = 2 * time.Minute
	warmupMax    = 3 * time.Minute
	pollEvery    = time.Second
)

// bench is one run of the command: one VictoriaMetrics, one fleet, the
// peers one after another.
type bench struct {
	o       options
	logger  *slog.Logger
	dir     string
	procs   *procs
	bins    bins
	vm      *victoriaMetrics
	fleet   *fleet.Fleet
	reg     *prometheus.Registry
	nodes   []string // every node target's host:port
	series  int      // samples per scrape of a node target
	started time.Time
}

// result is everything the run measured.
type result struct {
	steady []measurement
	sweep  []sweepStep
}

// sweepStep is one peer at one sweep step.
type sweepStep struct {
	measurement
	Skipped string   // why the step did not run (the RSS prediction)
	Behind  []string // fallsBehind reasons
	// MachineBound: it fell behind with the machine's cores ≥ 90 % busy
	// (machineBound), so the step says more about the machine than the
	// peer.
	MachineBound bool
}

// newBench starts VictoriaMetrics and the fleet; close stops them. ab (nil:
// none) learns of the bench before anything starts, for a second ^C.
func newBench(ctx context.Context, o options, logger *slog.Logger, ab *aborter) (_ *bench, err error) {
	b := &bench{o: o, logger: logger, procs: &procs{}, reg: prometheus.NewRegistry(), started: time.Now()}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.dir, err = os.MkdirTemp("", "bench-peers-"); err != nil {
		return nil, err
	}
	ab.set(b)
	find := func(p string) string {
		path, e := binary(p)
		err = errors.Join(err, e)
		return path
	}
	b.bins = bins{prometheus: find(filepath.Join(o.bin, "prometheus")), vmagent: find(filepath.Join(o.bin, "vmagent")),
		coordinator: find(filepath.Join(o.bin, "coordinator")), scraper: find(o.scraperBin)}
	if o.scraperBBin != "" {
		b.bins.scraperB = find(o.scraperBBin)
	}
	b.bins.victoriaMetrics = find(filepath.Join(o.bin, "victoria-metrics"))
	if err != nil {
		return nil, err
	}
	if b.vm, err = startVM(ctx, b.procs, b.bins.victoriaMetrics, b.dir); err != nil {
		return nil, err
	}
	nodes := o.targets
	for _, n := range o.sweep {
		nodes = max(nodes, n)
	}
	b.fleet, err = fleet.New(fleet.Options{Nodes: nodes, NodeSeries: o.series, Registerer: b.reg,
		Logger: logger.With("component", "fleet")})
	if err != nil {
		return nil, err
	}
	if err = b.fleet.Start(); err != nil {
		return nil, err
	}
	for _, n := range b.fleet.Nodes() {
		b.nodes = append(b.nodes, n.Addr)
	}
	b.series = synth.NewLayout(synth.KindNode, o.series).Series()
	logger.Info("Fleet up", "targets", len(b.nodes), "series_per_target", b.series, "victoria_metrics", b.vm.url)
	return b, nil
}

// close stops every process (by pid), the fleet, and removes the temp dir.
func (b *bench) close() {
	b.procs.stopAll()
	if b.fleet != nil {
		_ = b.fleet.Close()
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// scrapesServed is the fleet's shardscrape_fleet_scrapes_served_total of
// node targets.
func (b *bench) scrapesServed() float64 {
	mfs, err := b.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "shardscrape_fleet_scrapes_served_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == "node" {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// all runs the steady phase and the sweep.
func (b *bench) all(ctx context.Context) (result, error) {
	var res result
	for r := 1; r <= b.o.rounds; r++ {
		run := "steady"
		if b.o.rounds > 1 {
			run = fmt.Sprintf("steady-%d", r)
		}
		for _, peer := range roundOrder(b.o.peers, r) {
			b.logger.Info("Steady run", "peer", peer, "round", r, "targets", b.o.targets, "window", b.o.duration)
			profile := ""
			if r == 1 {
				profile = b.o.profile
			}
			m, err := b.runPeer(ctx, peer, run, b.o.targets, b.o.duration, profile)
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			m.Round = r
			if err != nil {
				// Recorded, and the run goes on: one peer's failure
				// should not cost the others' figures.
				m.Err = err.Error()
				b.logger.Error("Steady run failed", "peer", peer, "round", r, "err", err)
				res.steady = append(res.steady, m)
				continue
			}
			b.logger.Info("Steady run done", "peer", peer, "round", r, "samples_per_cpu_second", m.SamplesPerCPUSecond(),
				"peak_rss", m.PeakRSS, "lost_fraction", m.LostFraction(), "p99_delay", m.DelayP99)
			res.steady = append(res.steady, m)
		}
	}
	type state struct {
		stopped     bool
		prevTargets int
		prevPeak    uint64
	}
	states := map[string]*state{}
	for _, p := range b.o.peers {
		states[p] = &state{}
	}
	run := func(n int) string { return fmt.Sprintf("sweep-%d", n) }
	for _, n := range b.o.sweep {
		for _, peer := range b.o.peers {
			st := states[peer]
			if st.stopped {
				continue
			}
			step := sweepStep{measurement: measurement{Peer: peer, Run: run(n), Targets: n, Series: b.series, Interval: b.o.interval}}
			if wouldExceedCap(st.prevTargets, st.prevPeak, n, b.o.rssCap) {
				step.Skipped = fmt.Sprintf("peak RSS %s at %d targets predicts more than -rss-cap at %d", bytesIEC(st.prevPeak), st.prevTargets, n)
				st.stopped = true
				res.sweep = append(res.sweep, step)
				continue
			}
			b.logger.Info("Sweep step", "peer", peer, "targets", n, "window", b.o.sweepDuration)
			m, err := b.runPeer(ctx, peer, run(n), n, b.o.sweepDuration, "")
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			step.measurement = m
			if err != nil {
				step.Err = err.Error()
				st.stopped = true
				b.logger.Warn("Sweep step failed", "peer", peer, "targets", n, "err", err)
			} else if step.Behind = fallsBehind(m); len(step.Behind) > 0 {
				st.stopped = true
				step.MachineBound = machineBound(m)
				b.logger.Info("Peer falls behind", "peer", peer, "targets", n, "why", strings.Join(step.Behind, "; "),
					"machine_bound", step.MachineBound, "machine_cpu_share", m.MachineShare())
			}
			st.prevTargets, st.prevPeak = n, m.PeakRSS
			res.sweep = append(res.sweep, step)
		}
	}
	return res, nil
}

// roundOrder is the order of the peers in steady round r (from 1): as
// given in odd rounds, reversed in even ones (A B C, C B A, A B C, …), so
// that over rounds no peer always runs first, or always after the same one.
func roundOrder(peers []string, r int) []string {
	order := slices.Clone(peers)
	if r%2 == 0 {
		slices.Reverse(order)
	}
	return order
}

// runPeer runs one peer over the first n targets: start, warm up, measure a
// window of sample timestamps, let the window's samples arrive, stop, and
// ask the receiver.
func (b *bench) runPeer(ctx context.Context, peer, run string, n int, window time.Duration, profileDir string) (m measurement, err error) {
	m = measurement{Peer: peer, Run: run, Targets: n, Series: b.series, Interval: b.o.interval, Cores: runtime.NumCPU()}
	proxy, err := rwproxy.New(rwproxy.Options{Target: b.vm.url, Logger: b.logger.With("component", "rwproxy", "peer", peer)})
	if err != nil {
		return m, err
	}
	if err := proxy.Start(); err != nil {
		return m, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = proxy.Close(cctx)
	}()

	pdir := filepath.Join(b.dir, run, peer)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return m, err
	}
	defer os.RemoveAll(filepath.Join(pdir, "data")) // keep the logs until the end of the run
	cfg := peerConfig{Peer: peer, Run: run, Interval: b.o.interval, Targets: b.nodes[:n], WriteURL: proxy.URL() + "/api/v1/write"}
	cfgFile := filepath.Join(pdir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(configFor(cfg)), 0o644); err != nil {
		return m, err
	}
	var a addrs
	for _, s := range []*string{&a.web, &a.grpc, &a.workerWeb} {
		if *s, err = testenv.FreeAddr(); err != nil {
			return m, err
		}
	}
	cmds, err := peerCommands(cfg, b.bins, cfgFile, filepath.Join(pdir, "data"), a)
	if err != nil {
		return m, err
	}
	var started []*proc
	defer func() {
		for i := len(started) - 1; i >= 0; i-- {
			_ = started[i].stop()
		}
	}()
	for _, c := range cmds {
		p, err := b.procs.start(c.name, filepath.Join(pdir, c.name+".log"), c.path, c.args...)
		if err != nil {
			return m, err
		}
		started = append(started, p)
		if err := p.waitReady(ctx, c.ready, readyTimeout); err != nil {
			return m, err
		}
	}
	measured := started[len(started)-1]
	var side *proc
	if len(started) > 1 {
		side = started[0]
	}
	mainCmd := cmds[len(cmds)-1]

	// Warm up: every target scraped at least once and samples arriving,
	// then two more intervals.
	served0 := b.scrapesServed()
	deadline := time.Now().Add(warmupMax)
	for b.scrapesServed()-served0 < float64(n) || proxy.Stats().All.Samples == 0 {
		if err := b.check(ctx, measured); err != nil {
			return m, err
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("%s: no full round of scrapes arrived within %s (served %.0f scrapes, %d samples arrived)%s",
				peer, warmupMax, b.scrapesServed()-served0, proxy.Stats().All.Samples, measured.logTail())
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return m, err
		}
	}
	if err := sleep(ctx, 2*b.o.interval); err != nil {
		return m, err
	}

	// The window.
	m.From = time.Now().Truncate(time.Millisecond)
	m.To = m.From.Add(window)
	proxy.SetWindow(rwproxy.Window{From: m.From, To: m.To})
	served0 = b.scrapesServed()
	u0, err := measured.usage()
	if err != nil {
		return m, err
	}
	self0, _ := testenv.ProcUsage(os.Getpid())
	vm0, _ := b.vm.p.usage()
	var c0 testenv.Usage
	if side != nil {
		if c0, err = side.usage(); err != nil {
			return m, err
		}
	}
	var profiles <-chan error
	if profileDir != "" && isShardscrape(peer) {
		profiles = fetchProfiles(ctx, mainCmd.web, profileDir, peer, b.started, min(30*time.Second, window), b.logger)
	}
	for time.Now().Before(m.To) {
		if err := b.check(ctx, measured); err != nil {
			return m, err
		}
		if u, err := measured.usage(); err == nil && u.RSSBytes > b.o.rssCap {
			if err := endWindowEarly(&m, proxy, time.Now()); err != nil {
				return m, err
			}
			b.logger.Warn("RSS above the cap: ending the run early", "peer", peer, "rss", u.RSSBytes, "cap", b.o.rssCap)
			break
		}
		if err := sleep(ctx, min(pollEvery, time.Until(m.To))); err != nil {
			return m, err
		}
	}
	m.ScrapesServed = b.scrapesServed() - served0
	u1, err := measured.usage()
	if err != nil {
		return m, err
	}
	m.CPUWindow = u1.CPU - u0.CPU
	if self1, err := testenv.ProcUsage(os.Getpid()); err == nil {
		m.BenchCPU = self1.CPU - self0.CPU
	}
	if vm1, err := b.vm.p.usage(); err == nil {
		m.ReceiverCPU = vm1.CPU - vm0.CPU
	}
	if side != nil {
		if c1, err := side.usage(); err == nil {
			m.Coordinator = &usageFigures{CPUWindow: c1.CPU - c0.CPU, PeakRSS: c1.PeakRSSBytes}
		}
	}
	if !m.RSSCapped {
		b.drain(ctx, proxy, m)
	}
	if profiles != nil {
		if err := <-profiles; err != nil {
			b.logger.Warn("Profiles not taken", "peer", peer, "err", err)
		}
	}

	// Stop: the measured process first (its SIGTERM flush goes through the
	// proxy), then the coordinator.
	if u, err := measured.usage(); err == nil {
		m.PeakRSS = u.PeakRSSBytes
	}
	stopErr := measured.stop()
	if eu, err := measured.exitUsage(); err == nil {
		m.CPULifetime = eu.CPU
		m.PeakRSS = max(m.PeakRSS, eu.PeakRSSBytes)
	}
	if side != nil {
		_ = side.stop()
		if eu, err := side.exitUsage(); err == nil && m.Coordinator != nil {
			m.Coordinator.PeakRSS = max(m.Coordinator.PeakRSS, eu.PeakRSSBytes)
		}
	}
	if stopErr != nil {
		b.logger.Warn("Peer did not stop cleanly", "peer", peer, "err", stopErr)
	}

	s := proxy.Stats()
	m.ProxySamples = s.InWindow.Samples
	m.BodyBytes, m.WireSamples, m.ReportSamples = s.BodyBytes, s.All.WireSamples(), s.InWindow.ReportSamples
	m.WriteRequests, m.DecodeErrors = s.WriteRequests, s.DecodeErrors
	m.RejectedRequests, m.RejectedSamples = s.RejectedWriteRequests, s.Rejected.Samples
	m.Protocols = protocols(s.Protocols)
	m.DelayP50, m.DelayP99, m.DelayMax = s.InWindow.Delay.Quantile(0.5), s.InWindow.Delay.Quantile(0.99), s.InWindow.Delay.Max()
	if s.DecodeErrors > 0 {
		b.logger.Warn("Undecodable write requests", "peer", peer, "count", s.DecodeErrors, "last", s.LastDecodeError)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if m.Delivered, err = b.vm.delivered(qctx, peer, run, m.From, m.To); err != nil {
		return m, err
	}
	return m, nil
}

// endWindowEarly ends the window at now (RSS above the cap): m's and the
// proxy's alike, so that the proxy's count of the window and
// VictoriaMetrics' (queried over [From, To)) cover the same span.
func endWindowEarly(m *measurement, proxy *rwproxy.Proxy, now time.Time) error {
	m.RSSCapped = true
	m.To = now.Truncate(time.Millisecond)
	return proxy.EndWindowAt(m.To)
}

// drain waits until the window's samples have arrived: a sample stamped
// an interval past the window's end has, and the window's count reached
// what the fleet served or stopped growing for two intervals (at least
// 6 s); at most -drain.max.
func (b *bench) drain(ctx context.Context, proxy *rwproxy.Proxy, m measurement) {
	deadline := time.Now().Add(b.o.drainMax)
	quiet := max(6*time.Second, 2*b.o.interval)
	var last uint64
	lastChange := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s := proxy.Stats()
		if s.InWindow.Samples != last {
			last, lastChange = s.InWindow.Samples, time.Now()
		}
		if !s.MaxTimestamp.Before(m.To.Add(m.Interval)) &&
			(float64(s.InWindow.Samples) >= m.Served() || time.Since(lastChange) >= quiet) {
			return
		}
		_ = sleep(ctx, pollEvery)
	}
}

// check fails when the run was interrupted or the measured process exited.
func (b *bench) check(ctx context.Context, p *proc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !p.running() {
		return fmt.Errorf("%s (pid %d) exited during the run%s", p.name, p.pid(), p.logTail())
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func protocols(ps map[rwproxy.Protocol]uint64) string {
	var parts []string
	for _, p := range []rwproxy.Protocol{rwproxy.ProtocolV1, rwproxy.ProtocolV2, rwproxy.ProtocolVMZstd} {
		if ps[p] > 0 {
			parts = append(parts, string(p))
		}
	}
	return strings.Join(parts, ", ")
}
