package relabel

import "github.com/prometheus/prometheus/model/labels"

// Target is one kept target of a job, as the coordinator assigns it. The
// pipeline builds it from a discovered target group: enrichment, then the
// job's relabel_configs (Prometheus's scrape.PopulateLabels) to decide
// whether it is kept and to compute its id and ownership key.
type Target struct {
	// ID is internal/targetid.Of of the relabeled target.
	ID uint64
	// Job is the job_name of the target's scrape config.
	Job string
	// Address is the discovered __address__, before relabeling: pins and
	// excludes name targets by job and this address.
	Address string
	// Key is the ownership (ring) key: a hash of the final target labels,
	// or of __address__ alone when so configured.
	Key uint64
	// Labels is the discovered label set with enrichment (__meta_pod_* and,
	// when enabled, pod, namespace, node, pod_ip), before relabeling: what
	// the owning worker receives and relabels itself.
	Labels labels.Labels
}
