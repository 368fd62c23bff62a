package promcfg

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
)

// seedPath is the source document's config, copied into the module (the
// shared folder is not part of a checkout).
const seedPath = "../../relabel/testdata/prometheus-seed.yml"

func write(t *testing.T, path, text string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// roundTrip splits path, rebuilds, and checks every job's scrape config
// equals what config.LoadFile (plus scrape_config_files) gives.
func roundTrip(t *testing.T, path string) (*Parts, *promconfig.Config) {
	t.Helper()
	p, err := Split(path, nil)
	require.NoError(t, err)
	built, err := Build(p.Global, p.Jobs, nil)
	require.NoError(t, err)

	want, err := promconfig.LoadFile(path, false, nil)
	require.NoError(t, err)
	wantJobs, err := want.GetScrapeConfigs()
	require.NoError(t, err)
	gotJobs, err := built.GetScrapeConfigs()
	require.NoError(t, err)
	require.Len(t, gotJobs, len(wantJobs))
	for i := range wantJobs {
		require.Equal(t, wantJobs[i], gotJobs[i], "job %s", wantJobs[i].JobName)
	}
	require.Equal(t, want.GlobalConfig, built.GlobalConfig)
	require.Equal(t, want.RemoteWriteConfigs, built.RemoteWriteConfigs)
	return p, built
}

func TestSeedRoundTrip(t *testing.T) {
	if _, err := os.Stat(seedPath); err != nil {
		t.Skipf("seed config not present: %v", err)
	}
	p, _ := roundTrip(t, seedPath)
	require.Len(t, p.Jobs, 7)
	require.Equal(t, "kubernetes-apiservers", p.Jobs[0].Name)
	for _, j := range p.Jobs {
		require.Empty(t, j.Dir)
		require.Equal(t, JobHash(j.YAML, ""), j.Hash)
	}
}

func TestSplitBuild(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "secrets", "token"), "tok\n")
	write(t, filepath.Join(dir, "more", "jobs.yml"), `
scrape_configs:
- job_name: from-file
  bearer_token_file: token
  static_configs:
  - targets: ['127.0.0.1:9100']
`)
	path := write(t, filepath.Join(dir, "prometheus.yml"), `
global:
  scrape_interval: 7s
  scrape_timeout: 3s
  sample_limit: 1234
  external_labels:
    cluster: from-file
    region: eu
rule_files: [rules/*.yml]
remote_read:
- url: http://127.0.0.1:9/read
remote_write:
- url: http://127.0.0.1:8428/api/v1/write
  basic_auth:
    username: rw
    password: rw-secret
scrape_config_files: [more/*.yml]
scrape_configs:
- job_name: a
  basic_auth:
    username: u
    password: s3cret
  static_configs:
  - targets: ['127.0.0.1:9090']
- job_name: b
  scrape_interval: 1m
  bearer_token_file: secrets/token
  file_sd_configs:
  - files: [sd/*.json]
`)
	p, built := roundTrip(t, path)

	// The global part leaves out the scrape, rule, alerting and read parts.
	var g map[string]any
	require.NoError(t, yaml.Unmarshal(p.Global.YAML, &g))
	require.Contains(t, g, "global")
	require.Contains(t, g, "remote_write")
	for k := range globalExcluded {
		require.NotContains(t, g, k)
	}
	require.Contains(t, string(p.Global.YAML), "rw-secret")

	require.Len(t, p.Jobs, 3)
	require.Equal(t, []string{"a", "b", "from-file"}, []string{p.Jobs[0].Name, p.Jobs[1].Name, p.Jobs[2].Name})
	require.Equal(t, filepath.Join(dir, "more"), p.Jobs[2].Dir)
	require.Equal(t, JobHash(p.Jobs[2].YAML, p.Jobs[2].Dir), p.Jobs[2].Hash)
	require.NotEqual(t, p.Jobs[0].Hash, p.Jobs[1].Hash)

	// Globals apply; relative paths resolve against their own file.
	a := built.ScrapeConfigs[0]
	require.Equal(t, model.Duration(7*time.Second), a.ScrapeInterval)
	require.Equal(t, model.Duration(3*time.Second), a.ScrapeTimeout)
	require.Equal(t, uint(1234), a.SampleLimit)
	require.Equal(t, model.Duration(time.Minute), built.ScrapeConfigs[1].ScrapeInterval)
	require.Equal(t, filepath.Join(dir, "secrets", "token"), built.ScrapeConfigs[1].HTTPClientConfig.Authorization.CredentialsFile)
	require.Equal(t, filepath.Join(dir, "more", "token"), built.ScrapeConfigs[2].HTTPClientConfig.Authorization.CredentialsFile)

	// Secrets survive the round trip, and Prometheus still hides them.
	require.Equal(t, "s3cret", string(a.HTTPClientConfig.BasicAuth.Password))
	require.Equal(t, "rw-secret", string(built.RemoteWriteConfigs[0].HTTPClientConfig.BasicAuth.Password))
	out, err := yaml.Marshal(a)
	require.NoError(t, err)
	require.Contains(t, string(out), "<secret>")
	require.NotContains(t, string(out), "s3cret")
}

