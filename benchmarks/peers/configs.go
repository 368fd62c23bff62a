package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Label names every peer's series carry in VictoriaMetrics.
const (
	labelPeer = "bench_peer"
	labelRun  = "bench_run"
	jobName   = "node"
)

// scrapeTimeout is the scrape timeout of every peer: the interval, at most
// Prometheus's default 10s.
func scrapeTimeout(interval time.Duration) time.Duration { return min(interval, 10*time.Second) }

// peerConfig is what one run of one peer scrapes and where it writes.
type peerConfig struct {
	Peer     string
	Run      string
	Interval time.Duration
	Targets  []string // host:port
	WriteURL string   // the peer's proxy, …/api/v1/write
}

// prometheusYAML is the prometheus.yml of the Prometheus agent and of the
// shardscrape coordinator: one static job over the targets, remote write
// to the proxy. externalPeer puts bench_peer into external_labels (the
// coordinator adds it as its cluster label instead).
func prometheusYAML(c peerConfig, externalPeer bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  external_labels:\n",
		model.Duration(c.Interval), model.Duration(scrapeTimeout(c.Interval)))
	if externalPeer {
		fmt.Fprintf(&b, "    %s: %q\n", labelPeer, c.Peer)
	}
	fmt.Fprintf(&b, "    %s: %q\n", labelRun, c.Run)
	b.WriteString(scrapeConfigsYAML(c))
	fmt.Fprintf(&b, "remote_write:\n- url: %q\n", c.WriteURL)
	return b.String()
}

// vmagentYAML is vmagent's -promscrape.config: the same global timing and
// job; its labels and remote write are flags.
func vmagentYAML(c peerConfig) string {
	return fmt.Sprintf("global:\n  scrape_interval: %s\n  scrape_timeout: %s\n",
		model.Duration(c.Interval), model.Duration(scrapeTimeout(c.Interval))) + scrapeConfigsYAML(c)
}

func scrapeConfigsYAML(c peerConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "scrape_configs:\n- job_name: %s\n  static_configs:\n  - targets:\n", jobName)
	for _, t := range c.Targets {
		fmt.Fprintf(&b, "    - %q\n", t)
	}
	return b.String()
}

// command is one process to start for a peer.
type command struct {
	name  string // coordinator, scraper, prometheus, vmagent
	path  string
	args  []string
	ready string // URL answering 200 once ready
	web   string // host:port of its HTTP listener
}

// addrs are the listen addresses a peer's processes use.
type addrs struct {
	web, grpc, workerWeb string
}

// bins are the binaries of every peer.
type bins struct {
	coordinator, scraper, scraperB, prometheus, vmagent, victoriaMetrics string
}

// peerCommands returns the processes of a peer, in start order, given its
// config file (written by the caller: prometheusYAML or vmagentYAML) and a
// data directory.
func peerCommands(c peerConfig, b bins, configFile, dataDir string, a addrs) ([]command, error) {
	switch c.Peer {
	case peerShardscrape, peerShardscrapeB:
		scraper := b.scraper
		if c.Peer == peerShardscrapeB {
			scraper = b.scraperB
		}
		return []command{
			{
				name: "coordinator", path: b.coordinator, web: a.web, ready: "http://" + a.web + "/-/ready",
				args: []string{
					"--config.file=" + configFile,
					"--web.listen-address=" + a.web,
					"--grpc.listen-address=" + a.grpc,
					"--storage.path=" + filepath.Join(dataDir, "coordinator"),
					"--cluster.label=" + labelPeer,
					"--cluster.name=" + c.Peer,
				},
			},
			{
				name: "scraper", path: scraper, web: a.workerWeb, ready: "http://" + a.workerWeb + "/-/ready",
				args: []string{
					"--coordinator.address=" + a.grpc,
					"--worker.id=bench-0",
					"--web.listen-address=" + a.workerWeb,
					"--web.external-address=" + a.workerWeb,
					"--storage.path=" + filepath.Join(dataDir, "scraper"),
					// One worker: a drain on SIGTERM has no one to hand
					// over to; stop as a Prometheus agent stops.
					"--no-shutdown.leave",
				},
			},
		}, nil
	case peerAgent:
		return []command{{
			name: "prometheus", path: b.prometheus, web: a.web, ready: "http://" + a.web + "/-/ready",
			args: []string{
				"--agent",
				"--config.file=" + configFile,
				"--storage.agent.path=" + filepath.Join(dataDir, "agent"),
				"--web.listen-address=" + a.web,
			},
		}}, nil
	case peerVMAgent:
		return []command{{
			name: "vmagent", path: b.vmagent, web: a.web, ready: "http://" + a.web + "/health",
			args: []string{
				"-promscrape.config=" + configFile,
				"-remoteWrite.url=" + c.WriteURL,
				"-remoteWrite.tmpDataPath=" + filepath.Join(dataDir, "vmagent"),
				"-remoteWrite.label=" + labelPeer + "=" + c.Peer,
				"-remoteWrite.label=" + labelRun + "=" + c.Run,
				"-httpListenAddr=" + a.web,
			},
		}}, nil
	}
	return nil, fmt.Errorf("unknown peer %q", c.Peer)
}

// configFor renders the config file content of a peer.
func configFor(c peerConfig) string {
	if c.Peer == peerVMAgent {
		return vmagentYAML(c)
	}
	return prometheusYAML(c, !isShardscrape(c.Peer))
}

// settings lists, per peer, what the run sets besides defaults (for the
// result file).
// walTruncationNote says what a window of minutes leaves out.
const walTruncationNote = "WAL truncation is not in the figures: both WAL-based processes, the shardscrape scraper and the Prometheus agent (both Prometheus's tsdb/agent), garbage-collect series, checkpoint and truncate their WAL every 2 h (tsdb/agent's DefaultTruncateFrequency, `--storage.agent.wal-truncate-frequency`), the first time 2 h after start, so a run and window of minutes excludes that recurring CPU and memory cost, which vmagent (no WAL: an in-memory queue that spills to `-remoteWrite.tmpDataPath` only when it overflows) does not have"

func settings(o options) []string {
	return []string{
		fmt.Sprintf("every peer: one static job `%s` over the same targets, scrape_interval %s, scrape_timeout %s, remote-write endpoint = its own counting proxy in front of the one VictoriaMetrics; everything else at the binary's defaults",
			jobName, o.interval, scrapeTimeout(o.interval)),
		"shardscrape: `coordinator --cluster.label=bench_peer --cluster.name=<peer>` (static_configs in its prometheus.yml, remote_write to the proxy, which the worker takes; the scraper's queue defaults from remotewrite/) + one `scraper --no-shutdown.leave` (a single worker has no one to drain to); the scraper process is measured, the coordinator is an informational row",
		"prometheus-agent: `prometheus --agent`, external_labels bench_peer/bench_run",
		"vmagent: `-promscrape.config` (same global and job), `-remoteWrite.url=<proxy>`, `-remoteWrite.label=bench_peer=…,bench_run=…`, `-remoteWrite.tmpDataPath` in the run's temp dir",
		walTruncationNote,
	}
}
