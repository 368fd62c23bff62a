package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Peer names -peers accepts.
const (
	peerShardscrape  = "shardscrape"
	peerShardscrapeB = "shardscrape-b" // the same as shardscrape, with -scraper-b-bin
	peerAgent        = "prometheus-agent"
	peerVMAgent      = "vmagent"
)

var knownPeers = []string{peerShardscrape, peerShardscrapeB, peerAgent, peerVMAgent}

// options are the command's settings.
type options struct {
	bin           string
	out           string
	targets       int
	series        int
	interval      time.Duration
	duration      time.Duration
	rounds        int
	peers         []string
	sweep         []int
	sweepDuration time.Duration
	scraperBin    string
	scraperBBin   string
	profile       string
	rssCap        uint64
	drainMax      time.Duration
}

// defaultRSSCap stops a step whose process grows beyond it (the machine is
// shared: 24 GiB for everyone).
const defaultRSSCap = 6 << 30

// registerFlags declares the flags on fs; parsing fills the returned
// options, and finish validates them.
func registerFlags(fs *flag.FlagSet) func() (options, error) {
	var (
		o            options
		peers, sweep string
		rssCapGiB    float64
	)
	fs.StringVar(&o.bin, "bin", "bin", "directory holding scraper, coordinator, prometheus, vmagent and victoria-metrics")
	fs.StringVar(&o.out, "out", filepath.Join("benchmarks", "results"), "results directory: <date>-worker-vs-peers.md and <date>-worker-sweep.svg")
	fs.IntVar(&o.targets, "targets", 200, "node_exporter-like targets of the steady phase")
	fs.IntVar(&o.series, "series", 800, "series per target")
	fs.DurationVar(&o.interval, "interval", 5*time.Second, "scrape interval (the scrape timeout is the interval, at most 10s)")
	fs.DurationVar(&o.duration, "duration", 3*time.Minute, "measured window of the steady phase, per peer")
	fs.IntVar(&o.rounds, "rounds", 1, "steady rounds: every peer once per round, in -peers order (A B A B); the ratios are the median of the rounds' ratios")
	fs.StringVar(&peers, "peers", "shardscrape,prometheus-agent,vmagent", "peers to run, in order: "+strings.Join(knownPeers, ", "))
	fs.StringVar(&sweep, "sweep", "400,800,1600,3200", "saturation sweep: target counts, rising (empty: no sweep)")
	fs.DurationVar(&o.sweepDuration, "sweep.duration", 90*time.Second, "measured window of each sweep step, per peer")
	fs.StringVar(&o.scraperBin, "scraper-bin", "", "scraper binary of peer shardscrape (default: <bin>/scraper)")
	fs.StringVar(&o.scraperBBin, "scraper-b-bin", "", "scraper binary of peer shardscrape-b, for an A/B of two builds in one run")
	fs.StringVar(&o.profile, "profile", "", "if set, save 30s CPU and heap pprof profiles of each shardscrape scraper's steady run into this directory")
	fs.Float64Var(&rssCapGiB, "rss-cap", float64(defaultRSSCap)/(1<<30), "GiB: a step ends early, marked, when a peer's RSS exceeds it or would by the previous step's figure")
	fs.DurationVar(&o.drainMax, "drain.max", 0, "longest wait after a window for its samples to arrive (0: 10 × interval, at least 1m)")
	return func() (options, error) {
		var err error
		if o.peers, err = parsePeers(peers); err != nil {
			return o, err
		}
		if o.sweep, err = parseSweep(sweep); err != nil {
			return o, err
		}
		o.rssCap = uint64(rssCapGiB * (1 << 30))
		if o.drainMax == 0 {
			o.drainMax = max(time.Minute, 10*o.interval)
		}
		if o.scraperBin == "" {
			o.scraperBin = filepath.Join(o.bin, "scraper")
		}
		return o, o.validate()
	}
}

func (o options) validate() error {
	switch {
	case o.targets <= 0:
		return fmt.Errorf("-targets %d: must be at least 1", o.targets)
	case o.series <= 0:
		return fmt.Errorf("-series %d: must be at least 1", o.series)
	case o.interval < time.Second:
		return fmt.Errorf("-interval %s: must be at least 1s", o.interval)
	case o.rounds < 1:
		return fmt.Errorf("-rounds %d: must be at least 1", o.rounds)
	case o.duration < o.interval:
		return fmt.Errorf("-duration %s: must be at least one interval (%s)", o.duration, o.interval)
	case len(o.sweep) > 0 && o.sweepDuration < o.interval:
		return fmt.Errorf("-sweep.duration %s: must be at least one interval (%s)", o.sweepDuration, o.interval)
	case slices.Contains(o.peers, peerShardscrapeB) && o.scraperBBin == "":
		return fmt.Errorf("-peers lists %s: set -scraper-b-bin", peerShardscrapeB)
	case o.rssCap == 0:
		return fmt.Errorf("-rss-cap: must be above 0")
	}
	return nil
}

func parsePeers(s string) ([]string, error) {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(knownPeers, p) {
			return nil, fmt.Errorf("-peers: unknown peer %q (known: %s)", p, strings.Join(knownPeers, ", "))
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("-peers: %q given twice", p)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-peers %q: no peer", s)
	}
	return out, nil
}

func parseSweep(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-sweep: %q is not a positive target count", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-sweep: %d after %d: steps must rise", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

// isShardscrape tells whether a peer is a coordinator + scraper pair.
func isShardscrape(peer string) bool { return peer == peerShardscrape || peer == peerShardscrapeB }