func TestBuildExternalLabelsOverride(t *testing.T) {
	g := Global{
		YAML: []byte("global:\n  external_labels:\n    cluster: user\n    region: eu\n"),
		Dir:  "/etc/prometheus",
	}
	job := []byte("job_name: x\nstatic_configs:\n- targets: ['127.0.0.1:1']\n")
	jobs := []Job{{Name: "x", Hash: JobHash(job, ""), YAML: job}}

	cfg, err := Build(g, jobs, nil)
	require.NoError(t, err)
	require.Equal(t, labels.FromStrings("cluster", "user", "region", "eu"), cfg.GlobalConfig.ExternalLabels)

	g.ExternalLabels = labels.FromStrings("cluster", "prod-1")
	h1 := g.Hash()
	cfg, err = Build(g, jobs, nil)
	require.NoError(t, err)
	require.Equal(t, labels.FromStrings("cluster", "prod-1", "region", "eu"), cfg.GlobalConfig.ExternalLabels)

	g.ExternalLabels = labels.FromStrings("cluster", "prod-2")
	require.NotEqual(t, h1, g.Hash())

	// No global text at all: Prometheus's defaults.
	cfg, err = Build(Global{}, jobs, nil)
	require.NoError(t, err)
	require.Equal(t, promconfig.DefaultGlobalConfig.ScrapeInterval, cfg.ScrapeConfigs[0].ScrapeInterval)
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ text, want string }{
		"unknown key":   {"global:\n  scrape_intervall: 1s\n", "scrape_intervall"},
		"duplicate job": {"scrape_configs:\n- job_name: a\n- job_name: a\n", `"a"`},
		"bad interval":  {"scrape_configs:\n- job_name: a\n  scrape_interval: soon\n", "soon"},
	} {
		t.Run(name, func(t *testing.T) {
			path := write(t, filepath.Join(dir, name+".yml"), tc.text)
			_, err := Split(path, nil)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, path)
		})
	}
	_, err := Split(filepath.Join(dir, "missing.yml"), nil)
	require.ErrorIs(t, err, os.ErrNotExist)

	job := []byte("job_name: x\nbogus: 1\n")
	_, err = Build(Global{}, []Job{{Name: "x", YAML: job}}, nil)
	require.ErrorContains(t, err, "bogus")
	job = []byte("job_name: y\n")
	_, err = Build(Global{}, []Job{{Name: "x", YAML: job}}, nil)
	require.ErrorContains(t, err, `"x"`)
}

// TestScalarsKeptAsWritten: Prometheus reads plain scalars into strings as
// written, so the split parts must carry them as written: 010, 1.10, yes
// and a number too long for any Go number stay what they were, in label
// values, a job name and a password; aliases across jobs resolve.
func TestScalarsKeptAsWritten(t *testing.T) {
	path := write(t, filepath.Join(t.TempDir(), "prometheus.yml"), `
global:
  external_labels: {dc: 010, version: 1.10}
scrape_configs:
- job_name: 1.10
  basic_auth: {username: 0x1F, password: yes}
  static_configs: &static
  - targets: ['a:1']
    labels: {rack: 010, version: 1.10, big: 123456789012345678901234567890, on: on}
- job_name: second
  static_configs: *static
`)
	p, built := roundTrip(t, path)
	require.Equal(t, "1.10", p.Jobs[0].Name)
	require.Equal(t, "010", built.GlobalConfig.ExternalLabels.Get("dc"))
	require.Equal(t, "yes", string(built.ScrapeConfigs[0].HTTPClientConfig.BasicAuth.Password))
	require.NotContains(t, string(p.Jobs[1].YAML), "*static")
}
