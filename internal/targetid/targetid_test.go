package targetid

import (
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/require"
)

const cfgYAML = `
scrape_configs:
- job_name: pods
  relabel_configs:
  - source_labels: [__meta_pod]
    target_label: pod
- job_name: nodes
- job_name: blackbox
  metrics_path: /probe
  params:
    module: [http_2xx]
`

// target relabels one discovered target of job with Prometheus's own code,
// as both the coordinator and the worker do.
func target(t *testing.T, job string, discovered model.LabelSet) *scrape.Target {
	t.Helper()
	cfg, err := config.Load(cfgYAML, nil)
	require.NoError(t, err)
	var sc *config.ScrapeConfig
	for _, c := range cfg.ScrapeConfigs {
		if c.JobName == job {
			sc = c
		}
	}
	require.NotNil(t, sc, job)
	ts, failures := scrape.TargetsFromGroup(&targetgroup.Group{Targets: []model.LabelSet{discovered}}, sc, nil, labels.NewBuilder(labels.EmptyLabels()))
	require.Empty(t, failures)
	require.Len(t, ts, 1)
	return ts[0]
}

func TestOf(t *testing.T) {
	base := target(t, "pods", model.LabelSet{"__address__": "10.1.2.3:9100", "__meta_pod": "web-0", "__meta_node": "n1"})

	// Discovery metadata that relabeling drops does not make another target.
	same := target(t, "pods", model.LabelSet{"__address__": "10.1.2.3:9100", "__meta_pod": "web-0", "__meta_node": "n2"})
	require.Equal(t, Of("pods", base), Of("pods", same))

	for name, other := range map[string]uint64{
		"a label relabeling keeps": Of("pods", target(t, "pods", model.LabelSet{"__address__": "10.1.2.3:9100", "__meta_pod": "web-1"})),
		"the address":              Of("pods", target(t, "pods", model.LabelSet{"__address__": "10.1.2.4:9100", "__meta_pod": "web-0"})),
		"the metrics path":         Of("pods", target(t, "pods", model.LabelSet{"__address__": "10.1.2.3:9100", "__meta_pod": "web-0", "__metrics_path__": "/other"})),
		"a URL parameter":          Of("pods", target(t, "pods", model.LabelSet{"__address__": "10.1.2.3:9100", "__meta_pod": "web-0", "__param_x": "1"})),
		"the job":                  Of("nodes", target(t, "nodes", model.LabelSet{"__address__": "10.1.2.3:9100"})),
	} {
		require.NotEqual(t, Of("pods", base), other, "targets differing in %s share an id", name)
	}

	// Both sides of the contract compute this; a change here breaks a fleet
	// whose coordinator and workers run different versions.
	probe := target(t, "blackbox", model.LabelSet{"__address__": "example.org:443"})
	require.Equal(t, "http://example.org:443/probe?module=http_2xx", probe.URL().String())
	formula := "blackbox\xff" + "instance\xffexample.org:443\xff" + "job\xffblackbox\xff" + "http://example.org:443/probe?module=http_2xx\xff"
	require.Equal(t, xxhash.Sum64String(formula), Of("blackbox", probe))
	require.Equal(t, uint64(0x4b86818f93a4d5d7), Of("blackbox", probe), "golden value")
}
