package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// scrapeInterval is both configurations' global scrape_interval: a real
// worker acks an INCOMING target after its first scrape, within one
// interval (the report states that bound; the simulated workers scrape
// nothing).
const scrapeInterval = "15s"

// Jobs of the rendered configurations.
const (
	jobNodes  = "node-exporter"
	jobPods   = "kubernetes-pods"
	jobStatic = "static"
)

// renderFleetConfig is the coordinator's prometheus.yml for the fleet
// scenario: a consul_sd node-exporter job and a kubernetes_sd pod job with
// the prometheus.io/scrape annotation relabeling, as examples/local does,
// both pointing at the fakes on apiAddr (host:port).
func renderFleetConfig(apiAddr string) string {
	return `global:
  scrape_interval: ` + scrapeInterval + `
  scrape_timeout: 10s

scrape_configs:
  - job_name: ` + jobNodes + `
    consul_sd_configs:
      - server: ` + apiAddr + `
        services: [node-exporter]
    relabel_configs:
      - source_labels: [__meta_consul_address]
        target_label: ip
      - action: labelmap
        regex: __meta_consul_metadata_(.+)
      - source_labels: [__meta_consul_dc]
        target_label: datacenter

  - job_name: ` + jobPods + `
    kubernetes_sd_configs:
      - role: pod
        api_server: http://` + apiAddr + `
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: true
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: (.+)
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        action: replace
        regex: ([^:]+)(?::\d+)?;(\d+)
        replacement: $1:$2
        target_label: __address__
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_namespace]
        action: replace
        target_label: kubernetes_namespace
      - source_labels: [__meta_kubernetes_pod_name]
        action: replace
        target_label: kubernetes_pod_name
      - source_labels: [__meta_kubernetes_pod_node_name]
        action: replace
        target_label: node
`
}

// renderStaticConfig is the coordinator's prometheus.yml for the static
// scenario: one job reading its targets from one file_sd JSON file. Not
// static_configs: the coordinator sends each worker its jobs' original
// text (ScrapeConfig.yaml), which would carry every target to every
// worker, and YAML is parsed slower than file_sd's JSON.
func renderStaticConfig(file string) string {
	return `global:
  scrape_interval: ` + scrapeInterval + `
  scrape_timeout: 10s

scrape_configs:
  - job_name: ` + jobStatic + `
    file_sd_configs:
      - files: [` + strconv.Quote(file) + `]
        refresh_interval: 1h
    relabel_configs:
      - source_labels: [group]
        target_label: shard_group
`
}

// staticGroupSize is how many targets one file_sd group holds.
const staticGroupSize = 1000

// staticAddr is the i-th generated static target address (never scraped:
// the workers are simulated).
func staticAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d:9100", i>>16&255, i>>8&255, i&255)
}

// writeStaticTargets writes n generated targets as file_sd JSON, in groups
// of staticGroupSize each labelled group="<k>".
func writeStaticTargets(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("file_sd targets: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	bw.WriteString("[")
	for g := 0; g*staticGroupSize < n; g++ {
		if g > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n{\"labels\":{\"group\":\"" + strconv.Itoa(g) + "\"},\"targets\":[")
		for i := g * staticGroupSize; i < min(n, (g+1)*staticGroupSize); i++ {
			if i > g*staticGroupSize {
				bw.WriteString(",")
			}
			bw.WriteString(strconv.Quote(staticAddr(i)))
		}
		bw.WriteString("]}")
	}
	bw.WriteString("\n]\n")
	if err := bw.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("file_sd targets %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("file_sd targets %s: %w", path, err)
	}
	return nil
}

// staticExpected is the expected (job, address) set of the static
// scenario.
func staticExpected(n int) map[jobAddr]struct{} {
	m := make(map[jobAddr]struct{}, n)
	for i := range n {
		m[jobAddr{jobStatic, staticAddr(i)}] = struct{}{}
	}
	return m
}

// oneLine shortens a multi-line text for a table cell.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
